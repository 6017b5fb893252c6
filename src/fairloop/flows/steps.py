"""The steps of a remediation run, each a Prefect task with typed inputs and outputs.

Every step before the review is *persisted*: its result is pickled to Prefect's result storage
under a key made of the flow run id and the step's name. A run that awaits review is suspended
(no process is alive, ``fairloop.flows.review``); approving it re-runs the flow from the top on
whichever worker is up, and these steps return their stored results instead of running again: no
refit, no second audit line, the same candidate bytes. That is also why every side effect a step
has (decision-log lines, artifacts, files of the run) happens inside a persisted step or is
idempotent. Result storage is Prefect's: the local filesystem by default
(``PREFECT_LOCAL_STORAGE_PATH``), any filesystem block (S3, GCS) by
``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``; workers on other machines need it shared.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from fairloop import pipeline
from fairloop.audit.record import AuditReport
from fairloop.audit.report import publish_artifacts
from fairloop.config import Settings
from fairloop.data.rows import Split
from fairloop.data.splits import Splits
from fairloop.flows.request import RemediationRequest
from fairloop.gates.evaluate import Evaluation
from fairloop.gates.policy import GateReport, apply_gates
from fairloop.monitor.drifted import DriftedJudgement, held_out_rows, judge_on_drifted
from fairloop.registry import decision_log
from fairloop.registry.store import Registry, serialize_model
from fairloop.remedy import fitters
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.recipes import AugmentReport
from fairloop.remedy.sweep.gate_cost import gate_costs, unreliable_gates
from fairloop.remedy.sweep.results import SweepOutcome
from fairloop.remedy.sweep.run import SweepRun, run_sweep
from fairloop.remedy.sweep.spec import SweepSpec, load_sweep, write_chosen_template
from fairloop.review import credentials
from fairloop.review.frontier import candidates_table, dialog_frontier, frontier_report
from fairloop.review.no_candidate import NoCandidateReport, save_no_candidate
from fairloop.review.packet import Link, ReviewPacket, render_report, save_packet
from fairloop.serving import reruns
from fairloop.serving.flow_process import record_flow_process
from fairloop.serving.progress import AUGMENT, ProgressReporter
from fairloop.serving.runs import artifact_url, flow_run_url
from fairloop.templating import md_cells


def run_scoped_key(context, parameters: dict[str, Any]) -> str:
    """One stored result per step and run: a resumed run (same flow run id) reads it back. Blind to
    the inputs on purpose: hashing DataFrames and fitted models would cost more than the step, and
    pickled objects hash differently once reloaded (a resumed run would miss and refit)."""
    return f"fairloop-{context.task_run.flow_run_id}-{context.task.name}"


#: a step whose result a resumed run reuses (see the module docstring)
persisted = task(persist_result=True, result_serializer="pickle", cache_key_fn=run_scoped_key)
#: a step that runs again on every execution of the flow (cheap, idempotent)
unpersisted = task(cache_policy=NO_CACHE)


@dataclass
class RunScope:
    """What every step of one run shares. Not persisted: rebuilt on each execution of the flow."""

    request: RemediationRequest
    run_id: str
    run_dir: Path  # files of this run that are not promoted (frontier, chosen template, review packet)
    settings: Settings
    registry: Registry
    progress: ProgressReporter
    logger: Any
    started: float = field(default_factory=time.perf_counter)

    def record(self, record: decision_log.Decision) -> None:
        """Append ``record`` to the decision log with this run's identity filled in."""
        self.registry.record_decision(record.model_copy(update={
            "run_id": self.run_id, "requested_by": self.request.requested_by,
            "requester_verified": self.request.requester_verified}))


@dataclass
class Prepared:
    """The run's validated inputs, its splits and how it is evaluated."""

    inputs: pipeline.Inputs
    splits: Splits
    mode: ModeDecision
    start: reruns.RerunStart | None  # a served rerun's plan and drifted rows (None: a requested run)

    @property
    def identity(self) -> dict[str, Any]:
        """The decision-log fields of every record of this run after it started."""
        extra = {"incident": self.start.incident, "remediates_with": self.start.source} if self.start else {}
        return {"dataset": self.inputs.loaded.spec.name, **extra,
                "extra_training_data": self.inputs.params.extra_training_data}


@dataclass
class Retrained:
    """The models the gates compare and what the candidate was fitted on."""

    inputs: pipeline.Inputs  # with the chosen recipe and template when a sweep chose them
    models: dict[str, Any]  # baseline, candidate, and the champion when there is one
    champion_version: str | None
    augmented: Split
    augment_report: AugmentReport | None  # None: a sweep that chose no candidate
    fit_seconds: float
    swept: SweepRun | None = None
    sweep_spec: SweepSpec | None = None


@dataclass
class Judged:
    evaluations: dict[str, Evaluation]
    gates: GateReport
    drift: DriftedJudgement | None
    intersections: dict[str, dict[str, Evaluation]]  # declared, not gated: pipeline.evaluate_declared_intersections


@dataclass
class Published:
    """What the reviewer sees: the packet, its report and frontier."""

    packet: ReviewPacket
    report: str
    frontier_image: bytes
    dialog_frontier: str
    candidate_bytes: bytes  # the candidate as the registry stores it; its sha256 is in the packet


@persisted(name="start-rerun")
def start_rerun(scope: RunScope) -> reruns.RerunStart:
    """A served rerun's start (``fairloop.serving.reruns``): one per incident, the champion's way, on
    the window the monitor recorded. Records why it stops, or that it started."""
    request = scope.request
    start = reruns.start_rerun(scope.run_id, request.run_params(), sweep_file=request.sweep_file,
                               requested_by=request.requested_by, registry=scope.registry,
                               state_dir=scope.settings.state_dir, run_dir=scope.run_dir, incident=request.incident)
    if start.stop is reruns.Outcome.REFUSED:
        scope.record(decision_log.RefusedInput(dataset=start.dataset, incident=start.incident, reason=start.reason))
    elif start.stop is None:
        scope.logger.info("Rerun (%s) remediates with %s", request.requested_by, start.source)
        windows = ", ".join(w.source for w in start.drifted.windows) if start.drifted else None
        scope.record(decision_log.RerunStarted(dataset=start.dataset, incident=start.incident,
                                               remediates_with=start.source, window=windows))
    return start


@persisted(name="prepare")
def prepare(scope: RunScope, start: reruns.RerunStart | None) -> Prepared:
    """Load and validate every input, form the splits, decide how the run is evaluated."""
    params = start.params if start else scope.request.run_params()
    inputs = pipeline.load_inputs(params, scope.request.trust_base_model)
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    record_flow_process(scope.run_dir, inputs.loaded.spec.name)  # a death from here on is logged for the dataset
    scope.logger.info("Evaluation mode %s: %s", mode.mode, mode.reason)
    if start and start.drifted:
        scope.logger.info("Drifted rows of %d window(s): %d train, %d held out (%d labelled) to judge the rerun on",
                          len(start.drifted.windows), start.drifted.train_rows, start.drifted.held_out_rows,
                          start.drifted.held_out_labelled)
    if params.extra_training_data:
        scope.logger.info("Training split includes the labelled rows of %s (%d training rows in all; weighting %s)",
                          params.extra_training_data, len(splits.train),
                          splits.weighting.model_dump_json() if splits.weighting else "none")
    return Prepared(inputs=inputs, splits=splits, mode=mode, start=start)


@persisted(name="audit")
def audit(scope: RunScope, prepared: Prepared) -> AuditReport:
    """The training data's audit, published as artifacts; a block is recorded."""
    report = pipeline.audit(prepared.inputs, prepared.splits)
    publish_artifacts(report)
    if report.verdict == "block":
        scope.record(decision_log.AuditBlocked(**prepared.identity, reasons=report.reasons))
    return report


@persisted(name="retrain")
def retrain(scope: RunScope, prepared: Prepared, audit_report: AuditReport) -> Retrained:
    """Fit the candidate: the request's recipe and template, or the best of a sweep that passes the
    policy on validation. A frozen model (``base_model``) is post-processed, never retrained."""
    request, inputs, splits = scope.request, prepared.inputs, prepared.splits
    frozen = pipeline.frozen_base(inputs, audit_report)
    champion = scope.registry.load_champion(inputs.loaded.spec.name)
    sweep_file = prepared.start.sweep_file if prepared.start else request.sweep_file
    if not sweep_file:
        trained = pipeline.train(inputs, splits, prepared.mode, frozen, on_fitted=scope.progress.fitted)
        scope.progress.stage(AUGMENT)  # the candidate's rows for its report (its fit applied the recipe itself)
        augmented, augment_report = pipeline.augment(inputs, splits, prepared.mode)
        return Retrained(inputs=inputs, models={name: model for name, (model, _) in trained.items()}
                         | ({"champion": champion[1]} if champion else {}),
                         champion_version=champion[0].version if champion else None, augmented=augmented,
                         augment_report=augment_report, fit_seconds=trained["candidate"][1])
    sweep_spec = load_sweep(sweep_file)
    # A frozen model's candidates fit no learner (it may be one endpoint's client): serially.
    fitting = (fitters.fitter(request.runner, sweep_spec.useful_workers(),
                              request.dask_address or scope.settings.dask_address, on_fitted=scope.progress.fitted)
               if frozen is None else nullcontext(fitters.counted_serial_fitter(scope.progress.fitted)))
    with fitting as fit_all:
        swept = run_sweep(sweep_spec, splits, inputs.sensitive, inputs.params.seed, inputs.policy, prepared.mode,
                          champion=champion[1] if champion else None, fit_all=fit_all, frozen=frozen,
                          on_step=scope.progress.stage)
    unreliable = unreliable_gates(audit_report.findings, inputs.sensitive, inputs.policy)
    if unreliable:  # what each costs, beside the policy's choice (the policy still decides)
        swept = replace(swept, outcome=swept.outcome.model_copy(update={"gate_costs": gate_costs(swept.outcome, unreliable)}))
    result = Retrained(inputs=inputs, models={}, champion_version=champion[0].version if champion else None,
                       augmented=splits.train, augment_report=None, fit_seconds=0.0, swept=swept, sweep_spec=sweep_spec)
    if swept.chosen is None:
        return result
    chosen, fitted = swept.chosen
    constraint_path = write_chosen_template(chosen, scope.run_dir)
    inputs = replace(inputs, recipe=chosen.recipe, template=chosen.template,
                     params=replace(inputs.params, recipe=chosen.recipe_path, constraint=str(constraint_path)))
    scope.progress.stage(AUGMENT)
    augmented, augment_report = pipeline.augment(inputs, splits, prepared.mode)  # the rows the chosen model was fitted on
    return replace(result, inputs=inputs, augmented=augmented, augment_report=augment_report,
                   fit_seconds=fitted.fit_seconds, models={"baseline": swept.baseline.model, "candidate": fitted.model}
                   | ({"champion": champion[1]} if champion else {}))


@persisted(name="no-candidate")
def record_no_candidate(scope: RunScope, prepared: Prepared, audit_report: AuditReport, retrained: Retrained) -> str:
    """A sweep none of whose candidates passes the policy: its frontier and why, recorded, and the
    run's report for ``fairloop show`` (there is no review packet: nothing to approve)."""
    inputs, swept = prepared.inputs, retrained.swept
    outcome = swept.outcome
    links = publish_frontier(*frontier_report(inputs.policy, inputs.loaded.spec.name, swept.reference_test_metrics(),
                                              outcome), scope.run_dir, outcome)
    baseline_selection = swept.references["baseline"].selection
    save_no_candidate(NoCandidateReport(
        run_id=scope.run_id, run_url=flow_run_url(scope.run_id), dataset=inputs.loaded.spec.name,
        sensitive=inputs.sensitive, policy=inputs.policy.name, sweep=outcome,
        references={name: scored.test for name, scored in swept.references.items()},
        champion_version=retrained.champion_version,
        excluded_on_selection=baseline_selection.excluded_groups if baseline_selection is not None else [],
        audit_verdict=audit_report.verdict, audit_reasons=audit_report.reasons, requested_by=scope.request.requested_by,
        requester_verified=scope.request.requester_verified, links=links), scope.run_dir)
    scope.logger.warning(outcome.explanation)
    scope.record(decision_log.GateFailed(**prepared.identity, reasons=outcome.explanation.splitlines(),
                                         sweep=retrained.sweep_spec.name))
    return outcome.explanation


@persisted(name="evaluate-and-gate")
def judge(scope: RunScope, prepared: Prepared, retrained: Retrained) -> Judged:
    """Evaluate every model on the test split and gate the candidate; a drift rerun is also judged on
    the held-out rows of the windows that alerted (``fairloop.monitor.drifted``)."""
    inputs, template = retrained.inputs, retrained.inputs.template
    predictions = pipeline.predict_all(retrained.models, prepared.splits.test)
    evaluations = pipeline.evaluate_predictions(predictions, prepared.splits.test, inputs.sensitive, inputs.policy)
    gates = apply_gates(inputs.policy, evaluations, needs_sensitive_at_predict=template.needs_sensitive_at_predict,
                        evaluation_mode=prepared.mode.mode)
    start, drift = prepared.start, None
    if start is not None and start.drifted is not None:
        drift = judge_on_drifted(retrained.models, held_out_rows(inputs.loaded.spec, start.drifted), start.alert,
                                 inputs.sensitive, inputs.policy, inputs.policy.monitoring_settings.rerun,
                                 inputs.params.seed, windows=len(start.drifted.windows))
        gates = gates.model_copy(update={"results": [*gates.results, *drift.gates]})
        scope.logger.info("Approving clears the alert: %s (%s)", drift.clears, drift.why)
    intersections = pipeline.evaluate_declared_intersections(predictions, prepared.splits.test, inputs.loaded.spec,
                                                            inputs.sensitive, inputs.policy)
    return Judged(evaluations=evaluations, gates=gates, drift=drift, intersections=intersections)


def frontier_arguments(prepared: Prepared, retrained: Retrained, judged: Judged) -> dict[str, Any]:
    return dict(policy=retrained.inputs.policy, dataset=prepared.inputs.loaded.spec.name,
                references={name: judged.evaluations[name].metrics for name in ("baseline", "champion")
                            if name in retrained.models},
                outcome=retrained.swept.outcome if retrained.swept else None,
                candidate=judged.evaluations["candidate"].metrics)


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


@persisted(name="publish-review")
def publish_review(scope: RunScope, prepared: Prepared, audit_report: AuditReport, retrained: Retrained,
                   judged: Judged) -> Published:
    """The review packet (``fairloop show``), the full report and the frontier as artifacts; and, when
    the gates let a rerun's candidate through, the review request in the decision log (an incident's
    timeline, ``fairloop history``)."""
    inputs, template, swept = retrained.inputs, retrained.inputs.template, retrained.swept
    spec, request = inputs.loaded.spec, scope.request
    arguments = frontier_arguments(prepared, retrained, judged)
    candidate_bytes = serialize_model(retrained.models["candidate"])  # what is reviewed is what is promoted
    frontier_image, frontier = frontier_report(**arguments)
    links = publish_frontier(frontier_image, frontier, scope.run_dir, swept.outcome if swept else None)
    packet = ReviewPacket(
        run_id=scope.run_id, run_url=flow_run_url(scope.run_id), dataset=spec.name, sensitive=inputs.sensitive,
        candidate_name=swept.outcome.chosen if swept else template.name, candidate_label=template.label(),
        method=template.method, recipe_label=f"{inputs.recipe.name} v{inputs.recipe.version}",
        champion_version=retrained.champion_version, needs_sensitive_at_predict=template.needs_sensitive_at_predict,
        evaluations=judged.evaluations, gates=judged.gates, confidence=inputs.policy.bootstrap.confidence,
        audit_verdict=audit_report.verdict, audit_reasons=audit_report.reasons, base_rate_gap=audit_report.base_rate_gap,
        augment=retrained.augment_report, sweep=swept.outcome if swept else None,
        base_model=inputs.base_model.source if inputs.base_model else None,
        credentials_required=credentials.credentials_required(scope.registry.root), drift=judged.drift,
        requested_by=request.requested_by, requester_verified=request.requester_verified,
        proxies=[x for x in audit_report.proxies if x.sensitive == inputs.sensitive and x.flagged],
        candidate_sha256=hashlib.sha256(candidate_bytes).hexdigest(),
        review_timeout_seconds=request.approval_timeout or inputs.policy.approval.timeout_seconds,
        intersections=judged.intersections,
    )
    report = render_report(packet, frontier, audit_report)
    report_id = create_markdown_artifact(key="remediation-report", markdown=report,
                                         description=f"{spec.name} candidate vs baseline")
    packet = packet.model_copy(update={"links": [Link(label="full report", url=artifact_url(report_id)), *links]})
    save_packet(packet, scope.run_dir)  # what `fairloop show RUN_ID` prints
    scope.logger.info("Candidate fitted in %.1fs; pipeline %.1fs before review.", retrained.fit_seconds,
                      time.perf_counter() - scope.started)
    if prepared.start is not None and judged.gates.passed and not judged.gates.only_awaiting_data:
        scope.record(decision_log.ReviewRequested(**prepared.identity, candidate=template.label()))
    return Published(packet=packet, report=report, frontier_image=frontier_image,
                     dialog_frontier=dialog_frontier(**arguments), candidate_bytes=candidate_bytes)
