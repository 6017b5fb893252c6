"""End to end: the remediation flow on a real Prefect test server, real GX, real Fairlearn fits on
an Adult subsample, a real git + DVC registry, reviews sent through resume_flow_run (the UI's API)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import BackgroundRun, progress_steps, write_policy

from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.registry.store import Registry, file_sha256
from fairloop.serving.outcomes import Outcome
from fairloop.serving.progress import AWAIT_REVIEW, read_progress, stage_percent
from fairloop.serving.runs import submit_review

TRAIN_ROWS = 3000
pytestmark = pytest.mark.usefixtures("prefect_server")


def params(policy, **extra):
    return {
        # ThresholdOptimizer: a real Fairlearn mitigator that fits in well under a second
        "dataset": "datasets/adult.yaml", "recipe": "recipes/none.yaml", "constraint": "constraints/threshold-dp.yaml",
        "policy": str(policy), "train_rows": TRAIN_ROWS, "requested_by": "pytest", "review_poll_seconds": 1, **extra,
    }


@pytest.fixture
def lenient_policy(tmp_path):
    """Gates any sensible candidate passes: these tests are about the wiring after the gate."""
    return write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)


def approve_run(flow, policy, reviewer="alice", **extra):
    run = BackgroundRun(flow, **params(policy, **extra))
    paused = run.wait_paused()
    assert read_progress(paused.id) == (stage_percent(AWAIT_REVIEW), "gates passed: awaiting review")
    submit_review(paused.id, {"approve": True, "reviewer": reviewer, "comment": "looks fair"})
    return paused, run.finish()


def test_approved_run_is_promoted_and_the_champion_predicts(remediation_flow, registry_dir, lenient_policy):
    paused, state = approve_run(remediation_flow, lenient_policy)
    assert state.name == Outcome.PROMOTED.value, state.message
    # the bar names every step, counts the two fits from the first, and ends in the final state
    final = f"{state.name}: {state.message}"[:200]
    assert read_progress(paused.id) == (100.0, final)
    assert progress_steps(paused.id, until=state.name) == [
        "load inputs", "audit", "fit", "fit: 0/2 models fitted", "fit: 1/2 models fitted", "fit: 2/2 models fitted",
        "augment", "evaluate and gate", "publish review", "gates passed: awaiting review", "promote", final]

    registry = Registry(registry_dir)
    entry, model = registry.load_champion("adult")
    assert entry.version == "v1"
    assert entry.approval == {"reviewer": "alice", "comment": "looks fair", "approved": True, "verified": False}
    assert entry.lineage.prefect_flow_run_id == str(paused.id)
    assert entry.lineage.constraint.name == "threshold-dp" and len(entry.lineage.recipe.sha256) == 64
    assert entry.lineage.dataset.data_sha256 == load_dataset("datasets/adult.yaml").data_sha256
    assert entry.model_sha256 == file_sha256(registry.model_path("adult"))
    # the champion loads and predicts on held-out rows
    test = make_splits(load_dataset("datasets/adult.yaml")).test
    predictions = model.predict(test.X.head(200), test.groups.head(200))  # ThresholdOptimizer needs the group
    assert set(predictions) <= {0, 1} and len(predictions) == 200
    assert abs((predictions == test.y.head(200).to_numpy()).mean() - 0.85) < 0.1
    # DVC tracks model and training snapshot; git holds the tag; the remote holds the bytes
    tracked = subprocess.run(["git", "ls-files", "adult"], cwd=registry_dir, capture_output=True, text=True).stdout.split()
    assert {"adult/model.joblib.dvc", "adult/train.csv.dvc", "adult/entry.json"} <= set(tracked)
    assert "adult@v1" in subprocess.run(["git", "tag"], cwd=registry_dir, capture_output=True, text=True).stdout
    from dvc.repo import Repo

    assert Repo(str(registry_dir)).status() == {}  # workspace matches what DVC recorded
    assert Repo(str(registry_dir)).status(cloud=True) == {}  # and the remote has every byte
    (record,) = registry.audit_log()
    assert record["action"] == "promote" and record["reviewer"] == "alice" and record["comment"] == "looks fair"
    assert record["run_id"] == str(paused.id) and record["candidate"] == "threshold-dp" and record["at"]
    assert record["verdicts"] == {"max_demographic_parity_difference": "pass", "max_accuracy_drop_vs_baseline": "pass"}
    # the report the reviewer saw is stored with its tables intact (rows contiguous for Markdown)
    report = (registry_dir / "adult" / "report.md").read_text()
    assert "| Female | baseline | candidate |\n|---|---|---|\n| selected |" in report
    assert "- **pass**: DPD ≤ 0.5; measured" in report and "| DPD |" in report
    card = (registry_dir / "adult" / "model_card.md").read_text()
    assert card.startswith("# Model card: adult v1") and "Approved by alice" in card and "## Limitations" in card
    html = (registry_dir / "adult" / "report.html").read_text()
    assert "<table>" in html and 'src="data:image/png;base64,' in html


def test_rejected_run_promotes_nothing_and_records_the_comment(remediation_flow, registry_dir, lenient_policy):
    run = BackgroundRun(remediation_flow, **params(lenient_policy))
    paused = run.wait_paused()
    submit_review(paused.id, {"approve": False, "reviewer": "bob", "comment": "EOD too high for this use"})
    state = run.finish()
    assert state.name == Outcome.REJECTED.value
    assert read_progress(paused.id) == (100.0, "Rejected: rejected by bob: EOD too high for this use")
    registry = Registry(registry_dir)
    assert registry.champion("adult") is None and registry.history("adult") == []
    (record,) = registry.audit_log()
    assert record["action"] == "reject" and record["reviewer"] == "bob"
    assert record["comment"] == "EOD too high for this use" and record["run_id"] == str(paused.id)


def test_unreviewed_run_expires_and_promotes_nothing(remediation_flow, registry_dir, lenient_policy):
    run = BackgroundRun(remediation_flow, **params(lenient_policy, approval_timeout=3))
    paused = run.wait_paused()
    state = run.finish()
    assert Outcome.from_state(state) is Outcome.EXPIRED, state
    # not "awaiting review": the outcome (Prefect's own state message says only "never resumed")
    assert read_progress(paused.id) == (100.0, "Expired: no approval within 3s; nothing promoted")
    registry = Registry(registry_dir)
    assert registry.champion("adult") is None
    assert [r["action"] for r in registry.audit_log()] == ["expired"]


def test_failed_gate_never_pauses_and_lists_reasons(remediation_flow, registry_dir, tmp_path):
    impossible = write_policy(tmp_path, max_demographic_parity_difference=0.0001, min_disparate_impact_ratio=0.999)
    state = remediation_flow(**params(impossible), return_state=True)
    assert state.name == Outcome.GATE_FAILED.value
    assert "demographic_parity_difference" in state.message and "disparate_impact_ratio" in state.message
    registry = Registry(registry_dir)
    assert registry.champion("adult") is None
    (record,) = registry.audit_log()
    assert record["action"] == "gate_failed" and len(record["reasons"]) == 2


def test_self_approval_and_unlisted_reviewers_are_refused_and_the_run_keeps_waiting(remediation_flow, registry_dir, tmp_path):
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2,
                          approval={"reviewers": ["carol", "pytest"]})
    run = BackgroundRun(remediation_flow, **params(policy))
    paused = run.wait_paused()
    for attempt, reviewer in enumerate(("pytest", "mallory"), start=2):  # who started the run; not on the list
        submit_review(paused.id, {"approve": True, "reviewer": reviewer, "comment": "let me"})
        again = run.wait_until(lambda r, key=f"review-{attempt}": bool(
            r.state and r.state.is_paused() and r.state.state_details.pause_key == key))
        assert again.state.is_paused()
    submit_review(paused.id, {"approve": True, "reviewer": "carol", "comment": ""})
    assert run.finish().name == Outcome.PROMOTED.value
    log = Registry(registry_dir).audit_log()
    assert [(r["action"], r.get("reviewer")) for r in log] == [("refused", "pytest"), ("refused", "mallory"), ("promote", "carol")]
    assert "started this run" in log[0]["comment"] and "not on the policy" in log[1]["comment"]
