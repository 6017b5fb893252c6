"""Fairness in production: selection rates per group, the prediction-rate gap on every row and,
on labelled rows, demographic-parity and equalized-odds differences (Fairlearn)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairloop.monitor.drift import basic_interval
from fairloop.monitor.report import Metric
from fairloop.policy import Policy

MIN_LABELLED_PER_GROUP = 10


def _gap_interval(successes: np.ndarray, totals: np.ndarray, confidence: float, draws: int, rng) -> tuple[float, float]:
    """Bootstrap interval of max - min of per-group proportions (binomial draws per group)."""
    rates = rng.binomial(totals.astype(int), successes / totals, size=(draws, len(totals))) / totals
    observed = successes / totals
    return basic_interval(float(observed.max() - observed.min()), rates.max(axis=1) - rates.min(axis=1), confidence)


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
    from fairlearn.metrics import MetricFrame, selection_rate

    table = cells(groups, None, predictions)
    frame = MetricFrame(
        metrics={"selection_rate": selection_rate}, y_true=table["prediction"].to_numpy(),
        y_pred=table["prediction"].to_numpy(), sensitive_features=table["group"].to_numpy(),
        sample_params={"selection_rate": {"sample_weight": table["rows"].to_numpy()}},
    )
    by_group = frame.by_group.copy()
    by_group["rows"] = table.groupby("group")["rows"].sum().reindex(by_group.index)
    return by_group



def labelled_metrics(y, predictions, groups, reference, ref_predictions, ref_groups, policy, cfg, sensitive, rng, skipped):
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    counts = pd.DataFrame({"g": groups.to_numpy(), "y": y, "p": predictions, "tp": predictions & y, "fp": predictions & (1 - y)})
    per_group = counts.groupby("g").agg(
        pos=("y", "sum"), rows=("y", "size"), tp=("tp", "sum"), fp=("fp", "sum"), sel=("p", "sum"),
    )
    per_group["neg"] = per_group["rows"] - per_group["pos"]
    usable = per_group[(per_group["pos"] >= MIN_LABELLED_PER_GROUP) & (per_group["neg"] >= MIN_LABELLED_PER_GROUP)]
    if len(usable) < 2:
        skipped.append(f"DPD/EOD: fewer than two groups with {MIN_LABELLED_PER_GROUP} labelled positives and negatives")
        return []
    keep = groups.isin(usable.index).to_numpy()
    table = cells(groups[keep], y[keep], predictions[keep])
    weighted = {"sensitive_features": table["group"].to_numpy(), "sample_weight": table["rows"].to_numpy()}
    dpd = float(demographic_parity_difference(table["y"].to_numpy(), table["prediction"].to_numpy(), **weighted))
    eod = float(equalized_odds_difference(table["y"].to_numpy(), table["prediction"].to_numpy(), **weighted))
    low_d, high_d = _gap_interval(usable["sel"].to_numpy(float), usable["rows"].to_numpy(float), cfg.confidence, cfg.bootstrap, rng)
    tpr = rng.binomial(usable["pos"].to_numpy(int), usable["tp"] / usable["pos"], size=(cfg.bootstrap, len(usable))) / usable["pos"].to_numpy()
    fpr = rng.binomial(usable["neg"].to_numpy(int), usable["fp"] / usable["neg"], size=(cfg.bootstrap, len(usable))) / usable["neg"].to_numpy()
    boot = np.maximum(tpr.max(axis=1) - tpr.min(axis=1), fpr.max(axis=1) - fpr.min(axis=1))
    eod_low, eod_high = basic_interval(eod, boot, cfg.confidence)
    ref_known = reference.y.notna().to_numpy() if reference.y is not None else None
    if ("eod", sensitive) not in reference.memo:
        reference.memo[("eod", sensitive)] = None if ref_known is None or not ref_known.any() else float(
            equalized_odds_difference(reference.y[ref_known].astype(int).to_numpy(), ref_predictions[ref_known],
                                      sensitive_features=ref_groups[ref_known].to_numpy()))
    ref_eod = reference.memo[("eod", sensitive)]
    eod_threshold = cfg.max_equalized_odds_difference
    if eod_threshold is None:
        eod_threshold = policy.thresholds.max_equalized_odds_difference
    n = int(table["rows"].sum())
    return [
        # reported, not gated: the prediction-rate gap gates the same quantity on every row
        Metric(key=f"demographic_parity_difference:{sensitive}", kind="demographic_parity_difference", feature=sensitive,
               value=dpd, low=low_d, high=high_d, threshold=None, rows=n),
        Metric(key=f"equalized_odds_difference:{sensitive}", kind="equalized_odds_difference", feature=sensitive,
               value=eod, low=eod_low, high=eod_high,
               threshold=eod_threshold, reference=ref_eod, rows=n),
    ]


def prediction_rate_gap(rates: pd.DataFrame, ref_rates: pd.DataFrame, policy: Policy, sensitive: str, rng,
                        skipped: list[str]) -> list[Metric]:
    """Max - min selection rate over the groups with ``min_group_rows`` window rows (needs no labels)."""
    cfg = policy.monitoring_settings
    big = rates[rates["rows"] >= cfg.min_group_rows]
    small = rates.index.difference(big.index)
    if len(small):
        skipped.append(f"prediction-rate gap leaves out group(s) {sorted(map(str, small))} (< {cfg.min_group_rows} rows)")
    gap_threshold = cfg.max_prediction_rate_gap
    if gap_threshold is None:
        gap_threshold = policy.thresholds.max_demographic_parity_difference
    if len(big) >= 2:
        totals = big["rows"].to_numpy(float)
        successes = (big["selection_rate"] * big["rows"]).round().to_numpy(float)
        low, high = _gap_interval(successes, totals, cfg.confidence, cfg.bootstrap, rng)
        ref_big = ref_rates.loc[ref_rates.index.intersection(big.index), "selection_rate"]
        return [Metric(
            key=f"prediction_rate_gap:{sensitive}", kind="prediction_rate_gap", feature=sensitive,
            value=float(big["selection_rate"].max() - big["selection_rate"].min()), low=low, high=high,
            threshold=gap_threshold, reference=float(ref_big.max() - ref_big.min()) if len(ref_big) >= 2 else None,
            rows=int(totals.sum()),
        )]
    skipped.append(f"prediction-rate gap: fewer than two groups with {cfg.min_group_rows} rows")
    return []
