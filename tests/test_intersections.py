"""Intersectional gates (issue 19 item 1): the cells of several sensitive features, gated with
simultaneous intervals, on generated data whose worst cell is planted; a seeded coverage check
of the simultaneous intervals; tiny cells left out with their reason; the whole flow on a real
Prefect server."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from conftest import BackgroundRun, write_policy
from synthetic import simultaneous_coverage, write_dataset

from fairloop import pipeline
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import load_dataset
from fairloop.errors import BadInputError
from fairloop.gates.policy import apply_gates
from fairloop.review.packet import ReviewPacket, render_summary
from fairloop.review.terminal import print_intersections
from fairloop.templating import md_text

WORST = "kind=B & band=y"
TINY = "kind=C & band=x"
# only (B, y) is disadvantaged: same base rate, but its visible feature is shifted down, so a
# group-blind model selects it far less; it is small, so neither marginal moves much
CELLS = {("A", "x"): (2500, 0.4), ("A", "y"): (2500, 0.4), ("B", "x"): (2500, 0.4), ("B", "y"): (300, 0.4),
         ("C", "x"): (15, 0.4)}
LOGISTIC = {"name": "lr", "version": 1, "learner": "logistic_regression", "method": "none"}
POLICY = {"name": "cells", "version": 1, "evaluation": "holdout",
          "thresholds": {"max_demographic_parity_difference": 0.05, "min_disparate_impact_ratio": 0.8}}


def planted(directory: Path) -> Path:
    return write_dataset(directory, "cells", CELLS, sensitive=("kind", "band"), shift={("B", "y"): -2.0})


@functools.cache
def trained(root: str, sensitive: str):
    """Inputs, splits and models (baseline and candidate: logistic regressions) judged on ``sensitive``."""
    directory = Path(root)
    spec = planted(directory)
    (directory / "lr.yaml").write_text(yaml.safe_dump(LOGISTIC))
    (directory / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    inputs = pipeline.load_inputs(pipeline.RunParams(
        dataset=str(spec), constraint=str(directory / "lr.yaml"), policy=str(directory / "policy.yaml"), sensitive=sensitive))
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    return inputs, splits, {name: model for name, (model, _) in pipeline.train(inputs, splits, mode).items()}


@functools.cache
def gated(root: str, sensitive: str):
    """Baseline evaluations and gate report of a logistic regression judged on ``sensitive``."""
    inputs, splits, models = trained(root, sensitive)
    evaluations = pipeline.evaluate_models(models, splits.test, inputs.sensitive, inputs.policy)
    return evaluations, apply_gates(inputs.policy, evaluations)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cells"))


def test_the_spec_declares_intersections_and_names_bad_ones(tmp_path):
    spec_path = planted(tmp_path)
    groups = load_dataset(spec_path).frames["all"].groups
    assert list(groups.columns) == ["kind", "band", "kind:band"]
    assert set(groups["kind:band"]) == {"kind=A & band=x", "kind=A & band=y", "kind=B & band=x", WORST, TINY}
    spec = yaml.safe_load(spec_path.read_text())
    spec["intersections"] = [["kind", "colour"]]
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(BadInputError, match=r"intersections\[0\].*unknown \['colour'\]"):
        load_dataset_spec(spec_path)
    spec["intersections"] = [["kind", "band"]]
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(BadInputError, match=r"unknown sensitive feature 'band:kind'.*intersections \['kind:band'\]"):
        load_dataset_spec(spec_path).grouping("band:kind")


def test_the_gates_find_the_planted_worst_cell_that_both_marginals_hide(root):
    for marginal in ("kind", "band"):  # each feature on its own: the gap stays under the 0.05 limit
        evaluations, _ = gated(root, marginal)
        assert evaluations["baseline"].metrics["demographic_parity_difference"] < 0.05, marginal
    evaluations, gates = gated(root, "kind:band")
    baseline = apply_gates(pipeline.load_policy(Path(root) / "policy.yaml"), {"candidate": evaluations["baseline"]})
    dpd = next(r for r in baseline.results if r.gate == "max_demographic_parity_difference")
    assert dpd.verdict == "fail" and dpd.interval[0] > 0.05, dpd.reason  # the lower bound is over the limit
    assert f"worst cells '{WORST}'" in dpd.reason and "simultaneous" in dpd.reason
    ratio = next(r for r in baseline.results if r.gate == "min_disparate_impact_ratio")
    assert ratio.verdict == "fail" and WORST in ratio.reason
    # the reviewer sees the planted cell first, the tiny one last (it counts in no rate)
    packet = ReviewPacket(dataset="cells", sensitive="kind:band", candidate_name="lr", candidate_label="lr",
                          recipe_label="none", champion_version=None, needs_sensitive_at_predict=False,
                          evaluations={"candidate": evaluations["baseline"]}, gates=baseline, audit_verdict="pass",
                          audit_reasons=[], base_rate_gap=0.0, augment=_no_augment())
    order = [change.group for change in packet.group_changes()]
    assert order[0] == WORST and order[-1] == TINY
    # the tiny cell is listed with its counts and reason for every rate, never dropped silently
    excluded = {e.rate: e for e in evaluations["baseline"].excluded_groups if e.group == TINY}
    assert set(excluded) == {"selection_rate", "true_positive_rate", "false_positive_rate"}
    assert excluded["selection_rate"].rows < 30 and "< floor 30" in excluded["selection_rate"].reason


def test_a_run_gating_on_one_feature_shows_the_declared_intersection_worst_cell_first(root):
    """Gated on ``kind`` alone, the spec's declared ``kind:band`` still reaches the reviewer: both
    models on its cells, the planted cell first with its interval over the limit, in the dialog
    and the terminal; a gap over the cells that worsens is a 'worse' line of the first screen."""
    inputs, splits, models = trained(root, "kind")
    evaluations, gates = gated(root, "kind")
    intersections = pipeline.evaluate_declared_intersections(pipeline.predict_all(models, splits.test), splits.test,
                                                             inputs.loaded.spec, "kind", inputs.policy)
    assert list(intersections) == ["kind:band"] and set(intersections["kind:band"]) == {"baseline", "candidate"}
    cells = intersections["kind:band"]
    assert cells["candidate"].sensitive == "kind:band" and WORST in cells["candidate"].by_group
    assert "selection_rate[" + WORST + "]" in cells["candidate"].intervals  # with the cells' (simultaneous) intervals
    packet = ReviewPacket(dataset="cells", sensitive="kind", candidate_name="lr", candidate_label="lr",
                          recipe_label="none", champion_version=None, needs_sensitive_at_predict=False,
                          evaluations=evaluations, gates=gates, audit_verdict="pass", audit_reasons=[],
                          base_rate_gap=0.0, augment=_no_augment(), intersections=intersections)
    view = packet.intersection_views()[0]
    assert view.name == "kind:band" and view.cells[0].cell == WORST
    dpd = next(m for m in view.metrics if m.label == "DPD")
    assert dpd.candidate_interval[0] > 0.05, dpd  # the planted gap, which the marginal gate cannot see
    summary = render_summary(packet, "")
    assert "### Declared intersection kind:band (not gated)" in summary
    assert f"| {md_text(WORST)} |" in summary
    console = Console(record=True, width=80)
    print_intersections(console, packet)
    printed = console.export_text()
    assert "Declared intersection kind:band" in printed and WORST.split(" & ")[0] in printed

    # the same model: nothing worse; a candidate that widened the cells' gap: said on the first screen
    assert not packet.worsening()
    narrower = cells["baseline"].model_copy(update={"metrics": {**cells["baseline"].metrics, "demographic_parity_difference": 0.01}})
    widened = packet.model_copy(update={"intersections": {"kind:band": {"baseline": narrower, "candidate": cells["candidate"]}}})
    assert [w.brief.split(" 0.010")[0] for w in widened.worsening()] == ["DPD over kind:band"]
    assert "not gated" in widened.worsening()[0].detail


def _no_augment():
    from fairloop.remedy.recipes import AugmentReport

    return AugmentReport(recipe="none", kind="none", rows_before=0, rows_after=0, synthetic_rows=0,
                         cells_before={}, cells_after={})


def test_simultaneous_intervals_cover_all_cells_near_the_nominal_rate():
    # seeded, so deterministic; 80 replicates: a method that truly covers 95 % lands in
    # [0.875, 0.99] with probability 0.98, one that covers 85 % misses it two times in three, the
    # per-cell intervals (about 65 % together) always (bench/intersectional_bench.py: 1,000 replicates)
    found = simultaneous_coverage(80, naive_replicates=20)
    assert 0.875 <= found["simultaneous"] <= 0.99, found
    # per-cell 95 % intervals miss some cell far more often: why the gates use the family
    assert found["per_cell"] < found["simultaneous"] - 0.1, found
    assert found["dpd"] >= 0.93, found  # the gap's interval is at least as sure as the family


def test_fairlearn_fitted_on_a_frame_of_sensitive_columns_equals_the_fit_on_the_cells(tmp_path):
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression

    split = load_dataset(planted(tmp_path)).frames["all"].take(np.arange(3000))
    X = split.X[["x1", "x2", "x3"]].to_numpy()

    def fitted(sensitive):
        mitigator = ExponentiatedGradient(LogisticRegression(), DemographicParity(difference_bound=0.02), max_iter=10)
        mitigator.fit(X, split.y.to_numpy(), sensitive_features=sensitive)
        return mitigator._pmf_predict(X)

    np.testing.assert_allclose(fitted(split.groups[["kind", "band"]]), fitted(split.groups["kind:band"].to_numpy()))


@pytest.mark.usefixtures("prefect_server")
def test_the_whole_flow_gates_promotes_and_records_an_intersection(remediation_flow, registry_dir, tmp_path):
    from fairloop.registry.store import Registry

    spec = planted(tmp_path)
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.6, group_floors={"rows": 30, "positives": 5,
                                                                                          "negatives": 5})
    template = tmp_path / "lr-threshold.yaml"  # per-cell thresholds on a fast learner: this test is about wiring
    template.write_text(yaml.safe_dump({"name": "lr-threshold", "version": 1, "learner": "logistic_regression",
                                        "method": "threshold_optimizer", "constraint": "demographic_parity",
                                        "calibration_folds": 2}))
    run = BackgroundRun(remediation_flow, dataset=str(spec), constraint=str(template),
                        policy=str(policy), sensitive="kind:band", train_rows=3000, requested_by="pytest",
                        review_poll_seconds=1)
    run.approve_and_finish("cells checked")
    registry = Registry(registry_dir)
    entry, model = registry.load_champion("cells")
    setup = entry.lineage.intersection
    assert entry.lineage.sensitive == "kind:band" and setup.features == ["kind", "band"]
    assert "max-|t|" in setup.interval_method and setup.floors.positives == 5
    report = (registry_dir / "cells" / "report.md").read_text()
    assert "simultaneous over all cells" in report and "cells worst first" in report
    assert "DPD ≤ 0.6; measured" in report and "worst cell" in report.split("### Gates", 1)[1]  # named with the gate
    first_cell = report.index("| kind=")
    assert report[first_cell:].startswith(f"| {md_text(WORST)} |")  # the worst cell's table comes first
    card = (registry_dir / "cells" / "model_card.md").read_text()
    assert "Gated on the cells of kind x band" in card and md_text("max-|t|") in card
    # the champion (ThresholdOptimizer, per cell) predicts on rows parsed by the spec
    rows = load_dataset(spec).frames["all"].take(np.arange(50))
    assert set(model.predict(rows.X, rows.groups)) <= {0, 1}


def test_the_monitor_watches_the_cells_of_each_window(tmp_path):
    """The champion is gated on one feature; the spec declares the intersection, so every window
    also gets the worst-cell gap (same alert rules) and per-cell rates, worst first."""
    from fairloop import monitor as core
    from fairloop.remedy.constraints import fit_candidate

    spec_path = planted(tmp_path / "planted")
    fair_path = write_dataset(tmp_path / "fair", "cells", CELLS, sensitive=("kind", "band"), seed=1)
    (tmp_path / "lr.yaml").write_text(yaml.safe_dump(LOGISTIC))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({**POLICY, "monitoring": {"max_prediction_rate_gap": 0.1}}))
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(spec_path), constraint=str(tmp_path / "lr.yaml"),
                                                     policy=str(tmp_path / "policy.yaml"), sensitive="kind"))
    model, _ = fit_candidate(pipeline.prepare(inputs).train, inputs.template, "kind", 0)
    spec = inputs.loaded.spec
    reference = core.read_window(spec, fair_path.with_suffix(".csv"))

    def check(path: Path, previous=None, month: int = 1):
        window = core.Window(core.read_window(spec, path), f"2015-{month:02d}-01", f"2015-{month + 1:02d}-01")
        return core.check_window(spec, window, reference, model, inputs.policy, sensitive="kind", champion_version="v1",
                                 source=str(path), previous=previous)

    planted_window = check(spec_path.with_suffix(".csv"))
    cells = planted_window.metric("prediction_rate_gap:kind:band")
    assert cells.feature == "kind:band" and cells.low > cells.threshold and cells.alert  # the interval rule fires
    assert not planted_window.metric("prediction_rate_gap:kind").breach  # the marginal hides it
    assert planted_window.cell_rates[0].group == WORST and planted_window.cell_rates[0].selection_interval is not None
    assert any(TINY in line for line in planted_window.skipped)  # too few rows for a cell rate: said, not dropped
    fair_window = check(fair_path.with_suffix(".csv"))
    assert not fair_window.metric("prediction_rate_gap:kind:band").breach and not fair_window.alert
