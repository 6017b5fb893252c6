"""The counterfactual test-time guardrail: a frozen model's decision, made the same whatever a
row's group, by scoring every row as a member of every group (BiasGuard's idea, without its GAN:
the counterfactual values come from the data, not a generator).

Each row is scored on copies: for every group g, ``draws_per_group`` copies whose varied columns
(the sensitive column when the model reads it, and the audit's flagged proxies) hold the values
of a row of group g drawn (seeded) from the rows the guardrail is fitted on, i.e. from their
joint conditional distribution given g. The copies' scores are averaged (every group has the same
number of copies, so the same weight), and one threshold, chosen for accuracy on the fit rows
(never the rows that evaluate it), turns the average into the decision.

Every group is enumerated for every row, so the decision never depends on the row's own group:
it needs no sensitive feature at prediction time. The drawn values are fixed at fit time, so a
row gets the same decision alone or in any batch, and the same seed gives the same guardrail.
The price is ``groups x draws_per_group`` base-model scores per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairloop.data.rows import Split
from fairloop.remedy.frozen import FrozenScorer

ROWS_PER_CALL = 200_000  # base-model rows scored in one call (copies included): bounds memory on big batches


class CounterfactualGuardrail:
    """A frozen scorer wrapped so that its score is the mean over every group's counterfactual copies."""

    def __init__(self, base: FrozenScorer, varied: list[str], donors: dict[str, pd.DataFrame], threshold: float = 0.5):
        self.base = base
        self.varied = varied
        self.donors = donors  # group -> its drawn values of the varied columns, one row per copy
        self.threshold = threshold

    @property
    def copies(self) -> int:
        return sum(len(d) for d in self.donors.values())

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        values = pd.concat(list(self.donors.values()), ignore_index=True)
        result = np.empty(len(X))
        step = max(1, ROWS_PER_CALL // self.copies)
        for start in range(0, len(X), step):
            part = X.iloc[start:start + step]
            rows = len(part)
            copies = part.iloc[np.tile(np.arange(rows), self.copies)].reset_index(drop=True)
            for column in self.varied:
                copies[column] = np.repeat(values[column].to_numpy(), rows)
            result[start:start + rows] = self.base.scores(copies).reshape(self.copies, rows).mean(axis=0)
        return result

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        scores = self.scores(X)
        return np.column_stack([1 - scores, scores])


def accuracy_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The threshold t (decide 1 when score >= t) most accurate on these rows; the lowest of equals."""
    order = np.argsort(scores, kind="stable")
    s, labels = scores[order], y[order]
    # cut i: rows i.. are decided 1; only cuts between distinct scores (and above all) are thresholds
    positives_from = np.concatenate([np.cumsum(labels[::-1])[::-1], [0]])
    negatives_before = np.concatenate([[0], np.cumsum(1 - labels)])
    cuts = np.concatenate([np.flatnonzero(np.r_[True, s[1:] != s[:-1]]), [len(s)]])
    best = cuts[np.argmax(positives_from[cuts] + negatives_before[cuts])]
    return float(s[best]) if best < len(s) else float(np.nextafter(s[-1], np.inf))


def fit_guardrail(base: FrozenScorer, rows: Split, sensitive: str, varied: list[str], seed: int,
                  draws_per_group: int = 10) -> CounterfactualGuardrail:
    """Draw each group's counterfactual values from ``rows`` (seeded) and choose the threshold on them.

    Raises ValueError when there is nothing to vary (the model reads neither the sensitive
    column nor a flagged proxy): the guardrail would be the base model with another threshold."""
    if not varied:
        raise ValueError("the counterfactual guardrail has nothing to vary: the base model reads neither the "
                         f"sensitive feature '{sensitive}' nor a proxy the audit flagged")
    if draws_per_group < 1:
        raise ValueError(f"draws_per_group must be at least 1, not {draws_per_group}")
    rng = np.random.default_rng(seed)
    groups = rows.groups[sensitive].astype(str).to_numpy()
    donors = {}
    for group in sorted(set(groups)):
        members = np.flatnonzero(groups == group)
        drawn = rng.choice(members, size=draws_per_group, replace=len(members) < draws_per_group)
        donors[group] = rows.X.iloc[np.sort(drawn)][varied].reset_index(drop=True)
    guardrail = CounterfactualGuardrail(base, list(varied), donors)
    guardrail.threshold = accuracy_threshold(guardrail.scores(rows.X), rows.y.to_numpy())
    return guardrail
