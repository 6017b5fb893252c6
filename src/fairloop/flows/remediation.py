"""The remediation flow: audit -> augment -> retrain -> evaluate -> gate -> human review -> promote.

Composition only: the steps are ``fairloop.flows.steps`` (persisted, so a run resumed after its
review reuses them), the wait is ``fairloop.flows.review``, the promotion ``fairloop.flows.promote``.
The final state's name is the outcome: Promoted, GateFailed, AuditBlocked, Rejected, Expired,
AwaitingData or ChampionChanged; a served rerun (``rerun=True``) may also end Skipped or Refused
before any training (``fairloop.serving.reruns``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.context import get_run_context

import fairloop.flows.steps as steps
from fairloop.config import get_settings
from fairloop.flows.promote import approval_record, promote
from fairloop.flows.request import RemediationRequest
from fairloop.flows.review import await_review, forget_review_answers
from fairloop.registry import decision_log
from fairloop.registry.store import ChampionChanged, Registry
from fairloop.serving.flow_process import record_flow_process
from fairloop.serving.outcomes import Outcome, outcome_state, quiet_outcome_tracebacks
from fairloop.serving.progress import (
    AUDIT,
    AWAIT_REVIEW,
    EVALUATE,
    FIT,
    LOAD_INPUTS,
    PROMOTE,
    PUBLISH_REVIEW,
    ProgressReporter,
)
from fairloop.serving.runs import flow_run_url, review_commands

quiet_outcome_tracebacks()  # a served run that ends GateFailed, Rejected... is an outcome, not a crash


@flow(name="remediation")
def remediation(request: RemediationRequest):
    """One remediation run; ``request`` says what to remediate, with what, and who asked."""
    scope, durable = open_scope(request)
    if request.rerun:
        scope.progress.stage(LOAD_INPUTS, "start rerun")  # the incident's window and plan, before the inputs
    start = steps.start_rerun(scope) if request.rerun else None
    if start is not None and start.stop is not None:
        return end(scope, start.stop, start.reason)
    scope.progress.stage(LOAD_INPUTS)
    prepared = steps.prepare(scope, start)
    scope.progress.stage(AUDIT)
    audit = steps.audit(scope, prepared)
    if audit.verdict == "block":
        return end(scope, Outcome.AUDIT_BLOCKED, "; ".join(audit.reasons))
    scope.progress.stage(FIT)  # counts each model fitted; a sweep then selects
    retrained = steps.retrain(scope, prepared, audit)
    if retrained.swept is not None and retrained.swept.chosen is None:
        scope.progress.stage(PUBLISH_REVIEW, "publish the frontier: no candidate passes")
        return end(scope, Outcome.GATE_FAILED, steps.record_no_candidate(scope, prepared, audit, retrained))
    scope.progress.stage(EVALUATE)
    judged = steps.judge(scope, prepared, retrained)
    scope.progress.stage(PUBLISH_REVIEW)
    published = steps.publish_review(scope, prepared, audit, retrained, judged)
    gates = judged.gates
    identity = {**prepared.identity, "candidate": retrained.inputs.template.label()}
    if gates.only_awaiting_data:  # the policy waits for more drifted rows: the incident stays open
        advice = [r.advice or r.reason for r in gates.awaiting_data]
        scope.record(decision_log.AwaitingData(**identity, reasons=advice))
        return end(scope, Outcome.AWAITING_DATA, "cannot tell yet whether approving clears the alert; waiting for "
                   "the next window (monitoring.rerun.undecided: wait): " + "; ".join(advice))
    if not gates.passed:
        scope.record(decision_log.GateFailed(**identity, reasons=gates.failures))
        return end(scope, Outcome.GATE_FAILED, "; ".join(gates.failures))

    scope.progress.stage(AWAIT_REVIEW, "gates passed: awaiting review")
    scope.logger.info("Awaiting review: %s\n%s", flow_run_url(scope.run_id), review_commands(scope.run_id))
    accept = [r.gate for r in gates.needs_acceptance]
    verdict = await_review(scope, published, retrained.inputs.policy, accept, identity, durable)
    if verdict is None:
        timeout = published.packet.review_timeout_seconds
        scope.record(decision_log.Expired(**identity, timeout_seconds=timeout))
        return end(scope, Outcome.EXPIRED, f"no approval within {timeout}s; nothing promoted")
    approval = approval_record(scope, verdict, accept)
    if not verdict.approve:
        scope.record(decision_log.Rejected(**identity, **approval))
        return end(scope, Outcome.REJECTED, f"rejected by {verdict.reviewer}: {verdict.comment}")
    scope.progress.stage(PROMOTE)
    entry = promote(scope, prepared, audit, retrained, judged, published, approval)
    if isinstance(entry, ChampionChanged):  # the registry logged the refusal
        return end(scope, Outcome.CHAMPION_CHANGED, str(entry))
    return end(scope, Outcome.PROMOTED, f"{entry.dataset} {entry.version} promoted, approved by {verdict.reviewer}")


def open_scope(request: RemediationRequest) -> tuple[steps.RunScope, bool]:
    """The run's shared context, and whether it runs from a deployment (its review then suspends)."""
    logger = get_run_logger()
    settings = get_settings()
    flow_run = get_run_context().flow_run
    scope = steps.RunScope(request=request, run_id=str(flow_run.id), run_dir=settings.state_dir / "runs" / str(flow_run.id),
                           settings=settings, registry=Registry(settings.registry_path, settings.remote_path),
                           progress=ProgressReporter(logger, flow_run.id), logger=logger)
    record_flow_process(scope.run_dir)  # `fairloop approve` tells a dead flow process from a slow one
    logger.info("Run page: %s", flow_run_url(scope.run_id))
    return scope, flow_run.deployment_id is not None


def end(scope: steps.RunScope, outcome: Outcome, message: str):
    """The run's final state; its stored review answers are deleted (they may hold a token)."""
    scope.progress.done(f"{outcome.value}: {message}"[:200])
    forget_review_answers(scope.run_id)
    return outcome_state(outcome, message)
