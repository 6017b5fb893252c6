"""Drift statistics of a window against the reference: KS for numeric features, PSI and a
chi-square test for categorical ones and for the groups' shares."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fairloop.datasets import DatasetSpec
from fairloop.monitor.report import Metric
from fairloop.policy import Monitoring

MISSING = "<missing>"


def dkw_epsilon(n: int, alpha: float) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band of an empirical CDF from n rows."""
    return math.sqrt(math.log(2 / alpha) / (2 * n))


def ks_metric(reference: np.ndarray, window: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """KS statistic, its asymptotic p-value and a DKW interval (both CDFs' bands, each at (1-c)/2)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, window, method="asymp")
    slack = dkw_epsilon(len(reference), (1 - confidence) / 2) + dkw_epsilon(len(window), (1 - confidence) / 2)
    value = float(result.statistic)
    return value, float(result.pvalue), max(0.0, value - slack), min(1.0, value + slack)


def _psi(ref_counts: np.ndarray, win_counts: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """PSI = sum (w - r) ln(w / r) over bins, proportions floored to avoid log(0); rows = draws."""
    r = np.maximum(ref_counts / ref_counts.sum(axis=-1, keepdims=True), floor)
    w = np.maximum(win_counts / win_counts.sum(axis=-1, keepdims=True), floor)
    return np.sum((w - r) * np.log(w / r), axis=-1)


def psi_metric(
    reference: pd.Series, window: pd.Series, confidence: float, draws: int, rng: np.random.Generator
) -> tuple[float, float | None, float, float]:
    """PSI of two categorical samples, chi-square p-value of the 2 x k table, bootstrap interval."""
    from scipy.stats import chi2_contingency

    ref_counts = reference.fillna(MISSING).astype(str).value_counts()
    win_counts = window.fillna(MISSING).astype(str).value_counts()
    categories = ref_counts.index.union(win_counts.index)
    r = ref_counts.reindex(categories, fill_value=0).to_numpy(float)
    w = win_counts.reindex(categories, fill_value=0).to_numpy(float)
    value = float(_psi(r, w))
    p_value = None
    if len(categories) > 1:
        p_value = float(chi2_contingency(np.vstack([r, w]))[1])
    # draws from Jeffreys-smoothed shares: a category absent from one sample still varies in the
    # resamples, so the interval does not shrink to a point around an extreme PSI
    smooth = lambda c: (c + 0.5) / (c + 0.5).sum()  # noqa: E731
    boot = _psi(rng.multinomial(int(r.sum()), smooth(r), size=draws).astype(float),
                rng.multinomial(int(w.sum()), smooth(w), size=draws).astype(float))
    return (value, p_value, *basic_interval(value, boot, confidence))


def basic_interval(value: float, draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """Basic (reflected) bootstrap interval [2v - q_hi, 2v - q_lo], floored at 0.

    PSI and max - min gaps are biased upward in resamples; reflecting keeps the interval
    around the estimate where a percentile interval would sit above it.
    """
    tail = (1 - confidence) / 2
    low, high = 2 * value - float(np.quantile(draws, 1 - tail)), 2 * value - float(np.quantile(draws, tail))
    return max(0.0, low), max(0.0, high, value)




def feature_metrics(
    spec: DatasetSpec, ref: pd.DataFrame, win: pd.DataFrame, cfg: Monitoring, rng, scope: str | None
) -> list[Metric]:
    metrics = []
    suffix = f"|{scope}" if scope else ""
    for column in spec.features.numeric:
        r, w = ref[column].dropna().to_numpy(), win[column].dropna().to_numpy()
        if len(r) == 0 or len(w) == 0:
            continue
        value, p, low, high = ks_metric(r, w, cfg.confidence)
        metrics.append(Metric(key=f"ks:{column}{suffix}", kind="ks", feature=column, group=scope, value=value, low=low,
                              high=high, threshold=cfg.ks_threshold, p_value=p, rows=len(w)))
    for column in spec.features.categorical:
        value, p, low, high = psi_metric(ref[column], win[column], cfg.confidence, cfg.bootstrap, rng)
        metrics.append(Metric(key=f"psi:{column}{suffix}", kind="psi", feature=column, group=scope, value=value, low=low,
                              high=high, threshold=cfg.psi_threshold, p_value=p, rows=len(win)))
    return metrics


