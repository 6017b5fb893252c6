"""Benchmark (not a test): the monitor's false-alert rate with no drift, and its detection delay for
injected shifts of known size, on Adult (many-level categoricals: occupation 14 levels, education
16, native-country 41) and COMPAS.

For each dataset a champion (ThresholdOptimizer, the spec's train split) is promoted into a
scratch registry; its reference is the real rows of its training snapshot. Then, per window size:

* **false alerts**: ``--windows`` windows drawn (with replacement) from the reference itself, no
  drift, checked in order as consecutive 30-day windows (streaks carry over), with the policy's
  monitoring settings: share of windows with an alert (target <= 1 %) and with a breach;
* **detection delay**: ``--sequences`` sequences of up to ``--horizon`` windows, each drawn
  from the reference with one shift injected: windows until the first alert (median over
  sequences; "-" when fewer than half alert within the horizon) and the share detected.

Shifts (their population effect is printed: PSI of the shares, or the KS distance): the smallest
sensitive group's share halved and quartered, 10 % and 30 % of a categorical feature's rows moved
to another level, a numeric feature moved by 0.25 and 0.5 standard deviations. Thresholds of
the default policy: PSI 0.2, KS 0.2; a shift below them is not meant to alert.

    python bench/monitor_error_rate.py [--rows 100,1000] [--windows 200] [--sequences 5] [--horizon 5]
                                       [--policy policies/default.yaml]

Prints one Markdown table and the same figures as JSON (also written to bench/results/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
sys.path.insert(0, str(PROJECT / "bench"))

from monitor_bench import promote_champion  # noqa: E402

from fairloop import monitor as core  # noqa: E402
from fairloop.data.dataset_spec import load_dataset_spec  # noqa: E402
from fairloop.gates.policy import load_policy  # noqa: E402
from fairloop.registry.store import Registry  # noqa: E402

RESULTS = PROJECT / "bench" / "results"
# dataset -> (categorical feature to shift, its level that receives rows, numeric feature to shift)
SHIFTED = {"adult": ("occupation", "Exec-managerial", "age"), "compas": ("c_charge_degree", "M", "priors_count")}


def month(k: int) -> tuple[str, str]:
    start = pd.Timestamp("2030-01-01") + pd.Timedelta(days=30 * k)
    return start.date().isoformat(), (start + pd.Timedelta(days=30)).date().isoformat()


def minority(reference: core.Rows, sensitive: str) -> tuple[str, float]:
    shares = reference.groups[sensitive].value_counts(normalize=True)
    return str(shares.index[-1]), float(shares.iloc[-1])


def draw(reference: core.Rows, rows: int, rng: np.random.Generator, shift: tuple | None, sensitive: str) -> core.Rows:
    """``rows`` rows resampled from the reference, with one shift of known size applied."""
    if shift is not None and shift[0] == "group":  # the smallest group's share multiplied by shift[1]
        groups = reference.groups[sensitive].to_numpy()
        name, share = minority(reference, sensitive)
        target = share * shift[1]
        weights = np.where(groups == name, target / share, (1 - target) / (1 - share))
        picked = reference.take(rng.choice(len(reference), rows, p=weights / weights.sum()))
    else:
        picked = reference.take(rng.integers(0, len(reference), rows))
    if shift is None or shift[0] == "group":
        return picked
    X = picked.X.copy()
    if shift[0] == "categorical":
        column, level, amount = shift[1], shift[2], shift[3]
        moved = (X[column] != level).to_numpy() & (rng.random(len(X)) < amount)
        X.loc[moved, column] = level
    else:
        column, sds = shift[1], shift[2]
        X[column] = X[column] + sds * float(reference.X[column].std())
    return replace(picked, X=X, predictions=None)  # shifted features: the champion predicts again


def population_effect(reference: core.Rows, shift: tuple, sensitive: str) -> str:
    """The shift's size in the population (not a sample): PSI of the shares, or the KS distance."""
    from scipy.stats import ks_2samp

    def psi(before: np.ndarray, after: np.ndarray) -> float:
        return float(np.sum((after - before) * np.log(after / before)))

    if shift[0] == "group":
        _, share = minority(reference, sensitive)
        return f"PSI {psi(np.array([share, 1 - share]), np.array([share * shift[1], 1 - share * shift[1]])):.2f}"
    if shift[0] == "categorical":
        column, level, amount = shift[1], shift[2], shift[3]
        before = reference.X[column].value_counts(normalize=True)
        after = before * (1 - amount)
        after[level] = before[level] + amount * (1 - before[level])
        return f"PSI {psi(before.to_numpy(), after.reindex(before.index).to_numpy()):.2f}"
    values = reference.X[shift[1]].dropna().to_numpy()
    return f"KS {ks_2samp(values, values + shift[2] * values.std()).statistic:.2f}"


def check(champion, spec, policy, rows: core.Rows, k: int, previous):
    start, end = month(k)
    return core.check_window(spec, core.Window(rows, start, end), champion.reference, champion.model, policy,
                             sensitive=champion.sensitive, champion_version=champion.version, source="bench",
                             previous=previous, seed=k)


def false_alerts(champion, spec, policy, rows: int, windows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    previous, alerts, breaches, alerting_metrics = None, 0, 0, {}
    for k in range(windows):
        report = check(champion, spec, policy, draw(champion.reference, rows, rng, None, champion.sensitive), k, previous)
        alerts += report.alert
        breaches += bool(report.breaches)
        for m in report.alerts:
            alerting_metrics[m.key] = alerting_metrics.get(m.key, 0) + 1
        previous = report
    return {"windows": windows, "alert_rate": alerts / windows, "breach_rate": breaches / windows,
            "alerting_metrics": alerting_metrics, "drift_tests_per_window": sum(1 for m in report.metrics if m.alpha)}


def detection(champion, spec, policy, rows: int, shift: tuple, sequences: int, horizon: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    delays = []
    for _ in range(sequences):
        previous, delay = None, None
        for k in range(horizon):
            report = check(champion, spec, policy, draw(champion.reference, rows, rng, shift, champion.sensitive), k, previous)
            if report.alert:
                delay = k + 1
                break
            previous = report
        delays.append(delay)
    found = sorted(d for d in delays if d is not None)
    median = found[len(delays) // 2] if len(found) > len(delays) // 2 else None
    return {"median_windows_to_alert": median, "detected": len(found) / len(delays), "delays": delays}


def shifts(dataset: str) -> list[tuple[str, tuple]]:
    categorical, level, numeric = SHIFTED[dataset]
    return [
        ("smallest group's share x 1/2", ("group", 0.5)), ("smallest group's share x 1/4", ("group", 0.25)),
        (f"{categorical}: 10 % of rows -> {level}", ("categorical", categorical, level, 0.10)),
        (f"{categorical}: 30 % of rows -> {level}", ("categorical", categorical, level, 0.30)),
        (f"{numeric} + 0.25 sd", ("numeric", numeric, 0.25)), (f"{numeric} + 0.5 sd", ("numeric", numeric, 0.5)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="adult,compas")
    parser.add_argument("--rows", default="100,1000", help="window sizes (rows), comma-separated")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--sequences", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--policy", default=str(PROJECT / "policies/default.yaml"))
    args = parser.parse_args()
    policy = load_policy(args.policy)
    cfg = policy.monitoring_settings
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        registry = Registry(Path(scratch) / "registry", Path(scratch) / "remote")
        for dataset in args.datasets.split(","):
            spec_path = PROJECT / "datasets" / f"{dataset}.yaml"
            spec = load_dataset_spec(spec_path)
            promote_champion(spec_path, registry)
            champion = core.load_champion(registry, spec)
            for rows in map(int, args.rows.split(",")):
                entry = {"dataset": dataset, "rows": rows, "reference_rows": len(champion.reference),
                         "false_alerts": false_alerts(champion, spec, policy, rows, args.windows, seed=rows), "detection": {}}
                for k, (name, shift) in enumerate(shifts(dataset) if args.sequences else []):
                    entry["detection"][name] = detection(champion, spec, policy, rows, shift, args.sequences, args.horizon,
                                                         seed=1000 * rows + k)
                    entry["detection"][name]["population_effect"] = population_effect(champion.reference, shift, champion.sensitive)
                results.append(entry)
                print(f"[{time.perf_counter() - started:6.0f}s] {dataset} {rows} rows done", file=sys.stderr)

    lines = [
        f"Monitor error rate and detection delay (policy {Path(args.policy).name}: false_alert_rate {cfg.false_alert_rate}, "
        f"persistence {cfg.persistence_windows}, alert_on {cfg.alert_on}, min_group_rows {cfg.min_group_rows}; "
        f"{args.windows} no-drift windows; detection: {args.sequences} sequences, horizon {args.horizon} windows)",
        "",
        "| dataset | window rows | alerts / window (no drift) | breaches / window | shift | effect | median windows to alert | detected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results:
        fa = entry["false_alerts"]
        if not entry["detection"]:
            lines.append(f"| {entry['dataset']} | {entry['rows']} | {fa['alert_rate']:.1%} | {fa['breach_rate']:.1%} | (not run) | | | |")
        for i, (name, found) in enumerate(entry["detection"].items()):
            head = (f"| {entry['dataset']} | {entry['rows']} | {fa['alert_rate']:.1%} | {fa['breach_rate']:.1%} |" if i == 0
                    else "| | | | |")
            median = found["median_windows_to_alert"]
            lines.append(f"{head} {name} | {found['population_effect']} | {median if median is not None else '-'} | {found['detected']:.0%} |")
    table = "\n".join(lines)
    print(table)
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"monitor_error_rate-{args.datasets.replace(',', '-')}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    worst = max(entry["false_alerts"]["alert_rate"] for entry in results)
    print(f"worst false-alert rate: {worst:.1%} (target <= 1 %); {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
