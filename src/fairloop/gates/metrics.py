"""The metric table: every gated or reported metric of a model declared once.

Each :class:`MetricSpec` says what a metric is (label, direction), what it needs (labels; what
the model gives at predict time: decisions, or the scorer's or decision's probabilities), how
it is computed and which interval it takes, and which policy thresholds gate it. Policy loading
(``Thresholds`` is built from :data:`GATES`), the gates, evaluation, the intervals, the
sample-size answer, the sweep's frontier, the review packet and the monitor's labelled window
metrics iterate this table instead of naming metrics.

**Between-group metrics** are built from per-group rates (:data:`fairloop.data.groups.RATE_LABELS`)
over the groups the floors count (``fairloop.data.groups.count_groups``) by one ``shape``:

- ``gap``: the largest max - min over the groups, across the metric's rates (DPD, EOD);
- ``ratio``: min / max over the groups (the disparate-impact ratio, of one rate);
- ``min``: the smallest group rate (min group TPR).

The shape gives the point estimate and every bootstrap resample's value (:func:`between_groups`,
one function for both) and the family of its simultaneous interval (``fairloop.gates.intervals``).
``fairlearn`` is the same metric on (y_true, y_pred, groups) by Fairlearn's own functions, used
where the rows are not already reduced to rates (the monitor's windows) and to test the shapes.
Adding a between-group metric is one entry here plus that function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    true_positive_rate,
)

from fairloop.data.groups import RateKind

Comparison = Literal["max", "min", "drop"]
Reference = Literal["none", "baseline", "champion"]
Shape = Literal["gap", "ratio", "min"]
PredictOutput = Literal["decisions", "decision probabilities", "scorer scores"]

@dataclass(frozen=True)
class Gate:
    """A policy threshold on a metric: ``field`` of ``thresholds:`` caps it (max), floors it (min)
    or caps its drop against a reference model."""

    field: str
    comparison: Comparison
    reference: Reference = "none"
    bounds: tuple[float, float] = (0.0, 1.0)
    description: str | None = None
    # Policies were hashed with every threshold of the first release present (None when unset);
    # a threshold added later is left out of the hash when unset, so those hashes still match.
    hashed_when_unset: bool = False


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    higher_is_better: bool
    needs_labels: bool
    reads: PredictOutput
    interval: str  # which interval it takes (module docstring of fairloop.gates.intervals)
    gates: tuple[Gate, ...] = ()
    rates: tuple[RateKind, ...] = ()  # between-group metrics: the group rates it is built from
    shape: Shape | None = None
    fairlearn: Callable[..., float] | None = field(default=None, repr=False)
    # on every frontier and every labelled monitor window; the other metrics there only when the policy gates them
    always_shown: bool = False

    @property
    def between_groups(self) -> bool:
        return bool(self.rates)

    @property
    def groups_needed(self) -> int:
        """Counted groups its value needs (one for a minimum, two for a gap or ratio)."""
        return 1 if self.shape == "min" else 2


def false_positive_rate_difference(y_true, y_pred, *, sensitive_features, sample_weight=None) -> float:
    """Largest difference in false-positive rate between groups (Fairlearn ``MetricFrame``)."""
    params = None if sample_weight is None else {"sample_weight": sample_weight}
    return float(MetricFrame(metrics=false_positive_rate, y_true=y_true, y_pred=y_pred,
                             sensitive_features=sensitive_features, sample_params=params).difference())


def min_group_true_positive_rate(y_true, y_pred, *, sensitive_features, sample_weight=None) -> float:
    """Smallest true-positive rate over the groups (Fairlearn ``MetricFrame``)."""
    params = None if sample_weight is None else {"sample_weight": sample_weight}
    return float(MetricFrame(metrics=true_positive_rate, y_true=y_true, y_pred=y_pred,
                             sensitive_features=sensitive_features, sample_params=params).group_min())


PERCENTILE = "percentile bootstrap, stratified by group"
GROUP_FAMILY = "percentile bootstrap; family-wise (max-|t|) over the counted groups when more than two"
DROP = "paired percentile bootstrap of the drop (same resamples for both models)"

# In the order policies list their thresholds and reports their gates; metrics added later go last.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("demographic_parity_difference", "DPD", False, False, "decisions", GROUP_FAMILY,
               (Gate("max_demographic_parity_difference", "max", hashed_when_unset=True),),
               ("selection_rate",), "gap", demographic_parity_difference, always_shown=True),
    MetricSpec("equalized_odds_difference", "EOD", False, True, "decisions", GROUP_FAMILY,
               (Gate("max_equalized_odds_difference", "max", hashed_when_unset=True),),
               ("true_positive_rate", "false_positive_rate"), "gap", equalized_odds_difference, always_shown=True),
    MetricSpec("disparate_impact_ratio", "DI ratio", True, False, "decisions", GROUP_FAMILY,
               (Gate("min_disparate_impact_ratio", "min", hashed_when_unset=True),),
               ("selection_rate",), "ratio", demographic_parity_ratio),
    MetricSpec("accuracy", "accuracy", True, True, "decisions", DROP, (
        Gate("max_accuracy_drop_vs_baseline", "drop", "baseline", hashed_when_unset=True),
        Gate("max_accuracy_drop_vs_champion", "drop", "champion", hashed_when_unset=True))),
    MetricSpec("auc", "scorer AUC", True, True, "scorer scores", PERCENTILE + "; drops: " + DROP, (
        Gate("max_auc_drop_vs_baseline", "drop", "baseline", hashed_when_unset=True),
        Gate("max_auc_drop_vs_champion", "drop", "champion", hashed_when_unset=True),
        Gate("min_scorer_auc", "min", hashed_when_unset=True,
             description="AUC of the underlying scorer (not of randomised decisions)"))),
    MetricSpec("min_group_true_positive_rate", "min group TPR", True, True, "decisions", GROUP_FAMILY,
               (Gate("min_group_true_positive_rate", "min", hashed_when_unset=True),),
               ("true_positive_rate",), "min", min_group_true_positive_rate),
    MetricSpec("net_benefit_min", "min net benefit", True, True, "decision probabilities", PERCENTILE, (
        Gate("min_net_benefit", "min", bounds=(-1, 1), hashed_when_unset=True,
             description="over net_benefit_band; 0 = never worse than acting on nobody"),)),
    MetricSpec("accuracy_lift_over_majority", "accuracy lift over majority class", True, True, "decisions", PERCENTILE, (
        Gate("min_accuracy_lift_over_majority", "min", bounds=(-1, 1), hashed_when_unset=True,
             description="accuracy minus that of always predicting the majority class"),)),
    MetricSpec("balanced_accuracy_lift_over_majority", "balanced-accuracy lift over majority class", True, True,
               "decisions", PERCENTILE, (
        Gate("min_balanced_accuracy_lift_over_majority", "min", bounds=(-0.5, 0.5), hashed_when_unset=True,
             description="balanced accuracy minus 0.5 (the majority-class predictor's)"),)),
    MetricSpec("balanced_accuracy", "balanced accuracy", True, True, "decisions", PERCENTILE),
    MetricSpec("majority_class_accuracy", "majority-class accuracy", True, True, "decisions", PERCENTILE),
    MetricSpec("decision_auc", "decision AUC", True, True, "decision probabilities", PERCENTILE),
    MetricSpec("false_positive_rate_difference", "FPR difference", False, True, "decisions", GROUP_FAMILY,
               (Gate("max_false_positive_rate_difference", "max"),),
               ("false_positive_rate",), "gap", false_positive_rate_difference),
)

METRIC_BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
GROUP_METRICS: tuple[MetricSpec, ...] = tuple(m for m in METRICS if m.between_groups)
# threshold field -> (metric, gate)
GATES: dict[str, tuple[MetricSpec, Gate]] = {g.field: (m, g) for m in METRICS for g in m.gates}


def gated_metrics(thresholds) -> list[MetricSpec]:
    """The table's metrics a policy's ``thresholds`` set a non-drop threshold on, in table order."""
    gated = {GATES[name][0].name for name, value in thresholds.model_dump().items()
             if value is not None and GATES[name][1].comparison != "drop"}
    return [m for m in METRICS if m.name in gated]


def threshold_on(thresholds, metric: str) -> float | None:
    """The policy's non-drop threshold on ``metric`` (None: not gated)."""
    for name, value in thresholds.model_dump().items():
        if value is not None and GATES[name][0].name == metric and GATES[name][1].comparison != "drop":
            return value
    return None


def shown_group_metrics(thresholds) -> list[MetricSpec]:
    """The between-group metrics a frontier or a monitor window shows: those the policy gates,
    then those always shown."""
    return list(dict.fromkeys([*(m for m in gated_metrics(thresholds) if m.between_groups),
                               *(m for m in GROUP_METRICS if m.always_shown)]))


def metric_label(metric: str) -> str:
    """The metric's short name in reports (the name itself for statistics not in the table)."""
    return METRIC_BY_NAME[metric].label if metric in METRIC_BY_NAME else metric


def between_groups(metric: MetricSpec, rates: dict[str, np.ndarray], counted: dict[str, np.ndarray]) -> np.ndarray:
    """``metric`` from group rates: ``rates[kind]`` is (samples x groups), ``counted[kind]`` the
    groups that count; one value per sample (row), NaN where too few groups count."""
    n = next(iter(rates.values())).shape[0]
    columns = [rates[rate][:, counted[rate]] for rate in metric.rates]
    if any(c.shape[1] < metric.groups_needed for c in columns):
        return np.full(n, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric.shape == "gap":
            return np.max([c.max(axis=1) - c.min(axis=1) for c in columns], axis=0)
        if metric.shape == "ratio":
            (chosen,) = columns
            high = chosen.max(axis=1)
            return np.where(high > 0, chosen.min(axis=1) / np.where(high > 0, high, 1), np.nan)
        (chosen,) = columns
        return chosen.min(axis=1)
