"""Where a remediation run's time goes: the figures behind its progress weights (issue 26 item 6; not a test)

    .venv/bin/python bench/progress_weights.py fits [--sweep constraints/sweeps/default.yaml] [--rounds 2]
    .venv/bin/python bench/progress_weights.py flow [--sweep constraints/sweeps/default.yaml] [--policy P] [--dataset D] [--approve]

``fits``: German (sex, the default policy: 5-fold crossfit on its 700 pool rows) swept serially in
this process, one thread (no pool: nothing else competes for the core a fit runs on); printed per
method, the mean seconds of one fit (a candidate's final fit and its fold fits alike) and its ratio
to the unconstrained learner's: ``fairloop.remedy.fit_progress.METHOD_FIT_COST``.

``flow``: the remediation flow on ``--dataset`` (German) with the sweep and ``--policy``, in this process against a
throwaway Prefect server (``prefect_test_harness``), as ``fairloop remediate`` runs it on a worker
(process pool of one worker per core), its review approved at once (``--approve``) or expiring
after 1 s; printed, each progress step's seconds and share of the run's work (the review's wait
left out): ``fairloop.serving.progress.STAGE_WEIGHTS``.
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
import threading
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


def approve_when_paused(run_tag: str) -> None:
    """Approve the tagged run once it awaits review (as the UI's Resume form does)."""
    from fairloop.serving.runs import find_tagged_run, submit_review

    while (run := find_tagged_run(run_tag)) is None or not (run.state and run.state.is_paused()):
        if run is not None and run.state and run.state.is_final():
            return
        time.sleep(1)
    submit_review(run.id, {"approve": True, "reviewer": "bench-reviewer", "comment": "bench"})


def flow_stages(dataset: str, sweep_path: str, policy: str, approve: bool) -> dict:
    from prefect import tags
    from prefect.testing.utilities import prefect_test_harness

    from fairloop.flows.remediation import remediation
    from fairloop.flows.request import RemediationRequest

    lines = StepLines()
    logging.getLogger("prefect").addHandler(lines)
    with prefect_test_harness(server_startup_timeout=300):
        approver = threading.Thread(target=approve_when_paused, args=("progress-bench",), daemon=True)
        if approve:
            approver.start()
        started = time.monotonic()
        with tags("progress-bench"):
            state = remediation(request=RemediationRequest(
                dataset=dataset, sweep_file=sweep_path, policy=policy, requested_by="bench",
                approval_timeout=None if approve else 1, review_poll_seconds=1), return_state=True)
        total = time.monotonic() - started
    steps = lines.steps
    waited = next(((at, next_at) for (at, d), (next_at, _) in zip(steps, steps[1:]) if d.startswith("gates passed")),
                  None)  # the review's wait is no work: left out
    worked = [(at - (waited[1] - waited[0]) if waited and at >= waited[1] else at, d) for at, d in steps
              if not (waited and at == waited[0])]
    ended = total - (waited[1] - waited[0] if waited else 0.0)
    seconds = stage_seconds(worked, ended)
    print(f"run {state.name} in {total:.0f} s, {ended:.0f} s of work; load {os.getloadavg()[0]:.1f}")
    for name, spent in seconds.items():
        print(f"  {name:22s} {spent:6.1f} s  {100 * spent / ended:5.1f} %")
    return {"state": state.name, "seconds_of_work": round(ended, 1), "load": os.getloadavg(), "stages": seconds,
            "steps": steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("fits", "flow"))
    parser.add_argument("--sweep", default="constraints/sweeps/default.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--policy", default="policies/default.yaml")
    parser.add_argument("--dataset", default="datasets/german.yaml", help="flow: the dataset spec")
    parser.add_argument("--approve", action="store_true", help="approve the run once it awaits review (else it expires)")
    args = parser.parse_args()
    os.chdir(PROJECT)
    figures = (fit_costs(args.sweep, args.rounds) if args.what == "fits"
               else flow_stages(args.dataset, args.sweep, args.policy, args.approve))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"progress_weights_{args.what}.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
