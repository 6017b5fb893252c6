"""Benchmark of the intersectional gates (issue 19 item 1; not a test).

    .venv/bin/python bench/intersectional_bench.py [--datasets adult:sex:race compas:race:sex]
                                                   [--sweep FILE] [--replicates 1000]

For each dataset, a copy of its spec declaring the intersection (``intersections: [[a, b]]``) is
run with the cells as the sensitive feature (``a:b``) and the default policy: a small sweep
(unconstrained, GridSearch x DP, ExponentiatedGradient x DP, ThresholdOptimizer x DP; holdout
selection on the validation split) fitted on the cells. On the test split, the unconstrained
baseline and every candidate (the chosen one marked) are gated on the cells with simultaneous
(max-|t|, family-wise) intervals; the same models are also gated on each feature alone
(the intervals a one-feature run uses: percentile for two groups, family-wise for more) for comparison. The cells worst first, the
excluded cells and the wall time are printed.

Then a seeded simulation (tests/synthetic.py ``simultaneous_coverage``): the share of
replicates in which the simultaneous intervals cover every cell's true selection rate (nominal
95 %), the DPD interval covers the true DPD, and per-cell 95 % percentile intervals cover all
cells together. Markdown to stdout, JSON to bench/results/intersectional.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
GATED = ("max_demographic_parity_difference", "min_disparate_impact_ratio", "max_accuracy_drop_vs_baseline")
SWEEP = {
    "name": "intersectional-bench", "version": 1, "recipes": ["recipes/none.yaml"],
    "constraints": ["constraints/unconstrained.yaml",
                    {"template": "constraints/gs-dp.yaml", "bounds": [0.01]},
                    {"template": "constraints/eg-dp.yaml", "bounds": [0.01]},
                    {"template": "constraints/threshold-dp.yaml", "bounds": [0.01]}],
    "baseline": "constraints/unconstrained.yaml",
}


def spec_with_intersection(dataset: str, parts: list[str], folder: Path) -> Path:
    """A copy of ``datasets/<dataset>.yaml`` (data paths made absolute) that declares the intersection."""
    source = PROJECT / "datasets" / f"{dataset}.yaml"
    spec = yaml.safe_load(source.read_text())
    for entry in spec["files"]:
        entry["path"] = str((source.parent / entry["path"]).resolve())
    spec["intersections"] = [parts]
    path = folder / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def interval_text(found: dict | None) -> str:
    if found is None:
        return "-"
    if found["value"] is None or not found["interval"]:
        return found["verdict"]
    low, high = found["interval"]
    return f"{found['verdict']} {found['value']:.3f} [{low:.3f}, {high:.3f}]"


def run(dataset: str, parts: list[str], sweep_path: Path, folder: Path) -> dict:
    from fairloop import pipeline
    from fairloop.data.groups import intersection_name
    from fairloop.gates.evaluate import worst_groups_first
    from fairloop.gates.policy import apply_gates
    from fairloop.remedy.crossfit import ModeDecision
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep

    started = time.perf_counter()
    cells = intersection_name(parts)
    spec = spec_with_intersection(dataset, parts, folder)
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(spec), sensitive=cells))
    policy = inputs.policy
    splits = pipeline.prepare(inputs)
    mode = ModeDecision(mode="holdout", reason="benchmark: selection on the validation split")
    swept = run_sweep(load_sweep(sweep_path), splits, cells, 0, policy, mode)
    outcome = swept.outcome
    fitted = {c.name: swept.fitted[c.name] for c in outcome.candidates if swept.fitted[c.name].test is not None}
    group_aware = {name for name, f in fitted.items() if f.model.needs_sensitive_at_predict}
    # every model on the test split, the unconstrained baseline first (the same resamples for all)
    predictions = {"baseline": swept.baseline.test, **{name: f.test for name, f in fitted.items()}}
    names = list(predictions)
    report = {"dataset": dataset, "cells": cells, "policy": policy.name, "test_rows": len(splits.test),
              "chosen": outcome.chosen, "group_aware": sorted(group_aware), "explanation": outcome.explanation,
              "gates": {}, "sweep_seconds": time.perf_counter() - started}
    print(f"\n## {dataset}: {cells} ({len(splits.test):,} test rows), policy {policy.name}")
    print(f"sweep ({len(outcome.candidates)} candidates fitted on the cells, holdout selection): chosen "
          f"{outcome.chosen or 'none'}; group-aware (never chosen under this policy): {sorted(group_aware)}")
    for grouping in (cells, *parts):
        evaluations = pipeline.with_intervals(pipeline.score_all(predictions, splits.test, grouping, policy), predictions,
                                              splits.test, grouping, policy, challengers=tuple(names))
        per_model = {}
        for name in names:
            alone = {"candidate": evaluations[name], "baseline": evaluations["baseline"]}
            gates = apply_gates(policy, alone, needs_sensitive_at_predict=name in group_aware)
            per_model[name] = {r.gate: {"verdict": r.verdict, "value": r.value, "interval": r.interval, "reason": r.reason}
                               for r in gates.results}
        report["gates"][grouping] = per_model
        label = "cells, simultaneous intervals" if grouping == cells else "one feature, as a one-feature run judges it"
        print(f"\n### test verdicts gated on {grouping} ({label})")
        print("| model | " + " | ".join(GATED) + " | passes the policy |\n|---|" + "---|" * (len(GATED) + 1))
        for name in names:
            blocking = [g for g, r in per_model[name].items() if r["verdict"] in ("fail", "inconclusive")]
            print(f"| {name}{' (chosen)' if name == outcome.chosen else ''} | "
                  + " | ".join(interval_text(per_model[name].get(g)) for g in GATED)
                  + f" | {'yes' if not blocking else 'no: ' + ', '.join(blocking)} |")
        if grouping == cells:
            order = worst_groups_first(evaluations["baseline"])
            rows = [{"cell": cell, "rows": int(evaluations["baseline"].by_group[cell]["count"]),
                     "selection_rate": {n: evaluations[n].by_group[cell]["selection_rate"] for n in names},
                     "interval": {n: evaluations[n].intervals.get(f"selection_rate[{cell}]") for n in names}}
                    for cell in order]
            report["cells_worst_first"] = rows
            report["excluded"] = [e.model_dump() for e in evaluations["baseline"].excluded_groups]
            print("\ncells, worst first (baseline): selection rate [simultaneous 95 % interval]")
            print("| cell | rows | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
            for row in rows:
                shown = [f"{row['selection_rate'][n]:.3f}" + (f" [{row['interval'][n][0]:.3f}, {row['interval'][n][1]:.3f}]"
                                                              if row["interval"][n] else " (not counted)") for n in names]
                print(f"| {row['cell']} | {row['rows']:,} | " + " | ".join(shown) + " |")
            for e in evaluations["baseline"].excluded_groups:
                print(f"- left out of {e.rate}: {e.group}: {e.reason}")
    report["seconds"] = time.perf_counter() - started
    print(f"\nwall time {report['seconds']:.0f} s (sweep {report['sweep_seconds']:.0f} s)")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["adult:sex:race", "compas:race:sex"])
    parser.add_argument("--sweep", default=None, help="sweep file (default: the small sweep described above)")
    parser.add_argument("--replicates", type=int, default=1000, help="coverage simulation replicates (0: skip)")
    args = parser.parse_args()
    import os

    os.chdir(PROJECT)
    sys.path.insert(0, str(PROJECT / "tests"))
    reports = {"datasets": [], "coverage": None}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sweep_path = Path(args.sweep) if args.sweep else folder / "sweep.yaml"
        if not args.sweep:
            sweep_path.write_text(yaml.safe_dump(SWEEP))
        for item in args.datasets:
            dataset, *parts = item.split(":")
            reports["datasets"].append(run(dataset, parts, sweep_path, folder))
    if args.replicates:
        from synthetic import simultaneous_coverage

        started = time.perf_counter()
        small = simultaneous_coverage(args.replicates, seed=1, n_boot=300)
        larger = simultaneous_coverage(args.replicates, seed=2, n_boot=300, sizes=(2000, 1500, 1000, 800, 600, 400, 300, 200))
        reports["coverage"] = {"cells_40_to_400_rows": small, "cells_200_to_2000_rows": larger, "n_boot": 300,
                               "seconds": time.perf_counter() - started}
        print(f"\n## simultaneous interval coverage (nominal 95 %, {args.replicates} seeded replicates, 300 resamples)")
        print("| 8 cells of | all cells covered (simultaneous) | DPD covered | all cells covered (per-cell 95 % percentile) |")
        print("|---|---|---|---|")
        for label, found in (("40-400 rows", small), ("200-2,000 rows", larger)):
            print(f"| {label} | {found['simultaneous']:.3f} | {found['dpd']:.3f} | {found['per_cell']:.3f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intersectional.json").write_text(json.dumps(reports, indent=2, default=float))
    print(f"\nwritten: {RESULTS / 'intersectional.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
