"""Benchmark of the sweep's search and of GridSearch on many groups (issue 25 item 3; not a test).

    .venv/bin/python bench/search_bench.py [--group-rows 600] [--rows 6000] [--seeds 0 1 2]

1. GridSearch collapse: on generated data (tests/synthetic.py; feature x3 reveals the group, so a
   group-blind model selects groups at different rates) with 2, 3 and 4 groups of ``--group-rows``
   rows each, GridSearch x DP (constraints/gs-dp.yaml, bound 0.01) and ExponentiatedGradient x DP
   (eg-dp.yaml, bound 0.01) are fitted on the training split beside the unconstrained learner: the
   share of test rows on which each decides as the unconstrained model does, and the test DPD.
   Measured (seed 0, 600 rows per group): 3 and 4 groups, GridSearch 1.0000 (test DPD 0.161 and
   0.283, as unconstrained), ExponentiatedGradient 0.898 / 0.896 (DPD 0.033 / 0.094); 2 groups,
   GridSearch 0.958 (DPD 0.061 -> 0.011).
2. Grid vs search: two groups (base rates 0.45 / 0.25, ``--rows`` each), a grid of logistic
   regression and its ExponentiatedGradient x DP at bound 0.15, policy DPD <= 0.08 and accuracy drop
   <= 0.05 (holdout): the outcome's class, the chosen candidate and the search's fits and time.
Markdown to stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))  # the generated-data helpers


def collapse(directory: Path, groups: int, rows: int, seed: int) -> list[str]:
    from synthetic import write_dataset

    from fairloop import pipeline
    from fairloop.gates.evaluate import evaluate, predict
    from fairloop.remedy.constraints import load_constraint_template
    from fairloop.remedy.recipes import NO_RECIPE

    rates = [0.45, 0.25, 0.35, 0.15][:groups]
    spec = write_dataset(directory, f"g{groups}s{seed}", {f"g{i}": (rows, rate) for i, rate in enumerate(rates)},
                         proxy=2.0, seed=seed)
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(spec)))
    splits = pipeline.prepare(inputs)
    models = {}
    for name in ("unconstrained", "gs-dp", "eg-dp"):
        template = load_constraint_template(PROJECT / "constraints" / f"{name}.yaml")
        if template.takes_bound:
            template = template.model_copy(update={"bound": 0.01})
        models[name] = pipeline.fit_model(splits.train, template, "group", seed, NO_RECIPE)  # (model, fit seconds)
    reference = predict(models["unconstrained"][0], splits.test).decisions
    rows = []
    for name, (model, seconds) in models.items():
        same = float(np.mean(predict(model, splits.test).decisions == reference))
        dpd = evaluate(model, splits.test, "group").metrics["demographic_parity_difference"]
        rows.append(f"| {groups} | {seed} | {name} | {same:.4f} | {dpd:.3f} | {seconds:.1f} |")
    return rows


def grid_and_search(directory: Path, rows: int, seed: int) -> list[str]:
    from synthetic import write_dataset

    from fairloop import pipeline
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep

    spec = write_dataset(directory, f"proxy{seed}", {"a": (rows, 0.45), "b": (rows, 0.25)}, proxy=3.0, seed=seed)
    (directory / "policy.yaml").write_text(yaml.safe_dump({
        "name": "search-bench", "version": 1, "evaluation": "holdout",
        "thresholds": {"max_demographic_parity_difference": 0.08, "max_accuracy_drop_vs_baseline": 0.05}}))
    (directory / "lr.yaml").write_text(yaml.safe_dump({"name": "lr", "version": 1, "learner": "logistic_regression",
                                                        "method": "none"}))
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(spec), policy=str(directory / "policy.yaml")))
    splits = pipeline.prepare(inputs)
    found = []
    for search in (None, {"max_extra_fits": 8, "max_seconds": 300}):
        path = directory / "sweep.yaml"
        path.write_text(yaml.safe_dump({
            "name": "search-bench", "version": 1, "recipes": [str(PROJECT / "recipes/none.yaml")],
            "constraints": [str(directory / "lr.yaml"), {"template": str(PROJECT / "constraints/lr-eg-dp.yaml"), "bounds": [0.15]}],
            "baseline": str(directory / "lr.yaml"), **({"search": search} if search else {})}))
        started = time.perf_counter()
        outcome = run_sweep(load_sweep(path), splits, "group", 0, inputs.policy,
                                  pipeline.decide_mode(inputs, splits)).outcome
        chosen = outcome.result(outcome.chosen) if outcome.chosen else None
        figures = (f"{chosen.validation['demographic_parity_difference']:.3f} / {chosen.validation['accuracy']:.3f}"
                   if chosen else "")
        spent = f"{outcome.search.fits} / {outcome.search.seconds:.0f}" if outcome.search else ""
        found.append(f"| {seed} | {'search' if search else 'grid only'} | {outcome.classification} | "
                     f"{outcome.chosen or ''} | {figures} | {spent} | {time.perf_counter() - started:.0f} |")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-rows", type=int, default=600, help="rows per group of the GridSearch data")
    parser.add_argument("--rows", type=int, default=6000, help="rows per group of the grid-vs-search data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with tempfile.TemporaryDirectory() as scratch, threadpool_limits(limits=1):
        directory = Path(scratch)
        print("| groups | seed | candidate | same test decisions as unconstrained | test DPD | fit s |\n|---|---|---|---|---|---|")
        for groups in (2, 3, 4):
            for seed in args.seeds:
                print("\n".join(collapse(directory, groups, args.group_rows, seed)), flush=True)
        print("\n| seed | sweep | class | chosen | val DPD / acc | search fits / s | sweep s |\n|---|---|---|---|---|---|---|")
        for seed in args.seeds:
            print("\n".join(grid_and_search(directory, args.rows, seed)), flush=True)


if __name__ == "__main__":
    main()
