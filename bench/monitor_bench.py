"""Benchmark (not a test): time to check a 1,000,000-row production window.

A COMPAS champion (ThresholdOptimizer on HistGradientBoosting, the spec's train split) is
promoted into a scratch registry; a 1,000,000-row window in COMPAS's raw format (the columns
the spec uses, rows resampled from the real rows that pass the spec's filters, 5 % of them with
`priors_count` shifted, plus the `prediction` production logged, made by the champion before
timing) is written to CSV; then the monitor reads it, checks it (per-feature KS / PSI + chi-square overall
and within each race group, group shares, prediction-rate gap, DPD/EOD on the labelled rows,
with their intervals) and records it (window file, JSON, plot).

    python bench/monitor_bench.py [--rows 1000000] [--dataset datasets/compas.yaml]

Target: the check of a 1,000,000-row window in <= 10 s on this machine (2 cores, shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from fairloop import monitor as core  # noqa: E402
from fairloop import pipeline  # noqa: E402
from fairloop.data.dataset_spec import load_dataset_spec  # noqa: E402
from fairloop.data.reading import read_raw_file  # noqa: E402
from fairloop.gates.policy import load_policy  # noqa: E402
from fairloop.registry.lineage import describe_run  # noqa: E402
from fairloop.registry.store import Registry  # noqa: E402
from fairloop.remedy.constraints import fit_candidate  # noqa: E402


def promote_champion(spec_path: Path, registry: Registry, constraint: str = "constraints/threshold-dp.yaml") -> dict:
    """Train the spec's candidate on its train split and promote it straight into ``registry``.

    Not a reviewed promotion (no Prefect pause): a scratch champion for benchmarks and replays.
    """
    inputs = pipeline.load_inputs(pipeline.RunParams(
        str(spec_path), recipe=str(PROJECT / "recipes/none.yaml"), constraint=str(PROJECT / constraint),
        policy=str(PROJECT / "policies/default.yaml"),
    ))
    splits = pipeline.prepare(inputs)
    model, seconds = fit_candidate(splits.train, inputs.template, inputs.sensitive, 0)
    metrics = pipeline.evaluate_models({"c": model}, splits.test, inputs.sensitive)["c"].metrics
    with tempfile.TemporaryDirectory() as scratch:
        copies = pipeline.snapshot_inputs(inputs, Path(scratch))
        registry.promote(
            inputs.loaded.spec.name, model, splits.train.to_frame(inputs.loaded.spec.label.column), metrics=metrics,
            baseline_metrics=metrics, gates=[],
            lineage=describe_run(inputs, pipeline.audit(inputs, splits), pipeline.augment(inputs, splits, pipeline.decide_mode(inputs, splits))[1], run_id=None,
                                 requested_by="bench", project_dir=PROJECT).model_copy(update={"inputs_spec_files": copies}),
            approval={"reviewer": "bench", "comment": "scratch champion, not reviewed", "approved": True},
            inputs_dir=Path(scratch), documents=lambda version: {"report.md": "scratch champion\n"},
        )
    return {"train_rows": len(splits.train), "test_rows": len(splits.test), "fit_seconds": seconds, **metrics}


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dataset", default=str(PROJECT / "datasets/compas.yaml"))
    args = parser.parse_args()
    spec = load_dataset_spec(args.dataset)
    policy = load_policy(PROJECT / "policies/default.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        registry = Registry(scratch / "registry", scratch / "remote")
        champion_info = promote_champion(Path(args.dataset), registry)
        print(f"champion: {spec.name} trained on {champion_info['train_rows']} rows, "
              f"held-out accuracy {champion_info['accuracy']:.3f}, DPD {champion_info['demographic_parity_difference']:.3f}")

        source = (Path(args.dataset).parent / spec.files[0].path).resolve()
        raw = read_raw_file(spec, spec.files[0], source)
        used = list(dict.fromkeys([spec.label.column, *(s.column for s in spec.sensitive), *spec.features.columns,
                                   *(f.column for f in spec.filters), *([spec.time_column] if spec.time_column else [])]))
        for row_filter in spec.filters:  # sample rows that pass the spec's filters: every row gets checked
            raw = raw[row_filter.mask(raw)]
        rng = np.random.default_rng(0)
        window = raw[used].iloc[rng.integers(0, len(raw), args.rows)].reset_index(drop=True)
        if "priors_count" in window:
            shifted = rng.random(len(window)) < 0.05
            window.loc[shifted, "priors_count"] = window.loc[shifted, "priors_count"] + 2
        if spec.time_column:
            window[spec.time_column] = "2015-01-15"
        # production logs its decisions with each row: the champion's, made before the clock starts
        champion = core.load_champion(registry, spec)
        parsed = core.read_window(spec, _write(window, scratch / "unlabelled.csv"))
        window["prediction"] = champion.model.predict(parsed.X, parsed.groups)
        path = scratch / "window.csv"
        started = time.perf_counter()
        window.to_csv(path, index=False)
        print(f"wrote a {len(window):,}-row window ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")

        started = time.perf_counter()
        champion = core.load_champion(registry, spec)
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        rows = core.read_window(spec, path, prediction_column="prediction")
        read_seconds = time.perf_counter() - started
        part = core.latest_window(rows, policy.monitoring_settings.period)
        started = time.perf_counter()
        report = core.check_window(spec, part, champion.reference, champion.model, policy, sensitive=champion.sensitive,
                                   champion_version=champion.version, source=str(path))
        check_seconds = time.perf_counter() - started
        # the same window without logged decisions: the champion predicts every row inside the check
        unlogged = core.Window(replace(part.rows, predictions=None), part.start, part.end)
        started = time.perf_counter()
        core.check_window(spec, unlogged, champion.reference, champion.model, policy, sensitive=champion.sensitive,
                          champion_version=champion.version, source=str(path))
        repredict_seconds = time.perf_counter() - started
        started = time.perf_counter()
        core.record(report, spec, part.rows, scratch / "state", keep_window_rows=policy.monitoring_settings.keep_window_rows)
        record_seconds = time.perf_counter() - started

    print(f"rows checked: {report.rows:,} ({report.labelled_rows:,} labelled) against {report.reference_rows:,} reference rows; "
          f"{len(report.metrics)} metrics, {len(report.breaches)} breaches, alert={report.alert}")
    print(f"  load champion + reference predictions: {load_seconds:6.2f} s")
    print(f"  read + parse the CSV window:           {read_seconds:6.2f} s")
    print(f"  check (all statistics, logged preds):  {check_seconds:6.2f} s   <- target <= 10 s")
    print(f"  check, champion re-predicting all rows:{repredict_seconds:6.2f} s")
    print(f"  record (window file, JSON, plot):      {record_seconds:6.2f} s")
    print(f"  end to end from the file:              {load_seconds + read_seconds + check_seconds + record_seconds:6.2f} s")
    for row in report.table()[:6]:
        print(f"    {row['metric']:<45} {row['value']:.4f} {row['interval']:<16} thr {row['threshold']} alert={row['alert']}")
    return 0 if check_seconds <= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
