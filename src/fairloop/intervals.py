"""Bootstrap confidence intervals for the gated metrics.

Fairlearn's ``MetricFrame(n_boot=..., ci_quantiles=...)`` computes the same intervals but
re-runs its whole disaggregation per resample (measured here: 90 s for 200 resamples of the
16k-row Adult test set). Gates need intervals on every run, so this module draws the
resamples once as an index matrix and computes every group's confusion counts with
``np.bincount``: same statistics, well under a second. The same resamples serve every
model (a paired bootstrap), so a drop against the baseline or champion gets its own
interval rather than a difference of two independent ones. AUC and net benefit, which need
the scores rather than the decisions, are computed per resample the same way (no per-resample
sort or loop).
"""

from __future__ import annotations

import numpy as np

GROUP_METRICS = ("demographic_parity_difference", "equalized_odds_difference", "disparate_impact_ratio")


def _resample_metrics(y: np.ndarray, pred: np.ndarray, group_codes: np.ndarray, n_groups: int,
                      samples: np.ndarray, counted: np.ndarray, names: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of one model on every resample (rows of ``samples`` are index vectors); group
    metrics use only the groups flagged in ``counted``."""
    n_boot = samples.shape[0]
    ys, ps, gs = y[samples], pred[samples], group_codes[samples]
    offsets = (np.arange(n_boot)[:, None] * n_groups + gs).ravel()

    def per_group(weights: np.ndarray) -> np.ndarray:
        return np.bincount(offsets, weights=weights.ravel(), minlength=n_boot * n_groups).reshape(n_boot, n_groups)

    with np.errstate(invalid="ignore", divide="ignore"):
        count = per_group(np.ones_like(ys, dtype=float))
        selection = (per_group(ps.astype(float)) / count)[:, counted]
        tpr = (per_group((ps & ys).astype(float)) / per_group(ys.astype(float)))[:, counted]
        fpr = (per_group((ps & (1 - ys)).astype(float)) / per_group((1 - ys).astype(float)))[:, counted]
        gap = lambda rates: np.nanmax(rates, axis=1) - np.nanmin(rates, axis=1)
        return {
            "accuracy": (ps == ys).mean(axis=1),
            "demographic_parity_difference": gap(selection),
            "equalized_odds_difference": np.maximum(gap(tpr), gap(fpr)),
            "disparate_impact_ratio": np.nanmin(selection, axis=1) / np.nanmax(selection, axis=1),
            "min_group_true_positive_rate": np.nanmin(tpr, axis=1),
            **{f"selection_rate[{name}]": selection[:, i] for i, name in enumerate(names[counted])},
        }


def _resample_auc(y: np.ndarray, scores: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """ROC AUC of every resample (ties count half, as in scikit-learn's roc_auc_score).

    Scores are replaced by their rank among the distinct values once; per resample, the
    counts of positives and negatives at each level (``np.bincount``) give, for every
    positive, how many negatives score below it: O(resamples x rows), no per-resample sort.
    """
    n_boot = samples.shape[0]
    levels, level_of = np.unique(scores, return_inverse=True)
    offsets = (np.arange(n_boot)[:, None] * len(levels) + level_of[samples]).ravel()
    ys = y[samples].ravel().astype(float)
    shape = (n_boot, len(levels))
    positives = np.bincount(offsets, weights=ys, minlength=n_boot * len(levels)).reshape(shape)
    negatives = np.bincount(offsets, weights=1 - ys, minlength=n_boot * len(levels)).reshape(shape)
    below = np.cumsum(negatives, axis=1) - negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return (positives * (below + 0.5 * negatives)).sum(axis=1) / (positives.sum(axis=1) * negatives.sum(axis=1))


def net_benefit_min(y: np.ndarray, scores: np.ndarray, samples: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """The lowest decision-curve net benefit (true positives minus false positives weighted by
    the threshold's odds, per row) over 11 thresholds across ``band``, for every row of
    ``samples`` (index vectors; ``np.arange(n)[None, :]`` is the sample itself)."""
    ys = y[samples].astype(bool)
    n = samples.shape[1]
    worst = np.full(samples.shape[0], np.inf)
    for threshold in np.linspace(*band, 11):
        act = (scores >= threshold)[samples]
        benefit = (act & ys).sum(axis=1) / n - (act & ~ys).sum(axis=1) / n * threshold / (1 - threshold)
        worst = np.minimum(worst, benefit)
    return worst


def bootstrap_intervals(
    y_true: np.ndarray,
    predictions: dict[str, np.ndarray],
    groups: np.ndarray,
    *,
    n_boot: int,
    confidence: float,
    seed: int,
    drops_against: tuple[str, ...] = (),
    challengers: tuple[str, ...] = ("candidate",),
    counted_groups: np.ndarray | None = None,
    scores: dict[str, np.ndarray] | None = None,
    net_benefit_band: tuple[float, float] | None = None,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile intervals per model and metric (group metrics over ``counted_groups``, default
    all); plus ``accuracy_drop_vs_<ref>`` for each challenger against each model in ``drops_against``.
    With ``scores`` (positive-class probabilities by model): ``auc`` and ``auc_drop_vs_<ref>``,
    and with a ``net_benefit_band`` also ``net_benefit_min``."""
    y = np.asarray(y_true).astype(int)
    codes, group_codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    counted = np.isin(codes, codes if counted_groups is None else counted_groups)
    samples = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    per_model = {
        name: _resample_metrics(y, np.asarray(pred).astype(int), group_codes, len(codes), samples, counted, codes)
        for name, pred in predictions.items()
    }
    for name, model_scores in (scores or {}).items():
        per_model[name]["auc"] = _resample_auc(y, np.asarray(model_scores), samples)
        if net_benefit_band is not None:
            per_model[name]["net_benefit_min"] = net_benefit_min(y, np.asarray(model_scores), samples, net_benefit_band)
    tail = (1 - confidence) / 2
    interval = lambda values: (float(np.nanquantile(values, tail)), float(np.nanquantile(values, 1 - tail)))
    result = {name: {metric: interval(values) for metric, values in metrics.items()} for name, metrics in per_model.items()}
    for challenger in challengers:
        for reference in drops_against:
            if reference not in per_model or challenger not in per_model:
                continue
            for metric in ("accuracy", "auc"):
                if metric in per_model[reference] and metric in per_model[challenger]:
                    drop = per_model[reference][metric] - per_model[challenger][metric]
                    result[challenger][f"{metric}_drop_vs_{reference}"] = interval(drop)
    return result
