"""The remediation flow: audit -> augment -> retrain -> evaluate -> gate -> human review -> promote.

Thin composition over ``fairloop.pipeline`` (the same stage functions ``dvc repro`` runs):
this file only decides what becomes a Prefect task or artifact, when to pause for a reviewer,
and how the run ends. The final state's name is the outcome: Promoted, GateFailed,
AuditBlocked, Rejected or Expired; a served rerun (``rerun=True``) may also end Skipped or
Refused before any training (``fairloop.serving.reruns``).
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from fairloop import pipeline
from fairloop.audit.report import publish_artifacts
from fairloop.config import get_settings
from fairloop.gates.policy import apply_gates
from fairloop.monitor.drifted import DriftLineage, held_out_rows, judge_on_drifted
from fairloop.registry.lineage import Lineage, SweepLineage, describe_run
from fairloop.registry.store import ChampionChanged, Registry
from fairloop.remedy import fitters
from fairloop.remedy.sweep.jobs import Runner
from fairloop.remedy.sweep.results import SweepOutcome
from fairloop.remedy.sweep.run import run_sweep
from fairloop.remedy.sweep.spec import load_sweep, write_chosen_template
from fairloop.review import credentials
from fairloop.review.frontier import candidates_table, dialog_frontier, frontier_report
from fairloop.review.packet import (
    Link,
    ReviewPacket,
    render_report,
    review_form,
    save_packet,
)
from fairloop.review.report import render_html, render_model_card
from fairloop.review.wait import PauseNotTaken, wait_for_review
from fairloop.serving import reruns
from fairloop.serving.flow_process import record_flow_process
from fairloop.serving.outcomes import (
    Outcome,
    outcome_state,
    quiet_outcome_tracebacks,
    refusal_reason,
)
from fairloop.serving.runs import (
    ProgressReporter,
    artifact_url,
    flow_run_url,
    review_commands,
)
from fairloop.templating import md_cells

quiet_outcome_tracebacks()  # a served run that ends GateFailed, Rejected... is an outcome, not a crash

# Data moves between tasks in memory; hashing DataFrames for cache keys would cost more than it saves.
step = task(cache_policy=NO_CACHE)

load_step = step(pipeline.load_inputs, name="load-inputs")
prepare_step = step(pipeline.prepare, name="prepare")
audit_step = step(pipeline.audit, name="audit")
augment_step = step(pipeline.augment, name="augment")
train_step = step(pipeline.train, name="retrain")
evaluate_step = step(pipeline.evaluate_models, name="evaluate")


def publish_frontier(png: bytes, section: str, run_dir: Path, outcome: SweepOutcome | None) -> list[Link]:
    """The frontier as a PNG file of the run and a Prefect artifact; a sweep's candidates as a
    table artifact. Returns links to them for the review dialog."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "frontier.png").write_bytes(png)
    links = [Link(label="frontier and candidates", url=artifact_url(create_markdown_artifact(
        key="frontier", markdown=section, description=f"Accuracy-fairness frontier ({run_dir / 'frontier.png'})")))]
    if outcome is not None:
        table = create_table_artifact(key="sweep-candidates", table=md_cells(candidates_table(outcome)),
                                      description=f"Sweep '{outcome.sweep}': every candidate. {outcome.explanation}")
        links.append(Link(label="candidates table", url=artifact_url(table)))
    return links


@task(name="promote", cache_policy=NO_CACHE)
def promote_step(registry: Registry, inputs: pipeline.Inputs, lineage: Lineage, **entry):
    """The promoted entry, or the registry's refusal when the champion changed since the run was
    gated (returned, not raised: it is an outcome, and a raised one is logged as a crash)."""
    with tempfile.TemporaryDirectory() as scratch:
        copies = pipeline.snapshot_inputs(inputs, Path(scratch))
        lineage = lineage.model_copy(update={"inputs_spec_files": copies})
        try:
            return registry.promote(inputs.loaded.spec.name, inputs_dir=Path(scratch), lineage=lineage, **entry)
        except ChampionChanged as refused:
            return refused


def await_review(packet: ReviewPacket, frontier: str, policy, timeout: int, poll_seconds: int, requested_by: str,
                 registry: Registry, record: dict, needs_acceptance: list[str]):
    """Pause for a reviewer until an allowed one answers, or the timeout passes (returns None).

    A review without a valid credential (once reviewers are registered), by a reviewer who is
    not on the policy's list, or by whoever started the run (separation of duties) is refused
    and logged, and so is an approval that does not accept the risk of the ``needs_acceptance``
    (inconclusive) gates; the run keeps waiting within the same deadline, and the reopened
    dialog starts with the refusal. Each submitted form is deleted from the server once read: it
    may hold a token.
    """
    from prefect.input.actions import delete_flow_run_input

    logger = get_run_logger()
    deadline = time.monotonic() + timeout
    attempt = 0
    flow_run_id = get_run_context().flow_run.id
    refused = None  # the last attempt's refusal, shown atop the next form
    while deadline > time.monotonic():
        attempt += 1
        form = review_form(packet, frontier, credentials.credentials_required(registry.root), refused)
        try:  # a fresh key per attempt: a reused one is refused (HTTP 409)
            decision = wait_for_review(form, flow_run_id=flow_run_id, key=f"review-{attempt}", deadline=deadline,
                                       poll_seconds=poll_seconds, logger=logger)
        except PauseNotTaken as why:
            logger.warning("Pausing for review again: %s", why)
            continue
        if decision is None:
            return None
        delete_flow_run_input(decision.metadata.key)
        token = decision.token.get_secret_value()
        refusal = (credentials.refusal(credentials.read_book(registry.root), decision.reviewer, token)
                   or refusal_reason(decision.reviewer, policy.approval.reviewers, requested_by))
        if refusal is None and decision.approve and needs_acceptance and not decision.accept_inconclusive_risk:
            refusal = (f"approving needs accept_inconclusive_risk: gates {needs_acceptance} are inconclusive and the "
                       "policy lets them through only with an explicit acceptance")
        if refusal is None:
            return decision
        logger.warning("Refused review by %r: %s. Still waiting for an allowed reviewer.", decision.reviewer, refusal)
        refused = refusal
        registry.record_decision({**record, "action": "refused", "reviewer": decision.reviewer, "comment": refusal})
    return None


@flow(name="remediation")
def remediation(
    dataset: str,
    recipe: str = "recipes/none.yaml",
    constraint: str = "constraints/gs-dp.yaml",
    policy: str = "policies/default.yaml",
    sweep_file: str | None = None,
    sensitive: str | None = None,
    train_rows: int | None = None,
    seed: int = 0,
    approval_timeout: int | None = None,
    review_poll_seconds: int = 5,
    requested_by: str = "unknown",
    requester_verified: bool = False,
    extra_training_data: str | None = None,
    rerun: bool = False,
    base_model: str | None = None,
    trust_base_model: bool = False,
    runner: Runner = "processes",
    dask_address: str | None = None,
    incident: str | None = None,
):
    """``rerun``: started by a served deployment (drift trigger or schedule), see ``fairloop.serving.reruns``.
    ``base_model``: a fitted model to post-process without retraining (a file, or module:function);
    ``trust_base_model`` allows it to be a pickle file.
    ``runner``, ``dask_address``: where a sweep's candidates are fitted (see ``fairloop.remedy.fitters.fitter``;
    the address defaults to the FAIRLOOP_DASK_ADDRESS setting).
    ``incident``: the monitor's incident a rerun answers (the drift event's; the recorded window's wins).
    A rerun with a window is also judged on held-out rows of that window (``fairloop.monitor.drifted``)."""
    logger = get_run_logger()
    started = time.perf_counter()
    settings = get_settings()
    registry = Registry(settings.registry_path, settings.remote_path)
    run_id = str(get_run_context().flow_run.id)
    run_dir = settings.state_dir / "runs" / run_id  # files of this run that are not promoted (frontier, chosen template)
    params = pipeline.RunParams(dataset, recipe, constraint, policy, sensitive, train_rows, seed, extra_training_data,
                                base_model=base_model)
    record_flow_process(run_dir)  # `fairloop approve` tells a dead flow process from a slow one
    progress = ProgressReporter(logger)
    logger.info("Run page: %s", flow_run_url(run_id))
    start = None
    if rerun:
        start = reruns.start_rerun(run_id, params, sweep_file=sweep_file, requested_by=requested_by, registry=registry,
                                   state_dir=settings.state_dir, run_dir=run_dir,
                                   incident=None if incident in (None, "", "None") else incident)  # an event's template renders null as 'None'
        if start.stop is not None:
            logger.info("Not remediating (%s): %s", start.stop.value, start.reason)
            if start.stop is Outcome.REFUSED:
                registry.record_decision({"dataset": start.dataset, "run_id": run_id, "requested_by": requested_by,
                                          "incident": start.incident, "action": "refused_input", "reason": start.reason})
            return outcome_state(start.stop, start.reason)
        params, sweep_file = start.params, start.sweep_file
        logger.info("Rerun (%s) remediates with %s", requested_by, start.source)
        if start.drifted:
            logger.info("Drifted rows of %d window(s): %d train, %d held out (%d labelled) to judge the rerun on",
                        len(start.drifted.windows), start.drifted.train_rows, start.drifted.held_out_rows,
                        start.drifted.held_out_labelled)
        registry.record_decision({"dataset": start.dataset, "run_id": run_id, "requested_by": requested_by,
                                  "incident": start.incident, "action": "rerun_started", "remediates_with": start.source,
                                  "window": ", ".join(w.source for w in start.drifted.windows) if start.drifted else None,
                                  })  # the incident timeline (fairloop history)

    progress.stage("load inputs")
    inputs = load_step(params, trust_base_model)
    spec, sensitive = inputs.loaded.spec, inputs.sensitive
    record = {"dataset": spec.name, "run_id": run_id, "requested_by": requested_by, "requester_verified": requester_verified}
    if start is not None:
        record.update(remediates_with=start.source, incident=start.incident)
    progress.stage("prepare splits")
    splits = prepare_step(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    logger.info("Evaluation mode %s: %s", mode.mode, mode.reason)
    if params.extra_training_data:
        record["extra_training_data"] = params.extra_training_data
        logger.info("Training split includes the labelled rows of %s (%d training rows in all; weighting %s)",
                    params.extra_training_data, len(splits.train),
                    splits.weighting.model_dump_json() if splits.weighting else "none")

    sweep_spec = load_sweep(sweep_file) if sweep_file else None
    # A sweep's workers start now and import the fitting code while the audit runs; they stop
    # once the candidates are fitted. A frozen model's candidates fit no learner (it may be one
    # endpoint's client): serially.
    fitting = (fitters.fitter(runner, sweep_spec.useful_workers(), dask_address or settings.dask_address,
                              on_fitted=progress.fitted)
               if sweep_spec and inputs.base_model is None else nullcontext(fitters.fit_serially))
    with fitting as fit_all:
        progress.stage("audit")
        audit = audit_step(inputs, splits)
        publish_artifacts(audit)
        if audit.verdict == "block":
            progress.done("audit blocked")
            registry.record_decision({**record, "action": "audit_blocked", "reasons": audit.reasons})
            return outcome_state(Outcome.AUDIT_BLOCKED, "; ".join(audit.reasons))

        frozen = pipeline.frozen_base(inputs, audit)  # remediate --model: post-process it, never retrain
        champion = registry.load_champion(spec.name)
        progress.stage("fit")
        swept = None
        if sweep_spec:
            swept = run_sweep(sweep_spec, splits, sensitive, seed, inputs.policy, mode,
                                    champion=champion[1] if champion else None, fit_all=fit_all, frozen=frozen)
    if sweep_spec:
        record["sweep"] = sweep_spec.name
        if swept.chosen is None:
            progress.done("no candidate passes the policy")
            publish_frontier(*frontier_report(inputs.policy, spec.name, swept.reference_test_metrics(), swept.outcome),
                             run_dir, swept.outcome)
            logger.warning(swept.outcome.explanation)
            registry.record_decision({**record, "action": "gate_failed", "reasons": swept.outcome.explanation.splitlines()})
            return outcome_state(Outcome.GATE_FAILED, swept.outcome.explanation)
        chosen, fitted = swept.chosen
        constraint_path = write_chosen_template(chosen, run_dir)
        inputs = replace(inputs, recipe=chosen.recipe, template=chosen.template,
                         params=replace(params, recipe=chosen.recipe_path, constraint=str(constraint_path)))
        models = {"baseline": swept.baseline.model, "candidate": fitted.model}
        fit_seconds = fitted.fit_seconds
        augmented, augment_report = augment_step(inputs, splits, mode)  # the rows the chosen model was fitted on
    else:
        augmented, augment_report = augment_step(inputs, splits, mode)
        trained = train_step(inputs, splits, mode, frozen)
        models = {name: model for name, (model, _) in trained.items()}
        fit_seconds = trained["candidate"][1]
    template = inputs.template
    record["candidate"] = template.label()
    if champion:
        models["champion"] = champion[1]
    progress.stage("evaluate and gate")
    evaluations = evaluate_step(models, splits.test, sensitive, inputs.policy)
    gates = apply_gates(inputs.policy, evaluations, needs_sensitive_at_predict=template.needs_sensitive_at_predict,
                        evaluation_mode=mode.mode)
    drift = None
    if start is not None and start.drifted is not None:  # judged on the rows that alerted, too
        drift = judge_on_drifted(models, held_out_rows(spec, start.drifted), start.alert, sensitive, inputs.policy,
                                 inputs.policy.monitoring_settings.rerun, seed, windows=len(start.drifted.windows))
        gates = gates.model_copy(update={"results": [*gates.results, *drift.gates]})
        logger.info("Approving clears the alert: %s (%s)", drift.clears, drift.why)
    frontier_args = dict(
        policy=inputs.policy, dataset=spec.name,
        references={name: evaluations[name].metrics for name in ("baseline", "champion") if name in models},
        outcome=swept.outcome if swept else None, candidate=evaluations["candidate"].metrics,
    )
    frontier_image, frontier = frontier_report(**frontier_args)
    links = publish_frontier(frontier_image, frontier, run_dir, swept.outcome if swept else None)
    packet = ReviewPacket(
        run_id=run_id, run_url=flow_run_url(run_id), dataset=spec.name, sensitive=sensitive,
        candidate_name=swept.outcome.chosen if swept else template.name, candidate_label=template.label(),
        method=template.method, recipe_label=f"{inputs.recipe.name} v{inputs.recipe.version}",
        champion_version=champion[0].version if champion else None,
        needs_sensitive_at_predict=template.needs_sensitive_at_predict, evaluations=evaluations, gates=gates,
        confidence=inputs.policy.bootstrap.confidence, audit_verdict=audit.verdict, audit_reasons=audit.reasons,
        base_rate_gap=audit.base_rate_gap, augment=augment_report, sweep=swept.outcome if swept else None,
        base_model=inputs.base_model.source if inputs.base_model else None,
        credentials_required=credentials.credentials_required(registry.root), drift=drift,
        requested_by=requested_by, requester_verified=requester_verified,
        proxies=[x for x in audit.proxies if x.sensitive == sensitive and x.flagged],
    )
    report = render_report(packet, frontier, audit)
    report_id = create_markdown_artifact(key="remediation-report", markdown=report, description=f"{spec.name} candidate vs baseline")
    packet = packet.model_copy(update={"links": [Link(label="full report", url=artifact_url(report_id)), *links]})
    save_packet(packet, run_dir)  # what `fairloop show RUN_ID` prints
    logger.info("Candidate fitted in %.1fs; pipeline %.1fs before review.", fit_seconds, time.perf_counter() - started)

    progress.done("gates passed: awaiting review" if gates.passed else "blocked by the gates")
    if gates.only_awaiting_data:  # the policy waits for more drifted rows: the incident stays open
        advice = [r.advice or r.reason for r in gates.awaiting_data]
        registry.record_decision({**record, "action": "awaiting_data", "reasons": advice})
        return outcome_state(Outcome.AWAITING_DATA, "cannot tell yet whether approving clears the alert; waiting for the "
                             "next window (monitoring.rerun.undecided: wait): " + "; ".join(advice))
    if not gates.passed:
        registry.record_decision({**record, "action": "gate_failed", "reasons": gates.failures})
        return outcome_state(Outcome.GATE_FAILED, "; ".join(gates.failures))

    logger.info("Awaiting review: %s\n%s", flow_run_url(run_id), review_commands(run_id))
    if start is not None:
        registry.record_decision({**record, "action": "review_requested"})
    timeout = approval_timeout or inputs.policy.approval.timeout_seconds
    accept = [r.gate for r in gates.needs_acceptance]
    decision = await_review(packet, dialog_frontier(**frontier_args), inputs.policy, timeout, review_poll_seconds,
                            requested_by, registry, record, accept)
    if decision is None:
        registry.record_decision({**record, "action": "expired", "timeout_seconds": timeout})
        # Prefect's server replaces this with Failed("The flow was expired and never resumed.")
        return outcome_state(Outcome.EXPIRED, f"no approval within {timeout}s; nothing promoted")
    approval = {"reviewer": decision.reviewer, "comment": decision.comment, "approved": decision.approve,
                "verified": credentials.credentials_required(registry.root)}
    if accept and decision.approve:  # who accepted which undecided gates, and why
        approval["accepted_inconclusive"] = {"gates": accept, "reviewer": decision.reviewer, "reason": decision.comment}
    if not decision.approve:
        registry.record_decision({**record, "action": "reject", **approval})
        return outcome_state(Outcome.REJECTED, f"rejected by {decision.reviewer}: {decision.comment}")

    lineage = describe_run(
        inputs, audit, augment_report, run_id=run_id, requested_by=requested_by, project_dir=settings.project_dir,
        evaluation=mode, accepted_inconclusive=approval.get("accepted_inconclusive"), requester_verified=requester_verified,
        base_model=inputs.base_model.source if inputs.base_model else None,
        missing_sensitive=evaluations["candidate"].missing_sensitive,
        drift=None if drift is None else DriftLineage(incident=start.incident, rows=start.drifted, weighting=splits.weighting,
                                                      clears=drift.clears),
        sweep=None if swept is None else SweepLineage(
            **sweep_spec.identity(sweep_file), chosen=swept.outcome.chosen, template_file=chosen.template_path,
            explanation=swept.outcome.explanation,
            candidates=[c.model_dump(include={"name", "validation", "test", "fit_seconds"}) for c in swept.outcome.candidates]),
    )

    def documents(version: str) -> dict[str, str | bytes]:
        model_card = render_model_card(
            dataset=spec.name, description=spec.description, provenance=spec.provenance, version=version,
            candidate_label=template.label(), recipe_label=f"{inputs.recipe.name} v{inputs.recipe.version}",
            sensitive=[s.name for s in spec.sensitive], evaluation=evaluations["candidate"], gates=gates,
            needs_sensitive_at_predict=template.needs_sensitive_at_predict, approval=approval,
            train_rows=len(augmented), test_rows=len(splits.test), confidence=inputs.policy.bootstrap.confidence,
            base_model=inputs.base_model.source if inputs.base_model else None,
        )
        return {"report.md": report, "report.html": render_html(f"fairloop {spec.name} {version}", report, evaluations,
                                                                run_id=run_id, approval=approval),
                "model_card.md": model_card, "frontier.png": frontier_image}

    entry = promote_step(
        registry, inputs, model=models["candidate"], train=augmented.to_frame(spec.label.column),
        metrics=evaluations["candidate"].metrics, baseline_metrics=evaluations["baseline"].metrics,
        gates=[g.model_dump() for g in gates.results], lineage=lineage, approval=approval, documents=documents,
        gated_against=champion[0].version if champion else None,
    )
    if isinstance(entry, ChampionChanged):  # the registry logged the refusal
        return outcome_state(Outcome.CHAMPION_CHANGED, str(entry))
    create_markdown_artifact(key="model-card", markdown=(registry.root / spec.name / "model_card.md").read_text(),
                             description=f"Model card of {spec.name} {entry.version}")
    return outcome_state(Outcome.PROMOTED, f"{spec.name} {entry.version} promoted, approved by {decision.reviewer}")
