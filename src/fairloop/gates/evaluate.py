"""Held-out evaluation of a model: performance and group fairness metrics from Fairlearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from pydantic import BaseModel
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from fairloop.data.groups import ExcludedGroup, GroupFloors, count_groups
from fairloop.data.membership import InferredMembership, MembershipReport
from fairloop.data.rows import Split
from fairloop.errors import BadInputError
from fairloop.gates.intervals import CALIBRATION_GAP, net_benefit_min
from fairloop.gates.metrics import GROUP_METRICS, between_groups, metric_label
from fairloop.remedy.model import FairModel, Predictions


class GroupShift(BaseModel):
    """People of one group on the test split whose decision the candidate changes against a
    reference model (the baseline): counted rows, not rates, so a reviewer sees who pays."""

    group: str
    rows: int
    selected_before: int
    selected_after: int
    newly_selected: int
    newly_selected_qualified: int  # of the newly selected, those whose label is positive
    newly_rejected: int
    newly_rejected_qualified: int


class Evaluation(BaseModel):
    """Metrics of one model on one split, overall and by sensitive group."""

    rows: int
    sensitive: str
    metrics: dict[str, float]
    by_group: dict[str, dict[str, float]]
    intervals: dict[str, tuple[float, float]] = {}
    excluded_groups: list[ExcludedGroup] = []
    missing_sensitive: MembershipReport | None = None  # rows with no sensitive value: inferred or excluded
    # the candidate's only: per reference model ('baseline', 'champion'), whose decision differs from its, per group
    shifts: dict[str, list[GroupShift]] = {}


def predict(model: FairModel, split: Split) -> Predictions:
    """Decisions, decision probabilities and scorer scores of ``model`` on a held-out split."""
    if split.synthetic.any():
        raise BadInputError("refusing to evaluate on a split that contains synthetic rows")
    return model.predictions(split.X, split.groups)


def evaluate(model: FairModel, split: Split, sensitive: str) -> Evaluation:
    """Score ``model`` on ``split``: accuracy, AUC, DPD, EOD, disparate-impact ratio, per-group rates."""
    return score_predictions(split, sensitive, predict(model, split))


def _auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")


def score_predictions(
    split: Split, sensitive: str, predictions: Predictions, *,
    floors: GroupFloors | None = None, net_benefit_band: tuple[float, float] | None = None,
    membership: InferredMembership | None = None,
) -> Evaluation:
    """Metrics from a model's predictions on ``split``.

    Group fairness metrics count, per rate, only the groups that meet ``floors`` (rows for
    selection rates, positives for TPR, negatives for FPR; see :mod:`fairloop.data.groups`); the
    others are listed in ``excluded_groups``. With fewer than two counted groups a
    between-group metric is NaN, which the gates report as inconclusive with that reason.

    One ``MetricFrame`` gives every group's rates; the between-group metrics of the metric table
    (``fairloop.gates.metrics``) are its differences, ratios and minima over the counted groups,
    as Fairlearn's ``demographic_parity_difference`` etc. compute them (tested equal). Building
    one frame instead of one per metric keeps a sweep's scoring cheap.

    With ``membership`` (rows with no sensitive value, ``fairloop.data.membership``) the frame runs
    over the rows with every missing row repeated once per group, weighted by its inferred
    probability of that group (Fairlearn's ``sample_weight``); a group's ``count`` is then its
    expected number of rows. Overall figures are unchanged: a row's weights sum to 1.
    """
    groups = split.groups[sensitive].astype(str).to_numpy()
    y_true = split.y.to_numpy().astype(int)
    y_pred = np.asarray(predictions.decisions).astype(int)
    if membership is None:
        row_groups, weights, (row_y, row_pred, row_scores) = groups, np.ones(len(groups)), (y_true, y_pred, predictions.probabilities)
    else:
        row_groups, weights, (row_y, row_pred, row_scores) = membership.expanded(groups, y_true, y_pred, predictions.probabilities)
    rate_metrics = {"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                    "false_positive_rate": false_positive_rate, "accuracy": accuracy_score}
    frame = MetricFrame(
        metrics=rate_metrics, y_true=row_y, y_pred=row_pred, sensitive_features=pd.Series(row_groups, name=sensitive),
        sample_params={name: {"sample_weight": weights} for name in rate_metrics},
    )
    majority = max(y_true.mean(), 1 - y_true.mean()) if len(y_true) else float("nan")
    accuracy = float(frame.overall["accuracy"])
    balanced = float(balanced_accuracy_score(y_true, y_pred)) if len(np.unique(y_true)) == 2 else float("nan")
    metrics = {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "majority_class_accuracy": float(majority),
        "accuracy_lift_over_majority": accuracy - float(majority),
        "balanced_accuracy_lift_over_majority": balanced - 0.5,
        "auc": _auc(y_true, predictions.scores),
        "decision_auc": _auc(y_true, predictions.probabilities),
    }
    counted = count_groups(row_groups, row_y, floors or GroupFloors(rows=1, positives=1, negatives=1), weights)
    rates = frame.by_group.loc[counted.names]  # MetricFrame's groups are sorted like count_groups'
    weighted = pd.DataFrame({"count": weights, "positives": weights * row_y}).groupby(row_groups).sum()
    rates.insert(0, "count", weighted["count"].reindex(counted.names).to_numpy())

    group_rates = {rate: rates[rate].to_numpy()[None, :] for rate in counted.counted}
    metrics |= {metric.name: float(between_groups(metric, group_rates, counted.counted)[0]) for metric in GROUP_METRICS}
    if net_benefit_band is not None:
        metrics["net_benefit_min"] = float(
            net_benefit_min(y_true, predictions.probabilities, np.arange(len(y_true))[None, :], net_benefit_band)[0]
        )
    calibration = pd.DataFrame(
        {"mean_score": row_scores, "observed_rate": row_y, "brier": (row_scores - row_y) ** 2}
    ).mul(weights, axis=0).groupby(row_groups).sum().div(weighted["count"], axis=0)  # Brier = mean squared error
    by_group = {}
    for i, (g, row) in enumerate(rates.iterrows()):
        by_group[str(g)] = {
            **{k: float(v) for k, v in row.items()}, **calibration.loc[str(g)].astype(float).to_dict(),
            "positives": float(weighted.loc[str(g), "positives"]),
            CALIBRATION_GAP: float(calibration.loc[str(g), "mean_score"] - calibration.loc[str(g), "observed_rate"]),
            **{f"counted_{rate}": float(mask[i]) for rate, mask in counted.counted.items()},
        }
    return Evaluation(rows=len(split), sensitive=sensitive, metrics=metrics, by_group=by_group,
                      excluded_groups=counted.excluded, missing_sensitive=None if membership is None else membership.report)


def decision_shifts(split: Split, sensitive: str, before: Predictions, after: Predictions) -> list[GroupShift]:
    """Per group of ``split`` (every row, by its recorded group: people, not the weighted
    memberships the metrics may use), how many the ``after`` model selects that ``before`` did
    not and the reverse, and how many of each are qualified (positive label)."""
    frame = pd.DataFrame({
        "group": split.groups[sensitive].astype(str).to_numpy(),
        "before": np.asarray(before.decisions).astype(int), "after": np.asarray(after.decisions).astype(int),
        "qualified": split.y.to_numpy().astype(int),
    })
    gained = (frame["after"] == 1) & (frame["before"] == 0)
    lost = (frame["after"] == 0) & (frame["before"] == 1)
    counts = frame.assign(
        rows=1, gained=gained, gained_qualified=gained & (frame["qualified"] == 1),
        lost=lost, lost_qualified=lost & (frame["qualified"] == 1),
    ).groupby("group")[["rows", "before", "after", "gained", "gained_qualified", "lost", "lost_qualified"]].sum()
    return [
        GroupShift(group=str(group), rows=row.rows, selected_before=row.before, selected_after=row.after,
                   newly_selected=row.gained, newly_selected_qualified=row.gained_qualified,
                   newly_rejected=row.lost, newly_rejected_qualified=row.lost_qualified)
        for group, row in counts.astype(int).iterrows()
    ]


def worst_groups_first(evaluation: Evaluation) -> list[str]:
    """Groups (cells) ordered by how far their rates stray from everyone's: for each rate a group
    counts in, |its rate - the rate over all rows|; the largest of these first. Groups the floors
    leave out of every rate come last. The extremes of each gated gap are at the top."""
    by_group = evaluation.by_group
    rows = {g: m["count"] for g, m in by_group.items()}
    positives = {g: m["positives"] for g, m in by_group.items()}
    weights = {"selection_rate": rows, "true_positive_rate": positives,
               "false_positive_rate": {g: rows[g] - positives[g] for g in by_group}}
    overall = {}
    for rate, weight in weights.items():
        total = sum(weight.values())
        overall[rate] = sum(by_group[g][rate] * w for g, w in weight.items() if w) / total if total else float("nan")

    def straying(group: str) -> float:
        found = [abs(by_group[group][rate] - overall[rate]) for rate in weights
                 if by_group[group].get(f"counted_{rate}", 1.0) and by_group[group][rate] == by_group[group][rate]]
        return max(found) if found else -1.0

    return sorted(by_group, key=straying, reverse=True)


def metrics_table(columns: dict[str, Evaluation]) -> pd.DataFrame:
    """One row per metric, one column per evaluated model (for reports)."""
    return pd.DataFrame(
        {name: {metric_label(k): v for k, v in ev.metrics.items()} for name, ev in columns.items()}
    )
