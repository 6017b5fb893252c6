"""German credit's default sweep: wall time, and the ratio against fitting every scorer again (issue 25 item 7; not a test)

    .venv/bin/python bench/german_speed.py [--workers 2] [--rounds 1] [--sweep constraints/sweeps/default.yaml]

German (sensitive ``sex``, the default policy, ``auto``: 5-fold crossfit on its 700 pool rows) is
swept with the default sweep on a process pool of ``--workers`` workers (as ``fairloop remediate``
fits, without a Prefect server), in each round twice on the same splits: first as the baseline,
every ThresholdOptimizer candidate fitting its own scorers (``constraints.SCORERS_KEPT`` 0 in the
workers), then as fairloop runs (the scorers of candidates that differ only in their thresholds
reused). Printed: each candidate's fit seconds (where the time goes), both wall times, their ratio (measured in the same run, so a loaded machine
slows both), the load average, and whether the two sweeps decided alike (classification, chosen
candidate, every candidate's selection and test figures). Target: <= 60 s on 2 idle cores.
JSON goes to bench/results/german_speed.json.
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
sys.path.insert(0, str(PROJECT / "bench"))  # decisions_bench's process-pool fitter


def without_scorer_reuse() -> None:
    """Pool initializer of the baseline: one thread, and no scorer kept between candidates."""
    from fairloop.remedy import constraints
    from fairloop.remedy.fitters import limit_to_one_thread

    limit_to_one_thread()
    constraints.SCORERS_KEPT = 0


def decisions(outcome) -> dict:
    """What a sweep decided, figure by figure (equal dicts: the same decisions)."""
    return {"classification": outcome.classification, "chosen": outcome.chosen,
            "candidates": {r.name: [r.validation, r.test, r.passed] for r in outcome.candidates}}


def fit_seconds(outcome) -> dict[str, float]:
    """Where the time goes: each candidate's fit seconds (final + folds), summed over workers."""
    return {r.name: round(r.fit_seconds + r.crossfit_seconds, 1) for r in outcome.candidates}


def timed_sweep(sweep, splits, inputs, mode, fit_all) -> tuple[float, dict, dict[str, float]]:
    from fairloop.remedy.sweep.run import run_sweep

    started = time.perf_counter()
    run = run_sweep(sweep, splits, inputs.sensitive, 0, inputs.policy, mode, fit_all=fit_all)
    return time.perf_counter() - started, decisions(run.outcome), fit_seconds(run.outcome)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sweep", default="constraints/sweeps/default.yaml")
    parser.add_argument("--output", default=str(RESULTS / "german_speed.json"))
    args = parser.parse_args()
    os.chdir(PROJECT)
    from decisions_bench import pool_fitter

    from fairloop import pipeline
    from fairloop.remedy.sweep.spec import load_sweep

    inputs = pipeline.load_inputs(pipeline.RunParams(dataset="datasets/german.yaml", sensitive="sex"))
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    sweep = load_sweep(args.sweep)
    print(f"German / sex, {mode.mode} ({mode.reason}); sweep {args.sweep}; {args.workers} workers", flush=True)
    rounds = []
    for round_number in range(1, args.rounds + 1):
        load = os.getloadavg()[0]
        baseline_seconds, baseline, baseline_fits = timed_sweep(sweep, splits, inputs, mode,
                                                                pool_fitter(args.workers, without_scorer_reuse))
        seconds, decided, fits = timed_sweep(sweep, splits, inputs, mode, pool_fitter(args.workers))
        rounds.append({"baseline_seconds": baseline_seconds, "seconds": seconds, "ratio": seconds / baseline_seconds,
                       "same_decisions": decided == baseline, "load_average_at_start": load,
                       "classification": decided["classification"], "chosen": decided["chosen"],
                       "fit_seconds": {"baseline": baseline_fits, "fairloop": fits}})
        print("| candidate | fit s, baseline | fit s, fairloop |\n|---|---|---|")
        for name in sorted(baseline_fits, key=baseline_fits.get, reverse=True):
            print(f"| {name} | {baseline_fits[name]:.1f} | {fits.get(name, float('nan')):.1f} |")
        print(f"round {round_number}: baseline (every scorer fitted) {baseline_seconds:.1f} s, fairloop "
              f"{seconds:.1f} s, ratio {seconds / baseline_seconds:.2f}; same decisions: "
              f"{'yes' if decided == baseline else 'NO'} ({decided['classification']}, chosen {decided['chosen']}); "
              f"load average (1 min) at start {load:.2f} on {os.cpu_count()} cores", flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"args": vars(args), "mode": mode.model_dump(), "rounds": rounds}, indent=2))
    print(f"written: {output}")
    return 0 if all(r["same_decisions"] for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
