"""The wait for a reviewer, and the checks every answer passes before it counts.

A run started from a deployment (``fairloop remediate``, a drift trigger, a schedule) is
*suspended* while it awaits review: Prefect stops its code and its process exits, so a pending
review holds no process, and it outlives a restart of the worker or the server. The reviewer's
answer (the UI's Resume form or ``fairloop approve``) resumes it on whichever worker is up; the
flow runs again from the top, its persisted steps return their stored results
(``fairloop.flows.steps``), and each earlier review attempt returns its stored answer (one
deterministic key per attempt) and its stored verdict. A run without a deployment (a flow called
in-process) cannot be suspended: it *pauses*, holding its process (``fairloop.review.wait``).

Checks: a review without a valid credential (once reviewers are registered), by a reviewer who
is not on the policy's list, or by whoever started the run (separation of duties) is refused and
logged, and so is an approval that does not accept the risk of inconclusive gates; the run waits
again within the same deadline and the reopened dialog starts with the refusal.
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import suspend_flow_run
from pydantic import BaseModel

from fairloop.flows.steps import Published, RunScope, persisted
from fairloop.gates.policy import Policy
from fairloop.registry import decision_log
from fairloop.review import credentials
from fairloop.review.packet import ReviewDecision, review_form
from fairloop.review.wait import PauseNotTaken, wait_for_review
from fairloop.serving.flow_process import forget_flow_process, record_flow_process
from fairloop.serving.outcomes import refusal_reason

REVIEW_KEY = "review-{attempt}"
SUSPENDED = "Suspended"  # the state name of a run awaiting review from a deployment (Prefect's)


class Verdict(BaseModel):
    """One review attempt as judged (stored without the reviewer's token)."""

    reviewer: str
    comment: str
    approve: bool
    accept_inconclusive_risk: bool
    refusal: str | None = None  # why it does not count; None: it decides the run


@persisted(name="review-deadline")
def review_deadline(timeout_seconds: int) -> float:
    """When the review expires (epoch seconds), fixed when the run first asks for it."""
    return time.time() + timeout_seconds


def judge_answer(scope: RunScope, attempt: int, decision: ReviewDecision, policy: Policy,
                 needs_acceptance: list[str], identity: dict) -> Verdict:
    """Whether ``decision`` counts; a refusal is recorded. Persisted per attempt (see ``await_review``)."""
    registry = scope.registry
    token = decision.token.get_secret_value()
    refusal = (credentials.refusal(credentials.read_book(registry.root), decision.reviewer, token)
               or refusal_reason(decision.reviewer, policy.approval.reviewers, scope.request.requested_by))
    if refusal is None and decision.approve and needs_acceptance and not decision.accept_inconclusive_risk:
        refusal = (f"approving needs accept_inconclusive_risk: gates {needs_acceptance} are inconclusive and the "
                   "policy lets them through only with an explicit acceptance")
    if refusal is not None:
        scope.logger.warning("Refused review by %r: %s. Still waiting for an allowed reviewer.", decision.reviewer, refusal)
        scope.record(decision_log.ReviewRefused(**identity, reviewer=decision.reviewer, comment=refusal, attempt=attempt))
    return Verdict(reviewer=decision.reviewer, comment=decision.comment, approve=decision.approve,
                   accept_inconclusive_risk=decision.accept_inconclusive_risk, refusal=refusal)


def await_review(scope: RunScope, published: Published, policy: Policy, needs_acceptance: list[str],
                 identity: dict, durable: bool) -> Verdict | None:
    """The first answer that counts, or None once the review deadline passed (a suspended run that
    expires never gets here: the server ends it, see ``fairloop.serving.expiry``)."""
    deadline = review_deadline(published.packet.review_timeout_seconds)
    refused = None  # the last attempt's refusal, shown atop the next form
    attempt = 0
    while True:
        attempt += 1
        remaining = int(deadline - time.time())
        if remaining <= 0 and not durable:
            return None
        form = review_form(published.packet, published.dialog_frontier,
                           credentials.credentials_required(scope.registry.root), refused)
        key = REVIEW_KEY.format(attempt=attempt)
        if durable:  # an answered key returns its stored answer at once, even past the deadline: attempts replay
            forget_flow_process(scope.run_dir)  # the process exits while suspended: its absence is no crash
            decision = suspend_flow_run(wait_for_input=form, timeout=max(1, remaining), key=key)
            record_flow_process(scope.run_dir)
        else:
            try:
                decision = wait_for_review(form, flow_run_id=UUID(scope.run_id), key=key, deadline=time.monotonic() + remaining,
                                           poll_seconds=scope.request.review_poll_seconds, logger=scope.logger)
            except PauseNotTaken as why:
                scope.logger.warning("Pausing for review again: %s", why)
                continue
            except FlowPauseTimeout:
                return None
            if decision is None:
                return None
        verdict = persisted(name=f"review-verdict-{attempt}")(judge_answer)(
            scope, attempt, decision, policy, needs_acceptance, identity)
        if verdict.refusal is None:
            return verdict
        refused = verdict.refusal


def forget_review_answers(run_id: str) -> None:
    """Delete the run's stored review answers once it ended: they may hold a reviewer's token (kept
    until then, because a resumed run replays them)."""
    with get_client(sync_client=True) as client:
        for prefix in ("suspended-review-", "paused-review-"):  # the keys Prefect derives from REVIEW_KEY
            for stored in client.filter_flow_run_input(UUID(run_id), prefix, limit=1000, exclude_keys=set()):
                client.delete_flow_run_input(UUID(run_id), stored.key)
