"""Reviewer credentials: tokens issued by `fairloop reviewers add`, stored hashed in the registry,
checked by the flow on every review (a real paused run on the session's Prefect server), and the
requester recorded by the same credential."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import BackgroundRun, write_policy
from fairloop.review import credentials
from fairloop.cli.common import requester
from fairloop.config import Settings
from fairloop.errors import BadInputError, ServerError
from fairloop.serving.outcomes import Outcome
from fairloop.registry.store import Registry
from fairloop.serving.runs import read_flow_run, submit_review
from test_report_escaping import form_description


def fairloop(*args: str) -> subprocess.CompletedProcess:
    """The real command in a process of its own (DVC's logger outlives an in-process CliRunner's streams)."""
    return subprocess.run([sys.executable, "-m", "fairloop", *args], capture_output=True, text=True, timeout=300)


def add_reviewer(name: str, *extra: str) -> subprocess.CompletedProcess:
    return fairloop("reviewers", "add", name, *extra)


def test_a_token_is_shown_once_and_stored_only_as_a_salted_hash(registry_dir):
    issued = add_reviewer("alice")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    assert token.startswith("alice.") and len(token) > 30
    stored = (registry_dir / credentials.REVIEWERS_FILE).read_text()
    assert token not in stored and token.split(".", 1)[1] not in stored
    book = credentials.read_book(registry_dir)
    assert credentials.token_matches(book, "alice", token) and credentials.token_matches(book, "ALICE", token)
    assert not credentials.token_matches(book, "alice", token + "x")
    # committed in the registry repository, with nothing left uncommitted
    git = lambda *args: subprocess.run(["git", *args], cwd=registry_dir, capture_output=True, text=True, check=True).stdout
    assert git("status", "--porcelain").strip() == ""
    assert credentials.REVIEWERS_FILE in git("ls-files").split()

    listed = fairloop("reviewers", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout and token not in listed.stdout
    again = add_reviewer("Alice")
    assert again.returncode == 2 and "already has a token" in again.stderr
    rotated = add_reviewer("alice", "--rotate")
    assert rotated.returncode == 0
    new_book = credentials.read_book(registry_dir)
    assert not credentials.token_matches(new_book, "alice", token)
    assert credentials.token_matches(new_book, "alice", rotated.stdout.strip().splitlines()[-1])
    for bad in ("", "a b", "x" * 65, "<img>", "a.b"):
        refused = add_reviewer(bad)
        assert refused.returncode == 2 and "reviewer name" in refused.stderr, bad
    refused = fairloop("reviewers", "add", "--", "-rf")
    assert refused.returncode == 2 and "reviewer name" in refused.stderr


def test_the_requester_is_identified_by_their_token(registry_dir):
    issued = add_reviewer("carol")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    settings = Settings()
    assert requester(settings, token) == ("carol", True)
    with pytest.raises(BadInputError, match="matches no registered reviewer"):
        requester(settings, token[:-2] + "zz")
    name, verified = requester(settings, "")
    assert name and not verified  # the OS user, recorded as not verified


@pytest.mark.usefixtures("prefect_server")
def test_reviews_without_a_valid_token_and_self_approval_are_refused_logged_and_the_run_waits(
    remediation_flow, registry_dir, tmp_path
):
    tokens = {name: add_reviewer(name).stdout.strip().splitlines()[-1] for name in ("alice", "bob")}
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)
    run = BackgroundRun(
        remediation_flow, dataset="datasets/adult.yaml", recipe="recipes/none.yaml",
        constraint="constraints/threshold-dp.yaml", policy=str(policy), train_rows=3000, review_poll_seconds=1,
        requested_by="alice", requester_verified=True,  # what `fairloop remediate --token <alice's>` passes
    )
    paused = run.wait_paused(timeout=600)
    # once reviewers are registered the form itself requires a token: the server refuses a form without one,
    # and the run never sees it (nothing logged, still waiting for its first review)
    with pytest.raises(ServerError, match="'token' is a required property"):
        submit_review(paused.id, {"approve": True, "comment": "let me", "reviewer": "bob"})
    assert Registry(registry_dir).audit_log() == []
    attempts = [
        ({"reviewer": "bob", "token": tokens["bob"] + "x"}, "does not match"),        # wrong
        ({"reviewer": "bob", "token": tokens["alice"]}, "does not match"),            # someone else's
        ({"reviewer": "mallory", "token": tokens["bob"]}, "has no reviewer credential"),
        ({"reviewer": "ALICE", "token": tokens["alice"]}, "started this run"),        # the requester
    ]
    for attempt, (review, reason) in enumerate(attempts, start=2):
        submit_review(paused.id, {"approve": True, "comment": "let me", **review})
        again = run.wait_until(lambda r, key=f"review-{attempt}": bool(
            r.state and (r.state.is_final() or (r.state.is_paused() and r.state.state_details.pause_key == key))), 300)
        assert again.state.is_paused(), f"{review} was not refused: {again.state.name}"
        refused = Registry(registry_dir).audit_log()[-1]
        assert refused["action"] == "refused" and reason in refused["comment"], refused
    submit_review(paused.id, {"approve": True, "reviewer": "bob", "token": tokens["bob"], "comment": "checked"})
    state = run.finish(timeout=600)
    assert state.name == Outcome.PROMOTED.value, state.message

    registry = Registry(registry_dir)
    entry = registry.champion("adult")
    assert entry.approval == {"reviewer": "bob", "comment": "checked", "approved": True, "verified": True}
    assert entry.lineage.requested_by == "alice" and entry.lineage.requester_verified is True
    log = registry.audit_log()
    assert [r["action"] for r in log] == ["refused"] * len(attempts) + ["promote"]
    assert all(r["requested_by"] == "alice" for r in log if r["action"] == "refused")
    # no token is kept: not in the audit log, the registry's files, or the run's stored form responses
    everything = "".join(path.read_text(errors="ignore") for path in registry_dir.rglob("*") if path.is_file()
                         and ".git" not in path.parts and ".dvc" not in path.parts)
    assert not [t for t in tokens.values() if t in everything]
    from prefect.input.actions import filter_flow_run_input

    stored = [item.value for item in filter_flow_run_input(key_prefix="paused-review", limit=100, flow_run_id=paused.id)]
    assert not [t for t in tokens.values() for value in stored if t in value]
    assert read_flow_run(paused.id).state.name == Outcome.PROMOTED.value


def test_reviewers_registered_after_the_pause_replace_the_identity_note_at_the_next_attempt(
    remediation_flow, registry_dir, tmp_path
):
    """The dialog's 'identities are not checked' note holds only while no reviewer is registered:
    a review sent to the form shown before the first registration is refused for want of a token,
    and the reopened dialog asks for one (the note gone, the refusal on top, the token required)."""
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)
    run = BackgroundRun(
        remediation_flow, dataset="datasets/adult.yaml", recipe="recipes/none.yaml",
        constraint="constraints/threshold-dp.yaml", policy=str(policy), train_rows=3000, review_poll_seconds=1,
    )
    paused = run.wait_paused(timeout=600)
    assert "Reviewer identities are not checked" in form_description(paused)
    token = add_reviewer("bob").stdout.strip().splitlines()[-1]  # while the run waits
    submit_review(paused.id, {"approve": True, "reviewer": "bob", "comment": "the form said free text"})
    again = run.wait_until(lambda r: bool(r.state and (r.state.is_final() or (
        r.state.is_paused() and r.state.state_details.pause_key == "review-2"))), 300)
    assert again.state.is_paused(), again.state.name
    shown = form_description(again)
    assert shown.startswith("> **Your review was refused: no token given for 'bob'"), shown[:200]
    assert "identities are not checked" not in shown and "your token (from fairloop reviewers add)" in shown
    with pytest.raises(ServerError, match="'token' is a required property"):  # the reopened form requires it
        submit_review(paused.id, {"approve": True, "reviewer": "bob", "comment": "again"})
    submit_review(paused.id, {"approve": True, "reviewer": "bob", "token": token, "comment": "checked"})
    assert run.finish(timeout=600).name == Outcome.PROMOTED.value
    assert Registry(registry_dir).champion("adult").approval["verified"] is True
