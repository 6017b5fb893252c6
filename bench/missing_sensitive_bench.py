"""Benchmark (not a test): gates over rows with no sensitive value, on Adult and in a seeded simulation.

    PYTHONPATH=src .venv/bin/python bench/missing_sensitive_bench.py [--n-boot 200] [--replicates 100] [--out bench/results]

Adult: the unconstrained learner (constraints/unconstrained.yaml) is fitted on the training
split with every ``sex`` value known; on the test split 40 % of the ``sex`` values are then
hidden, (1) at random, (2) not at random: Female rows 0.6, Male rows 0.3 (40 % overall), and
(3) depending on the features: rows with age < 35 hidden at 0.6, older ones at 0.2 (a
mechanism the prior-shift correction does not assume). (2) and (3) run with and without the
EM prior-shift correction (policy ``missing_sensitive.adjust_prior``). For each:
the true DPD over all test rows (true ``sex``), the DPD of the known rows only, and the DPD
the gates estimate with inferred memberships (policy ``missing_sensitive``) with its
bootstrap interval (inference refitted on every resample), plus the inference model's
held-out AUC, Brier score and ECE.

Simulation (generated data, true groups known): interval coverage of the inferred-membership
DPD against the population DPD over ``--replicates`` seeded replicates, values hidden more
often in one group; as a reference, the coverage of the same bootstrap on the same replicates
with every value known.

Writes missing_sensitive.md and missing_sensitive.json into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))  # the generated-data helpers

from fairloop import pipeline  # noqa: E402
from fairloop.remedy.constraints import fit_candidate  # noqa: E402
from fairloop.data.datasets import MISSING_GROUP, Split  # noqa: E402
from fairloop.gates.evaluate import predict  # noqa: E402
from fairloop.remedy.model import Predictions  # noqa: E402
from fairloop.gates.intervals import bootstrap_intervals  # noqa: E402
from fairloop.gates.policy import Policy  # noqa: E402


def policy_with(n_boot: int, adjust_prior: bool = True) -> Policy:
    return Policy.model_validate({
        "name": "bench", "version": 1, "thresholds": {"max_demographic_parity_difference": 0.1},
        "bootstrap": {"n_boot": n_boot, "seed": 0}, "missing_sensitive": {"min_auc": 0.7, "adjust_prior": adjust_prior},
    })


def dpd(decisions: np.ndarray, groups: np.ndarray) -> float:
    rates = pd.Series(decisions).groupby(groups).mean()
    return float(rates.max() - rates.min())


def hidden_split(test: Split, share: np.ndarray, seed: int) -> Split:
    groups = test.groups.copy()
    hide = np.random.default_rng(seed).random(len(test)) < share
    groups["sex"] = groups["sex"].where(~hide, MISSING_GROUP)
    return Split(X=test.X, y=test.y, groups=groups)


def gate_estimate(split: Split, predictions, policy: Policy) -> tuple[dict, float]:
    started = time.perf_counter()
    scored = pipeline.score_all({"candidate": predictions}, split, "sex", policy)
    evaluation = pipeline.with_intervals(scored, {"candidate": predictions}, split, "sex", policy, ("candidate",))["candidate"]
    return evaluation, time.perf_counter() - started


def adult(n_boot: int) -> list[dict]:
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(PROJECT / "datasets/adult.yaml"),
                                                     constraint=str(PROJECT / "constraints/unconstrained.yaml")))
    splits = pipeline.prepare(inputs)
    model, _ = fit_candidate(splits.train, inputs.template, "sex", 0)
    test = splits.test
    predictions = predict(model, test)
    sex = test.groups["sex"].astype(str).to_numpy()
    true = dpd(predictions.decisions, sex)
    young = (test.X["age"] < 35).to_numpy()
    scenarios = [
        ("at random (MCAR), 40 %", np.full(len(test), 0.4), True),
        ("not at random: Female 0.6, Male 0.3", np.where(sex == "Female", 0.6, 0.3), True),
        ("not at random: Female 0.6, Male 0.3", np.where(sex == "Female", 0.6, 0.3), False),
        ("by feature: age < 35 0.6, else 0.2", np.where(young, 0.6, 0.2), True),
        ("by feature: age < 35 0.6, else 0.2", np.where(young, 0.6, 0.2), False),
    ]
    rows = []
    for name, share, adjust in scenarios:
        split = hidden_split(test, share, seed=1)
        known = split.groups["sex"].to_numpy() != MISSING_GROUP
        evaluation, seconds = gate_estimate(split, predictions, policy_with(n_boot, adjust))
        report = evaluation.missing_sensitive
        rows.append({
            "scenario": name, "prior_shift_em": adjust, "test_rows": len(test), "hidden_rows": int((~known).sum()),
            "true_dpd": round(true, 4), "known_rows_dpd": round(dpd(predictions.decisions[known], sex[known]), 4),
            "estimated_dpd": round(evaluation.metrics["demographic_parity_difference"], 4),
            "interval": [round(v, 4) for v in evaluation.intervals["demographic_parity_difference"]],
            "status": report.status, "inference_auc": report.auc, "brier": report.brier, "ece": report.ece,
            "missing_shares": report.missing_shares,
            "true_missing_shares": {g: round(float((sex[~known] == g).mean()), 4) for g in ("Female", "Male")},
            "seconds": round(seconds, 1),
        })
        print(rows[-1], flush=True)
    return rows


def coverage(replicates: int, n_boot: int) -> dict:
    from synthetic import generate, hide_sensitive

    rule = lambda f: ((f["x1"] + 0.5 * f["x2"] + 0.5 * f["x3"]) > 0.8).astype(int).to_numpy()  # noqa: E731
    population = generate({"a": (200_000, 0.4), "b": (200_000, 0.25)}, proxy=1.5, seed=99)
    true = dpd(rule(population), population["group"].to_numpy())
    covered, widths, errors, covered_known = [], [], [], []
    for replicate in range(replicates):
        complete = generate({"a": (1000, 0.4), "b": (1000, 0.25)}, proxy=1.5, seed=1000 + replicate)
        decided = rule(complete)
        low, high = bootstrap_intervals(complete["label"].to_numpy(), {"c": decided}, complete["group"].to_numpy(),
                                        n_boot=n_boot, confidence=0.95, seed=0)["c"]["demographic_parity_difference"]
        covered_known.append(low <= true <= high)
        frame = hide_sensitive(complete, {"a": 0.6, "b": 0.2}, seed=replicate)
        groups = frame["group"].fillna(MISSING_GROUP).astype(str).rename("group").to_frame()
        split = Split(X=frame[["x1", "x2", "x3", "colour"]], y=frame["label"], groups=groups)
        predictions = {"c": Predictions(decided, decided * 1.0, decided * 1.0)}
        policy = policy_with(n_boot)
        scored = pipeline.score_all(predictions, split, "group", policy)
        evaluation = pipeline.with_intervals(scored, predictions, split, "group", policy, ("c",))["c"]
        low, high = evaluation.intervals["demographic_parity_difference"]
        covered.append(low <= true <= high)
        widths.append(high - low)
        errors.append(evaluation.metrics["demographic_parity_difference"] - true)
    return {"replicates": replicates, "rows": 2000, "hidden": "a 0.6, b 0.2", "n_boot": n_boot, "population_dpd": round(true, 4),
            "coverage": round(float(np.mean(covered)), 3), "mean_width": round(float(np.mean(widths)), 4),
            "mean_error": round(float(np.mean(errors)), 4),
            "coverage_every_value_known": round(float(np.mean(covered_known)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--out", default=str(PROJECT / "bench" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = adult(args.n_boot)
    simulation = coverage(args.replicates, args.n_boot)
    print(simulation, flush=True)
    (out / "missing_sensitive.json").write_text(json.dumps({"adult": rows, "coverage": simulation}, indent=2))
    lines = ["# Gates over rows with no sensitive value", "",
             f"Adult, unconstrained learner, test split ({rows[0]['test_rows']:,} rows), 40 % of `sex` hidden; "
             f"{args.n_boot} bootstrap resamples (inference refitted on each).", "",
             "| hidden | EM prior shift | true DPD | known rows only | estimated (95 % interval) | inference AUC | Brier | ECE | shares among hidden (true) | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shares = ", ".join(f"{g} {v:.3f} ({r['true_missing_shares'][g]:.3f})" for g, v in r["missing_shares"].items())
        lines.append(f"| {r['scenario']} | {'yes' if r['prior_shift_em'] else 'no'} | {r['true_dpd']:.4f} | {r['known_rows_dpd']:.4f} | "
                     f"{r['estimated_dpd']:.4f} [{r['interval'][0]:.4f}, {r['interval'][1]:.4f}] | {r['inference_auc']} | "
                     f"{r['brier']} | {r['ece']} | {shares} | {r['seconds']} |")
    s = simulation
    lines += ["", f"Coverage (generated data, {s['rows']} rows per replicate, hidden {s['hidden']}, {s['n_boot']} resamples): "
              f"{s['coverage']:.3f} of {s['replicates']} nominal-95 % intervals cover the population DPD {s['population_dpd']}; "
              f"mean width {s['mean_width']}, mean error {s['mean_error']}. The same bootstrap with every value known: "
              f"{s['coverage_every_value_known']:.3f}."]
    (out / "missing_sensitive.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
