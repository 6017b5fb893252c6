"""Notifications as their reader gets them: the automations ``fairloop serve --notify-url`` installs,
rendered by the Prefect test server for a real remediation run (Adult subsample, real fit and gates)
that awaits review and is then rejected, POSTed to a local webhook."""

from __future__ import annotations

import json
import time

import pytest

from conftest import BackgroundRun, Webhook, write_policy
from fairloop.serving.notify import install_notifications, remediation_tag, webhook_block_id
from fairloop.serving.runs import flow_run_url, submit_review

pytestmark = pytest.mark.usefixtures("prefect_server")


def first_message(webhook: Webhook, subject: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in webhook.received if m.get("subject") == subject]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no notification {subject!r} within {timeout}s; received: {json.dumps(webhook.received, indent=1)}")


def test_review_request_says_why_where_and_how_to_decide_and_the_outcome_links_the_run(
        remediation_flow, registry_dir, tmp_path):
    webhook = Webhook()
    try:
        install_notifications("adult", webhook_block_id("adult", webhook.url))
        policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)
        run = BackgroundRun(
            remediation_flow, run_tags=(remediation_tag("adult"),),  # what the served deployment tags its runs with
            dataset="datasets/adult.yaml", recipe="recipes/none.yaml", constraint="constraints/threshold-dp.yaml",
            policy=str(policy), train_rows=2000, requested_by="pytest", review_poll_seconds=1,
        )
        paused = run.wait_paused()

        review = first_message(webhook, "fairloop adult: awaiting review")["body"]
        assert "of adult awaits review: requested by pytest; its gates let it through to a person" in review
        assert f"Decide in the UI: {flow_run_url(paused.id)} (Resume:" in review
        assert f"fairloop approve {paused.id} --reviewer NAME" in review and f"fairloop show {paused.id}" in review

        submit_review(paused.id, {"approve": False, "reviewer": "bob", "comment": "not on this evidence"})
        assert run.finish().name == "Rejected"
        outcome = first_message(webhook, "fairloop adult: Rejected")["body"]
        assert "Rejected: rejected by bob: not on this evidence" in outcome
        assert outcome.endswith(f"Run: {flow_run_url(paused.id)}")
    finally:
        webhook.close()
