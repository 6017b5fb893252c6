"""A sweep's results: each candidate's figures, the outcome of the sweep, and the frontier data a
reviewer sees (which fairness metrics, which candidates no other beats)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from fairloop.gates.decidability import leans_to_pass, rows_factor
from fairloop.gates.metrics import (
    GATES,
    GROUP_METRICS,
    metric_label,
    shown_group_metrics,
)
from fairloop.gates.policy import (
    SENSITIVE_AT_PREDICT,
    GateReport,
    Policy,
)
from fairloop.remedy.constraints import METHOD_KINDS
from fairloop.remedy.crossfit import ModeDecision

# The fairness metrics a frontier can plot, and whether higher is fairer.
FRONTIER_METRICS = {metric.name: metric.higher_is_better for metric in GROUP_METRICS}


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


# test figures of the policy's choice beside the choice without a gate the audit calls unreliable
SIDE_BY_SIDE = ("accuracy", "demographic_parity_difference", "equalized_odds_difference", "disparate_impact_ratio",
                "min_group_true_positive_rate")


class GateCost(BaseModel):
    """The choice with and without one gate, on test figures (metric -> value)."""

    gate: str
    reason: str  # why the audit calls the gate unreliable here, in a few words
    chosen: str | None  # what the policy picks (None: nothing passes)
    without: str | None  # the most accurate choosable candidate passing every other gate (None: none)
    chosen_test: dict[str, float] = {}
    without_test: dict[str, float] = {}

    def sentence(self) -> str:
        """One sentence for the dialog, the report and ``fairloop show``."""
        gate = f"the {metric_label(GATES[self.gate][0].name) if self.gate in GATES else self.gate} gate"
        if self.without is None:
            return f"The audit calls {gate} unreliable for this data; no candidate would pass without it either."
        if self.without == self.chosen:
            return f"The audit calls {gate} unreliable for this data; without it the choice is the same ({self.without})."
        reason = f"The audit calls {gate} unreliable for this data ({self.reason})."
        if self.chosen is None:
            figures = "; ".join(f"{metric_label(m)} {_shown(v)}" for m, v in self.without_test.items())
            return f"{reason} With it no candidate passes; without it, {self.without} would (test figures: {figures})."
        figures = "; ".join(f"{metric_label(m)} {_shown(self.chosen_test.get(m))} vs {_shown(v)}"
                            for m, v in self.without_test.items())
        return (f"{reason} With it the policy picks {self.chosen}; without it, {self.without}. "
                f"Test figures, with vs without: {figures}.")


def _shown(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


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
    gate_costs: list[GateCost] = []  # gates the audit calls unreliable here: the choice with and without each

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


def is_upper(gate: str) -> bool:
    """Does ``gate`` cap its metric from above (max and drop gates; the sensitive-attribute gate,
    value 1 against 0, too)?"""
    return GATES[gate][1].comparison in ("max", "drop") if gate in GATES else True
