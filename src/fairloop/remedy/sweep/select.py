"""Selecting under the policy: scoring the fitted candidates and the references, choosing the most
accurate candidate that passes every gate, and dropping grid searches that would copy the baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairloop.gates.evaluate import Evaluation, predict
from fairloop.gates.policy import (
    Policy,
    apply_gates,
)
from fairloop.pipeline import score_all, with_intervals
from fairloop.remedy.frozen import FROZEN_LEARNER
from fairloop.remedy.model import FairModel, Predictions
from fairloop.remedy.sweep.explain import explain_no_pass, infeasibility
from fairloop.remedy.sweep.jobs import FittedCandidate, SweepData
from fairloop.remedy.sweep.results import (
    FRONTIER_METRICS,
    CandidateResult,
    SearchReport,
    SweepOutcome,
    frontier_metrics,
    pareto_mask,
)
from fairloop.remedy.sweep.spec import SkippedCandidate, SweepCandidate, SweepSpec


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
    figures of the choosable candidates. ``search``: what the search after the grid did (its candidates are among ``candidates``)."""
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
    if results:  # the front runs through what the policy can choose (the frontier plot draws it so too)
        accuracy = np.array([r.test["accuracy"] for r in results])
        choosable = np.array([r.choosable for r in results])
        on_front = np.zeros(len(results), dtype=bool)
        for metric in frontier_metrics(policy):
            values = np.array([r.test[metric] for r in results])
            usable = ~np.isnan(values) & choosable
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
