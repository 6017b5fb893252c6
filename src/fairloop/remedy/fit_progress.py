"""How far a run's fitting is, for its progress (``fairloop.serving.progress``): what each fit is
expected to cost, the count of models fitted, and the steps a sweep takes after its fits. Kept free
of the fitting code, so that reading a run's progress imports none of it.

The expected cost also orders a sweep's jobs (longest first, ``fairloop.remedy.fitters``). It is
relative to one fit of the unconstrained learner on the same rows, by constraint method. Measured
with ``bench/progress_weights.py fits --rounds 2`` (German, sex, the default sweep: 5-fold crossfit
on 700 rows, hist-gradient-boosting learner with early stopping; serial, one thread, 2 cores at
load 1-1.4; the sweep took 43.5 and 45.5 s), seconds of one fit (a final or a fold fit alike):

    none (unconstrained)    0.106 s  (8 fits: three recipes and the baseline)  1
    threshold_optimizer     0.239 s  (0.60-0.63 s for the first of those sharing
                                      a scorer, 0.025-0.036 s for the others)  2.2
    grid_search             1.50 s                                            14
    exponentiated_gradient  2.41 s                                            23

ExponentiatedGradient is about 40 % of the default sweep's expected fitting work (its 6 fits).
Not measured: the counterfactual guardrail counts as the threshold optimizer (both post-process
fixed scores, fitting no learner); adversarial debiasing (PyTorch, an optional extra) and any other
method count as the most expensive measured one: better to overestimate a fit than to let the bar
race ahead and then sit at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The steps of a sweep after its fits, named to ``run_sweep``'s ``on_step``: gating every candidate
# on the selection rows (bootstrap intervals), and the search after the grid.
SELECTING = "select candidate"
SEARCHING = "search after the grid"

METHOD_FIT_COST = {
    "none": 1.0,
    "threshold_optimizer": 2.2,
    "counterfactual_guardrail": 2.2,
    "grid_search": 14.0,
    "exponentiated_gradient": 23.0,
}
UNMEASURED_METHOD_COST = max(METHOD_FIT_COST.values())


def expected_fit_cost(method: str) -> float:
    """One fit of a template with constraint ``method``, in unconstrained fits of the same rows."""
    return METHOD_FIT_COST.get(method, UNMEASURED_METHOD_COST)


@dataclass(frozen=True)
class FitCount:
    """How far a batch of fits is: models fitted of all, and their expected cost done of all."""

    done: int
    total: int
    cost_done: float
    cost_total: float

    @property
    def fraction(self) -> float:
        """The share of the batch's expected work done (by cost, not by count: one reduction
        outweighs many unconstrained fits)."""
        return self.cost_done / self.cost_total if self.cost_total > 0 else 1.0


#: called once as a batch of fits starts (done 0) and again as each fit finishes
OnFitted = Callable[[FitCount], None]


class FitCounter:
    """Counts a batch of fits whose expected costs are ``costs`` (in the batch's order) for ``on_fitted``."""

    def __init__(self, costs: list[float], on_fitted: OnFitted | None):
        self.costs, self.on_fitted = costs, on_fitted
        self.done, self.cost_done = 0, 0.0

    def start(self) -> None:
        self._report()

    def finished(self, position: int) -> None:
        self.done += 1
        self.cost_done += self.costs[position]
        self._report()

    def _report(self) -> None:
        if self.on_fitted is not None:
            self.on_fitted(FitCount(self.done, len(self.costs), self.cost_done, sum(self.costs)))
