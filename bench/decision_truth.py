"""Decision-truth benchmark: does fairloop give the right verdict class where the right one is known? (issue 25 item 6; not a test)

    .venv/bin/python bench/decision_truth.py [--quick] [--sizes 1500 6000 20000] [--seeds 0 1]
                                             [--cases feasible infeasible undecidable intersection label_leak]
                                             [--real german:sex compas:race hmda:black chile:region | --no-real]
                                             [--sweep constraints/sweeps/default.yaml] [--workers 2]

Generated datasets (tests/synthetic.py ``generate``: ``x1``, ``x2`` carry the label with signal 2,
``x3`` is noise plus ``proxy`` x the group's index, ``colour`` is noise) are written to a temporary
directory as CSV plus a dataset spec and run the way the remediation flow runs them: load, split,
the policy's evaluation mode, the audit (a ``block`` ends the run: AuditBlocked), then the default
sweep under the default policy (fits on a process pool of ``--workers``, no Prefect server), and,
when a candidate is chosen, the flow's test-split gates. The verdict class is the audit's block or
``SweepOutcome.classification`` (chosen / fails / undecided / infeasible / search_out_of_budget /
nothing_choosable). The truth of each case, by construction (oracle figures from the generating
probabilities, 400,000 draws):

* ``feasible``: groups a, b (half the rows each), base rates 0.40 / 0.30, no proxy: the features are
  independent of the group, so every group-blind model, the unconstrained baseline included, has
  population DPD 0 at no accuracy loss (group-blind Bayes accuracy 0.808, group-aware 0.813). Whether
  95 % intervals can show it depends on the rows: with s ~ 0.31 selected and n_a, n_b selection rows,
  SE = sqrt(s(1 - s)(1/n_a + 1/n_b)) and a candidate at true DPD 0 passes DPD <= 0.05 with
  probability P = 2 Phi(0.05 / SE - 1.96) - 1. Expected: ``chosen`` when P >= 0.95, ``undecided``
  when P <= 0.05, either in between (marked ``chosen|undecided``).
* ``infeasible``: base rates 0.75 / 0.15, ``x3`` reveals the group (proxy 3): the baseline reads the
  group and reaches ~0.865 accuracy (floor 0.835 after max_accuracy_drop_vs_baseline 0.03), while any
  model with DPD <= 0.05 errs on at least 27.5 % of rows (accuracy <= 0.725). Expected: ``infeasible``.
* ``undecidable``: base rates 0.35 / 0.35, no proxy (population DPD 0 for every group-blind model), but
  group b has 150 rows at every size (~105 in the training pool): SE >= 0.047, so no 95 % DPD interval
  can end below 0.05 nor start above it. Expected: ``undecided``.
* ``intersection``: sensitive ``sex`` x ``race``, four equal cells, base rates (F, A) 0.75, (F, B) 0.15,
  (M, A) 0.15, (M, B) 0.75 (each feature alone: 0.45 vs 0.45), ``x3`` orders the cells (proxy 3). The
  spec declares the intersection and the run gates on its cells (sensitive ``sex:race``). Expected:
  the audit's base-rate finding on the intersection and none on sex or race alone, and ``infeasible``
  on the cells (as above: DPD <= 0.05 costs >= 27.5 % errors against a ~0.865 baseline). The
  baseline's test DPD on sex and on race alone is printed beside it (what a one-feature gate sees).
* ``label_leak``: the feasible data plus ``days_to_outcome`` (1-30 for positives, 31-90 for
  negatives: one threshold separates the labels). Expected: ``audit_blocked`` (label-leak finding).

Printed: a table (case, rows, seed, expected, got, right, what the flow would end with, wall seconds),
the share right (target >= 95 %) and every miss with fairloop's explanation text; then the real
datasets (``--real``: each spec's own data, auto mode) with their class and explanation (no known
truth: expected "—"). ``--quick``: one size (1,500) and one seed (0). JSON goes to
bench/results/decision_truth.json.

Measured at add43f2 (HistGradientBoosting with early stopping), ``--sizes 1500 6000 20000 --seeds 0 1
--workers 1``, 2 cores shared with the test suite (load 1.6-3.5): 30 of 30 right (feasible: undecided
at 1,500 rows, chosen at 6,000 and 20,000; every other case as expected), 27-161 s per swept case;
real datasets: German / sex undecided, COMPAS / race and HMDA / black search_out_of_budget, Chile /
region undecided. 2,815 s in all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import norm

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
sys.path.insert(0, str(PROJECT / "tests"))  # the generated-data helpers
sys.path.insert(0, str(PROJECT / "bench"))  # decisions_bench's process-pool fitter
CASES = ("feasible", "infeasible", "undecidable", "intersection", "label_leak")
LIMIT = 0.05  # policies/default.yaml max_demographic_parity_difference
MINORITY_ROWS = 150  # the undecidable case's small group, at every size


def write_case(directory: Path, case: str, rows: int, seed: int) -> tuple[Path, str]:
    """Generate ``case`` with ``rows`` rows: the CSV and its dataset spec; returns (spec path, sensitive)."""
    from synthetic import generate

    name = f"truth-{case.replace('_', '-')}-{rows}-s{seed}"
    sensitive: tuple[str, ...] = ("group",)
    numeric = ["x1", "x2", "x3"]
    if case == "intersection":
        sensitive = ("sex", "race")
        quarter = rows // 4
        groups = {("F", "A"): (quarter, 0.75), ("F", "B"): (quarter, 0.15), ("M", "A"): (quarter, 0.15),
                  ("M", "B"): (rows - 3 * quarter, 0.75)}
        frame = generate(groups, proxy=3.0, seed=seed, sensitive=sensitive)
    elif case == "infeasible":
        frame = generate({"a": (rows // 2, 0.75), "b": (rows - rows // 2, 0.15)}, proxy=3.0, seed=seed)
    elif case == "undecidable":
        frame = generate({"a": (rows - MINORITY_ROWS, 0.35), "b": (MINORITY_ROWS, 0.35)}, seed=seed)
    else:  # feasible, label_leak
        frame = generate({"a": (rows // 2, 0.40), "b": (rows - rows // 2, 0.30)}, seed=seed)
    if case == "label_leak":
        rng = np.random.default_rng(seed + 7)
        frame["days_to_outcome"] = np.where(frame["label"] == 1, rng.integers(1, 31, len(frame)),
                                            rng.integers(31, 91, len(frame)))
        numeric.append("days_to_outcome")
    frame.to_csv(directory / f"{name}.csv", index=False)
    spec = {
        "name": name, "version": 1, "description": f"decision-truth case {case}, {rows} rows, seed {seed}",
        "format": {"separator": ",", "header": True}, "files": [{"path": f"{name}.csv"}],
        "label": {"column": "label", "positive": [1], "negative": [0]},
        "sensitive": [{"name": column, "column": column} for column in sensitive],
        **({"intersections": [list(sensitive)]} if len(sensitive) > 1 else {}),
        "features": {"numeric": numeric, "categorical": ["colour"]},
        "split": {"test_size": 0.3, "validation_size": 0.2, "seed": 0},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, ":".join(sensitive)


def selection_counts(splits, mode, sensitive: str) -> dict[str, int]:
    from fairloop.remedy.crossfit import fit_rows

    rows = splits.validation if mode.mode == "holdout" else fit_rows(splits, mode)
    return {str(g): int(n) for g, n in rows.groups[sensitive].astype(str).value_counts().items()}


def pass_probability(counts: dict[str, int], selected: float = 0.31) -> float:
    """P that a candidate at population DPD 0 passes DPD <= LIMIT with a 95 % interval (normal
    approximation: the interval's upper end ~ |estimate| + 1.96 SE)."""
    se = float(np.sqrt(selected * (1 - selected) * sum(1 / n for n in counts.values())))
    return float(max(0.0, 2 * norm.cdf(LIMIT / se - 1.96) - 1))


def expected_classes(case: str, counts: dict[str, int]) -> tuple[set[str], str]:
    """The verdict classes that are right for ``case`` on these selection rows, and why."""
    if case == "label_leak":
        return {"audit_blocked"}, "days_to_outcome is the label thresholded: the audit must block"
    if case in ("infeasible", "intersection"):
        return {"infeasible"}, "DPD <= 0.05 costs >= 27.5 % errors; the baseline is ~0.865 accurate (floor ~0.835)"
    if case == "undecidable":
        return {"undecided"}, f"group b has {counts.get('b', 0)} selection rows: no 95 % interval can decide DPD <= 0.05"
    p = pass_probability(counts)
    why = f"population DPD 0 at no loss; P(pass at these rows) = {p:.2f} ({', '.join(f'{g} {n}' for g, n in counts.items())})"
    return ({"chosen"} if p >= 0.95 else {"undecided"} if p <= 0.05 else {"chosen", "undecided"}), why


def run_flow(spec: Path | str, sensitive: str | None, sweep_path: str, workers: int) -> dict:
    """Audit, then (unless it blocks) the sweep and, for a chosen candidate, the test gates: the flow's order."""
    from decisions_bench import pool_fitter

    from fairloop import pipeline
    from fairloop.gates.policy import apply_gates
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep

    started = time.perf_counter()
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(spec), sensitive=sensitive))
    sensitive = inputs.sensitive
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    audit = pipeline.audit(inputs, splits)
    found = {"sensitive": sensitive, "mode": mode.mode, "selection_rows": selection_counts(splits, mode, sensitive),
             "audit": audit.verdict, "audit_findings": [f.model_dump() for f in audit.findings if f.severity != "info"]}
    if audit.verdict == "block":
        return found | {"got": "audit_blocked", "end": "AuditBlocked", "explanation": "; ".join(audit.reasons),
                        "seconds": time.perf_counter() - started}
    swept = run_sweep(load_sweep(sweep_path), splits, sensitive, 0, inputs.policy, mode, fit_all=pool_fitter(workers))
    outcome = swept.outcome
    found |= {"got": outcome.classification, "chosen": outcome.chosen, "explanation": outcome.explanation,
              "end": "GateFailed (sweep)", "baseline": swept.baseline}
    if outcome.chosen:
        candidate, fitted = swept.chosen
        evaluations = pipeline.evaluate_models({"baseline": swept.baseline.model, "candidate": fitted.model}, splits.test,
                                               sensitive, inputs.policy)
        gates = apply_gates(inputs.policy, evaluations, needs_sensitive_at_predict=candidate.template.needs_sensitive_at_predict,
                            evaluation_mode=mode.mode)
        found["end"] = "awaiting review" if gates.passed else "GateFailed (test: " + ", ".join(
            f"{g.gate} {g.verdict}" for g in gates.results if g.verdict in ("fail", "inconclusive")) + ")"
        found["test_gates"] = {g.gate: g.verdict for g in gates.results}
    found["one_feature_dpd"] = one_feature_dpd(inputs, splits, found.pop("baseline"))
    found["seconds"] = time.perf_counter() - started
    return found


def one_feature_dpd(inputs, splits, baseline) -> dict[str, float]:
    """The baseline's test DPD on each sensitive feature alone (only when the run gates an intersection)."""
    from fairloop.data.groups import is_intersection
    from fairloop.gates.evaluate import score_predictions

    if not is_intersection(inputs.sensitive) or baseline.test is None:
        return {}
    return {s.name: float(score_predictions(splits.test, s.name, baseline.test).metrics["demographic_parity_difference"])
            for s in inputs.loaded.spec.sensitive}


def audit_intersection_check(findings: list[dict]) -> tuple[bool, str]:
    """The intersection case's audit part: a base-rate finding on the declared intersection, none on sex or race alone."""
    rate_checks = ("base-rate-gap", "base-rate-ratio")
    on_cells = any(f["check"] in rate_checks and f["message"].startswith("intersection") for f in findings)
    alone = sorted({f["column"] for f in findings if f["check"] in rate_checks and not f["message"].startswith("intersection")})
    ok = on_cells and not alone
    text = "audit: intersection finding" + ("" if on_cells else " MISSING") + (f", marginal finding on {alone}" if alone else "")
    return ok, text


def run_case(directory: Path, case: str, rows: int, seed: int, sweep_path: str, workers: int) -> dict:
    spec, sensitive = write_case(directory, case, rows, seed)
    found = run_flow(spec, sensitive, sweep_path, workers)
    expected, why = expected_classes(case, found["selection_rows"])
    right = found["got"] in expected
    got = found["got"]
    if case == "intersection":
        audit_ok, audit_text = audit_intersection_check(found["audit_findings"])
        right = right and audit_ok
        got = f"{got}; {audit_text}"
        if found.get("one_feature_dpd"):
            got += "; baseline test DPD alone: " + ", ".join(f"{k} {v:.3f}" for k, v in found["one_feature_dpd"].items())
    return found | {"case": case, "rows": rows, "seed": seed, "expected": sorted(expected), "why": why, "got_text": got,
                    "right": right}


def run_real(item: str, sweep_path: str, workers: int) -> dict:
    dataset, sensitive = item.split(":")
    found = run_flow(PROJECT / "datasets" / f"{dataset}.yaml", sensitive, sweep_path, workers)
    return found | {"case": dataset, "rows": sum(found["selection_rows"].values()), "expected": "—"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one size (1,500 rows) and one seed (0)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 6000, 20000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--real", nargs="+", default=["german:sex", "compas:race", "hmda:black", "chile:region"])
    parser.add_argument("--no-real", action="store_true", help="skip the real datasets")
    parser.add_argument("--real-only", action="store_true", help="only the real datasets")
    parser.add_argument("--output", default=str(RESULTS / "decision_truth.json"))
    parser.add_argument("--sweep", default="constraints/sweeps/default.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes, seeds = ([1500], [0]) if args.quick else (args.sizes, args.seeds)
    cases = [] if args.real_only else args.cases
    os.chdir(PROJECT)
    started = time.perf_counter()
    load_before = os.getloadavg()
    results, real = [], []
    if cases:
        print("| case | rows | seed | expected | got | right | the flow would end | wall s |\n"
              "|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for rows in sizes:
            for seed in seeds:
                for case in cases:
                    r = run_case(Path(scratch), case, rows, seed, args.sweep, args.workers)
                    results.append(r)
                    print(f"| {case} | {rows:,} | {seed} | {'|'.join(r['expected'])} | {r['got_text']} | "
                          f"{'yes' if r['right'] else 'NO'} | {r['end']} | {r['seconds']:.0f} |", flush=True)
    right = sum(r["right"] for r in results)
    share = right / len(results) if results else float("nan")
    if results:
        print(f"\n{right} of {len(results)} right ({share:.1%}); target >= 95 %: {'met' if share >= 0.95 else 'MISSED'}")
    for r in (r for r in results if not r["right"]):
        print(f"\n### miss: {r['case']}, {r['rows']:,} rows, seed {r['seed']}: expected {'|'.join(r['expected'])} "
              f"({r['why']}), got {r['got_text']}\n{r['explanation']}")
    if not args.no_real:
        print("\n| dataset | sensitive | mode | selection rows | expected | got | the flow would end | wall s |\n"
              "|---|---|---|---|---|---|---|---|", flush=True)
        for item in args.real:
            r = run_real(item, args.sweep, args.workers)
            real.append(r)
            print(f"| {r['case']} | {r['sensitive']} | {r['mode']} | {r['rows']:,} | — | {r['got']} | {r['end']} | "
                  f"{r['seconds']:.0f} |", flush=True)
        for r in real:
            print(f"\n### {r['case']} / {r['sensitive']}: {r['got']}\n{r['explanation']}")
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    print(f"\nwall time {seconds:.0f} s; load average (1 min) {load_before[0]:.2f} at start, {load_after[0]:.2f} at the end "
          f"on {os.cpu_count()} cores; workers {args.workers}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {"args": vars(args), "sizes": sizes, "seeds": seeds, "seconds": seconds, "load_average": [load_before, load_after],
              "right": right, "total": len(results), "share_right": share, "cases": results, "real": real}
    output.write_text(json.dumps(report, indent=2, default=str))
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
