"""Held-out evaluation of a model: performance and group fairness metrics from Fairlearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from pydantic import BaseModel
from sklearn.metrics import accuracy_score, roc_auc_score

from fairloop.datasets import Split
from fairloop.errors import BadInputError
from fairloop.intervals import net_benefit_min
from fairloop.model import FairModel

METRIC_LABELS = {
    "accuracy": "accuracy",
    "auc": "AUC",
    "demographic_parity_difference": "DPD",
    "equalized_odds_difference": "EOD",
    "disparate_impact_ratio": "DI ratio",
    "min_group_true_positive_rate": "min group TPR",
    "net_benefit_min": "min net benefit",
}


class Evaluation(BaseModel):
    """Metrics of one model on one split, overall and by sensitive group."""

    rows: int
    sensitive: str
    metrics: dict[str, float]
    by_group: dict[str, dict[str, float]]
    intervals: dict[str, tuple[float, float]] = {}


def predict(model: FairModel, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Decisions and positive-class probabilities of ``model`` on a held-out split."""
    if split.synthetic.any():
        raise BadInputError("refusing to evaluate on a split that contains synthetic rows")
    return model.predict(split.X, split.groups), model.predict_proba(split.X, split.groups)


def evaluate(model: FairModel, split: Split, sensitive: str) -> Evaluation:
    """Score ``model`` on ``split``: accuracy, AUC, DPD, EOD, disparate-impact ratio, per-group rates."""
    return score_predictions(split, sensitive, *predict(model, split))


def counted_groups(groups: pd.Series, min_group_size: int) -> np.ndarray:
    """Groups with enough rows for their rates to count in group fairness metrics."""
    sizes = groups.astype(str).value_counts()
    return np.sort(sizes[sizes >= min_group_size].index.to_numpy())


def score_predictions(
    split: Split, sensitive: str, y_pred: np.ndarray, scores: np.ndarray, *,
    min_group_size: int = 0, net_benefit_band: tuple[float, float] | None = None,
) -> Evaluation:
    """Metrics from decisions and scores. Group fairness metrics count only groups of at least
    ``min_group_size`` rows (a rate on a handful of rows decides nothing); with fewer than
    two such groups they are NaN, which the gates treat as inconclusive.

    One ``MetricFrame`` gives every group's rates; DPD, EOD, the disparate-impact ratio and the
    minimum TPR are its between-groups differences, ratios and minima over the counted groups,
    as Fairlearn's ``demographic_parity_difference`` etc. compute them (tested equal). Building
    one frame instead of one per metric keeps a sweep's scoring cheap: Fairlearn stacks every
    row per metric call.
    """
    groups = split.groups[sensitive].astype(str).to_numpy()
    y_true = split.y.to_numpy()
    auc = roc_auc_score(y_true, scores) if len(np.unique(y_true)) == 2 else float("nan")
    frame = MetricFrame(
        metrics={
            "count": count,
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
            "accuracy": accuracy_score,
        },
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=pd.Series(groups, name=sensitive),
    )
    metrics = {"accuracy": float(frame.overall["accuracy"]), "auc": float(auc)}
    counted = frame.by_group.loc[frame.by_group["count"] >= min_group_size]
    if len(counted) >= 2:
        rates = counted[["selection_rate", "true_positive_rate", "false_positive_rate"]]
        gaps = rates.max() - rates.min()
        metrics |= {
            "demographic_parity_difference": float(gaps["selection_rate"]),
            "equalized_odds_difference": float(max(gaps["true_positive_rate"], gaps["false_positive_rate"])),
            "disparate_impact_ratio": float(rates["selection_rate"].min() / rates["selection_rate"].max()),
            "min_group_true_positive_rate": float(rates["true_positive_rate"].min()),
        }
    else:
        metrics |= dict.fromkeys(
            ("demographic_parity_difference", "equalized_odds_difference", "disparate_impact_ratio",
             "min_group_true_positive_rate"), float("nan"))
    if net_benefit_band is not None:
        metrics["net_benefit_min"] = float(net_benefit_min(y_true, scores, np.arange(len(y_true))[None, :], net_benefit_band)[0])
    calibration = pd.DataFrame(
        {"mean_score": scores, "observed_rate": y_true, "brier": (scores - y_true) ** 2, "group": groups}
    ).groupby("group").mean()  # per-group Brier score = mean squared error of the probability
    counted_names = set(counted.index.astype(str))
    by_group = {
        str(g): {**{k: float(v) for k, v in row.items()}, **calibration.loc[str(g)].astype(float).to_dict(),
                 "counted": float(str(g) in counted_names)}
        for g, row in frame.by_group.iterrows()
    }
    return Evaluation(rows=len(split), sensitive=sensitive, metrics=metrics, by_group=by_group)


def metrics_table(columns: dict[str, Evaluation]) -> pd.DataFrame:
    """One row per metric, one column per evaluated model (for reports)."""
    return pd.DataFrame(
        {name: {METRIC_LABELS.get(k, k): v for k, v in ev.metrics.items()} for name, ev in columns.items()}
    )
