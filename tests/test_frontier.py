"""The frontier as drawn, measured on the rendered figure: the Pareto front runs through the
candidates the policy can choose only, the ones it forbids are greyed, and no label covers a
marker or another label. A real sweep on generated data whose two groups' base rates differ
(0.5 vs 0.25), so the forbidden group-aware post-processor reaches gaps the group-blind
reduction does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from matplotlib.text import Text

from conftest import PROJECT
from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.gates.policy import load_policy
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.sweep.results import FRONTIER_METRICS, frontier_metrics
from fairloop.remedy.sweep.run import run_sweep
from fairloop.remedy.sweep.spec import load_sweep
from fairloop.review.frontier import frontier_figure
from synthetic import write_dataset

POLICY = PROJECT / "policies" / "default.yaml"  # allow_sensitive_at_predict: false


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frontier")
    spec = write_dataset(folder, "gen", {"A": (1500, 0.5), "B": (1500, 0.25)}, signal=1.5, label_noise=0.05, seed=3)
    sweep = folder / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "frontier-test", "version": 1, "recipes": [str(PROJECT / "recipes" / "none.yaml")], "workers": 1,
        "constraints": [str(PROJECT / "constraints" / "unconstrained.yaml"),
                        {"template": str(PROJECT / "constraints" / "threshold-dp.yaml"), "bounds": [0.01, 0.02, 0.05, 0.1]},
                        {"template": str(PROJECT / "constraints" / "lr-eg-dp.yaml"), "bounds": [0.02, 0.05]}],
    }))
    splits = make_splits(load_dataset(spec))
    return run_sweep(load_sweep(sweep), splits, "group", 0, load_policy(POLICY), ModeDecision(mode="holdout", reason="test")).outcome


def draw(outcome, narrow: bool, points=None, chosen=None):
    points = points or {c.name: c.test for c in outcome.candidates}
    forbidden = frozenset(c.name for c in outcome.candidates if not c.choosable)
    aware = frozenset(c.name for c in outcome.candidates if c.needs_sensitive_at_predict)
    kinds = {c.name: c.kind for c in outcome.candidates}
    references = {"baseline": outcome.result(outcome.candidates[0].name).test}
    figure = frontier_figure(points, chosen, references, load_policy(POLICY), "test", narrow=narrow, group_aware=aware,
                             forbidden=forbidden, kinds=kinds)
    figure.canvas.draw()
    return figure


def dominated(i: int, accuracy: np.ndarray, fair: np.ndarray) -> bool:
    return bool(((accuracy >= accuracy[i]) & (fair >= fair[i]) & ((accuracy > accuracy[i]) | (fair > fair[i]))).any())


def front_of(names: list[str], points: dict, metric: str) -> set[tuple[float, float]]:
    """The Pareto front of ``names`` on (metric, accuracy), by brute force."""
    accuracy = np.array([points[n]["accuracy"] for n in names])
    fair = np.array([points[n][metric] for n in names]) * (1 if FRONTIER_METRICS[metric] else -1)
    return {(points[n][metric], points[n]["accuracy"]) for i, n in enumerate(names) if not dominated(i, accuracy, fair)}


def test_the_pareto_front_runs_through_choosable_candidates_and_the_forbidden_are_greyed(outcome):
    points = {c.name: c.test for c in outcome.candidates}
    choosable = [c.name for c in outcome.candidates if c.choosable]
    forbidden = [c.name for c in outcome.candidates if not c.choosable]
    assert sorted(forbidden) == sorted(c.name for c in outcome.candidates if c.method == "threshold_optimizer")
    # the known truth that makes the difference: a forbidden post-processor is on the front of all candidates
    everyone = front_of(list(points), points, "demographic_parity_difference")
    assert any((points[n]["demographic_parity_difference"], points[n]["accuracy"]) in everyone for n in forbidden)
    # the sweep's own flags (the candidates table's '*') mark the same front: choosable candidates only
    flagged = {c.name for c in outcome.candidates if c.pareto}
    expected = {n for metric in frontier_metrics(load_policy(POLICY)) for n in choosable
                if (points[n][metric], points[n]["accuracy"]) in front_of(choosable, points, metric)}
    assert flagged == expected and not flagged & set(forbidden)
    for narrow in (True, False):
        figure = draw(outcome, narrow)
        for axis, metric in zip(figure.axes, frontier_metrics(load_policy(POLICY)), strict=False):
            (line,) = [ln for ln in axis.get_lines() if ln.get_label() == "Pareto front (choosable)"]
            drawn = set(zip(line.get_xdata(), line.get_ydata(), strict=True))
            assert drawn == front_of(choosable, points, metric), metric
            greyed = [c for c in axis.collections if c.get_label().endswith("policy forbids")]
            assert sum(len(c.get_offsets()) for c in greyed) == len(forbidden)
            assert all(np.allclose(c.get_edgecolor()[0][:3], (0.66, 0.66, 0.66), atol=0.01) for c in greyed)


def marker_boxes(axis) -> list[tuple[float, float, float, float]]:
    """Every scatter marker's display box, from its drawn size (points squared) and edge width."""
    boxes = []
    for collection in axis.collections:
        sizes, widths = collection.get_sizes(), np.atleast_1d(collection.get_linewidths())
        for i, (x, y) in enumerate(collection.get_offset_transform().transform(collection.get_offsets())):
            half = (math.sqrt(sizes[i % len(sizes)]) + widths[i % len(widths)]) / 2 * axis.figure.dpi / 72
            boxes.append((x - half, y - half, x + half, y + half))
    return boxes


def overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def assert_labels_clear(figure) -> int:
    """No label box overlaps a marker's box or another label's, and each lies inside its axes;
    returns how many labels were checked."""
    renderer = figure.canvas.get_renderer()
    checked = 0
    for axis in figure.axes:
        # the text's own box: an annotation's extent includes its leader line, which ends at its point
        labels = [tuple(Text.get_window_extent(t, renderer).extents) for t in axis.texts]
        markers = marker_boxes(axis)
        inside = axis.get_window_extent(renderer).extents
        for i, box in enumerate(labels):
            assert not any(overlaps(box, m) for m in markers), (axis.get_xlabel(), axis.texts[i].get_text())
            assert not any(overlaps(box, other) for other in labels[i + 1:]), axis.texts[i].get_text()
            assert inside[0] <= box[0] and box[2] <= inside[2] and inside[1] <= box[1] and box[3] <= inside[3]
        checked += len(labels)
    return checked


def test_labels_cover_no_marker_and_no_other_label(outcome):
    chosen = next(c.name for c in outcome.candidates if c.choosable and c.method != "none")
    assert assert_labels_clear(draw(outcome, narrow=True, chosen=chosen)) >= 3  # 'chosen' on each panel, the limits
    assert assert_labels_clear(draw(outcome, narrow=False, chosen=chosen)) >= 3  # the Pareto candidates' numbers
    # a crowd: 40 candidates in a small patch, each on some front of its own panel or not
    rng = np.random.default_rng(0)
    crowd = {f"c{i}": {"accuracy": 0.8 + 0.01 * rng.random(), "demographic_parity_difference": 0.05 * rng.random(),
                       "equalized_odds_difference": 0.05 * rng.random(), "disparate_impact_ratio": 0.8 + 0.1 * rng.random()}
             for i in range(40)}
    assert assert_labels_clear(draw(outcome, narrow=False, points=crowd, chosen="c0")) >= 6
