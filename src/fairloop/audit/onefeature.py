"""How well one feature alone predicts a target: the measure behind the audit's proxy check (a
feature that reveals a sensitive group, ``fairloop.audit.proxies``) and its label-leak check (a feature
that reveals the label, ``fairloop.audit.leakage``).

The score is the out-of-fold ROC AUC (sklearn ``roc_auc_score``) of a one-feature model: the
feature's values (numeric ones in 20 quantile bins, empty values a bin or category of their own)
target-encoded with 5-fold cross-fitting (sklearn ``TargetEncoder``). Cross-fitting is what keeps
an identifier from scoring: a value seen in one row only gets the prior out of fold, so a column
unique per row scores 0.5 although it "maps" every row to its target. Both checks run on a
seeded, stratified row sample, so they cost the same on a million rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import KBinsDiscretizer, TargetEncoder
from sklearn.utils import resample


def sample_positions(strata: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``rows`` rows, seeded and stratified by ``strata``."""

    positions = np.arange(len(strata))
    if len(positions) <= rows:
        return positions
    return np.sort(resample(positions, n_samples=rows, replace=False, random_state=seed, stratify=strata))


def feature_codes(values: pd.Series, numeric: bool) -> np.ndarray:
    """Integer codes of a feature's values: 20 quantile bins for numbers, one code per category;
    empty values get a code of their own (being empty can itself reveal the target)."""

    if not numeric:
        codes, _ = pd.factorize(values, use_na_sentinel=False)
        return codes
    present = values.notna().to_numpy()
    codes = np.full(len(values), -1, dtype=np.int64)
    if present.sum() >= 2 and values[present].nunique() > 1:
        binner = KBinsDiscretizer(n_bins=20, encode="ordinal", strategy="quantile", quantile_method="averaged_inverted_cdf")
        with warnings.catch_warnings():  # many ties (capital-gain is mostly 0) merge bins: expected
            warnings.simplefilter("ignore", UserWarning)
            codes[present] = binner.fit_transform(values[present].to_numpy().reshape(-1, 1)).ravel().astype(np.int64)
    return codes


def cross_fitted_auc(codes: np.ndarray, target: np.ndarray, seed: int) -> float:
    """Out-of-fold AUC of ``codes`` target-encoded for ``target`` (integer classes 0..k-1, two or
    more present), oriented so that 0.5 is no information and 1 a perfect one-feature predictor;
    more than two classes: one-vs-rest AUC weighted by class size."""

    counts = np.unique(target, return_counts=True)[1]
    binary = len(counts) == 2
    folds = StratifiedKFold(n_splits=max(2, min(5, int(counts.min()))), shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than the folds: StratifiedKFold says so, scores stay valid
        warnings.simplefilter("ignore", UserWarning)
        encoder = TargetEncoder(target_type="binary" if binary else "multiclass", cv=folds)
        encoded = encoder.fit_transform(codes.reshape(-1, 1), target)
    if binary:
        auc = roc_auc_score(target, encoded.ravel())
    else:
        probabilities = np.clip(encoded, 1e-12, None)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        auc = roc_auc_score(target, probabilities, multi_class="ovr", average="weighted", labels=encoder.classes_)
    return float(max(auc, 1 - auc))
