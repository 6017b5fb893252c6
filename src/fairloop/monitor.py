"""Production monitoring: drift of a window of production rows against the champion's training data.

For one window (features, optional labels, optional timestamps; predictions from the champion
unless the window carries them) the monitor measures, against the real (non-synthetic) rows of
the champion's training snapshot:

* per feature: the two-sample KS statistic (numeric, SciPy ``ks_2samp``) or the population
  stability index with a chi-square test (categorical, SciPy ``chi2_contingency``), over all
  rows and within each group of the champion's sensitive feature;
* the groups' shares (PSI), the prediction-rate gap between groups (needs no labels) and, on
  rows with labels, demographic-parity and equalized-odds differences (Fairlearn).

Every metric has a threshold (the policy's ``monitoring`` section) and an interval: a DKW band
for KS, a parametric bootstrap of the counts for PSI and the fairness gaps (cheap at any window
size). A breach is a value above its threshold; an **alert** fires only when the breach persists
for ``persistence_windows`` consecutive windows or its interval lies wholly above the threshold,
so one noisy window does not retrain anything.

Plain functions and pydantic models; the Prefect flow (``flows/monitor.py``) only adds
artifacts and the drift event.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fairloop.datasets import DatasetSpec, SourceFile, load_dataset_spec, parse_rows, read_raw_file
from fairloop.errors import BadInputError
from fairloop.model import FairModel
from fairloop.policy import Monitoring, Policy, load_policy

DRIFT_EVENT = "fairloop.drift.detected"
MISSING = "<missing>"
MIN_LABELLED_PER_GROUP = 10
Kind = Literal["ks", "psi", "group_share", "prediction_rate_gap", "demographic_parity_difference", "equalized_odds_difference"]


# -- data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rows:
    """Rows to compare: typed features, group names, optional 0/1 labels (NaN = unknown), predictions."""

    X: pd.DataFrame
    groups: pd.DataFrame
    y: pd.Series | None = None
    predictions: np.ndarray | None = None
    times: pd.Series | None = None
    raw: pd.DataFrame | None = None
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # reference-side figures, computed once

    def __len__(self) -> int:
        return len(self.X)

    def take(self, mask: np.ndarray) -> Rows:
        pick = lambda part: None if part is None else part.iloc[mask].reset_index(drop=True)  # noqa: E731
        return Rows(
            X=pick(self.X), groups=pick(self.groups), y=pick(self.y),
            predictions=None if self.predictions is None else self.predictions[mask],
            times=pick(self.times), raw=pick(self.raw),
        )


def reference_rows(spec: DatasetSpec, snapshot: Path) -> Rows:
    """The real rows of a champion's training snapshot (``registry/<dataset>/train.csv``)."""
    if not snapshot.is_file():
        raise BadInputError("the champion has no training snapshot", source=str(snapshot))
    frame = pd.read_csv(snapshot, low_memory=False)
    wanted = [*spec.features.columns, spec.label.column, *(f"sensitive.{s.name}" for s in spec.sensitive)]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise BadInputError(f"training snapshot lacks column(s) {missing}", source=str(snapshot))
    if "synthetic" in frame.columns:
        frame = frame[~frame["synthetic"].astype(str).str.lower().isin(["true", "1"])].reset_index(drop=True)
    X = frame[spec.features.columns].copy()
    for column in spec.features.numeric:
        X[column] = pd.to_numeric(X[column], errors="coerce").astype(float)
    for column in spec.features.categorical:
        X[column] = X[column].where(X[column].isna(), X[column].astype(str)).astype("str")
    groups = frame[[f"sensitive.{s.name}" for s in spec.sensitive]].astype(str)
    groups.columns = [s.name for s in spec.sensitive]
    return Rows(X=X, groups=groups, y=frame[spec.label.column].astype(float))


def read_window(
    spec: DatasetSpec, path: str | Path, *, time_column: str | None = None, prediction_column: str | None = None
) -> Rows:
    """A production window file in the dataset's raw format, parsed by the spec.

    The label column is optional (and may be partly empty); ``time_column`` (default: the
    spec's) is required when the spec names one; ``prediction_column`` holds the 0/1 decisions
    production made (otherwise the champion's predictions are used).
    """
    file_path = Path(path)
    time_column = time_column or spec.time_column
    raw = read_raw_file(spec, SourceFile(path=str(path)), file_path)
    extra = [c for c in (time_column, prediction_column) if c]
    parsed = parse_rows(spec, raw, file_path, extra_columns=extra)
    times = None
    if time_column:
        times = pd.to_datetime(parsed.raw[time_column], errors="coerce")
        bad = times.isna()
        if bad.any():
            raise BadInputError(
                f"time column '{time_column}' has {int(bad.sum())} empty or unparseable value(s), first "
                f"{parsed.raw[time_column][bad].iloc[0]!r}",
                source=str(file_path),
            )
    predictions = None
    if prediction_column:
        values = pd.to_numeric(parsed.raw[prediction_column], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            raise BadInputError(
                f"prediction column '{prediction_column}' must hold 0 or 1; found {parsed.raw[prediction_column][bad].iloc[0]!r}",
                source=str(file_path),
            )
        predictions = values.to_numpy().astype(int)
    return Rows(X=parsed.X, groups=parsed.groups, y=parsed.y, predictions=predictions, times=times, raw=parsed.raw)


@dataclass(frozen=True)
class Window:
    rows: Rows
    start: str | None
    end: str | None

    @property
    def label(self) -> str:
        return f"{self.start} .. {self.end}" if self.start else "all rows"


def split_windows(rows: Rows, days: int, *, start: str | None = None) -> list[Window]:
    """Consecutive ``days``-long windows from ``start`` (default: the first timestamp); empty ones are skipped."""
    if rows.times is None:
        return [Window(rows, None, None)]
    times = rows.times
    origin = pd.Timestamp(start) if start else times.min().normalize()
    index = ((times - origin) // pd.Timedelta(days=days)).to_numpy()
    windows = []
    for k in np.unique(index[index >= 0]):
        begin = origin + pd.Timedelta(days=int(k) * days)
        end = begin + pd.Timedelta(days=days)
        windows.append(Window(rows.take(index == k), begin.date().isoformat(), end.date().isoformat()))
    return windows


def latest_window(rows: Rows, days: int, *, end: str | None = None) -> Window:
    """The ``days`` before ``end`` (default: just after the last timestamp); all rows when untimed."""
    if rows.times is None:
        return Window(rows, None, None)
    stop = pd.Timestamp(end) if end else rows.times.max().normalize() + pd.Timedelta(days=1)
    begin = stop - pd.Timedelta(days=days)
    mask = ((rows.times >= begin) & (rows.times < stop)).to_numpy()
    return Window(rows.take(mask), begin.date().isoformat(), stop.date().isoformat())


# -- statistics -----------------------------------------------------------------------------
class Metric(BaseModel):
    key: str
    kind: Kind
    feature: str | None = None
    group: str | None = None
    value: float
    low: float
    high: float
    threshold: float | None
    reference: float | None = None
    p_value: float | None = None
    rows: int
    breach: bool = False
    interval_breach: bool = False
    streak: int = 0
    alert: bool = False


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


# -- one window -----------------------------------------------------------------------------
class WindowReport(BaseModel):
    dataset: str
    champion_version: str
    sensitive: str
    source: str
    window_start: str | None
    window_end: str | None
    rows: int
    labelled_rows: int
    reference_rows: int
    checked_at: str
    seconds: float
    metrics: list[Metric]
    selection_rates: dict[str, float]
    reference_selection_rates: dict[str, float]
    skipped: list[str] = []
    window_file: str | None = None
    alert: bool = False

    @property
    def breaches(self) -> list[Metric]:
        return [m for m in self.metrics if m.breach]

    @property
    def alerts(self) -> list[Metric]:
        return [m for m in self.metrics if m.alert]

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    def table(self) -> list[dict[str, Any]]:
        """One row per metric (for the Prefect table artifact and the CLI)."""
        return [
            {"metric": m.key, "value": round(m.value, 4), "interval": f"[{m.low:.3f}, {m.high:.3f}]",
             "threshold": m.threshold, "p_value": None if m.p_value is None else float(f"{m.p_value:.3g}"),
             "rows": m.rows, "breach": m.breach, "streak": m.streak, "alert": m.alert}
            for m in sorted(self.metrics, key=lambda m: (not m.alert, not m.breach, -(m.value / (m.threshold or 1))))
        ]


def _feature_metrics(
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


def check_window(
    spec: DatasetSpec,
    window: Window,
    reference: Rows,
    model: FairModel,
    policy: Policy,
    *,
    sensitive: str,
    champion_version: str,
    source: str,
    previous: WindowReport | None = None,
    seed: int = 0,
) -> WindowReport:
    """Measure one window against the reference; breaches, streaks and alerts included."""
    started = time.perf_counter()
    cfg = policy.monitoring_settings
    rows = window.rows
    if len(rows) == 0:
        raise BadInputError(f"window {window.label} of {source} has no rows")
    rng = np.random.default_rng(seed)
    skipped: list[str] = []
    metrics = _feature_metrics(spec, reference.X, rows.X, cfg, rng, None)

    ref_groups, win_groups = reference.groups[sensitive], rows.groups[sensitive]
    value, p, low, high = psi_metric(ref_groups, win_groups, cfg.confidence, cfg.bootstrap, rng)
    metrics.append(Metric(key=f"group_share:{sensitive}", kind="group_share", feature=sensitive, value=value, low=low,
                          high=high, threshold=cfg.psi_threshold, p_value=p, rows=len(rows)))
    for group in sorted(set(win_groups.unique()) & set(ref_groups.unique())):
        in_window = (win_groups == group).to_numpy()
        if in_window.sum() < cfg.min_group_rows:
            skipped.append(f"feature drift within {sensitive}={group}: {int(in_window.sum())} rows < {cfg.min_group_rows}")
            continue
        metrics += _feature_metrics(spec, reference.X[(ref_groups == group).to_numpy()], rows.X[in_window], cfg, rng,
                                    f"{sensitive}={group}")

    predictions = rows.predictions if rows.predictions is not None else model.predict(rows.X, rows.groups)
    ref_predictions = reference.predictions if reference.predictions is not None else model.predict(reference.X, reference.groups)
    rates = selection_rates(predictions, win_groups)
    if ("rates", sensitive) not in reference.memo:
        reference.memo[("rates", sensitive)] = selection_rates(ref_predictions, ref_groups)
    ref_rates = reference.memo[("rates", sensitive)]
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
        metrics.append(Metric(
            key=f"prediction_rate_gap:{sensitive}", kind="prediction_rate_gap", feature=sensitive,
            value=float(big["selection_rate"].max() - big["selection_rate"].min()), low=low, high=high,
            threshold=gap_threshold, reference=float(ref_big.max() - ref_big.min()) if len(ref_big) >= 2 else None,
            rows=int(totals.sum()),
        ))
    else:
        skipped.append(f"prediction-rate gap: fewer than two groups with {cfg.min_group_rows} rows")

    labelled = 0
    if rows.y is not None and rows.y.notna().any():
        known = rows.y.notna().to_numpy()
        labelled = int(known.sum())
        metrics += _labelled_metrics(
            rows.y[known].astype(int).to_numpy(), predictions[known], win_groups[known], reference, ref_predictions,
            ref_groups, policy, cfg, sensitive, rng, skipped,
        )
    else:
        skipped.append("equalized odds: the window has no labels")

    report = WindowReport(
        dataset=spec.name, champion_version=champion_version, sensitive=sensitive, source=source,
        window_start=window.start, window_end=window.end, rows=len(rows), labelled_rows=labelled,
        reference_rows=len(reference), checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=0.0, metrics=metrics,
        selection_rates={str(g): float(r) for g, r in rates["selection_rate"].items()},
        reference_selection_rates={str(g): float(r) for g, r in ref_rates["selection_rate"].items()},
        skipped=skipped,
    )
    report = judge(report, cfg, previous)
    return report.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


def _labelled_metrics(y, predictions, groups, reference, ref_predictions, ref_groups, policy, cfg, sensitive, rng, skipped):
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


def judge(report: WindowReport, cfg: Monitoring, previous: WindowReport | None) -> WindowReport:
    """Breach, streak (consecutive windows in breach, this one included) and alert per metric.

    The streak continues only from the previous window checked against the same champion.
    """
    before = {}
    if previous is not None and previous.dataset == report.dataset and previous.champion_version == report.champion_version:
        before = {m.key: m.streak for m in previous.metrics}
    judged = []
    for m in report.metrics:
        breach = m.threshold is not None and m.value > m.threshold
        interval_breach = breach and m.low > m.threshold
        streak = before.get(m.key, 0) + 1 if breach else 0
        alert = ("persistent" in cfg.alert_on and breach and streak >= cfg.persistence_windows) or (
            "interval" in cfg.alert_on and interval_breach
        )
        judged.append(m.model_copy(update={"breach": breach, "interval_breach": interval_breach, "streak": streak, "alert": alert}))
    return report.model_copy(update={"metrics": judged, "alert": any(m.alert for m in judged)})


# -- the event a remediation deployment is triggered by ------------------------------------
def dataset_resource_id(dataset: str) -> str:
    return f"fairloop.dataset.{dataset}"


def drift_event(report: WindowReport) -> dict[str, Any]:
    """Keyword arguments of ``prefect.events.emit_event`` for an alerting window."""
    return {
        "event": DRIFT_EVENT,
        "resource": {
            "prefect.resource.id": dataset_resource_id(report.dataset),
            "prefect.resource.name": report.dataset,
            "fairloop.champion": report.champion_version,
        },
        "related": [{
            "prefect.resource.id": f"fairloop.model.{report.dataset}.{report.champion_version}",
            "prefect.resource.role": "champion",
            "prefect.resource.name": f"{report.dataset} {report.champion_version}",
        }],
        "payload": {
            "dataset": report.dataset,
            "champion_version": report.champion_version,
            "window_start": report.window_start,
            "window_end": report.window_end,
            "window_file": report.window_file,
            "rows": report.rows,
            "alerts": [m.model_dump(include={"key", "value", "low", "high", "threshold", "streak"}) for m in report.alerts],
        },
    }


# -- state, files, plots -----------------------------------------------------------------------
def state_folder(state_dir: Path, dataset: str) -> Path:
    return Path(state_dir) / "monitor" / dataset


def last_report(state_dir: Path, dataset: str) -> WindowReport | None:
    history = state_folder(state_dir, dataset) / "history.jsonl"
    if not history.is_file():
        return None
    lines = [line for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
    return WindowReport.model_validate_json(lines[-1]) if lines else None


def window_stem(report: WindowReport) -> str:
    span = f"{report.window_start}_{report.window_end}" if report.window_start else "all"
    return f"{span}-{report.checked_at.replace(':', '').replace('+0000', 'Z')}"


def write_window_file(spec: DatasetSpec, rows: Rows, path: Path) -> Path:
    """The window's rows in the dataset's raw format (what a triggered rerun trains on)."""
    if rows.raw is None:
        raise BadInputError("this window has no raw rows to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = spec.format
    columns = fmt.columns if not fmt.header and fmt.columns else list(rows.raw.columns)
    rows.raw.to_csv(path, sep=fmt.separator, header=fmt.header, index=False, columns=columns, encoding=fmt.encoding)
    return path


def record(report: WindowReport, spec: DatasetSpec, rows: Rows, state_dir: Path) -> WindowReport:
    """Write the window's rows, its JSON record and plot; append it to the dataset's history."""
    folder = state_folder(state_dir, report.dataset)
    stem = window_stem(report)
    if rows.raw is not None:  # rows built in memory (no raw file behind them) have nothing to write
        window_file = write_window_file(spec, rows, folder / "windows" / f"{stem}.csv")
        report = report.model_copy(update={"window_file": str(window_file.resolve())})
    (folder / "records").mkdir(parents=True, exist_ok=True)
    (folder / "records" / f"{stem}.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    plot_window(report, folder / "records" / f"{stem}.png")
    with (folder / "history.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(report.model_dump_json() + "\n")
    return report


def plot_window(report: WindowReport, path: Path) -> Path:
    """Each metric as a share of its threshold (1 = threshold) with its interval; groups' selection rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gated = sorted((m for m in report.metrics if m.threshold), key=lambda m: m.value / m.threshold, reverse=True)[:20]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.3 * len(gated) + 1)), gridspec_kw={"width_ratios": [3, 1]})
    positions = np.arange(len(gated))[::-1]
    colours = ["#c0392b" if m.alert else "#e67e22" if m.breach else "#2e86c1" for m in gated]
    left.barh(positions, [m.value / m.threshold for m in gated], color=colours)
    left.errorbar([m.value / m.threshold for m in gated], positions,
                  xerr=[[max(0.0, m.value - m.low) / m.threshold for m in gated], [max(0.0, m.high - m.value) / m.threshold for m in gated]],
                  fmt="none", ecolor="black", capsize=2, lw=0.8)
    left.axvline(1.0, color="black", ls="--", lw=1)
    left.set_yticks(positions, [m.key for m in gated], fontsize=7)
    left.set_xlabel("value / threshold (red: alert, orange: breach)")
    left.set_title(f"{report.dataset} {report.champion_version}: window {report.window_start or 'all'} .. {report.window_end or ''}", fontsize=9)
    groups = sorted(set(report.selection_rates) | set(report.reference_selection_rates))
    x = np.arange(len(groups))
    right.bar(x - 0.2, [report.reference_selection_rates.get(g, np.nan) for g in groups], 0.4, label="reference")
    right.bar(x + 0.2, [report.selection_rates.get(g, np.nan) for g in groups], 0.4, label="window")
    right.set_xticks(x, groups, rotation=30, fontsize=7)
    right.set_title("selection rate by group", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_series(reports: list[WindowReport], path: Path, title: str = "") -> Path:
    """Per window: the worst feature drift (KS, PSI), group-share PSI and fairness gaps, alerts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.window_start or str(i) for i, r in enumerate(reports)]
    x = np.arange(len(reports))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.55 * len(reports) + 3), 7), sharex=True)
    panels = [
        (axes[0], [("ks", "max KS (all rows)", None), ("ks", "max KS (within a group)", "group"), ("psi", "max PSI categorical", None),
                   ("group_share", "group-share PSI", None)]),
        (axes[1], [("prediction_rate_gap", "prediction-rate gap", None), ("equalized_odds_difference", "EOD (labelled)", None)]),
    ]
    for ax, series in panels:
        for kind, name, scope in series:
            values = []
            for r in reports:
                chosen = [m for m in r.metrics if m.kind == kind and ((m.group is not None) == (scope == "group"))]
                values.append(max((m.value for m in chosen), default=np.nan))
            ax.plot(x, values, marker="o", label=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if reports:
        cfg_ks = next((m.threshold for m in reports[0].metrics if m.kind == "ks"), None)
        if cfg_ks:
            axes[0].axhline(cfg_ks, color="grey", ls="--", lw=1)
        gap = next((m.threshold for m in reports[0].metrics if m.kind == "prediction_rate_gap" and m.threshold), None)
        if gap:
            axes[1].axhline(gap, color="grey", ls="--", lw=1)
    for i, r in enumerate(reports):
        if r.alert:
            for ax in axes:
                ax.axvspan(i - 0.4, i + 0.4, color="#c0392b", alpha=0.15)
    axes[1].set_xticks(x, labels, rotation=45, fontsize=7)
    axes[0].set_title(title or "drift per window (red band: alert)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_markdown(report: WindowReport) -> str:
    lines = [
        f"# Monitor: {report.dataset} {report.champion_version}, window {report.window_start or 'all rows'} .. {report.window_end or ''}",
        "",
        f"{report.rows} rows ({report.labelled_rows} labelled) against {report.reference_rows} reference rows; "
        f"**{'ALERT' if report.alert else 'no alert'}**; {len(report.breaches)} breach(es).",
        "",
        "| metric | value | interval | threshold | streak | alert |",
        "|---|---|---|---|---|---|",
    ]
    for m in report.breaches or []:
        lines.append(f"| {m.key} | {m.value:.3f} | [{m.low:.3f}, {m.high:.3f}] | {m.threshold} | {m.streak} | {'**yes**' if m.alert else 'no'} |")
    if not report.breaches:
        lines.append("| (no breach) | | | | | |")
    if report.skipped:
        lines += ["", "Not checked: " + "; ".join(report.skipped)]
    return "\n".join(lines) + "\n"


# -- the whole check ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Champion:
    version: str
    sensitive: str
    model: FairModel
    reference: Rows


def load_champion(registry, spec: DatasetSpec) -> Champion:
    """The registry's champion for ``spec`` and its reference rows (real rows of its training snapshot)."""
    loaded = registry.load_champion(spec.name)
    if loaded is None:
        known = ", ".join(registry.datasets()) or "none"
        raise BadInputError(
            f"no champion for dataset '{spec.name}' in the registry at {registry.root} (datasets with a champion: {known})"
        )
    entry, model = loaded
    sensitive = entry.lineage.sensitive
    reference = reference_rows(spec, registry.root / spec.name / "train.csv")
    reference = replace(reference, predictions=model.predict(reference.X, reference.groups))
    return Champion(version=entry.version, sensitive=sensitive, model=model, reference=reference)


def run_monitor(
    dataset: str | Path,
    window: str | Path,
    policy: str | Path,
    registry,
    state_dir: Path,
    *,
    window_end: str | None = None,
    every_window: bool = False,
    prediction_column: str | None = None,
    persist: bool = True,
) -> list[WindowReport]:
    """Check the latest window of ``window`` (or every window in order) against the champion.

    Each report is recorded under ``state_dir/monitor/<dataset>/`` (history, JSON record,
    plot, the window's rows) unless ``persist`` is false.
    """
    spec = load_dataset_spec(dataset)
    policy_spec = load_policy(policy)
    cfg = policy_spec.monitoring_settings
    champion = load_champion(registry, spec)
    rows = read_window(spec, window, prediction_column=prediction_column)
    windows = split_windows(rows, cfg.window_days) if every_window else [latest_window(rows, cfg.window_days, end=window_end)]
    previous = last_report(state_dir, spec.name) if persist else None
    reports = []
    for part in windows:
        if len(part.rows) == 0:
            raise BadInputError(f"no rows of {window} fall in the window {part.label} ({cfg.window_days} days)")
        report = check_window(spec, part, champion.reference, champion.model, policy_spec, sensitive=champion.sensitive,
                              champion_version=champion.version, source=str(window), previous=previous)
        if persist:
            report = record(report, spec, part.rows, state_dir)
        reports.append(report)
        previous = report
    return reports


def to_json(reports: list[WindowReport]) -> str:
    return json.dumps([json.loads(r.model_dump_json()) for r in reports], indent=2)


# -- serving: the monitor and remediation deployments ------------------------------------------
def build_deployments(
    monitor_flow,
    remediation_flow,
    *,
    dataset: str,
    feed: str,
    policy: str,
    recipe: str = "recipes/none.yaml",
    constraint: str = "constraints/gs-dp.yaml",
    train_rows: int | None = None,
) -> list:
    """The deployments ``fairloop serve`` serves, with the policy's cron schedules.

    * ``monitor/<dataset>``: checks the latest window of the production ``feed`` on
      ``monitoring.schedule.monitor_cron``;
    * ``remediation/<dataset>``: a ``DeploymentEventTrigger`` on ``fairloop.drift.detected``
      for this dataset starts a rerun with the drifted window appended to its training data
      (``requested_by='drift-trigger'``); on ``remediation_cron``, if set, a scheduled rerun
      (``requested_by='schedule'``).
    """
    from prefect.events import DeploymentEventTrigger

    spec = load_dataset_spec(dataset)
    schedule = load_policy(policy).monitoring_settings.schedule
    common = {"dataset": dataset, "recipe": recipe, "constraint": constraint, "policy": policy, "train_rows": train_rows}
    trigger = DeploymentEventTrigger(
        name=f"fairloop-{spec.name}-drift-rerun",
        description=f"Rerun remediation of {spec.name} when the monitor alerts",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": dataset_resource_id(spec.name)},
        parameters={**common, "requested_by": "drift-trigger", "extra_training_data": "{{ event.payload.window_file }}"},
    )
    remediation = remediation_flow.to_deployment(
        name=spec.name, cron=schedule.remediation_cron, triggers=[trigger],
        parameters={**common, "requested_by": "schedule"}, tags=["fairloop", spec.name],
        description=f"Remediation of {spec.name}: triggered by drift alerts, scheduled by the policy",
    )
    monitor = monitor_flow.to_deployment(
        name=spec.name, cron=schedule.monitor_cron, parameters={"dataset": dataset, "window": feed, "policy": policy},
        tags=["fairloop", spec.name], description=f"Drift and fairness monitor of {spec.name} on {feed}",
    )
    return [monitor, remediation]
