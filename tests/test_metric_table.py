"""The metric table (``fairloop.gates.metrics``): a metric declared there once is usable everywhere.

The proof is the maximum false-positive-rate difference, added as one table entry plus its
function: a policy file sets a threshold on it, the gates judge it with a bootstrap interval
(and answer how many rows would decide it), the review report shows it, and a monitor window
reports it, while none of the modules that do those things names it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from fairlearn.metrics import MetricFrame, false_positive_rate

import fairloop
from fairloop.data.dataset_spec import FeatureSpec
from fairloop.data.rows import Rows, Split
from fairloop.errors import BadInputError
from fairloop.gates.evaluate import score_predictions
from fairloop.gates.intervals import bootstrap_intervals
from fairloop.gates.metrics import GATES, METRIC_BY_NAME, METRICS
from fairloop.gates.policy import apply_gates, load_policy
from fairloop.monitor.check import check_window
from fairloop.monitor.plots import summary_markdown
from fairloop.monitor.windows import Window
from fairloop.remedy.model import Predictions
from fairloop.remedy.recipes import AugmentReport
from fairloop.review.packet import ReviewPacket, render_report

METRIC = "false_positive_rate_difference"
GATE = "max_false_positive_rate_difference"
SRC = Path(fairloop.__file__).parent


def fpr_world(n: int, seed: int = 0):
    """Two groups whose selection rates and TPRs match but whose FPRs differ by about 0.1."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b"], n)
    y = (rng.random(n) < 0.5).astype(int)
    fpr = np.where(groups == "a", 0.2, 0.3)
    pred = np.where(y == 1, rng.random(n) < 0.8, rng.random(n) < fpr).astype(int)
    return y, pred, groups


def write_policy(directory: Path, thresholds: dict) -> Path:
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump({"name": "fpr", "version": 1, "thresholds": thresholds}))
    return path


def test_the_modules_that_use_metrics_do_not_name_the_new_one():
    table = SRC / "gates" / "metrics.py"
    modules = [path for path in SRC.rglob("*.py") if path != table]
    assert len(modules) > 50  # the whole package: policy, evaluation, intervals, sweep, review, monitor, ...
    for module in modules:
        assert METRIC not in module.read_text(), module
    assert METRIC in METRIC_BY_NAME and GATES[GATE][0].name == METRIC


def test_every_between_group_metric_equals_fairlearns_on_the_same_rows():
    y, pred, groups = fpr_world(4000)
    split = Split(X=pd.DataFrame({"x": np.zeros(len(y))}), y=pd.Series(y), groups=pd.DataFrame({"g": groups}))
    evaluation = score_predictions(split, "g", Predictions(pred, pred.astype(float), pred.astype(float)))
    for metric in (m for m in METRICS if m.between_groups):
        assert evaluation.metrics[metric.name] == pytest.approx(
            metric.fairlearn(y, pred, sensitive_features=groups), abs=1e-12), metric.name
    expected = MetricFrame(metrics=false_positive_rate, y_true=y, y_pred=pred, sensitive_features=groups).difference()
    assert evaluation.metrics[METRIC] == pytest.approx(expected)


def test_a_policy_file_names_the_new_threshold_and_an_unknown_one_is_refused_by_file_and_field(tmp_path):
    policy = load_policy(write_policy(tmp_path, {GATE: 0.05}))
    assert getattr(policy.thresholds, GATE) == 0.05
    with pytest.raises(BadInputError, match=r"policy\.yaml.*max_fpr_gap"):
        load_policy(write_policy(tmp_path, {"max_fpr_gap": 0.05}))
    with pytest.raises(BadInputError, match=GATE):
        load_policy(write_policy(tmp_path, {GATE: 1.5}))


def test_unset_the_new_threshold_leaves_an_existing_policys_hash_alone(tmp_path):
    policy = load_policy(write_policy(tmp_path, {"max_demographic_parity_difference": 0.1}))
    assert GATE not in policy.model_dump(mode="json")["thresholds"]
    assert "max_equalized_odds_difference" in policy.model_dump(mode="json")["thresholds"]


def gated(tmp_path, n: int, threshold: float):
    y, pred, groups = fpr_world(n)
    split = Split(X=pd.DataFrame({"x": np.zeros(n)}), y=pd.Series(y), groups=pd.DataFrame({"g": groups}))
    intervals = bootstrap_intervals(y, {"candidate": pred}, groups, n_boot=300, confidence=0.95, seed=0)
    evaluation = score_predictions(split, "g", Predictions(pred, pred.astype(float), pred.astype(float)))
    evaluation = evaluation.model_copy(update={"intervals": intervals["candidate"]})
    policy = load_policy(write_policy(tmp_path, {GATE: threshold}))
    return policy, evaluation, apply_gates(policy, {"candidate": evaluation})


def test_the_gates_judge_the_new_metric_with_an_interval(tmp_path):
    _, evaluation, report = gated(tmp_path, 20_000, 0.05)
    (result,) = report.results
    assert result.gate == GATE and result.metric == METRIC
    low, high = result.interval
    assert low < evaluation.metrics[METRIC] < high and low > 0.05
    assert result.verdict == "fail" and not report.passed
    assert gated(tmp_path, 20_000, 0.2)[2].results[0].verdict == "pass"
    undecided = gated(tmp_path, 400, 0.1)[2].results[0]  # ~0.1 on 400 rows: the interval straddles 0.1
    assert undecided.verdict == "inconclusive" and "the rows of every group" in undecided.advice


def test_the_review_report_shows_the_new_gate_and_metric(tmp_path):
    _, evaluation, report = gated(tmp_path, 20_000, 0.05)
    packet = ReviewPacket(dataset="fpr", sensitive="g", candidate_name="lr", candidate_label="lr", recipe_label="none",
                          champion_version=None, needs_sensitive_at_predict=False, evaluations={"candidate": evaluation},
                          gates=report, audit_verdict="pass", audit_reasons=[], base_rate_gap=0.0,
                          augment=AugmentReport(recipe="none", kind="none", rows_before=0, rows_after=0, synthetic_rows=0,
                                                cells_before={}, cells_after={}))
    text = render_report(packet, "")
    label = METRIC_BY_NAME[METRIC].label
    assert f"fail**: {label} ≤ 0.05" in text  # the gate, in the reviewer's words
    assert f"| {label} | {evaluation.metrics[METRIC]:.4f} |" in text  # the row of the metrics table


def test_a_monitor_window_reports_the_new_metric_when_the_policy_gates_it(tmp_path):
    y, pred, groups = fpr_world(12_000, seed=1)
    ref_y, ref_pred, ref_groups = fpr_world(3000, seed=2)

    def rows(labels, predictions, names):
        return Rows(X=pd.DataFrame({"x": np.zeros(len(labels))}), groups=pd.DataFrame({"g": names}),
                    y=pd.Series(labels, dtype=float), predictions=predictions)

    spec = SimpleNamespace(name="fpr", features=FeatureSpec(numeric=["x"]), intersection_names=[])
    window = Window(rows=rows(y, pred, groups), start="2026-01-01", end="2026-01-31")

    def check(thresholds):
        policy = load_policy(write_policy(tmp_path, thresholds))
        return check_window(spec, window, rows(ref_y, ref_pred, ref_groups), None, policy, sensitive="g",
                            champion_version="v1", source="feed.csv")

    report = check({GATE: 0.05})
    (metric,) = [m for m in report.metrics if m.kind == METRIC]
    assert metric.threshold == 0.05 and metric.low <= metric.value <= metric.high and metric.reference is not None
    assert metric.breach and metric.low > 0.05  # about 0.1 on 12,000 rows
    assert f"{METRIC}:g" in summary_markdown(report).replace("\\_", "_")  # a breach row of the window summary
    assert not [m for m in check({"max_demographic_parity_difference": 0.1}).metrics if m.kind == METRIC]
