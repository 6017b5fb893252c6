"""Drift statistics of a window against the reference, built to hold their false-alert rate.

Each drift metric pairs an **effect size** with a **test of "no drift"**:

* numeric feature: the two-sample KS statistic, its SciPy p-value (``ks_2samp``; ties make it
  conservative) and a DKW band as its interval;
* categorical feature and the groups' shares: the population stability index over
  **pooled** levels with Pearson's chi-square test of the 2 x k table (``chi2_contingency``)
  and a bootstrap interval;
* the share of rows with no sensitive value (when the reference or the window has any): the
  absolute change from the reference, Pearson's chi-square test of the 2 x 2 table and
  Newcombe's hybrid score interval of the difference (Wilson intervals of both shares).

A metric breaches only when its effect exceeds the policy's threshold **and** its test rejects
at ``false_alert_rate / 2 / (tests in the window)`` (Bonferroni over every drift test of the
window; the fairness gaps spend the other half, ``fairness.gap_confidence``), so that with no
drift any breach, and so any alert, happens in at most ``false_alert_rate`` of windows. Large windows: every trivial shift is significant, the effect
threshold decides. Small windows: the effect estimate is noise, the test decides.

Why a pooled chi-square test rather than PSI against a resampled threshold: PSI over raw
levels is dominated by empty cells in small windows (30 rows over Adult's 41 native countries:
PSI > 0.2 with no drift at all), and calibrating its threshold by resampling needs
~1/alpha resamples per metric and window (about 10^4 at the per-test levels used here), with
the tail quantile itself noisy. Pearson's test has a known null distribution once every cell's
expected count is at least ``min_expected_count`` (Cochran's rule), which pooling guarantees:
levels rare in the reference, and levels seen only in the window, are merged, smallest first,
until the pool itself reaches that count. It costs one table per metric at any window size,
and PSI is reported over the same pooled levels, so it no longer counts empty cells as drift.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2_contingency, ks_2samp

from fairloop.data.dataset_spec import FeatureSpec
from fairloop.data.parsing import MISSING_GROUP
from fairloop.gates.policy import Monitoring
from fairloop.monitor.report import Metric

MISSING = "<missing>"
POOLED = "<pooled>"
DRIFT_KINDS = ("ks", "psi", "group_share", "missing_sensitive_rate")


def dkw_epsilon(n: int, alpha: float) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band of an empirical CDF from n rows."""
    return math.sqrt(math.log(2 / alpha) / (2 * n))


def ks_metric(reference: np.ndarray, window: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """KS statistic, its asymptotic p-value and a DKW interval (both CDFs' bands, each at (1-c)/2)."""

    result = ks_2samp(reference, window, method="asymp")
    slack = dkw_epsilon(len(reference), (1 - confidence) / 2) + dkw_epsilon(len(window), (1 - confidence) / 2)
    value = float(result.statistic)
    return value, float(result.pvalue), max(0.0, value - slack), min(1.0, value + slack)


def _psi(ref_counts: np.ndarray, win_counts: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """PSI = sum (w - r) ln(w / r) over bins, proportions floored to avoid log(0); rows = draws."""
    r = np.maximum(ref_counts / ref_counts.sum(axis=-1, keepdims=True), floor)
    w = np.maximum(win_counts / win_counts.sum(axis=-1, keepdims=True), floor)
    return np.sum((w - r) * np.log(w / r), axis=-1)


def pooled_counts(reference: pd.Series, window: pd.Series, min_expected: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reference and window counts per level, rare levels pooled.

    A level's expected window count with no drift is (window rows) x (its reference share).
    Levels below ``min_expected`` (and levels the reference lacks) form one pool; if the pool
    is still below it, the next rarest levels join it. Returns both count vectors and the bin
    names (the pool last, as ``<pooled>``).
    """
    ref_counts = reference.fillna(MISSING).astype(str).value_counts()
    win_counts = window.fillna(MISSING).astype(str).value_counts()
    levels = ref_counts.index.union(win_counts.index)
    r = ref_counts.reindex(levels, fill_value=0).to_numpy(float)
    w = win_counts.reindex(levels, fill_value=0).to_numpy(float)
    expected = w.sum() * r / r.sum()
    order = np.argsort(expected, kind="stable")  # rarest first
    pooled = np.zeros(len(levels), dtype=bool)
    pool_expected = 0.0
    for i in order:
        if expected[i] >= min_expected and (pool_expected >= min_expected or not pooled.any()):
            break
        pooled[i] = True
        pool_expected += expected[i]
    kept = ~pooled
    names = [str(level) for level in levels[kept]]
    r_bins, w_bins = list(r[kept]), list(w[kept])
    if pooled.any():
        names.append(POOLED)
        r_bins.append(r[pooled].sum())
        w_bins.append(w[pooled].sum())
    return np.array(r_bins), np.array(w_bins), names


def psi_metric(
    reference: pd.Series, window: pd.Series, confidence: float, draws: int, rng: np.random.Generator,
    min_expected: float = 5.0,
) -> tuple[float, float | None, float, float, int]:
    """PSI over pooled levels, Pearson chi-square p-value of the 2 x k table (None with one bin),
    a bootstrap interval and the number of bins."""

    r, w, names = pooled_counts(reference, window, min_expected)
    value = float(_psi(r, w))
    p_value = float(chi2_contingency(np.vstack([r, w]))[1]) if len(names) > 1 else None
    # draws from Jeffreys-smoothed shares: a bin empty in one sample still varies in the
    # resamples, so the interval does not shrink to a point around an extreme PSI
    smooth = lambda c: (c + 0.5) / (c + 0.5).sum()  # noqa: E731
    boot = _psi(rng.multinomial(int(r.sum()), smooth(r), size=draws).astype(float),
                rng.multinomial(int(w.sum()), smooth(w), size=draws).astype(float))
    return (value, p_value, *basic_interval(value, boot, confidence), len(names))


def basic_interval(value: float, draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """Basic (reflected) bootstrap interval [2v - q_hi, 2v - q_lo], floored at 0.

    PSI is biased upward in resamples; reflecting keeps the interval around the estimate where
    a percentile interval would sit above it.
    """
    tail = (1 - confidence) / 2
    low, high = 2 * value - float(np.quantile(draws, 1 - tail)), 2 * value - float(np.quantile(draws, tail))
    return max(0.0, low), max(0.0, high, value)


def feature_metrics(
    features: FeatureSpec, ref: pd.DataFrame, win: pd.DataFrame, cfg: Monitoring, rng, scope: str | None
) -> list[Metric]:
    """KS per numeric and pooled PSI / chi-square per categorical feature; ``scope`` names the group."""
    metrics = []
    suffix = f"|{scope}" if scope else ""
    for column in features.numeric:
        r, w = ref[column].dropna().to_numpy(), win[column].dropna().to_numpy()
        if len(r) == 0 or len(w) == 0:
            continue
        value, p, low, high = ks_metric(r, w, cfg.confidence)
        metrics.append(Metric(key=f"ks:{column}{suffix}", kind="ks", feature=column, group=scope, value=value, low=low,
                              high=high, threshold=cfg.ks_threshold, p_value=p, rows=len(w)))
    for column in features.categorical:
        value, p, low, high, bins = psi_metric(ref[column], win[column], cfg.confidence, cfg.bootstrap, rng,
                                               cfg.min_expected_count)
        metrics.append(Metric(key=f"psi:{column}{suffix}", kind="psi", feature=column, group=scope, value=value, low=low,
                              high=high, threshold=cfg.psi_threshold, p_value=p, rows=len(win), bins=bins))
    return metrics


def missing_rate_metric(ref_groups: pd.Series, win_groups: pd.Series, cfg: Monitoring) -> Metric | None:
    """The change in the share of rows with no sensitive value (group ``'missing'``); None when
    neither the reference nor the window has such rows."""

    ref_missing = int((ref_groups.astype(str) == MISSING_GROUP).sum())
    win_missing = int((win_groups.astype(str) == MISSING_GROUP).sum())
    if ref_missing == 0 and win_missing == 0:
        return None
    table = np.array([[ref_missing, len(ref_groups) - ref_missing], [win_missing, len(win_groups) - win_missing]])
    p_value = float(chi2_contingency(table)[1]) if (table.sum(axis=0) > 0).all() else None
    shares = [(count / len(rows), binomtest(count, len(rows)).proportion_ci(cfg.confidence, method="wilson"))
              for count, rows in ((ref_missing, ref_groups), (win_missing, win_groups))]
    (r, r_ci), (w, w_ci) = shares
    change = w - r
    low = change - math.hypot(w - w_ci.low, r_ci.high - r)  # Newcombe (1998), method 10
    high = change + math.hypot(w_ci.high - w, r - r_ci.low)
    # the metric is the size of the change, either way: its interval is that of |change|
    size_low = 0.0 if low <= 0 <= high else min(abs(low), abs(high))
    return Metric(key=f"missing_sensitive_rate:{ref_groups.name}", kind="missing_sensitive_rate", feature=str(ref_groups.name),
                  value=abs(change), low=size_low, high=max(abs(low), abs(high)), threshold=cfg.missing_sensitive_rate_change,
                  reference=r, p_value=p_value, rows=len(win_groups))


def assign_test_levels(metrics: list[Metric], false_alert_rate: float) -> list[Metric]:
    """Each drift test's level: ``false_alert_rate`` split evenly over the window's drift tests (Bonferroni)."""
    tested = sum(1 for m in metrics if m.kind in DRIFT_KINDS and m.p_value is not None)
    return [m.model_copy(update={"alpha": false_alert_rate / tested}) if m.kind in DRIFT_KINDS and m.p_value is not None else m
            for m in metrics]


def drift_metrics(
    features: FeatureSpec, ref_X: pd.DataFrame, ref_groups: pd.Series, win_X: pd.DataFrame, win_groups: pd.Series,
    cfg: Monitoring, rng: np.random.Generator, skipped: list[str],
) -> list[Metric]:
    """Every drift metric of a window, with its test level: features over all rows, the groups' shares
    (``ref_groups.name`` is the sensitive feature), and features within each group that has
    ``min_group_rows`` window rows (the others are listed in ``skipped``)."""
    sensitive = str(ref_groups.name)
    metrics = feature_metrics(features, ref_X, win_X, cfg, rng, None)
    value, p, low, high, bins = psi_metric(ref_groups, win_groups, cfg.confidence, cfg.bootstrap, rng, cfg.min_expected_count)
    metrics.append(Metric(key=f"group_share:{sensitive}", kind="group_share", feature=sensitive, value=value, low=low,
                          high=high, threshold=cfg.psi_threshold, p_value=p, rows=len(win_X), bins=bins))
    missing_rate = missing_rate_metric(ref_groups, win_groups, cfg)
    if missing_rate is not None:
        metrics.append(missing_rate)
    for group in sorted(set(win_groups.unique()) & set(ref_groups.unique())):
        in_window = (win_groups == group).to_numpy()
        if in_window.sum() < cfg.min_group_rows:
            skipped.append(f"feature drift within {sensitive}={group}: {int(in_window.sum())} rows < {cfg.min_group_rows}")
            continue
        metrics += feature_metrics(features, ref_X[(ref_groups == group).to_numpy()], win_X[in_window], cfg, rng,
                                   f"{sensitive}={group}")
    return assign_test_levels(metrics, cfg.false_alert_rate / 2)  # the fairness gaps have the other half
