"""Label leaks: features that alone predict the label almost perfectly.

A column computed from the label (``logwage`` beside the label ``wage > 120``) or recorded after
the outcome gives a model that looks perfect on held-out rows and has nothing to go on in
production, and its perfect scores hide every fairness question the run is meant to answer. The
audit blocks such a dataset, naming the feature and its figure (``fairloop.audit.checks``), and
``fairloop init`` leaves such columns out of the features it drafts.

A feature's figure is the better of two one-feature ROC AUCs for the label (sklearn
``roc_auc_score``, oriented: a feature that predicts the negative class leaks as much):

- **rank**, numeric features: the raw values as the score, empty values ranked first or last,
  whichever separates better. 1.0 when one threshold on the feature separates the classes, as a
  column derived from a thresholded label does.
- **cross-fitted**: the out-of-fold AUC of ``fairloop.audit.onefeature`` (target encoding of its values
  or quantile bins). 1.0 for a deterministic mapping of a categorical, while an identifier
  (unique per row) scores 0.5: out of fold it says nothing.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from fairloop.audit.onefeature import cross_fitted_auc, feature_codes, sample_positions

LEAK_METHOD = (
    "ROC AUC of the feature alone for the label, the better of: its raw values as the score (numeric features; "
    "empty values first or last) and the out-of-fold AUC of its values (numeric ones in 20 quantile bins) "
    "target-encoded with 5-fold cross-fitting (sklearn TargetEncoder)"
)


class LeakScore(BaseModel):
    feature: str
    kind: Literal["numeric", "categorical"]
    auc: float
    method: Literal["rank", "cross-fitted"]  # which of the two AUCs is the figure
    flagged: bool


def _rank_auc(values: pd.Series, target: np.ndarray) -> float:

    numbers = values.to_numpy(dtype=float)
    present = ~np.isnan(numbers)
    if present.sum() < 2:
        return 0.5
    low, high = numbers[present].min() - 1, numbers[present].max() + 1
    best = 0.5
    for fill in (low, high) if not present.all() else (low,):
        auc = roc_auc_score(target, np.where(present, numbers, fill))
        best = max(best, auc, 1 - auc)
    return float(best)


def leak_scores(X: pd.DataFrame, y: pd.Series, numeric: list[str], categorical: list[str], *, threshold: float,
                sample_rows: int, seed: int) -> tuple[list[LeakScore], int]:
    """Each feature's one-feature AUC for the 0/1 label ``y`` on at most ``sample_rows`` rows (seeded,
    stratified by label); flagged at ``threshold`` or above. Scores best first, and the rows used;
    no scores when ``y`` has one class (nothing to separate; the schema check blocks that)."""
    labels = y.to_numpy().astype(int)
    if len(np.unique(labels)) < 2:
        return [], len(labels)
    positions = sample_positions(labels, sample_rows, seed)
    target = labels[positions]
    scores = []
    for column in [*numeric, *categorical]:
        values = X[column].iloc[positions]
        is_numeric = column in numeric
        auc, method = cross_fitted_auc(feature_codes(values, is_numeric), target, seed), "cross-fitted"
        if is_numeric:
            rank = _rank_auc(values, target)
            auc, method = (rank, "rank") if rank > auc else (auc, method)
        scores.append(LeakScore(feature=column, kind="numeric" if is_numeric else "categorical", auc=round(auc, 4),
                                method=method, flagged=auc >= threshold))
    return sorted(scores, key=lambda s: (-s.auc, s.feature)), len(positions)


def leak_message(scores: list[LeakScore], label: str, threshold: float, sample_rows: int, rows: int) -> str | None:
    """The blocking finding's sentence for the flagged ``scores`` (None when none is flagged)."""
    flagged = [s for s in scores if s.flagged]
    if not flagged:
        return None
    sample = f"a seeded sample of {sample_rows:,} of {rows:,} rows" if sample_rows < rows else f"all {rows:,} rows"
    listed = ", ".join(f"'{s.feature}' (AUC {s.auc:.3f}, {s.method})" for s in flagged)
    one = len(flagged) == 1
    return (f"label leak: {listed} alone predict{'s' if one else ''} the label {label} with AUC >= {threshold} "
            f"(audit.label_leak_auc; {sample}): {'it is' if one else 'they are'} derived from the label or recorded "
            "after the outcome, so a model would learn the answer, not the case; remove "
            f"{'it' if one else 'them'} from the spec's features")
