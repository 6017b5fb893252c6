"""Benchmark of the candidate sweep on full Adult (not a test).

    .venv/bin/python bench/sweep_bench.py [--sweep constraints/sweeps/default.yaml] [--policy policies/default.yaml]

One run, all on the same splits (Adult's training file minus a validation carve-out; test =
``adult.test``):
1. the sweep fitted in Prefect's process pool (as ``fairloop remediate --sweep`` does) on a
   temporary local Prefect server, then the same sweep fitted serially in this process, for
   the speed-up;
2. the comparators, fitted here with the same learner (HistGradientBoosting): unconstrained,
   Fairlearn ExponentiatedGradient with its defaults (DemographicParity(), eps 0.01,
   max_iter 50), ThresholdOptimizer with its defaults (demographic parity, no tolerance), and
   Kamiran-Calders reweighing;
3. accuracy, AUC, DPD, EOD on the test set and fit seconds for each, and the accuracy cost of
   each against the unconstrained model.

Targets: the sweep (>= 8 candidates) finishes in <= 60 s on this 2-core machine; under the
DPD <= 0.05 policy the chosen candidate's accuracy cost is at most half of
ExponentiatedGradient-default's. Results go to bench/results/sweep.json and the frontier to
bench/results/sweep-frontier.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="constraints/sweeps/default.yaml")
    parser.add_argument("--policy", default="policies/default.yaml")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.chdir(PROJECT)

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from fairloop import pipeline
    from fairloop.gates.evaluate import evaluate
    from fairloop.remedy.constraints import (
        ConstraintTemplate,
        fit_candidate,
        load_constraint_template,
    )
    from fairloop.remedy.fitters import fitter
    from fairloop.remedy.recipes import load_recipe
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep
    from fairloop.review.frontier import frontier_report

    inputs = pipeline.load_inputs(pipeline.RunParams(dataset="datasets/adult.yaml", policy=args.policy, seed=args.seed))
    splits = pipeline.prepare(inputs)
    sensitive, policy = inputs.sensitive, inputs.policy
    sweep = load_sweep(args.sweep)
    print(f"Adult: {len(splits.train):,} training, {len(splits.validation):,} validation, {len(splits.test):,} test rows; "
          f"{os.cpu_count()} cores; policy '{policy.name}'", flush=True)

    mode = pipeline.decide_mode(inputs, splits)
    print(f"evaluation: {mode.reason}", flush=True)

    @flow(name="sweep-benchmark")
    def parallel_sweep():
        return run_sweep(sweep, splits, sensitive, args.seed, policy, mode, fit_all=fitter(workers=sweep.workers))

    with prefect_test_harness(server_startup_timeout=60):
        started = time.perf_counter()
        parallel = parallel_sweep()
        parallel_seconds = time.perf_counter() - started
    started = time.perf_counter()
    serial = run_sweep(sweep, splits, sensitive, args.seed, policy, mode)
    serial_seconds = time.perf_counter() - started
    same = [c.validation for c in parallel.outcome.candidates] == [c.validation for c in serial.outcome.candidates]
    outcome = parallel.outcome
    print(f"\nSweep '{sweep.name}': {len(outcome.candidates)} candidates ({len(outcome.skipped)} skipped)")
    print(f"  parallel (Prefect process pool) {parallel_seconds:6.1f} s   target <= 60 s: "
          f"{'met' if parallel_seconds <= 60 and len(outcome.candidates) >= 8 else 'MISSED'}")
    print(f"  serial (this process)           {serial_seconds:6.1f} s   speed-up x{serial_seconds / parallel_seconds:.2f}; "
          f"same validation metrics: {same}")
    print(f"  {outcome.explanation}")

    hgb = load_constraint_template("constraints/unconstrained.yaml")
    eg_default = ConstraintTemplate(name="eg-default", version=1, method="exponentiated_gradient",
                                    constraint="demographic_parity")
    to_default = ConstraintTemplate(name="to-default", version=1, method="threshold_optimizer",
                                    constraint="demographic_parity")
    comparators = {
        "unconstrained HGB": ("recipes/none.yaml", hgb),
        "ExponentiatedGradient default": ("recipes/none.yaml", eg_default),
        "ThresholdOptimizer default": ("recipes/none.yaml", to_default),
        "Reweighing + HGB": ("recipes/reweigh.yaml", hgb),
    }
    rows = {}
    for label, (recipe, template) in comparators.items():
        model, seconds = fit_candidate(splits.train, template, sensitive, args.seed, recipe=load_recipe(recipe))
        rows[label] = {**evaluate(model, splits.test, sensitive).metrics, "fit_seconds": seconds}
    if outcome.chosen:
        chosen = outcome.result(outcome.chosen)
        rows[f"chosen: {chosen.name}"] = {**chosen.test, "fit_seconds": chosen.fit_seconds}
    base_accuracy = rows["unconstrained HGB"]["accuracy"]
    print(f"\n{'test set (16,281 rows)':<52} {'acc':>7} {'AUC':>7} {'DPD':>7} {'EOD':>7} {'cost':>7} {'fit s':>7}")
    for label, m in rows.items():
        m["accuracy_cost"] = base_accuracy - m["accuracy"]
        print(f"{label:<52} {m['accuracy']:7.4f} {m['auc']:7.4f} {m['demographic_parity_difference']:7.4f} "
              f"{m['equalized_odds_difference']:7.4f} {m['accuracy_cost']:7.4f} {m['fit_seconds']:7.1f}")
    eg_cost = rows["ExponentiatedGradient default"]["accuracy_cost"]
    if outcome.chosen:
        chosen_cost = rows[f"chosen: {outcome.chosen}"]["accuracy_cost"]
        print(f"\nchosen cost / EG-default cost = {chosen_cost:.4f} / {eg_cost:.4f} = {chosen_cost / eg_cost:.2f} "
              f"(target <= 0.50: {'met' if chosen_cost <= eg_cost / 2 else 'MISSED'})")
    else:
        print("\nno candidate passed the policy on validation: no chosen candidate to compare")

    RESULTS.mkdir(parents=True, exist_ok=True)
    png, _ = frontier_report(policy, "adult", parallel.reference_test_metrics(), outcome)
    (RESULTS / "sweep-frontier.png").write_bytes(png)
    (RESULTS / "sweep.json").write_text(json.dumps({
        "parallel_seconds": parallel_seconds, "serial_seconds": serial_seconds, "candidates": len(outcome.candidates),
        "chosen": outcome.chosen, "explanation": outcome.explanation, "test_metrics": rows,
        "sweep": [c.model_dump(include={"name", "validation", "test", "fit_seconds", "pareto"}) for c in outcome.candidates],
    }, indent=2, default=float))
    print(f"\nwritten: {RESULTS / 'sweep.json'}, {RESULTS / 'sweep-frontier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
