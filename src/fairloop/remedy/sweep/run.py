"""A sweep from end to end: enumerate, fit, select, search after the grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fairloop.data.splits import Splits
from fairloop.errors import BadInputError
from fairloop.gates.policy import Policy
from fairloop.pipeline import score_all
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.fit_progress import SEARCHING, SELECTING
from fairloop.remedy.frozen import FrozenModel
from fairloop.remedy.model import FairModel
from fairloop.remedy.sweep.jobs import (
    BASELINE,
    FitAll,
    FittedCandidate,
    SweepData,
    assemble,
    fit_serially,
    sweep_jobs,
)
from fairloop.remedy.sweep.results import SweepOutcome
from fairloop.remedy.sweep.search import search_after_grid
from fairloop.remedy.sweep.select import (
    Scored,
    collapsing_grid_searches,
    score_reference,
    select,
)
from fairloop.remedy.sweep.spec import (
    SweepCandidate,
    SweepSpec,
    baseline_candidate,
    expand_candidates,
)


def _no_report(step: str) -> None:
    """The default ``on_step``: a sweep outside a flow reports nothing."""


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
    on_step: Callable[[str], None] = _no_report,
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
    on_step(SELECTING)
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
        on_step(SEARCHING)
        extra, report = search_after_grid(sweep, policy, data, sensitive, seed, outcome, candidates, fitted, references,
                                          fit_all)
        candidates = candidates + extra
        on_step(SELECTING)  # every candidate gated again, the searched ones with them
        outcome = select(sweep, policy, data, sensitive, candidates, skipped, fitted, references, report)
    return SweepRun(outcome=outcome, candidates=candidates, fitted=fitted, baseline=baseline, references=references)
