"""Benchmark: remediating a "vendor model" you cannot retrain (not a test).

    .venv/bin/python bench/vendor_model_bench.py [--datasets adult:sex compas:race] [--n-boot 1000]

For each dataset: a vendor model (one-hot categoricals + HistGradientBoosting, reading the
dataset's features AND the sensitive column) is fitted once on the training split, saved as a
skops file and loaded back through ``fairloop.remedy.frozen.load_base_model`` (frozen from then on).
Every post-processing kind fairloop offers a frozen model is fitted on the validation split (rows
the vendor never saw) and all are compared on the test split with the original (the vendor model
deciding at 0.5): accuracy, DPD and EOD with 95 % bootstrap intervals (``fairloop.gates.intervals``,
resamples stratified by group, the same resamples for every model), what each needs at
prediction time, and scoring latency per 1,000 rows (the best of 5 timed calls on 1,000 test rows,
after one warm-up). The guardrail varies the sensitive column and the proxies the audit flags on
the training split. Markdown table to stdout; JSON to bench/results/vendor_model.json.
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
import yaml

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
KINDS = {  # name -> template: the original, then the frozen-model sweep's kinds
    "original (vendor, 0.5)": "constraints/unconstrained.yaml",
    "counterfactual guardrail": "constraints/counterfactual-guardrail.yaml",
    "ThresholdOptimizer DP": "constraints/threshold-dp.yaml",
    "ThresholdOptimizer EO": "constraints/threshold-eo.yaml",
}
METRICS = {"accuracy": "accuracy", "demographic_parity_difference": "DPD", "equalized_odds_difference": "EOD"}


def vendor_spec(dataset: str, sensitive: str, directory: Path) -> Path:
    """A copy of the dataset spec in which the sensitive column is also a feature (the vendor model reads it)."""
    source = PROJECT / "datasets" / f"{dataset}.yaml"
    spec = yaml.safe_load(source.read_text())
    for entry in spec["sensitive"]:
        if entry["name"] == sensitive:
            entry["use_as_feature"] = True
            spec["features"]["categorical"].append(entry["column"])
    for entry in spec["files"]:
        entry["path"] = str((source.parent / entry["path"]).resolve())
    path = directory / f"{dataset}-vendor.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fit_vendor(train, path: Path) -> None:
    import skops.io as sio
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    categorical = [c for c in train.X.columns if train.X[c].dtype.kind not in "fi"]
    vendor = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
                                remainder="passthrough"),
        HistGradientBoostingClassifier(random_state=0),
    ).fit(train.X, train.y)
    sio.dump(vendor, path)


def latency_per_1000(model, test) -> float:
    rows = test.take(np.arange(min(1000, len(test))))
    model.predictions(rows.X, rows.groups)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        model.predictions(rows.X, rows.groups)
        timings.append(time.perf_counter() - started)
    return min(timings) * 1e6 / len(rows)  # best of 5 (a shared machine adds only delays): ms per 1,000 rows


def bench(dataset: str, sensitive: str, n_boot: int, directory: Path) -> dict:
    from fairloop import pipeline
    from fairloop.remedy.constraints import load_constraint_template
    from fairloop.gates.evaluate import predict, score_predictions
    from fairloop.gates.intervals import bootstrap_intervals

    params = pipeline.RunParams(dataset=str(vendor_spec(dataset, sensitive, directory)), sensitive=sensitive)
    splits = pipeline.prepare(pipeline.load_inputs(params))
    model_file = directory / f"{dataset}-vendor.skops"
    fit_vendor(splits.train, model_file)
    inputs = pipeline.load_inputs(replace(params, base_model=str(model_file)))
    frozen = pipeline.frozen_base(inputs, pipeline.audit(inputs, splits))
    results = {"dataset": dataset, "sensitive": sensitive, "vendor_train_rows": len(splits.train),
               "postprocessing_fit_rows": len(splits.validation), "test_rows": len(splits.test),
               "guardrail_varies": list(frozen.varied), "kinds": {}}
    models, predictions = {}, {}
    for name, template in KINDS.items():
        started = time.perf_counter()
        models[name], _ = pipeline.fit_model(splits.validation, load_constraint_template(template), sensitive, 0,
                                             frozen=frozen)
        fit_seconds = time.perf_counter() - started
        predictions[name] = predict(models[name], splits.test)
        point = score_predictions(splits.test, sensitive, predictions[name]).metrics
        results["kinds"][name] = {
            "template": template, "fit_seconds": round(fit_seconds, 2),
            "needs_sensitive_at_predict": models[name].needs_sensitive_at_predict,
            "latency_ms_per_1000_rows": round(latency_per_1000(models[name], splits.test), 1),
            **{metric: round(point[metric], 4) for metric in METRICS},
        }
    intervals = bootstrap_intervals(
        splits.test.y.to_numpy(), {name: p.decisions for name, p in predictions.items()},
        splits.test.groups[sensitive].astype(str).to_numpy(), n_boot=n_boot, confidence=0.95, seed=0,
        drops_against=(next(iter(KINDS)),), challengers=tuple(list(KINDS)[1:]),
    )
    for name, figures in results["kinds"].items():
        figures["intervals"] = {metric: [round(v, 4) for v in intervals[name][metric]] for metric in METRICS}
        drop = intervals[name].get(f"accuracy_drop_vs_{next(iter(KINDS))}")
        if drop is not None:
            figures["intervals"]["accuracy_drop_vs_original"] = [round(v, 4) for v in drop]
    return results


def markdown(all_results: list[dict]) -> str:
    lines = []
    for r in all_results:
        lines += [f"### {r['dataset']} ({r['sensitive']}): vendor fitted on {r['vendor_train_rows']:,} rows; "
                  f"post-processing fitted on {r['postprocessing_fit_rows']:,} held-out rows; test {r['test_rows']:,} "
                  f"rows; guardrail varies {', '.join(r['guardrail_varies'])}", "",
                  "| kind | accuracy (95% CI) | DPD (95% CI) | EOD (95% CI) | sensitive at predict | ms / 1,000 rows |",
                  "|---|---|---|---|---|---|"]
        for name, k in r["kinds"].items():
            cells = [f"{k[m]:.4f} [{k['intervals'][m][0]:.4f}, {k['intervals'][m][1]:.4f}]" for m in METRICS]
            lines.append(f"| {name} | {' | '.join(cells)} | {'yes' if k['needs_sensitive_at_predict'] else 'no'} | "
                         f"{k['latency_ms_per_1000_rows']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["adult:sex", "compas:race"])
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT / "src"))
    all_results = []
    with tempfile.TemporaryDirectory() as scratch:
        for item in args.datasets:
            dataset, sensitive = item.split(":")
            all_results.append(bench(dataset, sensitive, args.n_boot, Path(scratch)))
    print(markdown(all_results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vendor_model.json").write_text(json.dumps(all_results, indent=2) + "\n")
    print(json.dumps(all_results, indent=2))


if __name__ == "__main__":
    main()
