"""The last step of an approved run: the candidate, its documents and lineage into the registry.

Not persisted: it runs once, after the review, and the registry's own transaction makes a
promotion whole or absent (``fairloop.registry.store``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from fairloop import pipeline
from fairloop.audit.record import AuditReport
from fairloop.flows.review import Verdict
from fairloop.flows.steps import Judged, Prepared, Published, Retrained, RunScope
from fairloop.monitor.drifted import DriftLineage
from fairloop.registry.lineage import Lineage, SweepLineage, describe_run
from fairloop.registry.store import ChampionChanged, RegistryEntry
from fairloop.review import credentials
from fairloop.review.report import render_html, render_model_card


def approval_record(scope: RunScope, verdict: Verdict, needs_acceptance: list[str]) -> dict:
    """Who decided, as the registry, lineage and model card record it."""
    approval = {"reviewer": verdict.reviewer, "comment": verdict.comment, "approved": verdict.approve,
                "verified": credentials.credentials_required(scope.registry.root)}
    if needs_acceptance and verdict.approve:  # who accepted which undecided gates, and why
        approval["accepted_inconclusive"] = {"gates": needs_acceptance, "reviewer": verdict.reviewer,
                                             "reason": verdict.comment}
    return approval


def run_lineage(scope: RunScope, prepared: Prepared, audit_report: AuditReport, retrained: Retrained, judged: Judged,
                approval: dict) -> Lineage:
    inputs, request, swept, start = retrained.inputs, scope.request, retrained.swept, prepared.start
    sweep_lineage = None
    if swept is not None:
        chosen, _ = swept.chosen
        sweep_lineage = SweepLineage(
            **retrained.sweep_spec.identity(start.sweep_file if start else request.sweep_file),
            chosen=swept.outcome.chosen, template_file=chosen.template_path, explanation=swept.outcome.explanation,
            candidates=[c.model_dump(include={"name", "validation", "test", "fit_seconds"})
                        for c in swept.outcome.candidates])
    return describe_run(
        inputs, audit_report, retrained.augment_report, run_id=scope.run_id, requested_by=request.requested_by,
        project_dir=scope.settings.project_dir, evaluation=prepared.mode,
        accepted_inconclusive=approval.get("accepted_inconclusive"), requester_verified=request.requester_verified,
        base_model=inputs.base_model.source if inputs.base_model else None,
        missing_sensitive=judged.evaluations["candidate"].missing_sensitive, sweep=sweep_lineage,
        drift=None if judged.drift is None else DriftLineage(incident=start.incident, rows=start.drifted,
                                                             weighting=prepared.splits.weighting,
                                                             clears=judged.drift.clears),
    )


@task(name="promote", cache_policy=NO_CACHE)
def promote(scope: RunScope, prepared: Prepared, audit_report: AuditReport, retrained: Retrained, judged: Judged,
            published: Published, approval: dict) -> RegistryEntry | ChampionChanged:
    """The promoted entry, or the registry's refusal when the champion changed since the run was
    gated (returned, not raised: it is an outcome, and a raised one is logged as a crash)."""
    inputs, evaluations, splits = retrained.inputs, judged.evaluations, prepared.splits
    spec, template = inputs.loaded.spec, inputs.template
    lineage = run_lineage(scope, prepared, audit_report, retrained, judged, approval)

    def documents(version: str) -> dict[str, str | bytes]:
        model_card = render_model_card(
            dataset=spec.name, description=spec.description, provenance=spec.provenance, version=version,
            candidate_label=template.label(), recipe_label=f"{inputs.recipe.name} v{inputs.recipe.version}",
            sensitive=[s.name for s in spec.sensitive], evaluation=evaluations["candidate"], gates=judged.gates,
            needs_sensitive_at_predict=template.needs_sensitive_at_predict, approval=approval,
            train_rows=len(retrained.augmented), test_rows=len(splits.test),
            confidence=inputs.policy.bootstrap.confidence,
            base_model=inputs.base_model.source if inputs.base_model else None,
        )
        html = render_html(f"fairloop {spec.name} {version}", published.report, evaluations, run_id=scope.run_id,
                           approval=approval)
        return {"report.md": published.report, "report.html": html, "model_card.md": model_card,
                "frontier.png": published.frontier_image}

    with tempfile.TemporaryDirectory() as scratch:
        lineage = lineage.model_copy(update={"inputs_spec_files": pipeline.snapshot_inputs(inputs, Path(scratch))})
        try:
            entry = scope.registry.promote(
                spec.name, inputs_dir=Path(scratch), lineage=lineage, model=published.candidate_bytes,
                train=retrained.augmented.to_frame(spec.label.column), metrics=evaluations["candidate"].metrics,
                baseline_metrics=evaluations["baseline"].metrics, gates=[g.model_dump() for g in judged.gates.results],
                approval=approval, documents=documents, gated_against=retrained.champion_version)
        except ChampionChanged as refused:
            return refused
    create_markdown_artifact(key="model-card", markdown=(scope.registry.root / spec.name / "model_card.md").read_text(),
                             description=f"Model card of {spec.name} {entry.version}")
    return entry
