"""Fairness in production: selection rates per group, the prediction-rate gap on every row and,
on labelled rows, demographic-parity and equalized-odds differences (Fairlearn), with the gates'
bootstrap intervals (``fairloop.gates.intervals``): one interval method for the same statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate

from fairloop.data.groups import is_intersection
from fairloop.gates.intervals import bootstrap_intervals, family_wise
from fairloop.gates.metrics import (
    GROUP_METRICS,
    MetricSpec,
    shown_group_metrics,
    threshold_on,
)
from fairloop.gates.policy import Monitoring, Policy
from fairloop.monitor.report import GroupRates, Metric

MIN_LABELLED_PER_GROUP = 10
BOOTSTRAP_ROWS = 20_000


def gap_confidence(cfg: Monitoring, gated_gaps: int) -> float:
    """Level of a gated fairness gap's interval: half of ``false_alert_rate`` is the gaps' budget (the
    drift tests have the other half), split over the gated gaps, one-sided: a gap breaches only when
    this interval's lower bound is above its threshold."""
    return 1 - 2 * (cfg.false_alert_rate / 2 / max(1, gated_gaps))


def window_intervals(y: np.ndarray, predictions: np.ndarray, groups: np.ndarray, counted, values: dict[str, float],
                     cfg: Monitoring, seed: int, confidence: float | None = None,
                     simultaneous: bool = False) -> dict[str, tuple[float, float]]:
    """Intervals of the statistics named in ``values`` (names of ``bootstrap_intervals``' results:
    ``demographic_parity_difference``, ``equalized_odds_difference``, ``selection_rate[<group>]``,
    ``min_group_true_positive_rate``; with their point values), over the ``counted`` groups.

    The gates' method: ``fairloop.gates.intervals.bootstrap_intervals`` (row resamples). For the gaps
    (max - min over groups) its percentile interval is turned into the basic (reflected) one:
    a gap's resamples sit above the estimate, most in small windows (a zero gap between two
    groups of 40 rows estimates about 0.1), so a percentile lower bound would lie above the
    threshold by chance alone (measured: 4 % of 100-row COMPAS windows with no drift). Its resample
    matrix grows with rows x draws, so above ``BOOTSTRAP_ROWS`` rows it runs on a random subsample
    of m rows and the interval's half-widths around its midpoint are scaled by sqrt(m / n) and
    placed around the window's own values (an m-out-of-n bootstrap: these statistics are smooth
    functions of group rates, whose spread shrinks as 1 / sqrt(n)).

    ``simultaneous`` (the cells of an intersection; and, as at the gates, any window with more
    than two counted groups): the gates' family-wise intervals, whose gap bounds need no
    reflection (the lower bound is that of the smallest gap every pair allows).
    """
    simultaneous = simultaneous or family_wise(len(counted))

    # only the counted groups' rows: the resamples are stratified by group, so leaving the
    # other groups out changes nothing for these, and every group left counts
    rows = np.flatnonzero(np.isin(np.asarray(groups).astype(str), np.asarray(counted).astype(str)))
    n = len(rows)
    pick = rows if n <= BOOTSTRAP_ROWS else np.sort(np.random.default_rng(seed).choice(rows, BOOTSTRAP_ROWS, replace=False))
    with warnings.catch_warnings():  # rates of a group with no positives (or no labels) are NaN and left out
        warnings.simplefilter("ignore", RuntimeWarning)
        found = bootstrap_intervals(np.asarray(y)[pick], {"window": np.asarray(predictions)[pick]},
                                    np.asarray(groups).astype(str)[pick], n_boot=cfg.bootstrap, confidence=confidence or cfg.confidence,
                                    seed=seed, simultaneous=simultaneous)["window"]
    if len(pick) == n:
        return {name: reflected(values[name], found[name]) if name.endswith("_difference") and not simultaneous
                else found[name] for name in values}
    scale = np.sqrt(len(pick) / n)
    result = {}
    for name, value in values.items():
        low, high = found[name]
        half = (high - low) / 2 * scale
        result[name] = (max(0.0, value - half), min(1.0, value + half))
    return result


def reflected(value: float, percentile: tuple[float, float]) -> tuple[float, float]:
    """The basic bootstrap interval [2v - q_hi, 2v - q_lo] from a percentile interval [q_lo, q_hi], floored at 0."""
    low, high = 2 * value - percentile[1], 2 * value - percentile[0]
    return max(0.0, low), max(0.0, high, value)


def group_rates(predictions: np.ndarray, groups: pd.Series, y: pd.Series | None, rates: pd.DataFrame, cfg: Monitoring,
                seed: int, simultaneous: bool = False) -> list[GroupRates]:
    """Per group: selection rate (interval when the group has ``min_group_rows`` rows) and, on labelled
    rows, true positive rate (interval when it has ``MIN_LABELLED_PER_GROUP`` labelled positives)."""
    predictions = np.asarray(predictions).astype(int)
    big = rates.index[rates["rows"] >= cfg.min_group_rows]
    selection = {}
    if len(big):
        values = {f"selection_rate[{g}]": float(rates.loc[g, "selection_rate"]) for g in big}
        found = window_intervals(np.zeros(len(predictions), dtype=int), predictions, groups.to_numpy(), big.to_numpy(),
                                 values, cfg, seed, simultaneous=simultaneous)
        selection = {g: found[f"selection_rate[{g}]"] for g in big}
    known = np.zeros(len(predictions), dtype=bool) if y is None else y.notna().to_numpy()
    labels = np.zeros(len(predictions), dtype=int) if y is None else y.fillna(0).astype(int).to_numpy()
    result = []
    for group, row in rates.iterrows():
        mine = (groups == group).to_numpy() & known
        positives = int(labels[mine].sum())
        tpr, tpr_interval = None, None
        if positives:
            tpr = float((predictions[mine] & labels[mine]).sum() / positives)
        if positives >= MIN_LABELLED_PER_GROUP:  # a single counted group: the bootstrap's min TPR is its TPR
            tpr_interval = window_intervals(labels[known], predictions[known], groups.to_numpy()[known], [group],
                                            {"min_group_true_positive_rate": tpr}, cfg, seed)["min_group_true_positive_rate"]
        result.append(GroupRates(group=str(group), rows=int(row["rows"]), selection_rate=float(row["selection_rate"]),
                                 selection_interval=selection.get(group), labelled=int(mine.sum()), positives=positives,
                                 true_positive_rate=tpr, tpr_interval=tpr_interval))
    return result


def cells(groups, y: np.ndarray | None, predictions: np.ndarray) -> pd.DataFrame:
    """Rows collapsed to their distinct (group, label, prediction) cells with a row count each.

    Fairlearn's metrics are weighted means over rows, so passing the cells with
    ``sample_weight=rows`` gives exactly the per-row figures at a cost independent of the
    window's size (a million rows are at most 2 x 2 x groups cells).
    """
    frame = pd.DataFrame({"group": np.asarray(groups), "y": 0 if y is None else np.asarray(y).astype(int),
                          "prediction": np.asarray(predictions).astype(int)})
    return frame.value_counts(sort=False).rename("rows").reset_index()


def selection_rates(predictions: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    """Per group: rows and selection rate (Fairlearn MetricFrame over the row cells)."""

    table = cells(groups, None, predictions)
    frame = MetricFrame(
        metrics={"selection_rate": selection_rate}, y_true=table["prediction"].to_numpy(),
        y_pred=table["prediction"].to_numpy(), sensitive_features=table["group"].to_numpy(),
        sample_params={"selection_rate": {"sample_weight": table["rows"].to_numpy()}},
    )
    by_group = frame.by_group.copy()
    by_group["rows"] = table.groupby("group")["rows"].sum().reindex(by_group.index)
    return by_group



def labelled_gaps(policy: Policy) -> list[tuple[MetricSpec, float | None]]:
    """The between-group gaps a labelled window reports, in table order, with their thresholds: those
    the metric table always shows and those the policy gates. A gap that needs no labels is reported,
    not gated (the prediction-rate gap gates it on every row); a monitoring field named like the
    policy's threshold overrides it there."""
    shown = shown_group_metrics(policy.thresholds)
    found = []
    for metric in (m for m in GROUP_METRICS if m in shown and m.shape == "gap"):
        threshold = None
        if metric.needs_labels:
            field = next(g.field for g in metric.gates if g.comparison == "max")
            threshold = getattr(policy.monitoring_settings, field, None)
            if threshold is None:
                threshold = threshold_on(policy.thresholds, metric.name)
        found.append((metric, threshold))
    return found


def labelled_metrics(y, predictions, groups, reference, ref_predictions, ref_groups, policy, cfg, sensitive, seed, skipped,
                     confidence: float):
    counts = pd.DataFrame({"g": groups.to_numpy(), "y": y})
    per_group = counts.groupby("g").agg(pos=("y", "sum"), rows=("y", "size"))
    per_group["neg"] = per_group["rows"] - per_group["pos"]
    usable = per_group[(per_group["pos"] >= MIN_LABELLED_PER_GROUP) & (per_group["neg"] >= MIN_LABELLED_PER_GROUP)]
    gaps = labelled_gaps(policy)
    if len(usable) < 2:
        skipped.append(f"{'/'.join(m.label for m, _ in gaps)}: fewer than two groups with {MIN_LABELLED_PER_GROUP} "
                       "labelled positives and negatives")
        return []
    keep = groups.isin(usable.index).to_numpy()
    table = cells(groups[keep], y[keep], predictions[keep])
    weighted = {"sensitive_features": table["group"].to_numpy(), "sample_weight": table["rows"].to_numpy()}
    values = {m.name: float(m.fairlearn(table["y"].to_numpy(), table["prediction"].to_numpy(), **weighted)) for m, _ in gaps}
    found = window_intervals(y[keep], predictions[keep], groups[keep].to_numpy(), usable.index.to_numpy(), values, cfg, seed,
                             confidence, simultaneous=is_intersection(sensitive))
    ref_known = reference.y.notna().to_numpy() if reference.y is not None else None
    n = int(table["rows"].sum())
    result = []
    for metric, threshold in gaps:
        ref_value = None
        if metric.needs_labels:
            if (metric.name, sensitive) not in reference.memo:
                reference.memo[(metric.name, sensitive)] = None if ref_known is None or not ref_known.any() else float(
                    metric.fairlearn(reference.y[ref_known].astype(int).to_numpy(), ref_predictions[ref_known],
                                     sensitive_features=ref_groups[ref_known].to_numpy()))
            ref_value = reference.memo[(metric.name, sensitive)]
        low, high = found[metric.name]
        result.append(Metric(key=f"{metric.name}:{sensitive}", kind=metric.name, feature=sensitive, value=values[metric.name],
                             low=low, high=high, threshold=threshold, reference=ref_value, rows=n, confidence=confidence))
    return result


def prediction_rate_gap(predictions: np.ndarray, groups: pd.Series, rates: pd.DataFrame, ref_rates: pd.DataFrame,
                        policy: Policy, sensitive: str, seed: int, skipped: list[str], confidence: float) -> list[Metric]:
    """Max - min selection rate over the groups with ``min_group_rows`` window rows (needs no labels)."""
    cfg = policy.monitoring_settings
    big = rates[rates["rows"] >= cfg.min_group_rows]
    small = rates.index.difference(big.index)
    if len(small):
        skipped.append(f"prediction-rate gap leaves out group(s) {sorted(map(str, small))} (< {cfg.min_group_rows} rows)")
    gap_threshold = cfg.max_prediction_rate_gap
    if gap_threshold is None:
        gap_threshold = policy.thresholds.max_demographic_parity_difference
    if len(big) < 2:
        skipped.append(f"prediction-rate gap: fewer than two groups with {cfg.min_group_rows} rows")
        return []
    gap = float(big["selection_rate"].max() - big["selection_rate"].min())
    # no labels: every row in one label stratum, so resamples vary the groups' selection rates only
    low, high = window_intervals(np.zeros(len(predictions), dtype=int), predictions, groups.to_numpy(), big.index.to_numpy(),
                                 {"demographic_parity_difference": gap}, cfg, seed, confidence,
                                 simultaneous=is_intersection(sensitive))["demographic_parity_difference"]
    ref_big = ref_rates.loc[ref_rates.index.intersection(big.index), "selection_rate"]
    return [Metric(
        key=f"prediction_rate_gap:{sensitive}", kind="prediction_rate_gap", feature=sensitive, value=gap, low=low, high=high,
        threshold=gap_threshold, reference=float(ref_big.max() - ref_big.min()) if len(ref_big) >= 2 else None,
        rows=int(big["rows"].sum()), confidence=confidence,
    )]


def watch_cells(predictions: np.ndarray, rows_groups: pd.DataFrame, y: pd.Series | None, reference, ref_predictions,
                names: list[str], policy: Policy, seed: int, skipped: list[str],
                confidence: float) -> tuple[list[Metric], list[GroupRates]]:
    """The cells of each intersection in ``names`` (columns of ``rows_groups``): their worst-cell
    gap (max - min selection rate, simultaneous interval; judged by the same alert rules as the
    champion's feature) and every cell's rates, worst first (farthest from the window's rate)."""
    cfg = policy.monitoring_settings
    metrics, cells_seen = [], []
    for name in names:
        window_cells = rows_groups[name]
        rates = selection_rates(predictions, window_cells)
        if ("rates", name) not in reference.memo:
            reference.memo[("rates", name)] = selection_rates(ref_predictions, reference.groups[name])
        metrics += prediction_rate_gap(predictions, window_cells, rates, reference.memo[("rates", name)], policy, name, seed,
                                       skipped, confidence)
        cells_seen += group_rates(predictions, window_cells, y, rates, cfg, seed, simultaneous=True)
    overall = float(np.mean(predictions)) if len(predictions) else 0.0
    return metrics, sorted(cells_seen, key=lambda c: -abs(c.selection_rate - overall))
