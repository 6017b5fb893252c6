"""Held-out evaluation of a model: performance and group fairness metrics from Fairlearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from pydantic import BaseModel
from sklearn.metrics import accuracy_score, roc_auc_score

from fairloop.datasets import Split
from fairloop.errors import BadInputError
from fairloop.model import FairModel

METRIC_LABELS = {
    "accuracy": "accuracy",
    "auc": "AUC",
    "demographic_parity_difference": "DPD",
    "equalized_odds_difference": "EOD",
    "disparate_impact_ratio": "DI ratio",
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


def score_predictions(split: Split, sensitive: str, y_pred: np.ndarray, scores: np.ndarray) -> Evaluation:
    groups = split.groups[sensitive]
    y_true = split.y.to_numpy()
    auc = roc_auc_score(y_true, scores) if len(np.unique(y_true)) == 2 else float("nan")
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "auc": float(auc),
        "demographic_parity_difference": float(demographic_parity_difference(y_true, y_pred, sensitive_features=groups)),
        "equalized_odds_difference": float(equalized_odds_difference(y_true, y_pred, sensitive_features=groups)),
        "disparate_impact_ratio": float(demographic_parity_ratio(y_true, y_pred, sensitive_features=groups)),
    }
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
        sensitive_features=groups,
    )
    by_group = {str(g): {k: float(v) for k, v in row.items()} for g, row in frame.by_group.iterrows()}
    return Evaluation(rows=len(split), sensitive=sensitive, metrics=metrics, by_group=by_group)


def metrics_table(columns: dict[str, Evaluation]) -> pd.DataFrame:
    """One row per metric, one column per evaluated model (for reports)."""
    return pd.DataFrame(
        {name: {METRIC_LABELS[k]: v for k, v in ev.metrics.items()} for name, ev in columns.items()}
    )
