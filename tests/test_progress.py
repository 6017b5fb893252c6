"""A run's progress bar by expected work (issue 26 item 6): the step weights, fit counts weighted by
each fit's expected cost, and a reporter whose bar never moves back, names every step, and carries
on where it stood when its run resumes after review. No server: the artifact calls are recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from uuid import uuid4

import pytest

from fairloop.remedy import fitters
from fairloop.remedy.constraints import ConstraintTemplate
from fairloop.remedy.fit_progress import (
    METHOD_FIT_COST,
    SEARCHING,
    SELECTING,
    FitCount,
    FitCounter,
    expected_fit_cost,
)
from fairloop.remedy.recipes import NO_RECIPE
from fairloop.remedy.sweep.jobs import FitJob
from fairloop.remedy.sweep.spec import SweepCandidate
from fairloop.serving import progress
from fairloop.serving.progress import (
    AUDIT,
    AUGMENT,
    AWAIT_REVIEW,
    EVALUATE,
    FIT,
    LOAD_INPUTS,
    PROMOTE,
    PUBLISH_REVIEW,
    STAGE_WEIGHTS,
    ProgressReporter,
    stage_percent,
)


def test_steps_run_in_the_bars_order_and_fitting_weighs_most():
    assert list(STAGE_WEIGHTS) == [LOAD_INPUTS, AUDIT, FIT, SELECTING, SEARCHING, AUGMENT, EVALUATE, PUBLISH_REVIEW,
                                   AWAIT_REVIEW, PROMOTE]
    starts = [stage_percent(name) for name in STAGE_WEIGHTS]
    assert starts[0] == 0.0 and starts == sorted(starts) and starts[-1] < 100.0
    assert max(STAGE_WEIGHTS, key=STAGE_WEIGHTS.get) == FIT
    assert stage_percent(FIT, 1.0) == stage_percent(SELECTING)  # a step done is where the next begins
    assert stage_percent(FIT, 0.5) == pytest.approx((stage_percent(FIT) + stage_percent(SELECTING)) / 2, abs=0.1)
    assert stage_percent(PROMOTE, 1.0) == 100.0
    assert stage_percent(FIT, 7.0) == stage_percent(FIT, 1.0)  # a fraction past 1 stays within its step
    with pytest.raises(ValueError):
        stage_percent("prepare splits")  # no step is on the bar that no run reports


def test_a_reduction_outweighs_the_unconstrained_fits_it_is_counted_with():
    assert expected_fit_cost("none") == 1.0
    for reduction in ("exponentiated_gradient", "grid_search"):
        assert expected_fit_cost(reduction) > expected_fit_cost("threshold_optimizer") >= expected_fit_cost("none")
    assert expected_fit_cost("a method nobody measured") == max(METHOD_FIT_COST.values())
    reported: list[FitCount] = []
    costs = [expected_fit_cost("exponentiated_gradient"), 1.0, 1.0]
    counter = FitCounter(costs, reported.append)
    counter.start()
    counter.finished(1)  # an unconstrained fit done: one of three models, far less of the work
    counter.finished(0)
    counter.finished(2)
    assert [(c.done, c.total) for c in reported] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert reported[0].fraction == 0.0 and reported[-1].fraction == 1.0
    assert reported[1].fraction == pytest.approx(1 / sum(costs)) and reported[1].fraction < 1 / 3
    assert FitCount(0, 0, 0.0, 0.0).fraction == 1.0  # no fits: nothing left to do


def job(method: str, name: str, fold: int | None = None) -> FitJob:
    template = ConstraintTemplate(name=name, version=1, method=method, learner="logistic_regression",
                                  constraint=None if method == "none" else "demographic_parity")
    return FitJob(name, SweepCandidate(NO_RECIPE, "recipes/none.yaml", template, f"{name}.yaml"), fold)


def test_the_sweep_starts_its_most_expensive_fits_first():
    jobs = [job("none", "unconstrained"), job("threshold_optimizer", "threshold"),
            job("grid_search", "gs"), job("exponentiated_gradient", "eg", fold=0)]
    order = [jobs[i].key for i in fitters.longest_first(jobs)]
    assert set(order[:2]) == {"gs", "eg"} and order[2:] == ["threshold", "unconstrained"]


def test_counted_serial_fitter_reports_before_the_first_fit(monkeypatch):
    monkeypatch.setattr(fitters, "fit_serially", lambda jobs, *args: [f"fitted {j.key}" for j in jobs])
    reported: list[FitCount] = []
    fit_all = fitters.counted_serial_fitter(reported.append)
    jobs = [job("none", "a"), job("threshold_optimizer", "b")]
    assert fit_all(jobs, None, "sex", 0) == ["fitted a", "fitted b"]
    assert [c.done for c in reported] == [0, 1, 2] and reported[-1].fraction == 1.0


@dataclass
class FakeArtifacts:
    """Prefect's progress artifact calls, recorded: one artifact per run id, as the server keeps it."""

    existing: dict | None = None  # the run's artifact before the reporter starts (a resumed run's)
    updates: list[tuple[float, str]] = field(default_factory=list)
    created: int = 0

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(progress, "progress_artifact", lambda run_id: None if self.existing is None else
                            type("Artifact", (), self.existing))
        monkeypatch.setattr(progress, "create_progress_artifact", self.create)
        monkeypatch.setattr(progress, "update_progress_artifact", self.update)

    def create(self, progress: float, key: str, description: str):
        self.created += 1
        self.updates.append((progress, description))
        return uuid4()

    def update(self, artifact_id, progress: float, description: str):
        self.updates.append((progress, description))


def sweep_run(reporter: ProgressReporter) -> None:
    """The calls a sweep run makes on its way to review: 3 fits, a search of 2 batches."""
    for stage in (LOAD_INPUTS, AUDIT, FIT):
        reporter.stage(stage)
    costs = [10.0, 1.0, 1.0]
    counter = FitCounter(costs, reporter.fitted)
    counter.start()
    for position in (1, 2, 0):
        counter.finished(position)
    reporter.stage(SELECTING)
    reporter.stage(SEARCHING)
    for _ in range(2):  # each searched candidate is a batch of its own
        batch = FitCounter([10.0], reporter.fitted)
        batch.start()
        batch.finished(0)
    reporter.stage(SELECTING)
    for stage in (AUGMENT, EVALUATE, PUBLISH_REVIEW):
        reporter.stage(stage)
    reporter.stage(AWAIT_REVIEW, "gates passed: awaiting review")


def test_every_step_is_named_the_count_shows_from_the_first_fit_and_the_bar_never_moves_back(monkeypatch):
    artifacts = FakeArtifacts()
    artifacts.install(monkeypatch)
    reporter = ProgressReporter(logging.getLogger("test"), uuid4())
    sweep_run(reporter)
    reporter.done("Promoted: adult v1 promoted, approved by alice")
    descriptions = [d for _, d in artifacts.updates]
    assert descriptions[descriptions.index(FIT) + 1] == "fit: 0/3 models fitted"  # before the longest fit ends
    assert "fit: 1/3 models fitted" in descriptions and "fit: 3/3 models fitted" in descriptions
    assert [d for d in descriptions if d.startswith(SEARCHING)] == [
        SEARCHING, f"{SEARCHING}: 0 more models fitted", f"{SEARCHING}: 1 more model fitted",
        f"{SEARCHING}: 1 more model fitted", f"{SEARCHING}: 2 more models fitted"]
    for step in (AUGMENT, EVALUATE, PUBLISH_REVIEW):
        assert step in descriptions
    percents = [p for p, _ in artifacts.updates]
    assert percents == sorted(percents) and artifacts.updates[-1] == (100.0, descriptions[-1])
    one_cheap_fit = percents[descriptions.index("fit: 1/3 models fitted")]
    assert one_cheap_fit < stage_percent(FIT, 1 / 3)  # by cost: the cheap fit is a twelfth of the work
    assert artifacts.created == 1


def test_a_resumed_run_carries_on_from_its_review_and_ends_in_its_final_state(monkeypatch):
    waiting = stage_percent(AWAIT_REVIEW)
    artifacts = FakeArtifacts(existing={"id": uuid4(), "data": waiting, "description": "gates passed: awaiting review"})
    artifacts.install(monkeypatch)
    reporter = ProgressReporter(logging.getLogger("test"), uuid4())
    sweep_run(reporter)  # the resumed execution replays its steps from their stored results
    assert artifacts.created == 0  # the same artifact: the UI and `read_progress` show one bar
    assert artifacts.updates == [(waiting, "gates passed: awaiting review")]  # nothing before the review moved it
    reporter.stage(PROMOTE)
    reporter.done("Promoted: adult v2 promoted, approved by alice")
    assert artifacts.updates[1:] == [(stage_percent(PROMOTE), PROMOTE),
                                     (100.0, "Promoted: adult v2 promoted, approved by alice")]


def test_a_run_ended_outside_its_flow_ends_its_bar(monkeypatch):
    artifacts = FakeArtifacts(existing={"id": uuid4(), "data": stage_percent(AWAIT_REVIEW)})
    artifacts.install(monkeypatch)
    progress.end_progress(uuid4(), "Expired: no approval within 45s; nothing promoted " + "x" * 300)
    ((percent, description),) = artifacts.updates
    assert percent == 100.0 and description.startswith("Expired: ") and len(description) == progress.DESCRIPTION_CHARS
    never_started = FakeArtifacts()
    never_started.install(monkeypatch)
    progress.end_progress(uuid4(), "Crashed: its flow process died")
    assert never_started.updates == [] and never_started.created == 0
