"""Where a remediation run's time goes: the figures behind its progress weights (issue 26 item 6; not a test)

    .venv/bin/python bench/progress_weights.py fits [--sweep constraints/sweeps/default.yaml] [--rounds 2]
    .venv/bin/python bench/progress_weights.py flow [--sweep constraints/sweeps/default.yaml]

``fits``: German (sex, the default policy: 5-fold crossfit on its 700 pool rows) swept serially in
this process, one thread (no pool: nothing else competes for the core a fit runs on); printed per
method, the mean seconds of one fit (a candidate's final fit and its fold fits alike) and its ratio
to the unconstrained learner's: ``fairloop.remedy.fit_progress.METHOD_FIT_COST``.

``flow``: the remediation flow on German with the sweep, in this process against a throwaway
Prefect server (``prefect_test_harness``), as ``fairloop remediate`` runs it on a worker (process
pool of one worker per core), its review expiring after 1 s; printed, each progress step's seconds
and share of the run before the review: ``fairloop.serving.progress.STAGE_WEIGHTS``.
JSON goes to bench/results/progress_weights_<fits|flow>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"


def fit_costs(sweep_path: str, rounds: int) -> dict:
    from fairloop import pipeline
    from fairloop.remedy.sweep.jobs import fit_serially
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep

    inputs = pipeline.load_inputs(pipeline.RunParams(dataset="datasets/german.yaml", sensitive="sex"))
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    fits_per_candidate = (mode.folds + 1) if mode.mode == "crossfit" else 1
    per_method: dict[str, list[float]] = {}
    for _ in range(rounds):
        started = time.perf_counter()
        run = run_sweep(load_sweep(sweep_path), splits, inputs.sensitive, 0, inputs.policy, mode, fit_all=fit_serially)
        print(f"sweep {time.perf_counter() - started:.1f} s ({mode.mode}, {fits_per_candidate} fits a candidate)")
        baseline = run.baseline
        per_method.setdefault("none", []).append((baseline.fit_seconds + baseline.crossfit_seconds) / fits_per_candidate)
        for result in run.outcome.candidates:
            seconds = (result.fit_seconds + result.crossfit_seconds) / fits_per_candidate
            per_method.setdefault(result.method, []).append(seconds)
            print(f"  {result.name:45s} {result.method:25s} {seconds:7.3f} s a fit")
    unconstrained = statistics.mean(per_method["none"])
    table = {method: {"seconds_per_fit": round(statistics.mean(s), 3), "fits": len(s),
                      "ratio_to_unconstrained": round(statistics.mean(s) / unconstrained, 1)}
             for method, s in sorted(per_method.items())}
    for method, row in table.items():
        print(f"{method:25s} {row['seconds_per_fit']:7.3f} s a fit  x{row['ratio_to_unconstrained']:5.1f}  ({row['fits']} fits)")
    return {"mode": mode.mode, "load": os.getloadavg(), "methods": table}


STEP_LINE = re.compile(r"^\[\s*(\d+(?:\.\d+)?)s\] (.*)$")


class StepLines(logging.Handler):
    """The progress reporter's log lines ("[  12.3s] fit: 3/12 models fitted"), as they come."""

    def __init__(self):
        super().__init__()
        self.steps: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        matched = STEP_LINE.match(record.getMessage())
        if matched:
            self.steps.append((float(matched.group(1)), matched.group(2)))


def stage_seconds(steps: list[tuple[float, str]], ended: float) -> dict[str, float]:
    """Seconds of each named step: from its first line to the next step's first line."""
    firsts: list[tuple[float, str]] = []
    for at, description in steps:
        name = description.split(":")[0]
        if not firsts or firsts[-1][1] != name:
            firsts.append((at, name))
    bounds = [*(at for at, _ in firsts[1:]), ended]
    seconds: dict[str, float] = {}
    for (at, name), end in zip(firsts, bounds, strict=True):
        seconds[name] = round(seconds.get(name, 0.0) + end - at, 1)
    return seconds


def flow_stages(sweep_path: str) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from fairloop.flows.remediation import remediation
    from fairloop.flows.request import RemediationRequest

    lines = StepLines()
    logging.getLogger("prefect").addHandler(lines)
    with prefect_test_harness(server_startup_timeout=300):
        started = time.monotonic()
        state = remediation(request=RemediationRequest(
            dataset="datasets/german.yaml", sweep_file=sweep_path, requested_by="bench", approval_timeout=1,
            review_poll_seconds=1), return_state=True)
        total = time.monotonic() - started
    review = next((at for at, d in lines.steps if d.startswith("await review")), total)
    seconds = stage_seconds([s for s in lines.steps if s[0] <= review], review)
    print(f"run {state.name} in {total:.0f} s, {review:.0f} s before review; load {os.getloadavg()[0]:.1f}")
    for name, spent in seconds.items():
        print(f"  {name:22s} {spent:6.1f} s  {100 * spent / review:5.1f} %")
    return {"state": state.name, "seconds_before_review": round(review, 1), "load": os.getloadavg(),
            "stages": seconds, "steps": lines.steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("fits", "flow"))
    parser.add_argument("--sweep", default="constraints/sweeps/default.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.chdir(PROJECT)
    figures = fit_costs(args.sweep, args.rounds) if args.what == "fits" else flow_stages(args.sweep)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"progress_weights_{args.what}.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
