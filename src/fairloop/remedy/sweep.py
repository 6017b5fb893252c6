"""Candidate sweeps (``constraints/sweeps/*.yaml``): recipes x constraint templates x bounds.

Every candidate is fitted by the same ``pipeline.fit_model`` a single run uses (so the chosen one is
reproducible from its recipe and template files alone) and selected under the run's policy on
the rows its evaluation mode gives (:mod:`fairloop.remedy.crossfit`): the validation split (holdout),
or out-of-fold predictions over the whole training pool (crossfit, K + 1 fits per candidate).
Selection takes the most accurate candidate that passes every gate; the test split only gives
the final figures. Fitting is the CPU-bound part: the flow runs :func:`run_fit_job` in a
process pool, everything else here is cheap and runs in the flow's process.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field

from fairloop.data.datasets import Split, Splits, stratified_split
from fairloop.data.spec import SpecModel, VersionedSpec, check_allowed_path, load_spec
from fairloop.errors import BadInputError
from fairloop.gates.decidability import leans_to_pass, rows_factor
from fairloop.gates.evaluate import Evaluation, Predictions, predict
from fairloop.gates.metrics import (
    GATES,
    GROUP_METRICS,
    METRIC_BY_NAME,
    shown_group_metrics,
)
from fairloop.gates.policy import (
    SENSITIVE_AT_PREDICT,
    GateReport,
    GateResult,
    Policy,
    apply_gates,
)
from fairloop.pipeline import baseline_template, fit_model, score_all, with_intervals
from fairloop.remedy.constraints import (
    METHOD_KINDS,
    ConstraintTemplate,
    load_constraint_template,
)
from fairloop.remedy.crossfit import ModeDecision, fit_rows, fold_positions
from fairloop.remedy.frozen import FROZEN_LEARNER, FrozenModel
from fairloop.remedy.model import FairModel
from fairloop.remedy.recipes import (
    NO_RECIPE,
    AugmentReport,
    Recipe,
    apply_recipe,
    load_recipe,
)

# The fairness metrics a frontier can plot, and whether higher is fairer.
FRONTIER_METRICS = {metric.name: metric.higher_is_better for metric in GROUP_METRICS}


class SweptTemplate(SpecModel):
    template: str = Field(description="constraint template file")
    # an empty list would silently mean "its own bound" (issue 29: a sweep with `bounds: []` ran
    # past 300 s): leave the field out for that
    bounds: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None, min_length=1, description="the template once per bound (overriding its own); leave out for its own bound"
    )
    recipes: list[str] | None = Field(
        None, description="only with these of the sweep's recipes (default: all); keeps costly reductions off some"
    )


class SearchBudget(SpecModel):
    """What the search after the grid may spend (``run_sweep``): it stops at whichever limit comes first."""

    max_extra_fits: int = Field(ge=1, description="model fits beyond the grid (a crossfit candidate costs K + 1)")
    max_seconds: float = Field(gt=0, description="wall-clock seconds of the search; no step starts that would "
                                                 "end past it, judged by the last step's time")


class SweepSpec(VersionedSpec):
    """A sweep file. Paths are relative to the directory fairloop runs in (the project root),
    like the ``--recipe`` / ``--constraint`` options."""

    recipes: list[str] = Field(min_length=1, description="recipe files")
    constraints: list[str | SweptTemplate] = Field(
        min_length=1, description="template files, or {template: FILE, bounds: [...]} to sweep its bound"
    )
    baseline: str = Field("constraints/unconstrained.yaml", description="template whose learner, unconstrained, is the baseline")
    workers: int | None = Field(None, ge=1, description="processes fitting candidates; default: one per core")
    candidate_timeout_seconds: float | None = Field(
        None, gt=0, description="time budget of each candidate fit (each of a crossfit candidate's K + 1 fits): a fit "
                                "past it is stopped and the candidate listed as timed out; default: none")
    reduction_rows: int | None = Field(
        None, ge=100, description="large data: reductions (each refits its learner dozens of times) are fitted on a "
                                  "group x label stratified subsample of at most this many fit rows; every other "
                                  "candidate, and all selection and test figures, use every row; default: all rows")
    # left out of the content (and its hash) when absent: it changes nothing then
    search: SearchBudget | None = Field(
        None, exclude_if=lambda value: value is None,
        description="when no candidate the policy can choose passes, bisect the bounds of the choosable candidates "
                    "that have one (most accurate first) within this budget; absent: no search")

    def useful_workers(self) -> int:
        """Processes worth starting for this sweep: ``workers`` (default: one per core), at most one
        per model it fits on all rows (each candidate and the baseline)."""
        return min(self.workers or os.cpu_count() or 1, len(expand_candidates(self)[0]) + 1)


def load_sweep(path) -> SweepSpec:
    """Read a sweep file and check it expands: every recipe and template it names loads, and the
    combinations make sense. Errors name the sweep file first."""
    sweep = load_spec(path, SweepSpec)
    templates = [entry if isinstance(entry, str) else entry.template for entry in sweep.constraints]
    for field, named in (("recipes", sweep.recipes), ("constraints", templates), ("baseline", [sweep.baseline])):
        for file in named:
            check_allowed_path(file, Path(path), field)
    try:
        expand_candidates(sweep)
    except BadInputError as exc:
        raise BadInputError(str(exc), source=str(path)) from None
    return sweep


@dataclass(frozen=True)
class SweepCandidate:
    """One recipe x template (x bound) combination, with the files it came from."""

    recipe: Recipe
    recipe_path: str
    template: ConstraintTemplate
    template_path: str
    bound_overridden: bool = False
    searched: bool = False  # added by the search after the grid

    @property
    def name(self) -> str:
        bound = f"@{self.template.bound:g}" if self.template.bound is not None else ""
        return f"{self.recipe.name}+{self.template.name}{bound}"

    @property
    def is_reduction(self) -> bool:
        return self.template.kind == "reduction"

    def template_yaml(self) -> str:
        """The template as a file of its own (its bound may differ from ``template_path``'s)."""
        return yaml.safe_dump(self.template.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


@dataclass(frozen=True)
class SkippedCandidate:
    name: str
    reason: str


def expand_candidates(sweep: SweepSpec) -> tuple[list[SweepCandidate], list[SkippedCandidate]]:
    """Every runnable combination of the sweep, and the ones that cannot run (with why).

    A weighting recipe cannot feed a Fairlearn reduction (the reduction reweights the data
    itself) or adversarial debiasing, so those pairs are skipped, not failed; paired with a
    learner whose fit takes no sample weights it is an error in the sweep file.
    """
    recipes = [(path, load_recipe(path)) for path in sweep.recipes]
    entries = [entry if isinstance(entry, SweptTemplate) else SweptTemplate(template=entry) for entry in sweep.constraints]
    templates = [(entry, load_constraint_template(entry.template)) for entry in entries]
    for entry, template in templates:
        if entry.bounds and template.constraint is None:
            raise BadInputError(f"template '{entry.template}' has no constraint, so no bound to sweep", field="constraints")
        if entry.bounds and not template.takes_bound:
            raise BadInputError(f"template '{entry.template}' ({template.method}) takes no bound to sweep",
                                field="constraints")
        unknown = sorted(set(entry.recipes or []) - set(sweep.recipes))
        if unknown:
            raise BadInputError(f"template '{entry.template}' names recipes {unknown} the sweep does not list",
                                field="constraints.recipes")
    candidates, skipped = [], []
    for recipe_path, recipe in recipes:
        for entry, template in templates:
            if entry.recipes is not None and recipe_path not in entry.recipes:
                continue
            variants = [(template, False)]
            if entry.bounds:
                variants = [
                    (template.model_copy(update={
                        "bound": bound,
                        "description": f"{template.description.strip()} [bound {bound:g} set by sweep '{sweep.name}' v{sweep.version}]",
                    }), True)
                    for bound in entry.bounds
                ]
            template_path = entry.template
            for variant, overridden in variants:
                candidate = SweepCandidate(recipe, recipe_path, variant, template_path, overridden)
                problem = variant.weighting_problem() if recipe.produces_weights else None
                if problem is None:
                    candidates.append(candidate)
                elif problem[0] == "method":
                    skipped.append(SkippedCandidate(candidate.name, problem[1]))
                else:
                    raise BadInputError(f"template '{template_path}': field '{problem[0]}': {problem[1]} "
                                        f"('{recipe_path}' is one)", field="constraints")
    names = [c.name for c in candidates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInputError(f"the sweep lists the same candidate more than once: {duplicates}", field="recipes/constraints")
    return candidates, skipped


@dataclass(frozen=True)
class SweepData:
    """The rows every fit job needs (sent to each worker once, see ``fairloop.remedy.fitters``).

    holdout: candidates are fitted on ``fit`` (the training split) and selected on
    ``selection`` (the validation split). crossfit: ``fit`` and ``selection`` are both the
    training pool; ``folds`` hold the held-out positions of each fold."""

    mode: ModeDecision
    fit: Split
    selection: Split
    test: Split
    folds: tuple[np.ndarray, ...] = ()
    frozen: FrozenModel | None = None  # remediate --model: candidates post-process this model

    @staticmethod
    def of(splits: Splits, mode: ModeDecision, sensitive: str, seed: int, frozen: FrozenModel | None = None) -> SweepData:
        if mode.mode == "holdout":
            return SweepData(mode, splits.train, splits.validation, splits.test, frozen=frozen)
        pool = fit_rows(splits, mode)
        return SweepData(mode, pool, pool, splits.test, tuple(fold_positions(pool, sensitive, mode.folds, seed)), frozen)


@dataclass(frozen=True)
class FitJob:
    """One fit of a candidate: on all fit rows (``fold`` None: the model that may be promoted),
    or without one cross-fitting fold (to predict that fold)."""

    key: str  # the candidate's name, or BASELINE
    candidate: SweepCandidate
    fold: int | None = None
    budget_seconds: float | None = None  # stopped past it (the baseline has none: every candidate is gated against it)
    max_rows: int | None = None  # a reduction's subsample (SweepSpec.reduction_rows)


BASELINE = "(baseline)"


@dataclass
class JobResult:
    fit_seconds: float
    model: FairModel | None = None  # the final fit only
    selection: Predictions | None = None  # holdout: on the validation split; crossfit: on the fold
    test: Predictions | None = None
    augment: AugmentReport | None = None
    error: str | None = None
    timed_out: bool = False


class FitTimedOut(BaseException):
    """Raised inside a fit that ran past its job's time budget (a BaseException, like
    KeyboardInterrupt, so no library's ``except Exception`` turns it into a fitting error)."""


@contextmanager
def time_budget(seconds: float | None):
    """Stop the code in the block ``seconds`` after it starts by raising :class:`FitTimedOut` in
    this thread (delivered at its next Python instruction: learners return to Python every
    iteration). Works in any thread of any process, so the same budget holds serially, in the
    process pool and on Dask workers (which run tasks in threads, where signals cannot reach)."""
    if seconds is None:
        yield
        return
    target, lock, finished = threading.get_ident(), threading.Lock(), threading.Event()

    def expire():
        with lock:
            if not finished.is_set():
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(FitTimedOut))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:  # after this no exception can be raised here any more
            finished.set()
        timer.cancel()


def run_fit_job(job: FitJob, data: SweepData, sensitive: str, seed: int) -> JobResult:
    """Fit one job and predict what it is for: one worker process's share of a sweep. A candidate
    that cannot be fitted on these rows (e.g. a reduction on a group with one label) is an
    outcome of the sweep, reported with its reason, not a crash of the run."""
    candidate = job.candidate
    if job.fold is None:
        rows, held = data.fit, None
    else:
        held = data.folds[job.fold]
        rows = data.fit.take(np.setdiff1d(np.arange(len(data.fit)), held))
    if job.max_rows is not None and len(rows) > job.max_rows:
        rows = stratified_subsample(rows, sensitive, job.max_rows, seed)
    try:
        with time_budget(job.budget_seconds):
            model, seconds = fit_model(rows, candidate.template, sensitive, seed, candidate.recipe, data.frozen)
    except FitTimedOut:
        return JobResult(fit_seconds=job.budget_seconds, timed_out=True,
                         error=f"timed out: stopped after {job.budget_seconds:g} s (candidate_timeout_seconds)")
    except (ValueError, ArithmeticError, BadInputError) as exc:
        return JobResult(fit_seconds=0.0, error=f"{type(exc).__name__}: {exc}")
    if held is not None:
        return JobResult(fit_seconds=seconds, selection=predict(model, data.fit.take(held)))
    _, report = apply_recipe(rows, candidate.recipe, sensitive, seed)
    return JobResult(
        fit_seconds=seconds, model=model, augment=report, test=predict(model, data.test),
        selection=predict(model, data.selection) if data.mode.mode == "holdout" else None,
    )


@dataclass
class FittedCandidate:
    """A candidate's final model, its selection predictions (validation or out-of-fold) and test
    predictions, or why it could not be fitted."""

    model: FairModel | None
    fit_seconds: float  # the final fit
    crossfit_seconds: float  # the K fold fits (0 in holdout)
    augment: AugmentReport | None
    selection: Predictions | None
    test: Predictions | None
    error: str | None = None
    timed_out: bool = False


def assemble(jobs: list[FitJob], results: list[JobResult], data: SweepData) -> dict[str, FittedCandidate]:
    """Each candidate's job results as one FittedCandidate (out-of-fold predictions reassembled)."""
    by_name: dict[str, dict[int | None, JobResult]] = {}
    for job, result in zip(jobs, results, strict=True):
        by_name.setdefault(job.key, {})[job.fold] = result
    fitted = {}
    for name, parts in by_name.items():
        final = parts[None]
        errors = [r.error for r in parts.values() if r.error]
        if errors:
            fitted[name] = FittedCandidate(None, 0.0, 0.0, None, None, None, error=errors[0],
                                           timed_out=any(r.timed_out for r in parts.values()))
            continue
        selection = final.selection
        if data.mode.mode == "crossfit":
            selection = Predictions.concatenate([(data.folds[k], parts[k].selection) for k in range(len(data.folds))],
                                                len(data.fit))
        fitted[name] = FittedCandidate(
            model=final.model, fit_seconds=final.fit_seconds,
            crossfit_seconds=sum(r.fit_seconds for k, r in parts.items() if k is not None),
            augment=final.augment, selection=selection, test=final.test,
        )
    return fitted


def sweep_jobs(candidates: dict[str, SweepCandidate], data: SweepData, budget_seconds: float | None = None,
               reduction_rows: int | None = None) -> list[FitJob]:
    folds = [None, *range(len(data.folds))]
    return [FitJob(key, candidate, fold, None if key == BASELINE else budget_seconds,
                   reduction_rows if candidate.is_reduction else None)
            for key, candidate in candidates.items() for fold in folds]


def stratified_subsample(rows: Split, sensitive: str, size: int, seed: int) -> Split:
    """``size`` of ``rows``, keeping every group x label cell's share (``datasets.stratified_split``)."""
    return stratified_split(rows, 1 - size / len(rows), seed, sensitive)[0]


FitAll = Callable[[list[FitJob], SweepData, str, int], list[JobResult]]


def fit_serially(jobs: list[FitJob], data: SweepData, sensitive: str, seed: int) -> list[JobResult]:
    """One job after the other in this process, one thread each (as in the process pool: the
    same results, and OpenMP threads spinning over small fits cost more than they give)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [run_fit_job(job, data, sensitive, seed) for job in jobs]


Runner = Literal["processes", "dask"]
RUNNERS: tuple[Runner, ...] = ("processes", "dask")


class CandidateResult(BaseModel):
    name: str
    recipe: str
    template: str
    method: str
    constraint: str | None
    bound: float | None
    learner: str
    needs_sensitive_at_predict: bool
    fit_seconds: float
    crossfit_seconds: float = 0.0
    synthetic_rows: int
    validation: dict[str, float]  # the selection figures: validation split (holdout) or out-of-fold (crossfit)
    validation_selection_rates: dict[str, float] = {}  # of the counted groups
    test: dict[str, float]
    gates: GateReport  # on the selection rows: what selection used
    pareto: bool = False
    searched: bool = False  # added by the search after the grid (``SweepSpec.search``)

    @property
    def kind(self) -> str:
        return METHOD_KINDS.get(self.method, self.method)

    @property
    def needs_at_predict(self) -> str:
        """What the candidate reads to decide (shown beside its kind)."""
        return "features + sensitive" if self.needs_sensitive_at_predict else "features"

    @property
    def passed(self) -> bool:
        return self.gates.passed

    @property
    def choosable(self) -> bool:
        """Can the policy choose it at all: a candidate that needs the sensitive feature at
        prediction time carries the failed sensitive-attribute gate unless the policy allows it."""
        return not any(gate.gate == SENSITIVE_AT_PREDICT for gate in self.gates.results)

    def shortfall(self) -> float:
        """How far the candidate is from passing: the sum of its blocking gates' distance past
        their thresholds (0 for an undecided gate whose estimate is on the passing side; a gate
        without a value counts as 1)."""
        return sum(1.0 if gate.value is None else 0.0 if leans_to_pass(gate.value, gate.threshold, is_upper(gate.gate))
                   else abs(gate.value - gate.threshold) for gate in self.gates.blocking)

    def rows_to_decide(self) -> float:
        """How many times its rows every blocking gate needs to be decided (the sample-size
        answer's factor; inf when one never would, or has no interval)."""
        factors = [rows_factor(g.value, g.interval, g.threshold) if g.value is not None and g.interval is not None
                   else None for g in self.gates.blocking]
        return max((f if f is not None else float("inf") for f in factors), default=1.0)


# The outcome of a sweep in words a reviewer can act on (issue 25), readable by code too:
# chosen: a candidate the policy can choose passes; fails: every choosable candidate fails a gate
# with its whole interval past the limit; undecided: some choosable candidate fails none, but an
# interval straddles a limit (more rows decide it, not more search); infeasible: shown with
# numbers that no model can meet the gates on these rows; search_out_of_budget: the search after
# the grid stopped at its budget before deciding; nothing_choosable: every fitted candidate needs
# the sensitive attribute the policy forbids at prediction time (or none could be fitted).
Classification = Literal["chosen", "fails", "undecided", "infeasible", "search_out_of_budget", "nothing_choosable"]


class SearchReport(BaseModel):
    """What the search after the grid did (``SweepSpec.search``)."""

    seeds: list[str]  # the grid candidates whose bound it bisected, in order
    tried: list[str]  # the candidates it added
    fits: int
    seconds: float
    stopped: Literal["passed", "bracketed", "budget", "no_seed", "too_wide"]
    detail: str


class SweepOutcome(BaseModel):
    sweep: str
    policy: str
    evaluation: ModeDecision
    candidates: list[CandidateResult]
    skipped: list[tuple[str, str]]
    chosen: str | None
    explanation: str
    classification: Classification | None = None  # None: recorded before the field existed
    search: SearchReport | None = None

    def result(self, name: str) -> CandidateResult:
        return next(c for c in self.candidates if c.name == name)

    def closest(self, n: int = 3) -> list[CandidateResult]:
        """The choosable candidates nearest to passing: fewest blocking gates, then smallest
        shortfall past the limits, then fewest rows to decide them."""
        return sorted((c for c in self.candidates if c.choosable),
                      key=lambda c: (len(c.gates.blocking), c.shortfall(), c.rows_to_decide(), c.name))[:n]

    @property
    def selection_rows(self) -> str:
        return "out-of-fold predictions over the training pool" if self.evaluation.mode == "crossfit" else "validation split"


def pareto_mask(accuracy: np.ndarray, fairness: np.ndarray, higher_is_fairer: bool) -> np.ndarray:
    """Candidates no other candidate beats on both accuracy and the fairness metric."""
    fair = fairness if higher_is_fairer else -fairness
    mask = np.ones(len(accuracy), dtype=bool)
    for i in range(len(accuracy)):
        dominated_by = (accuracy >= accuracy[i]) & (fair >= fair[i]) & ((accuracy > accuracy[i]) | (fair > fair[i]))
        mask[i] = not dominated_by.any()
    return mask


def frontier_metrics(policy: Policy) -> list[str]:
    """The fairness metrics the policy gates, plus DPD and EOD always (their conflict is the
    trade-off a reviewer most needs to see)."""
    return [metric.name for metric in shown_group_metrics(policy.thresholds)]


def _gate(candidate: CandidateResult, gate: str) -> GateResult | None:
    return next((g for g in candidate.gates.results if g.gate == gate), None)


def _ratio_floor_note(candidate: CandidateResult, threshold: float) -> str:
    """For a ratio gate: how small a gap the ratio needs at the observed selection rates."""
    rates = candidate.validation_selection_rates
    if len(rates) < 2:
        return ""
    low, high = min(rates.values()), max(rates.values())
    return (f" At selection rates of {low:.1%} to {high:.1%}, a ratio of {threshold} needs the gap under "
            f"{(1 - threshold) * high:.2%} points (now {high - low:.2%}): at low selection rates the ratio is "
            "decided by a handful of decisions.")


def is_upper(gate: str) -> bool:
    """Does ``gate`` cap its metric from above (max and drop gates; the sensitive-attribute gate,
    value 1 against 0, too)?"""
    return GATES[gate][1].comparison in ("max", "drop") if gate in GATES else True


def _best_at(candidates: list[CandidateResult], gate: str) -> tuple[CandidateResult, GateResult] | None:
    """The candidate with the best value of ``gate`` among ``candidates`` (None: no value)."""
    valued = [(c, g) for c in candidates if (g := _gate(c, gate)) is not None and g.value is not None]
    return (min if is_upper(gate) else max)(valued, key=lambda cg: cg[1].value) if valued else None


def _never_met(choosable: list[CandidateResult], gate: str) -> str:
    """A gate no choosable candidate meets: the best value reached, and what the candidates
    meeting every other gate offer on it."""
    best = _best_at(choosable, gate)
    if best is None:
        reason = next(g.reason for c in choosable if (g := _gate(c, gate)) is not None)
        return f"No choosable candidate has a value for {gate}: {reason}."
    text = f"No choosable candidate meets {gate}: the best, `{best[0].name}`, reaches {best[1].reason}."
    if gate == "min_disparate_impact_ratio":
        text += _ratio_floor_note(best[0], best[1].threshold)
    others = [c for c in choosable if all(g.verdict in ("pass", "skipped") for g in c.gates.results if g.gate != gate)]
    offer = _best_at(others, gate)
    if offer is not None and offer[0] is not best[0]:
        text += (f" Among the {len(others)} meeting every other gate the best is `{offer[0].name}`: "
                 f"{offer[1].reason}.")
    return text


def _undecided_answer(undecided: list[CandidateResult], selection_rows: str) -> list[str]:
    """The sample-size answer over the undecided choosable candidates, with its direction: the
    rows needed to pass only for a candidate whose every undecided estimate is on the passing
    side (the one needing the fewest), and which ones more rows would most likely fail."""
    lines = [f"Undecided: {len(undecided)} choosable candidate(s) fail no gate outright but an interval on the "
             f"{selection_rows} straddles a limit; more rows decide that, not more search."]

    def leaning(candidate: CandidateResult) -> str:
        """Which way more rows would most likely take it ('unknown': a gate has no value yet)."""
        open_gates = candidate.gates.blocking
        if any(g.value is None or g.interval is None for g in open_gates):
            return "unknown"
        return "pass" if all(leans_to_pass(g.value, g.threshold, is_upper(g.gate)) for g in open_gates) else "fail"

    towards_pass = [c for c in undecided if leaning(c) == "pass"]
    towards_fail = [c for c in undecided if leaning(c) == "fail"]
    if towards_pass:
        closest = min(towards_pass, key=lambda c: (c.rows_to_decide(), c.name))
        lines.append(f"Closest to passing, `{closest.name}`: " + " ".join(closest.gates.advice))
    if towards_fail:
        example = towards_fail[0]
        gate = next(g for g in example.gates.blocking if not leans_to_pass(g.value, g.threshold, is_upper(g.gate)))
        sign = ">" if is_upper(gate.gate) else "<"
        lines.append(f"{len(towards_fail)} undecided candidate(s) would most likely fail with more rows, e.g. "
                     f"`{example.name}` (estimate {gate.value:.4f} {sign} {gate.threshold} on {gate.gate}).")
    if not towards_pass:
        lines.append("No undecided candidate has every estimate on the passing side of its limit: no rows-to-pass "
                     "answer is given.")
    return lines


def explain_no_pass(outcome: SweepOutcome, proof: str | None = None) -> tuple[Classification, str]:
    """Why no candidate the policy can choose passes, and the outcome's class. Every count and
    list ranges over the choosable candidates only; the group-aware ones the policy forbids are
    mentioned once. ``proof``: the numbers showing the gates cannot be met on these rows
    (:func:`infeasibility`), if any."""
    lines = [f"No candidate of sweep '{outcome.sweep}' passes policy '{outcome.policy}' on the {outcome.selection_rows}."]
    choosable = [c for c in outcome.candidates if c.choosable]
    forbidden = len(outcome.candidates) - len(choosable)
    if forbidden:
        lines.append(f"{forbidden} candidate(s) need the sensitive attribute at prediction time; the policy forbids "
                     "them (allow_sensitive_at_predict: false): they are drawn on the frontier for comparison and "
                     "counted nowhere below.")
    if not choosable:
        why = "; ".join(f"{name}: {reason}" for name, reason in outcome.skipped)
        lines.append("No fitted candidate is one the policy can choose" + (f"; skipped or failed: {why}" if why else "."))
        return "nothing_choosable", "\n".join(lines)
    undecided = [c for c in choosable if not any(g.verdict == "fail" for g in c.gates.blocking)]
    if proof is not None:
        classification: Classification = "infeasible"
        lines.append(proof)
    elif outcome.search is not None and outcome.search.stopped == "budget":
        classification = "search_out_of_budget"
    else:
        classification = "undecided" if undecided else "fails"
    if outcome.search is not None:
        lines.append(outcome.search.detail)
    if undecided:
        lines += _undecided_answer(undecided, outcome.selection_rows)
    else:
        lines.append(f"Fails: each of the {len(choosable)} choosable candidate(s) fails a gate with its whole "
                     "interval past the limit.")
        met_by = {g.gate: 0 for g in choosable[0].gates.results}
        for candidate in choosable:
            for gate in candidate.gates.results:
                met_by[gate.gate] += gate.verdict in ("pass", "skipped")
        never = [gate for gate, count in met_by.items() if count == 0]
        lines += [_never_met(choosable, gate) for gate in never]
        if not never:
            counts = ", ".join(f"{gate} by {count}" for gate, count in met_by.items())
            lines.append(f"Each gate is met by some choosable candidate ({counts} of {len(choosable)}), none meets all "
                         "at once: on this data these candidates trade one gate for another.")
        if classification == "fails":
            lines.append("Widen the sweep (bounds, templates, a search budget) or revisit the policy.")
    lines.append("Closest choosable candidates:")
    for candidate in outcome.closest():
        lines.append(f"- `{candidate.name}`: " + "; ".join(candidate.gates.failures))
    return classification, "\n".join(lines)


def accuracy_ceiling(base_rates: dict[str, float], shares: dict[str, float], gate: str, threshold: float) -> float:
    """The highest accuracy any model, group-blind or not, can have on rows with these groups'
    base rates and row shares while its selection rates meet ``gate`` (DPD at most ``threshold``:
    every rate within some band [c, c + t]; disparate-impact ratio at least r: within [r c, c]).
    In a group with base rate p, a selection rate s misclassifies at least |s - p| of its rows,
    so the cheapest band costs sum(share x distance of p to the band). That cost is convex and
    piecewise linear in c: its minimum is where an end of the band meets a base rate."""
    if gate == "max_demographic_parity_difference":
        band = lambda c: (c, c + threshold)  # noqa: E731
        ends = [e for p in base_rates.values() for e in (p, p - threshold)]
    else:
        band = lambda c: (threshold * c, c)  # noqa: E731
        ends = [e for p in base_rates.values() for e in (p, p / threshold if threshold > 0 else 1.0)]

    def cost(c: float) -> float:
        low, high = band(c)
        return sum(shares[g] * max(0.0, low - p, p - high) for g, p in base_rates.items())

    return 1.0 - min(cost(min(max(c, 0.0), 1.0)) for c in ends)


def infeasibility(policy: Policy, baseline: Evaluation) -> str | None:
    """The numbers showing that no model can pass this policy on the selection rows, if they do:
    the base rates force a parity gate's price in errors above what the accuracy floor allows
    (``baseline``: the unconstrained reference on the selection rows). None when they do not
    (which proves nothing either way)."""
    thresholds = policy.thresholds
    floors = []
    if thresholds.max_accuracy_drop_vs_baseline is not None:
        floors.append((baseline.metrics["accuracy"] - thresholds.max_accuracy_drop_vs_baseline,
                       f"the baseline's accuracy {baseline.metrics['accuracy']:.4f} less max_accuracy_drop_vs_baseline "
                       f"{thresholds.max_accuracy_drop_vs_baseline}"))
    if thresholds.min_accuracy_lift_over_majority is not None:
        majority = baseline.metrics["majority_class_accuracy"]
        floors.append((majority + thresholds.min_accuracy_lift_over_majority,
                       f"the majority-class accuracy {majority:.4f} plus min_accuracy_lift_over_majority "
                       f"{thresholds.min_accuracy_lift_over_majority}"))
    counted = {g: m for g, m in baseline.by_group.items() if m.get("counted_selection_rate", 1.0) and m["count"] > 0}
    if not floors or len(counted) < 2:
        return None
    floor, floor_text = max(floors)
    rows = sum(m["count"] for m in baseline.by_group.values())
    base_rates = {g: m["positives"] / m["count"] for g, m in counted.items()}
    shares = {g: m["count"] / rows for g, m in counted.items()}
    for gate, label, op in (("max_demographic_parity_difference", "DPD", "<="),
                            ("min_disparate_impact_ratio", "disparate-impact ratio", ">=")):
        threshold = getattr(thresholds, gate)
        if threshold is None:
            continue
        ceiling = accuracy_ceiling(base_rates, shares, gate, threshold)
        if ceiling < floor:
            rates = ", ".join(f"'{g}' {p:.3f}" for g, p in sorted(base_rates.items(), key=lambda kv: kv[1]))
            return (f"Infeasible on these rows: with base rates {rates} (row shares "
                    + ", ".join(f"{shares[g]:.0%}" for g in sorted(base_rates, key=base_rates.get))
                    + f"), any model with {label} {op} {threshold}, group-blind or not, misclassifies at least "
                    f"{1 - ceiling:.1%} of the rows (a group's selection rate s errs on at least |s - base rate| of "
                    f"its rows), so its accuracy is at most {ceiling:.4f}; {floor_text} asks for at least {floor:.4f}. "
                    f"No candidate can meet both {gate} and the accuracy floor.")
    return None


@dataclass
class Scored:
    """A reference model's figures for a sweep: selection rows (gated, so its predictions are
    kept for the paired bootstrap) and test (reported)."""

    selection: Evaluation | None
    selection_predictions: Predictions | None
    test: Evaluation


def score_reference(model: FairModel, data: SweepData, sensitive: str, policy: Policy, *, selection: bool) -> Scored:
    test = score_all({"m": predict(model, data.test)}, data.test, sensitive, policy)["m"]
    if not selection:
        return Scored(None, None, test)
    predictions = predict(model, data.selection)
    return Scored(score_all({"m": predictions}, data.selection, sensitive, policy)["m"], predictions, test)


CHAMPION_IN_SAMPLE = ("in crossfit mode the champion would be scored in-sample on the pool it was trained on; "
                      "it is compared on the test split only")


def select(
    sweep: SweepSpec,
    policy: Policy,
    data: SweepData,
    sensitive: str,
    candidates: list[SweepCandidate],
    skipped: list[SkippedCandidate],
    fitted: dict[str, FittedCandidate],
    references: dict[str, Scored],
    search: SearchReport | None = None,
) -> SweepOutcome:
    """Gate every fitted candidate on the selection rows against the ``references`` ('baseline'
    and, if any, 'champion') with paired bootstrap intervals, and pick the most accurate that
    passes (a candidate that needs the sensitive feature at prediction time only where the
    policy allows it); ties go to the earlier candidate in the sweep file. Pareto flags use test
    figures. ``search``: what the search after the grid did (its candidates are among ``candidates``)."""
    failed = [(c.name, fitted[c.name].error if fitted[c.name].timed_out else f"could not be fitted: {fitted[c.name].error}")
              for c in candidates if fitted[c.name].error]
    runnable = [c for c in candidates if not fitted[c.name].error]
    usable_references = {name: s for name, s in references.items() if s.selection is not None}
    predictions = {c.name: fitted[c.name].selection for c in runnable} | {
        name: s.selection_predictions for name, s in usable_references.items()}
    points = score_all({c.name: fitted[c.name].selection for c in runnable}, data.selection, sensitive, policy)
    points |= {name: s.selection for name, s in usable_references.items()}
    scored = with_intervals(points, predictions, data.selection, sensitive, policy, challengers=tuple(c.name for c in runnable))
    reference_scored = {name: scored[name] for name in usable_references}
    unavailable = {name: CHAMPION_IN_SAMPLE for name, s in references.items() if s.selection is None}
    results = []
    for candidate in runnable:
        fit, template = fitted[candidate.name], candidate.template
        gates = apply_gates(policy, {"candidate": scored[candidate.name], **reference_scored},
                            needs_sensitive_at_predict=template.needs_sensitive_at_predict,
                            evaluation_mode=data.mode.mode, unavailable=unavailable)
        results.append(CandidateResult(
            name=candidate.name, recipe=candidate.recipe.name, template=template.name, method=template.method,
            constraint=template.constraint, bound=template.bound,
            learner=template.learner_label if data.frozen is None else FROZEN_LEARNER,
            needs_sensitive_at_predict=template.needs_sensitive_at_predict, fit_seconds=fit.fit_seconds,
            crossfit_seconds=fit.crossfit_seconds, synthetic_rows=fit.augment.synthetic_rows,
            validation=scored[candidate.name].metrics,
            validation_selection_rates={g: m["selection_rate"] for g, m in scored[candidate.name].by_group.items()
                                        if m["counted_selection_rate"]},
            test=score_all({"m": fit.test}, data.test, sensitive, policy)["m"].metrics, gates=gates,
            searched=candidate.searched,
        ))
    if results:
        accuracy = np.array([r.test["accuracy"] for r in results])
        on_front = np.zeros(len(results), dtype=bool)
        for metric in frontier_metrics(policy):
            values = np.array([r.test[metric] for r in results])
            usable = ~np.isnan(values)
            on_front[usable] |= pareto_mask(accuracy[usable], values[usable], FRONTIER_METRICS[metric])
        results = [r.model_copy(update={"pareto": bool(front)}) for r, front in zip(results, on_front, strict=True)]
    passing = [r for r in results if r.passed]
    outcome = SweepOutcome(
        sweep=sweep.name, policy=policy.name, evaluation=data.mode, candidates=results,
        skipped=[(s.name, s.reason) for s in skipped] + failed, chosen=None, explanation="", search=search,
    )
    if not passing:
        classification, explanation = explain_no_pass(outcome, infeasibility(policy, reference_scored["baseline"]))
        return outcome.model_copy(update={"classification": classification, "explanation": explanation})
    best = max(passing, key=lambda r: r.validation["accuracy"])  # max keeps the first of equals
    explanation = (
        f"`{best.name}` is the most accurate of {len(passing)} candidate(s) passing policy '{policy.name}' on the "
        f"{outcome.selection_rows} (accuracy {best.validation['accuracy']:.4f}; {len(results)} fitted, "
        f"{len(outcome.skipped)} skipped or failed). Evaluation: {data.mode.reason}."
        + (f" {search.detail}" if search is not None else "")
    )
    return outcome.model_copy(update={"chosen": best.name, "classification": "chosen", "explanation": explanation})


def baseline_candidate(sweep: SweepSpec) -> SweepCandidate:
    """The unconstrained reference every candidate is gated against (fitted with the candidates)."""
    return SweepCandidate(NO_RECIPE, "", baseline_template(load_constraint_template(sweep.baseline)), sweep.baseline)


# Measured on generated data (3 and 4 groups, HistGradientBoosting, grid_size 15, bound 0.01):
# Fairlearn's GridSearch returned exactly the unconstrained model's decisions on every test row,
# every time (its grid is spread over one Lagrange multiplier per group and side, and the few
# points of a 15-point grid that leave zero never win); with two groups it does move. Fitting it
# there costs a reduction's time for a copy of the baseline.
def collapsing_grid_searches(candidates: list[SweepCandidate], data: SweepData,
                             sensitive: str) -> tuple[list[SweepCandidate], list[SkippedCandidate]]:
    """``candidates`` without the GridSearch ones when the sensitive feature (or intersection)
    has more than two groups on the fit rows, and those as skipped, with why."""
    groups = data.fit.groups[sensitive].astype(str).nunique()
    if groups <= 2:
        return candidates, []
    dropped = [c for c in candidates if c.template.method == "grid_search"]
    reason = (f"GridSearch returns the unconstrained model on more than two groups ({groups} here): left out "
              "(ExponentiatedGradient does not collapse there)")
    return [c for c in candidates if c not in dropped], [SkippedCandidate(c.name, reason) for c in dropped]


MIN_BOUND, MAX_BOUND = 0.001, 0.5  # the search's range of a reduction's bound
BRACKET_RATIO = 1.25  # a passing bound between two this close would be a coin toss of the fit, not a finding


def _fair(result: CandidateResult) -> bool:
    """Does the candidate meet every between-group gate (so a tighter bound cannot help it)?"""
    return all(g.verdict in ("pass", "skipped") for g in result.gates.results if METRIC_BY_NAME[g.metric].between_groups)


def _too_wide(result: CandidateResult) -> GateResult | None:
    """A between-group gate the candidate does not pass whose interval reaches further towards
    its limit than the room between the limit and the metric's best value (0 for a gap, 1 for a
    ratio or a rate): even a perfect estimate would leave the interval across the limit, so no
    bound can pass it on these rows (measured on German, 140 validation rows: DPD intervals
    reaching 0.19 above their estimates against a 0.05 limit; five searched bounds, 200 s, none
    passed)."""
    for gate in result.gates.results:
        if METRIC_BY_NAME[gate.metric].between_groups and gate.verdict != "pass" and gate.interval is not None:
            upper = is_upper(gate.gate)
            reach = gate.interval[1] - gate.value if upper else gate.value - gate.interval[0]
            if reach > (gate.threshold if upper else 1 - gate.threshold):
                return gate
    return None


def _next_bound(tight: float | None, loose: float | None) -> float | None:
    """The next bound to try: halve a bound that is not fair enough, double one that is fair
    but fails another gate, else the geometric middle (3 significant digits); None when the
    bracket is closed or the range is left."""
    if tight is not None and loose is not None:
        if loose / tight < BRACKET_RATIO:
            return None
        bound = (tight * loose) ** 0.5
    else:
        bound = loose / 2 if tight is None else tight * 2
    bound = float(f"{bound:.3g}")
    return bound if MIN_BOUND <= bound <= MAX_BOUND else None


def search_after_grid(
    sweep: SweepSpec, policy: Policy, data: SweepData, sensitive: str, seed: int, grid: SweepOutcome,
    candidates: list[SweepCandidate], fitted: dict[str, FittedCandidate], references: dict[str, Scored],
    fit_all: FitAll,
) -> tuple[list[SweepCandidate], SearchReport]:
    """Refine the grid when no choosable candidate passes: bisect the bound of each choosable
    candidate that has one (most accurate first) between a bound that is not fair enough and
    one that is fair but fails another gate, until a candidate passes, every bisection closes,
    or ``sweep.search``'s budget runs out. Adds every fitted candidate to ``fitted``; returns
    them and what the search did."""
    budget = sweep.search
    started, last_step, fits = time.perf_counter(), 0.0, 0
    by_name = {c.name: c for c in candidates}
    results = {c.name: c for c in grid.candidates}
    boundable = [r for r in sorted(grid.candidates, key=lambda r: -r.validation["accuracy"])
                 if r.choosable and by_name[r.name].template.takes_bound and r.bound is not None]
    seeds = [by_name[r.name] for r in boundable if _too_wide(r) is None]
    tried: list[SweepCandidate] = []
    stopped = "bracketed" if seeds else "too_wide" if boundable else "no_seed"
    for origin in seeds:
        result = results[origin.name]
        tight, loose = (origin.template.bound, None) if _fair(result) else (None, origin.template.bound)
        while stopped != "passed" and (bound := _next_bound(tight, loose)) is not None:
            template = origin.template.model_copy(update={
                "bound": bound, "description": f"{origin.template.description.strip()} [bound {bound:g} found by the "
                                               f"search of sweep '{sweep.name}' v{sweep.version}]"})
            candidate = SweepCandidate(origin.recipe, origin.recipe_path, template, origin.template_path,
                                       bound_overridden=True, searched=True)
            if candidate.name not in results:
                jobs = sweep_jobs({candidate.name: candidate}, data, sweep.candidate_timeout_seconds, sweep.reduction_rows)
                if fits + len(jobs) > budget.max_extra_fits or time.perf_counter() - started + last_step > budget.max_seconds:
                    stopped = "budget"
                    break
                step = time.perf_counter()
                fitted |= assemble(jobs, fit_all(jobs, data, sensitive, seed), data)
                fits, last_step = fits + len(jobs), time.perf_counter() - step
                tried.append(candidate)
                if fitted[candidate.name].error:  # e.g. timed out: this template's bisection ends here
                    break
                results |= {candidate.name: select(sweep, policy, data, sensitive, [candidate], [], fitted,
                                                   references).candidates[0]}
            result = results[candidate.name]
            if result.passed:
                stopped = "passed"
            elif _fair(result):
                tight = bound
            else:
                loose = bound
        if stopped in ("passed", "budget"):
            break
    seconds = time.perf_counter() - started
    spent = f"{len(tried)} extra candidate(s), {fits} fits, {seconds:.0f} s"
    names = ", ".join(f"`{c.name}`" for c in seeds)
    wide = next(((r, g) for r in boundable if (g := _too_wide(r)) is not None), None)
    detail = {
        "no_seed": "The search after the grid had nothing to refine: no choosable candidate has a bound.",
        "too_wide": "The search after the grid did not run: " + (
            f"`{wide[0].name}`'s {wide[1].metric} interval [{wide[1].interval[0]:.4f}, {wide[1].interval[1]:.4f}] "
            f"reaches further from its estimate {wide[1].value:.4f} than the limit {wide[1].threshold} leaves room "
            "for even a perfect estimate, so no bound can pass it on these rows (nor those of the other choosable "
            "candidates with a bound); more rows decide it." if wide else ""),
        "passed": f"The search after the grid bisected the bound of {names} ({spent}): "
                  f"`{tried[-1].name if tried else ''}` passes.",
        "bracketed": f"The search after the grid bisected the bound of {names} ({spent}) and found no passing bound: "
                     f"each bisection closed between a bound that fails a between-group gate and one that meets them "
                     f"but fails another gate (or reached the {MIN_BOUND:g}-{MAX_BOUND:g} range).",
        "budget": f"The search after the grid ran out of its budget (max_extra_fits {budget.max_extra_fits}, "
                  f"max_seconds {budget.max_seconds:g}) bisecting the bound of {names} ({spent}) before any candidate "
                  "passed or the bisection closed: the outcome is open; a larger budget may decide it.",
    }[stopped]
    return tried, SearchReport(seeds=[c.name for c in seeds], tried=[c.name for c in tried], fits=fits,
                               seconds=round(seconds, 1), stopped=stopped, detail=detail)


@dataclass
class SweepRun:
    outcome: SweepOutcome
    candidates: list[SweepCandidate]
    fitted: dict[str, FittedCandidate]
    baseline: FittedCandidate
    references: dict[str, Scored]  # baseline and, if any, champion

    def reference_test_metrics(self) -> dict[str, dict[str, float]]:
        return {name: scored.test.metrics for name, scored in self.references.items()}

    @property
    def chosen(self) -> tuple[SweepCandidate, FittedCandidate] | None:
        for candidate in self.candidates:
            if candidate.name == self.outcome.chosen:
                return candidate, self.fitted[candidate.name]
        return None


def run_sweep(
    sweep: SweepSpec, splits: Splits, sensitive: str, seed: int, policy: Policy, mode: ModeDecision,
    champion: FairModel | None = None, fit_all: FitAll = fit_serially, frozen: FrozenModel | None = None,
) -> SweepRun:
    """Fit the baseline and every candidate (``fit_all`` decides where: the flow passes a
    Prefect process pool), K + 1 times each in crossfit mode, then gate and select; GridSearch is
    left out where it collapses (:func:`collapsing_grid_searches`). When no choosable candidate
    passes and the sweep has a ``search`` budget, the search refines the grid
    (:func:`search_after_grid`) before the final selection. With a ``frozen`` model the
    candidates post-process it and the baseline is the model itself."""
    candidates, skipped = expand_candidates(sweep)
    data = SweepData.of(splits, mode, sensitive, seed, frozen)
    candidates, collapsed = collapsing_grid_searches(candidates, data, sensitive)
    skipped = skipped + collapsed
    jobs = sweep_jobs({BASELINE: baseline_candidate(sweep)} | {c.name: c for c in candidates}, data,
                      sweep.candidate_timeout_seconds, sweep.reduction_rows)
    fitted = assemble(jobs, fit_all(jobs, data, sensitive, seed), data)
    baseline = fitted.pop(BASELINE)
    if baseline.error:
        raise BadInputError(f"the sweep's baseline '{sweep.baseline}' cannot be fitted on these rows: {baseline.error}")
    baseline_test = score_all({"m": baseline.test}, data.test, sensitive, policy)["m"]
    references = {"baseline": Scored(
        score_all({"m": baseline.selection}, data.selection, sensitive, policy)["m"], baseline.selection, baseline_test)}
    if champion is not None:
        references["champion"] = score_reference(champion, data, sensitive, policy, selection=mode.mode == "holdout")
    outcome = select(sweep, policy, data, sensitive, candidates, skipped, fitted, references)
    if sweep.search is not None and outcome.classification in ("fails", "undecided"):  # infeasible: proven already
        extra, report = search_after_grid(sweep, policy, data, sensitive, seed, outcome, candidates, fitted, references,
                                          fit_all)
        candidates = candidates + extra
        outcome = select(sweep, policy, data, sensitive, candidates, skipped, fitted, references, report)
    return SweepRun(outcome=outcome, candidates=candidates, fitted=fitted, baseline=baseline, references=references)


def write_chosen_template(candidate: SweepCandidate, directory: Path) -> Path:
    """The chosen template as a file (``RunParams.constraint`` of the promoted run): a swept
    bound makes it differ from the file it came from."""
    if not candidate.bound_overridden:
        return Path(candidate.template_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{candidate.template.name}-bound-{candidate.template.bound:g}.yaml"
    path.write_text(candidate.template_yaml(), encoding="utf-8")
    return path
