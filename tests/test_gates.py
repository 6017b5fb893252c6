"""Gate verdicts with bootstrap intervals: every gate kind reaches pass, fail and inconclusive."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, selection_rate

from fairloop.data.groups import GroupFloors
from fairloop.data.rows import Split
from fairloop.gates.evaluate import Evaluation, score_predictions
from fairloop.remedy.model import Predictions
from fairloop.gates.intervals import bootstrap_intervals
from fairloop.gates.policy import BootstrapSettings, Policy, apply_gates


def synthetic_split(n: int, rate_a: float, rate_b: float, accuracy: float, seed: int = 0):
    """Labels and decisions with chosen per-group selection rates and accuracy."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b"], n)
    pred = (rng.random(n) < np.where(groups == "a", rate_a, rate_b)).astype(int)
    y = np.where(rng.random(n) < accuracy, pred, 1 - pred)
    split = Split(X=pd.DataFrame({"x": np.zeros(n)}), y=pd.Series(y), groups=pd.DataFrame({"g": groups}))
    return split, pred


@functools.cache  # the same constructed data serves several thresholds; Evaluations are not mutated
def evaluations_for(n: int, candidate_rates, baseline_accuracy_gap: float = 0.0, seed: int = 0) -> dict[str, Evaluation]:
    split, pred = synthetic_split(n, *candidate_rates, accuracy=0.8, seed=seed)
    rng = np.random.default_rng(seed + 1)
    # the baseline agrees with the truth more often by about `baseline_accuracy_gap`
    fix = rng.random(n) < baseline_accuracy_gap / 0.2
    baseline_pred = np.where(fix, split.y.to_numpy(), pred)
    preds = {"candidate": pred, "baseline": baseline_pred}
    intervals = bootstrap_intervals(split.y.to_numpy(), preds, split.groups["g"].to_numpy(), n_boot=400,
                                    confidence=0.95, seed=0, drops_against=("baseline",))
    return {
        name: score_predictions(split, "g", decided(p)).model_copy(update={"intervals": intervals[name]})
        for name, p in preds.items()
    }


def decided(decisions: np.ndarray, scores: np.ndarray | None = None) -> Predictions:
    """Predictions of a deterministic model (its scores are its decision probabilities)."""
    scores = decisions.astype(float) if scores is None else scores
    return Predictions(decisions, scores, scores)


def verdict(policy_thresholds: dict, evaluations) -> str:
    policy = Policy(name="p", version=1, thresholds=policy_thresholds)
    (result,) = apply_gates(policy, evaluations).results
    return result.verdict


@pytest.mark.parametrize(
    ("gate", "threshold", "setup", "expected"),
    [
        # DPD ~0.10 measured on 20k rows: interval ~±0.015
        ("max_demographic_parity_difference", 0.20, (20000, (0.2, 0.3)), "pass"),
        ("max_demographic_parity_difference", 0.05, (20000, (0.2, 0.3)), "fail"),
        ("max_demographic_parity_difference", 0.10, (20000, (0.2, 0.3)), "inconclusive"),
        # DI ratio ~0.667
        ("min_disparate_impact_ratio", 0.5, (20000, (0.2, 0.3)), "pass"),
        ("min_disparate_impact_ratio", 0.8, (20000, (0.2, 0.3)), "fail"),
        ("min_disparate_impact_ratio", 0.667, (20000, (0.2, 0.3)), "inconclusive"),
        # EOD: same decisions, labels agree 80 % of the time
        ("max_equalized_odds_difference", 0.5, (20000, (0.2, 0.3)), "pass"),
        ("max_equalized_odds_difference", 0.01, (20000, (0.2, 0.3)), "fail"),
        # on 400 rows the interval is wide ([0.001, 0.105] here): the gate that clearly fails on
        # 20k rows cannot be decided
        ("max_demographic_parity_difference", 0.05, (400, (0.2, 0.3)), "inconclusive"),
    ],
)
def test_fairness_gate_verdicts(gate, threshold, setup, expected):
    n, rates = setup
    assert verdict({gate: threshold}, evaluations_for(n, rates)) == expected


def test_equalized_odds_gate_can_be_inconclusive():
    evaluations = evaluations_for(20000, (0.2, 0.3))
    low, high = evaluations["candidate"].intervals["equalized_odds_difference"]
    assert verdict({"max_equalized_odds_difference": (low + high) / 2}, evaluations) == "inconclusive"


@pytest.mark.parametrize(("threshold", "expected"), [(0.08, "pass"), (0.01, "fail"), (0.05, "inconclusive")])
def test_accuracy_drop_gate_uses_a_paired_interval(threshold, expected):
    evaluations = evaluations_for(10000, (0.3, 0.3), baseline_accuracy_gap=0.05)
    low, high = evaluations["candidate"].intervals["accuracy_drop_vs_baseline"]
    assert low < 0.05 < high
    assert verdict({"max_accuracy_drop_vs_baseline": threshold}, evaluations) == expected


def test_champion_gate_is_skipped_without_a_champion():
    assert verdict({"max_accuracy_drop_vs_champion": 0.01}, evaluations_for(2000, (0.3, 0.3))) == "skipped"


def test_inconclusive_goes_to_review_only_with_acceptance_when_the_policy_says_so():
    evaluations = evaluations_for(20000, (0.2, 0.3))
    thresholds = {"max_demographic_parity_difference": 0.10}
    strict = apply_gates(Policy(name="p", version=1, thresholds=thresholds), evaluations)
    lenient = apply_gates(Policy(name="p", version=1, thresholds=thresholds, inconclusive="review_with_acceptance"),
                          evaluations)
    assert not strict.passed and "inconclusive" in strict.failures[0] and not strict.needs_acceptance
    assert lenient.passed and lenient.results[0].verdict == "inconclusive"
    assert [r.gate for r in lenient.needs_acceptance] == ["max_demographic_parity_difference"]


def test_bootstrap_agrees_with_fairlearn_metricframe():
    split, pred = synthetic_split(3000, 0.2, 0.35, accuracy=0.8, seed=4)
    ours = bootstrap_intervals(split.y.to_numpy(), {"candidate": pred}, split.groups["g"].to_numpy(),
                               n_boot=400, confidence=0.95, seed=0)["candidate"]
    frame = MetricFrame(metrics=selection_rate, y_true=split.y, y_pred=pred, sensitive_features=split.groups["g"],
                        n_boot=100, ci_quantiles=[0.025, 0.975], random_state=0)
    for ours_bounds, theirs in ((ours["demographic_parity_difference"], frame.difference_ci()),
                                (ours["disparate_impact_ratio"], frame.ratio_ci())):
        assert ours_bounds[0] == pytest.approx(float(theirs[0]), abs=0.02)
        assert ours_bounds[1] == pytest.approx(float(theirs[1]), abs=0.02)
    assert BootstrapSettings().n_boot >= 300


def test_scores_are_fairlearns_own_metric_functions():
    """score_predictions derives the group metrics from one MetricFrame; they equal Fairlearn's
    functions (and scikit-learn's Brier score per group)."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(3)
    n = 5000
    groups = pd.Series(rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]))
    y = pd.Series(rng.integers(0, 2, n))
    scores = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    pred = (scores >= 0.5).astype(int)
    split = Split(X=pd.DataFrame({"x": scores}), y=y, groups=pd.DataFrame({"g": groups}))
    metrics = score_predictions(split, "g", decided(pred, scores))
    kwargs = {"sensitive_features": groups}
    assert metrics.metrics["demographic_parity_difference"] == pytest.approx(demographic_parity_difference(y, pred, **kwargs))
    assert metrics.metrics["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(y, pred, **kwargs))
    assert metrics.metrics["disparate_impact_ratio"] == pytest.approx(demographic_parity_ratio(y, pred, **kwargs))
    for group in "abc":
        rows = (groups == group).to_numpy()
        assert metrics.by_group[group]["brier"] == pytest.approx(brier_score_loss(y[rows], scores[rows]))


def test_groups_below_the_size_floor_do_not_count():
    split, pred = synthetic_split(4000, 0.2, 0.3, accuracy=0.8)
    groups = split.groups["g"].to_numpy().copy()
    groups[:12] = "tiny"  # a 12-row group with an extreme rate would dominate every gap
    pred[:12] = 1
    split = Split(X=split.X, y=split.y, groups=pd.DataFrame({"g": groups}))
    with_tiny = score_predictions(split, "g", decided(pred))
    floored = score_predictions(split, "g", decided(pred), floors=GroupFloors(rows=30))
    assert with_tiny.metrics["disparate_impact_ratio"] < 0.3
    assert floored.metrics["disparate_impact_ratio"] > 0.6
    assert floored.by_group["tiny"]["counted_selection_rate"] == 0.0 and floored.by_group["a"]["counted_selection_rate"] == 1.0
    assert [(e.group, e.rate, e.rows) for e in floored.excluded_groups if e.rate == "selection_rate"] == [("tiny", "selection_rate", 12)]
    one_group = score_predictions(split, "g", decided(pred), floors=GroupFloors(rows=10_000))
    policy = Policy(name="p", version=1, thresholds={"max_demographic_parity_difference": 0.5})
    (result,) = apply_gates(policy, {"candidate": one_group}).results
    assert result.verdict == "inconclusive" and result.value is None
    assert "needs two counted group(s)" in result.reason and "10000" in result.reason


@pytest.mark.parametrize(("threshold", "expected"), [(0.3, "pass"), (0.9, "fail")])
def test_min_group_true_positive_rate_gate(threshold, expected):
    evaluations = evaluations_for(20000, (0.4, 0.6))
    low, high = evaluations["candidate"].intervals["min_group_true_positive_rate"]
    assert low <= evaluations["candidate"].metrics["min_group_true_positive_rate"] <= high
    assert verdict({"min_group_true_positive_rate": threshold}, evaluations) == expected
    assert verdict({"min_group_true_positive_rate": (low + high) / 2}, evaluations) == "inconclusive"


def test_net_benefit_gate_over_a_threshold_band():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    informative = np.clip(y * 0.6 + rng.random(5000) * 0.4, 0, 1)  # separates the classes
    useless = np.full(5000, 0.9)  # acts on everyone: net benefit negative when prevalence < threshold
    y = np.where(rng.random(5000) < 0.7, 0, y)  # prevalence ~15 %
    split = Split(X=pd.DataFrame({"x": np.zeros(5000)}), y=pd.Series(y), groups=pd.DataFrame({"g": ["a"] * 5000}))
    policy = Policy(name="p", version=1, thresholds={"min_net_benefit": 0.0})
    for scores, expected in ((informative, "pass"), (useless, "fail")):
        ev = score_predictions(split, "g", decided((scores >= 0.5).astype(int), scores), net_benefit_band=(0.1, 0.2))
        (result,) = apply_gates(policy, {"candidate": ev}).results
        assert result.verdict == expected, ev.metrics["net_benefit_min"]


def test_calibration_is_reported_per_group():
    split, pred = synthetic_split(2000, 0.2, 0.3, accuracy=0.8)
    ev = score_predictions(split, "g", decided(pred, pred * 0.8 + 0.1))
    for stats in ev.by_group.values():
        assert {"mean_score", "observed_rate", "brier"} <= set(stats)
        assert 0 <= stats["brier"] <= 1


def test_on_compas_small_groups_leave_fairness_gates_inconclusive():
    """COMPAS's test split has ~1,600 rows: the DP gates' intervals are about +-0.05 wide."""
    from conftest import PROJECT

    from fairloop import pipeline

    inputs = pipeline.load_inputs(pipeline.RunParams(
        dataset=str(PROJECT / "datasets/compas.yaml"), recipe=str(PROJECT / "recipes/none.yaml"),
        constraint=str(PROJECT / "constraints/threshold-dp.yaml"), policy=str(PROJECT / "policies/default.yaml")))
    splits = pipeline.prepare(inputs)
    fitted = pipeline.train(inputs, splits, pipeline.decide_mode(inputs, splits))
    evaluations = pipeline.evaluate_models({k: m for k, (m, _) in fitted.items()}, splits.test, "race", inputs.policy)
    verdicts = {r.gate: r for r in apply_gates(inputs.policy, evaluations).results}
    dpd = verdicts["max_demographic_parity_difference"]
    assert dpd.verdict == "inconclusive" and dpd.interval[1] - dpd.interval[0] > 0.05
    assert verdicts["min_disparate_impact_ratio"].verdict == "inconclusive"


def scored_evaluations(n: int = 4000, seed: int = 0, net_benefit_band=(0.1, 0.2)) -> dict[str, Evaluation]:
    """A candidate whose scores separate the classes less well than the baseline's (AUC ~0.05 lower)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    groups = rng.choice(["a", "b"], n)
    split = Split(X=pd.DataFrame({"x": np.zeros(n)}), y=pd.Series(y), groups=pd.DataFrame({"g": groups}))
    scores = {"baseline": np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1),
              "candidate": np.clip(0.25 * y + rng.random(n) * 0.75, 0, 1)}
    decisions = {name: (s >= 0.5).astype(int) for name, s in scores.items()}
    intervals = bootstrap_intervals(y, decisions, groups, n_boot=400, confidence=0.95, seed=0,
                                    drops_against=("baseline",), scores=scores, decision_probabilities=scores,
                                    net_benefit_band=net_benefit_band)
    return {
        name: score_predictions(split, "g", decided(decisions[name], scores[name]), net_benefit_band=net_benefit_band)
        .model_copy(update={"intervals": intervals[name]})
        for name in scores
    }


def test_resampled_auc_is_scikit_learns_on_the_sample_itself():
    from sklearn.metrics import roc_auc_score

    from fairloop.gates.intervals import _resample_auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    scores = np.round(np.clip(0.3 * y + rng.random(3000) * 0.7, 0, 1), 1)  # many ties
    identity = np.arange(3000)[None, :]
    assert _resample_auc(y, scores, identity)[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("gate", ["max_auc_drop_vs_baseline", "min_net_benefit"])
def test_score_based_gates_reach_pass_fail_and_inconclusive(gate):
    evaluations = scored_evaluations()
    candidate = evaluations["candidate"]
    key = "auc_drop_vs_baseline" if gate == "max_auc_drop_vs_baseline" else "net_benefit_min"
    low, high = candidate.intervals[key]
    assert low < high
    if gate == "max_auc_drop_vs_baseline":
        drop = evaluations["baseline"].metrics["auc"] - candidate.metrics["auc"]
        assert low <= drop <= high and low > 0  # the candidate ranks worse, and the interval says so
        passing, failing = high + 0.01, low - 0.01
    else:
        assert low <= candidate.metrics["net_benefit_min"] <= high
        passing, failing = low - 0.01, high + 0.01
    assert verdict({gate: passing}, evaluations) == "pass"
    assert verdict({gate: failing}, evaluations) == "fail"
    assert verdict({gate: (low + high) / 2}, evaluations) == "inconclusive"


def test_calibration_gap_by_group_has_a_bootstrap_interval_that_finds_the_miscalibrated_group():
    """Group a's probabilities are calibrated by construction, group b's overstate its positive
    rate by 0.10: b's gap interval lies around +0.10 and excludes 0, a's covers 0; both match a
    plain per-group bootstrap of the gap (pandas, its own draws) and the point figures of
    score_predictions."""
    rng = np.random.default_rng(11)
    n = 6000
    groups = np.where(rng.random(n) < 0.7, "a", "b")
    probabilities = rng.uniform(0.15, 0.85, n)
    truth = np.where(groups == "b", probabilities - 0.10, probabilities)
    y = (rng.random(n) < truth).astype(int)
    decisions = (probabilities >= 0.5).astype(int)
    intervals = bootstrap_intervals(y, {"candidate": decisions}, groups, n_boot=500, confidence=0.95, seed=0,
                                    decision_probabilities={"candidate": probabilities})["candidate"]
    low_a, high_a = intervals["calibration_gap[a]"]
    low_b, high_b = intervals["calibration_gap[b]"]
    assert low_a < 0 < high_a
    assert 0.04 < low_b < 0.10 < high_b < 0.16

    frame = pd.DataFrame({"g": groups, "gap": probabilities - y})
    plain_rng = np.random.default_rng(5)
    for group, (low, high) in (("a", (low_a, high_a)), ("b", (low_b, high_b))):
        gaps = frame.loc[frame["g"] == group, "gap"].to_numpy()
        draws = [plain_rng.choice(gaps, gaps.size).mean() for _ in range(500)]
        assert low == pytest.approx(np.quantile(draws, 0.025), abs=0.006)
        assert high == pytest.approx(np.quantile(draws, 0.975), abs=0.006)

    split = Split(X=pd.DataFrame({"x": probabilities}), y=pd.Series(y), groups=pd.DataFrame({"g": groups}))
    scored = score_predictions(split, "g", Predictions(decisions=decisions, probabilities=probabilities, scores=probabilities))
    for group in ("a", "b"):
        assert scored.by_group[group]["calibration_gap"] == pytest.approx(frame.loc[frame["g"] == group, "gap"].mean())
