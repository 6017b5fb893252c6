"""Candidate sweeps (``constraints/sweeps/*.yaml``): recipes x constraint templates x bounds.

Every candidate is fitted on the training split (by the same ``fit_candidate`` a single run
uses, so the chosen one is reproducible from its recipe and template files alone), scored on
the validation split carved from the training pool, and gated there under the run's policy.
Selection takes the most accurate candidate that passes every gate; the test split only gives
the final figures. Fitting is the CPU-bound part: the flow runs :func:`fit_sweep_candidate`
in a process pool, everything else here is cheap and runs in the flow's process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import yaml
from pydantic import BaseModel, Field

from fairloop.constraints import (
    ConstraintTemplate,
    fit_candidate,
    load_constraint_template,
)
from fairloop.datasets import Split, Splits
from fairloop.errors import BadInputError
from fairloop.evaluate import Evaluation, predict, score_predictions
from fairloop.model import FairModel
from fairloop.pipeline import baseline_template, scoring_options, with_intervals
from fairloop.policy import GATES, GateReport, Policy, apply_gates
from fairloop.recipes import NO_RECIPE, AugmentReport, Recipe, apply_recipe, load_recipe
from fairloop.specfile import SpecModel, VersionedSpec, load_spec

# The fairness metrics a frontier can plot, and whether higher is fairer.
FRONTIER_METRICS = {
    "demographic_parity_difference": False,
    "equalized_odds_difference": False,
    "disparate_impact_ratio": True,
    "min_group_true_positive_rate": True,
}


class SweptTemplate(SpecModel):
    template: str = Field(description="constraint template file")
    bounds: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        [], description="the template once per bound (overriding its own); empty: its own bound"
    )
    recipes: list[str] | None = Field(
        None, description="only with these of the sweep's recipes (default: all); keeps costly reductions off some"
    )


class SweepSpec(VersionedSpec):
    """A sweep file. Paths are relative to the directory fairloop runs in (the project root),
    like the ``--recipe`` / ``--constraint`` options."""

    recipes: list[str] = Field(min_length=1, description="recipe files")
    constraints: list[str | SweptTemplate] = Field(
        min_length=1, description="template files, or {template: FILE, bounds: [...]} to sweep its bound"
    )
    baseline: str = Field("constraints/unconstrained.yaml", description="template whose learner, unconstrained, is the baseline")
    workers: int | None = Field(None, ge=1, description="processes fitting candidates; default: one per core")


def load_sweep(path) -> SweepSpec:
    """Read a sweep file and check it expands: every recipe and template it names loads, and the
    combinations make sense. Errors name the sweep file first."""
    sweep = load_spec(path, SweepSpec)
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

    @property
    def name(self) -> str:
        bound = f"@{self.template.bound:g}" if self.template.bound is not None else ""
        return f"{self.recipe.name}+{self.template.name}{bound}"

    @property
    def is_reduction(self) -> bool:
        return self.template.method in ("exponentiated_gradient", "grid_search")

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
    itself), so those pairs are skipped, not failed.
    """
    recipes = [(path, load_recipe(path)) for path in sweep.recipes]
    entries = [entry if isinstance(entry, SweptTemplate) else SweptTemplate(template=entry) for entry in sweep.constraints]
    templates = [(entry, load_constraint_template(entry.template)) for entry in entries]
    for entry, template in templates:
        if entry.bounds and template.constraint is None:
            raise BadInputError(f"template '{entry.template}' has no constraint, so no bound to sweep", field="constraints")
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
                if recipe.produces_weights and candidate.is_reduction:
                    skipped.append(SkippedCandidate(candidate.name, "a weighting recipe cannot feed a reduction"))
                else:
                    candidates.append(candidate)
    names = [c.name for c in candidates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInputError(f"the sweep lists the same candidate more than once: {duplicates}", field="recipes/constraints")
    return candidates, skipped


@dataclass
class Scored:
    """A model's figures for a sweep: validation (gated, so its predictions are kept for the
    paired bootstrap) and test (reported)."""

    validation: Evaluation
    validation_predictions: tuple[np.ndarray, np.ndarray]  # decisions, scores
    test: Evaluation


def score_model(model: FairModel, splits: Splits, sensitive: str, policy: Policy) -> Scored:
    validation = predict(model, splits.validation)
    options = scoring_options(policy)
    return Scored(
        validation=score_predictions(splits.validation, sensitive, *validation, **options),
        validation_predictions=validation,
        test=score_predictions(splits.test, sensitive, *predict(model, splits.test), **options),
    )


@dataclass
class FittedCandidate:
    model: FairModel
    fit_seconds: float
    augment: AugmentReport
    scored: Scored


def fit_sweep_candidate(candidate: SweepCandidate, splits: Splits, sensitive: str, seed: int, policy: Policy) -> FittedCandidate:
    """Augment the training split with the candidate's recipe, fit its template, score it on
    validation and test: one worker process's share of a sweep."""
    augmented, report = apply_recipe(splits.train, candidate.recipe, sensitive, seed)
    model, fit_seconds = fit_candidate(augmented, candidate.template, sensitive, seed)
    return FittedCandidate(model=model, fit_seconds=fit_seconds, augment=report, scored=score_model(model, splits, sensitive, policy))


FitAll = Callable[[list[SweepCandidate], Splits, str, int, Policy], list[FittedCandidate]]


def fit_in_processes(workers: int | None, on_fitted: Callable[[int, int], None] | None = None) -> FitAll:
    """A :data:`FitAll` that fits each job as a Prefect task in Prefect's process pool (the
    work is CPU-bound), one thread per worker so the pool uses ``workers`` cores (default: all).
    ``on_fitted(k, n)`` is called as each fit finishes (progress for the CLI and the UI)."""
    from prefect import task
    from prefect.futures import as_completed
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ProcessPoolTaskRunner

    fit_task = task(fit_sweep_candidate, name="fit-candidate", cache_policy=NO_CACHE)

    def fit_all(jobs, splits, sensitive, seed, policy):
        count = min(workers or os.cpu_count() or 1, len(jobs))
        # Longest first: a reduction refits its learner dozens of times; started last, it would
        # leave the other workers idle at the end.
        order = sorted(range(len(jobs)), key=lambda i: not jobs[i].is_reduction)
        with ProcessPoolTaskRunner(max_workers=count, initializer=limit_to_one_thread) as runner:
            futures = {
                i: runner.submit(fit_task.with_options(task_run_name=f"fit-{jobs[i].name}"),
                                 {"candidate": jobs[i], "splits": splits, "sensitive": sensitive, "seed": seed, "policy": policy})
                for i in order
            }
            position = {future.task_run_id: i for i, future in futures.items()}
            results = {}
            for done, future in enumerate(as_completed(list(futures.values())), start=1):
                results[position[future.task_run_id]] = future.result()
                if on_fitted is not None:
                    on_fitted(done, len(jobs))
            return [results[i] for i in range(len(jobs))]

    return fit_all


def limit_to_one_thread() -> None:
    """Process-pool initializer: each worker fits with one thread, so N workers use N cores
    instead of fighting over them (HistGradientBoosting would take every core in every worker)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


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
    synthetic_rows: int
    validation: dict[str, float]
    test: dict[str, float]
    gates: GateReport  # on validation: what selection used
    pareto: bool = False

    @property
    def passed(self) -> bool:
        return self.gates.passed

    def shortfall(self) -> float:
        """How far the candidate is from passing: the sum of its blocking gates' distance to
        their thresholds (a NaN metric counts as 1)."""
        total = 0.0
        for gate in self.gates.blocking:
            value = gate.value if gate.value is not None and gate.value == gate.value else None
            total += 1.0 if value is None else abs(value - gate.threshold)
        return total


class SweepOutcome(BaseModel):
    sweep: str
    policy: str
    candidates: list[CandidateResult]
    skipped: list[tuple[str, str]]
    chosen: str | None
    explanation: str

    def result(self, name: str) -> CandidateResult:
        return next(c for c in self.candidates if c.name == name)

    def closest(self, n: int = 3) -> list[CandidateResult]:
        """The candidates nearest to passing: fewest blocking gates, then smallest shortfall."""
        return sorted(self.candidates, key=lambda c: (len(c.gates.blocking), c.shortfall(), c.name))[:n]


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
    gated = [GATES[gate][0] for gate, threshold in policy.thresholds.model_dump().items() if threshold is not None]
    fairness = [metric for metric in gated if metric in FRONTIER_METRICS]
    return list(dict.fromkeys([*fairness, "demographic_parity_difference", "equalized_odds_difference"]))


def explain_no_pass(outcome: SweepOutcome) -> str:
    """Why no candidate passes: the closest ones and what each misses, and whether the gates
    conflict (each met by some candidate, never all by one)."""
    lines = [f"No candidate of sweep '{outcome.sweep}' passes policy '{outcome.policy}' on the validation split."]
    met_by: dict[str, int] = {}
    for candidate in outcome.candidates:
        for gate in candidate.gates.results:
            met_by[gate.gate] = met_by.get(gate.gate, 0) + (gate.verdict in ("pass", "skipped"))
    never = [gate for gate, count in met_by.items() if count == 0]
    if never:
        lines.append(f"No candidate meets {', '.join(never)}: widen the sweep (bounds, templates) or revisit the policy.")
    else:
        counts = ", ".join(f"{gate} by {count}" for gate, count in met_by.items())
        lines.append(
            f"Every gate is met by some candidate ({counts} of {len(outcome.candidates)}), but none meets all "
            "at once: on this data the gates conflict, so the policy is infeasible for these candidates."
        )
    lines.append("Closest candidates:")
    for candidate in outcome.closest():
        lines.append(f"- `{candidate.name}`: " + "; ".join(candidate.gates.failures))
    return "\n".join(lines)


def select(
    sweep: SweepSpec,
    policy: Policy,
    validation_split: Split,
    sensitive: str,
    candidates: list[SweepCandidate],
    skipped: list[SkippedCandidate],
    fitted: list[FittedCandidate],
    references: dict[str, Scored],
) -> SweepOutcome:
    """Gate every candidate on validation against the ``references`` ('baseline' and, if any,
    'champion') with paired bootstrap intervals, and pick the most accurate that passes; ties
    go to the earlier candidate in the sweep file. The Pareto flags use test figures."""
    scored = {c.name: f.scored for c, f in zip(candidates, fitted, strict=True)} | references
    validation = with_intervals(
        {name: s.validation for name, s in scored.items()}, {name: s.validation_predictions for name, s in scored.items()},
        validation_split, sensitive, policy, challengers=tuple(c.name for c in candidates),
    )
    reference_validation = {name: validation[name] for name in references}
    results = []
    for candidate, fit in zip(candidates, fitted, strict=True):
        gates = apply_gates(policy, {"candidate": validation[candidate.name], **reference_validation})
        template = candidate.template
        results.append(CandidateResult(
            name=candidate.name, recipe=candidate.recipe.name, template=template.name, method=template.method,
            constraint=template.constraint, bound=template.bound, learner=template.learner,
            needs_sensitive_at_predict=template.needs_sensitive_at_predict, fit_seconds=fit.fit_seconds,
            synthetic_rows=fit.augment.synthetic_rows, validation=validation[candidate.name].metrics,
            test=fit.scored.test.metrics, gates=gates,
        ))
    accuracy = np.array([r.test["accuracy"] for r in results])
    on_front = np.zeros(len(results), dtype=bool)
    for metric in frontier_metrics(policy):
        values = np.array([r.test[metric] for r in results])
        usable = ~np.isnan(values)
        on_front[usable] |= pareto_mask(accuracy[usable], values[usable], FRONTIER_METRICS[metric])
    results = [r.model_copy(update={"pareto": bool(front)}) for r, front in zip(results, on_front, strict=True)]
    passing = [r for r in results if r.passed]
    outcome = SweepOutcome(
        sweep=sweep.name, policy=policy.name, candidates=results,
        skipped=[(s.name, s.reason) for s in skipped], chosen=None, explanation="",
    )
    if not passing:
        return outcome.model_copy(update={"explanation": explain_no_pass(outcome)})
    best = max(passing, key=lambda r: r.validation["accuracy"])  # max keeps the first of equals
    explanation = (
        f"`{best.name}` is the most accurate of {len(passing)} candidate(s) passing policy '{policy.name}' on "
        f"validation (accuracy {best.validation['accuracy']:.4f}; {len(results)} fitted, {len(skipped)} skipped)."
    )
    return outcome.model_copy(update={"chosen": best.name, "explanation": explanation})


def baseline_candidate(sweep: SweepSpec) -> SweepCandidate:
    """The unconstrained reference every candidate is gated against (fitted with the candidates)."""
    return SweepCandidate(NO_RECIPE, "", baseline_template(load_constraint_template(sweep.baseline)), sweep.baseline)


def fit_serially(jobs: list[SweepCandidate], splits: Splits, sensitive: str, seed: int, policy: Policy) -> list[FittedCandidate]:
    return [fit_sweep_candidate(job, splits, sensitive, seed, policy) for job in jobs]


@dataclass
class SweepRun:
    outcome: SweepOutcome
    candidates: list[SweepCandidate]
    fitted: list[FittedCandidate]
    baseline: FittedCandidate
    references: dict[str, Scored]  # baseline and, if any, champion

    def reference_test_metrics(self) -> dict[str, dict[str, float]]:
        return {name: scored.test.metrics for name, scored in self.references.items()}

    @property
    def chosen(self) -> tuple[SweepCandidate, FittedCandidate] | None:
        for candidate, fitted in zip(self.candidates, self.fitted, strict=True):
            if candidate.name == self.outcome.chosen:
                return candidate, fitted
        return None


def run_sweep(
    sweep: SweepSpec, splits: Splits, sensitive: str, seed: int, policy: Policy,
    champion: FairModel | None = None, fit_all: FitAll = fit_serially,
) -> SweepRun:
    """Fit the baseline and every candidate (``fit_all`` decides where: the flow passes a
    Prefect process pool), then gate and select on validation."""
    candidates, skipped = expand_candidates(sweep)
    baseline, *fitted = fit_all([baseline_candidate(sweep), *candidates], splits, sensitive, seed, policy)
    references = {"baseline": baseline.scored}
    if champion is not None:
        references["champion"] = score_model(champion, splits, sensitive, policy)
    outcome = select(sweep, policy, splits.validation, sensitive, candidates, skipped, fitted, references)
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
