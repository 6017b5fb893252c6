"""Benchmark: adversarial debiasing vs ExponentiatedGradient x DemographicParity on full Adult (not a test).

    .venv/bin/python bench/adversarial_bench.py [--alphas 0 0.3 1 3] [--seeds 0] [--bounds 0.01 0.02 0.05]
                                                [--dataset datasets/adult.yaml]

Both fitted by fairloop's ``fit_candidate`` from the shipped templates, on one thread each (as in a
sweep's worker processes): ``constraints/adversarial-dp.yaml`` at several ``alpha`` (even 0
debiases: Fairlearn always projects the predictor's update away from the adversary's gradient),
``constraints/eg-dp.yaml`` (HistGradientBoosting) at several bounds.
Test figures on the dataset's test split. "Matched DPD": each adversarial point is compared with
ExponentiatedGradient's accuracy at the same test DPD, interpolated linearly between the two EG
bounds whose DPD brackets it (outside EG's range: the nearest EG point, marked). Prints a
Markdown table and writes the figures as JSON (--output, default bench/results/adversarial.json).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"


def eg_accuracy_at(dpd: float, eg: list[dict]) -> tuple[float, str]:
    """ExponentiatedGradient's test accuracy at test DPD ``dpd`` on its points' frontier."""
    points = sorted(eg, key=lambda p: p["dpd"])
    dpds = np.array([p["dpd"] for p in points])
    accuracies = np.array([p["accuracy"] for p in points])
    if dpd < dpds[0] or dpd > dpds[-1]:
        nearest = points[int(np.argmin(np.abs(dpds - dpd)))]
        return nearest["accuracy"], f"nearest EG point (DPD {nearest['dpd']:.3f}; outside EG's range)"
    return float(np.interp(dpd, dpds, accuracies)), "interpolated"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="datasets/adult.yaml")
    parser.add_argument("--output", type=Path, default=RESULTS / "adversarial.json")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.3, 1.0, 3.0])
    parser.add_argument("--bounds", type=float, nargs="*", default=[0.01, 0.02, 0.05])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="adversarial fits once per seed (network initialisation, shuffling); the rest use the first")
    args = parser.parse_args()
    os.chdir(PROJECT)

    from threadpoolctl import threadpool_limits

    from fairloop import pipeline
    from fairloop.remedy.constraints import fit_candidate, load_constraint_template
    from fairloop.gates.evaluate import evaluate

    seed = args.seeds[0]
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=args.dataset, seed=seed))
    splits = pipeline.prepare(inputs)
    sensitive = inputs.sensitive
    train = splits.train  # holdout: the validation split is not used here
    print(f"{args.dataset}: {len(train):,} training rows, {len(splits.test):,} test rows, sensitive '{sensitive}'; "
          f"{os.cpu_count()} cores, one thread per fit", flush=True)
    adversarial = load_constraint_template("constraints/adversarial-dp.yaml")
    reduction = load_constraint_template("constraints/eg-dp.yaml")
    runs = [("unconstrained", "-", load_constraint_template("constraints/unconstrained.yaml"), seed)]
    runs += [("adversarial", f"alpha={alpha:g} seed={s}", adversarial.model_copy(
        update={"method_params": {**adversarial.method_params, "alpha": alpha}}), s)
        for alpha in args.alphas for s in args.seeds]
    runs += [("exponentiated_gradient", f"bound={bound:g}", reduction.model_copy(update={"bound": bound}), seed)
             for bound in args.bounds]
    rows = []
    with threadpool_limits(limits=1):
        for method, setting, template, run_seed in runs:
            model, seconds = fit_candidate(train, template, sensitive, run_seed)
            metrics = evaluate(model, splits.test, sensitive).metrics
            rows.append({"method": method, "setting": setting, "learner": template.learner_label,
                         "accuracy": metrics["accuracy"], "dpd": metrics["demographic_parity_difference"],
                         "eod": metrics["equalized_odds_difference"], "fit_seconds": seconds})
            print(f"  {method} {setting}: accuracy {metrics['accuracy']:.4f}, DPD "
                  f"{metrics['demographic_parity_difference']:.4f}, fit {seconds:.1f} s", flush=True)
    eg = [r for r in rows if r["method"] == "exponentiated_gradient"]
    eg_seconds = float(np.mean([r["fit_seconds"] for r in eg])) if eg else float("nan")
    matched = []
    for row in (r for r in rows if r["method"] == "adversarial" and eg):
        accuracy, how = eg_accuracy_at(row["dpd"], eg)
        matched.append({**row, "eg_accuracy_at_dpd": accuracy, "eg_match": how,
                        "accuracy_minus_eg": row["accuracy"] - accuracy, "eg_mean_fit_seconds": eg_seconds})

    print("\n| method | setting | test accuracy | test DPD | test EOD | fit s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['setting']} | {r['accuracy']:.4f} | {r['dpd']:.4f} | {r['eod']:.4f} | "
              f"{r['fit_seconds']:.1f} |")
    print("\n| adversarial | DPD | accuracy | EG accuracy at that DPD | difference | fit s (adv / EG mean) | EG match |\n"
          "|---|---|---|---|---|---|---|")
    for m in matched:
        print(f"| {m['setting']} | {m['dpd']:.4f} | {m['accuracy']:.4f} | {m['eg_accuracy_at_dpd']:.4f} | "
              f"{m['accuracy_minus_eg']:+.4f} | {m['fit_seconds']:.1f} / {m['eg_mean_fit_seconds']:.1f} | {m['eg_match']} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {"dataset": args.dataset, "sensitive": sensitive, "train_rows": len(train), "test_rows": len(splits.test),
              "seeds": args.seeds, "threads_per_fit": 1, "runs": rows, "matched_dpd": matched}
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
