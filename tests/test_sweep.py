"""The candidate sweep: recipes x templates x bounds, fitted in Prefect's process pool, gated and
selected on validation, shown as a frontier; real fits on an Adult subsample."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import PROJECT, BackgroundRun, progress_steps, write_policy

from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.errors import BadInputError
from fairloop.gates.policy import load_policy
from fairloop.registry.reproduce import reproduce
from fairloop.registry.store import Registry
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.fit_progress import SELECTING
from fairloop.remedy.fitters import fitter
from fairloop.remedy.sweep.run import run_sweep
from fairloop.remedy.sweep.spec import expand_candidates, load_sweep
from fairloop.serving.outcomes import Outcome
from fairloop.serving.progress import AWAIT_REVIEW, read_progress, stage_percent
from fairloop.serving.runs import submit_review

TRAIN_ROWS = 3000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_sweep(directory, **overrides):
    """A sweep of fast learners: post-processing and a logistic-regression reduction (its
    predictions are random, so it shows the seed at work), two recipes."""
    spec = {
        "name": "test-sweep", "version": 1,
        "recipes": ["recipes/none.yaml", "recipes/reweigh.yaml"],
        "constraints": [
            "constraints/unconstrained.yaml",
            {"template": "constraints/threshold-dp.yaml", "bounds": [0.02, 0.05]},
            "constraints/lr-eg-dp.yaml",
        ],
        "workers": 2,
        **overrides,
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def splits():
    """For the process-pool test, which compares two runs of the same fits, not what they reach: a third of
    the flow tests' rows (seven candidates, three folds, fitted twice)."""
    return make_splits(load_dataset(PROJECT / "datasets" / "adult.yaml"), train_rows=TRAIN_ROWS // 3)


def test_candidates_cross_recipes_templates_and_bounds_and_skip_weights_with_reductions(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT)
    candidates, skipped = expand_candidates(load_sweep(write_sweep(tmp_path)))
    assert [c.name for c in candidates] == [
        "none+unconstrained", "none+threshold-dp@0.02", "none+threshold-dp@0.05", "none+lr-eg-dp@0.02",
        "reweigh+unconstrained", "reweigh+threshold-dp@0.02", "reweigh+threshold-dp@0.05",
    ]
    assert [(s.name, s.reason) for s in skipped] == [("reweigh+lr-eg-dp@0.02", "a weighting recipe cannot feed a reduction")]
    swept = candidates[1]
    assert swept.bound_overridden and swept.template.bound == 0.02
    assert swept.template.content_hash() != candidates[2].template.content_hash()  # the bound is in the hash
    # a template can be kept to some recipes
    only_real_rows = {"template": "constraints/lr-eg-dp.yaml", "recipes": ["recipes/none.yaml"]}
    candidates, skipped = expand_candidates(load_sweep(write_sweep(tmp_path, constraints=["constraints/unconstrained.yaml", only_real_rows])))
    assert [c.name for c in candidates] == ["none+unconstrained", "none+lr-eg-dp@0.02", "reweigh+unconstrained"]
    assert skipped == []


@pytest.mark.parametrize(("override", "field"), [
    ({"constraints": [{"template": "constraints/unconstrained.yaml", "bounds": [0.1]}]}, "no constraint"),
    ({"constraints": [{"template": "constraints/threshold-dp.yaml", "bounds": [1.5]}]}, "constraints.0"),
    # an empty list ran the template at its own bound, unnoticed (issue 29 item 4)
    ({"constraints": [{"template": "constraints/threshold-dp.yaml", "bounds": []}]},
     r"field 'constraints\.0\.SweptTemplate\.bounds': List should have at least 1 item"),
    ({"search": {"max_extra_fits": 0, "max_seconds": 60}}, r"field 'search\.max_extra_fits'"),
    ({"search": {"max_extra_fits": 4}}, r"field 'search\.max_seconds'"),
    ({"recipes": ["recipes/missing.yaml"]}, "recipes/missing.yaml"),
    ({"recipes": ["recipes/none.yaml", "recipes/none.yaml"]}, "more than once"),
    ({"constraints": [{"template": "constraints/lr-eg-dp.yaml", "recipes": ["recipes/smotenc-base-rates.yaml"]}]},
     "does not list"),
])
def test_broken_sweep_files_name_the_file_and_the_problem(tmp_path, monkeypatch, override, field):
    monkeypatch.chdir(PROJECT)
    path = write_sweep(tmp_path, **override)
    with pytest.raises(BadInputError, match=field) as error:
        load_sweep(path)
    assert str(error.value).startswith(str(path))


def test_prefect_process_pool_gives_the_serial_result(tmp_path, monkeypatch, splits, prefect_server):
    """Same seed, same candidates: fitting in Prefect's process pool changes nothing (deterministic
    under the seed, one thread per worker or not)."""
    from prefect import flow

    monkeypatch.chdir(PROJECT)
    sweep = load_sweep(write_sweep(tmp_path))
    policy = load_policy(PROJECT / "policies" / "default.yaml")

    mode = ModeDecision(mode="crossfit", folds=3, reason="test")

    counts, steps = [], []

    @flow
    def parallel_sweep():
        return run_sweep(sweep, splits, "sex", 0, policy, mode, fit_all=fitter(workers=2, on_fitted=counts.append),
                         on_step=steps.append)

    parallel = parallel_sweep().outcome
    # counted from before the first fit ends to the last, by expected cost (the reduction's folds weigh most)
    jobs = 4 * len(parallel.candidates) + 4  # 3 folds and the final fit of each candidate and the baseline
    assert [c.done for c in counts] == list(range(jobs + 1)) and {c.total for c in counts} == {jobs}
    fractions = [c.fraction for c in counts]
    assert fractions[0] == 0.0 and fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert steps == [SELECTING]
    serial = run_sweep(sweep, splits, "sex", 0, policy, mode).outcome
    timings = {"fit_seconds", "crossfit_seconds"}
    assert [c.model_dump(exclude=timings) for c in parallel.candidates] == [
        c.model_dump(exclude=timings) for c in serial.candidates]
    assert parallel.chosen == serial.chosen and parallel.explanation == serial.explanation


# The flow tests are about the wiring: three candidates keep them quick.
FLOW_SWEEP = {"recipes": ["recipes/none.yaml"],
              "constraints": ["constraints/unconstrained.yaml", {"template": "constraints/threshold-dp.yaml", "bounds": [0.02, 0.05]}]}


def run_params(sweep, policy, **extra):
    return {"dataset": "datasets/adult.yaml", "sweep_file": str(sweep), "policy": str(policy), "train_rows": TRAIN_ROWS,
            "requested_by": "pytest", "review_poll_seconds": 1, **extra}


def test_sweep_run_promotes_the_chosen_candidate_with_its_frontier(
    remediation_flow, registry_dir, tmp_path, prefect_server
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.input.run_input import keyset_from_paused_state, read_flow_run_input

    # 600 validation rows: wide intervals. The unconstrained candidate (DPD ~0.18) fails this
    # policy, both post-processed ones pass it: a swept bound is chosen.
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.12, max_accuracy_drop_vs_baseline=0.1,
                          allow_sensitive_at_predict=True)
    run = BackgroundRun(remediation_flow, **run_params(write_sweep(tmp_path, **FLOW_SWEEP), policy))
    paused = run.wait_paused()
    assert read_progress(paused.id) == (stage_percent(AWAIT_REVIEW), "gates passed: awaiting review")
    form = read_flow_run_input(keyset_from_paused_state(paused.state)["description"], flow_run_id=paused.id)
    # the dialog: its own frontier and a link to the candidates table (too wide for it)
    assert "data:image/png;base64," in form and "Approving promotes none+threshold-dp" in form
    assert re.search(r"\[candidates table\]\(http://\S+/artifacts/artifact/", form)
    submit_review(paused.id, {"approve": True, "reviewer": "alice", "comment": "frontier checked"})
    state = run.finish()
    assert state.name == Outcome.PROMOTED.value
    # the bar: counted from the first fit, every later step named, ending in the run's final state
    percent, description = read_progress(paused.id)
    assert percent == 100.0 and description == f"{state.name}: {state.message}"[:200]
    steps = progress_steps(paused.id, until=state.name)
    fits = [s for s in steps if s.startswith("fit: ")]
    assert fits[0] == f"fit: 0/{len(fits) - 1} models fitted" and fits[-1] == f"fit: {len(fits) - 1}/{len(fits) - 1} models fitted"
    after_fits = steps[steps.index(fits[-1]) + 1:]
    assert after_fits == [SELECTING, "augment", "evaluate and gate", "publish review", "gates passed: awaiting review",
                          "promote", description], steps

    registry = Registry(registry_dir)
    entry = registry.champion("adult")
    chosen = entry.lineage.sweep.chosen
    assert entry.lineage.sweep.name == "test-sweep" and len(entry.lineage.sweep.candidates) == 3
    assert chosen in ("none+threshold-dp@0.02", "none+threshold-dp@0.05")
    assert entry.lineage.recipe.name == "none" and entry.lineage.constraint.name == "threshold-dp"
    stored_template = yaml.safe_load((registry.root / "adult" / "inputs" / "constraint.yaml").read_text())
    assert f"@{stored_template['bound']:g}" in chosen  # the swept bound, not the file's own 0.02 by accident
    assert (registry.root / "adult" / "frontier.png").read_bytes().startswith(PNG_MAGIC)
    assert (PROJECT / ".fairloop" / "runs" / str(paused.id) / "frontier.png").read_bytes().startswith(PNG_MAGIC)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[paused.id])))
    keys = {a.key for a in artifacts}
    assert {"frontier", "sweep-candidates", "remediation-report", "model-card"} <= keys
    report = next(a.data for a in artifacts if a.key == "remediation-report")
    assert "| # | candidate |" in report and "(chosen)" in report  # every candidate, on the wide page
    # the chosen candidate (its swept bound written into the stored template) retrains to the same metrics
    assert reproduce(registry, "adult", entry.version).matches


def test_sweep_with_no_passing_candidate_promotes_nothing_and_says_why(remediation_flow, registry_dir, tmp_path):
    infeasible = write_policy(tmp_path, max_demographic_parity_difference=0.05, max_equalized_odds_difference=0.05)
    state = remediation_flow(**run_params(write_sweep(tmp_path, **FLOW_SWEEP), infeasible), return_state=True)
    assert state.name == Outcome.GATE_FAILED.value
    assert "No candidate of sweep 'test-sweep' passes" in state.message
    assert "Closest choosable candidates:" in state.message and "equalized_odds_difference" in state.message
    registry = Registry(registry_dir)
    assert registry.champion("adult") is None
    (record,) = registry.audit_log()
    assert record["action"] == "gate_failed" and record["sweep"] == "test-sweep"
    run_dir = PROJECT / ".fairloop" / "runs" / str(state.state_details.flow_run_id)
    assert (run_dir / "frontier.png").read_bytes().startswith(PNG_MAGIC)

