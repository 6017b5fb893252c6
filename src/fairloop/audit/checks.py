"""The data audit: the first gate of every remediation run, and a CI step on its own.

``run_audit`` composes four parts, each a plain function in its own module:

1. ``validate_schema`` (``fairloop.audit.schema``): a Great Expectations suite built from the dataset spec (columns and
   types, label values, non-null where declared, numeric ranges and category sets of a
   reference snapshot, the spec's ``audit.expectations``). The suite, with its reference
   snapshot, lives in the file-backed GX context ``gx/`` so it is versioned in git; the CLI
   validates there too and builds Data Docs. Runs inside the pipeline validate in an
   ephemeral context: they read the committed suite and write nothing.
2. ``group_audit`` (``fairloop.audit.breakdowns``): per sensitive group and per group x label cell (and per intersection of
   the sensitive features) counts, shares, positive-label rates with Wilson intervals, the gap
   between groups with a chi-square test, cells too small to judge, rows with no sensitive
   value; each intersection the spec declares ('sex:race') gets the base-rate findings of a
   sensitive feature over its cells. Where some rows have none, their groups are inferred from
   the other features and the label (``fairloop.data.membership``, for auditing only) and the base
   rates are reported over all rows too, or the audit says why it refused to infer.
3. ``proxy_scores`` (``fairloop.audit.proxies``): for every feature, how well it alone predicts each sensitive feature
   (cross-fitted AUC of a one-feature target-encoding model, plus normalised mutual
   information), on a seeded row sample so that it costs the same on a million rows.
4. ``leak_scores`` (``fairloop.audit.leakage``): for every feature, how well it alone predicts the
   label; one that does almost perfectly is a label leak, which blocks.

The verdict is ``block`` (stop the run before training) when a blocking expectation fails or a
feature leaks the label, ``warn`` (continue; the findings go into the run's report) when
anything else is found, and ``pass`` otherwise. Same data and spec give a byte-identical record: it is a DVC output and
part of every model's lineage, so it holds no timings or timestamps.
"""

from __future__ import annotations

from pathlib import Path

from fairloop.audit.breakdowns import audit_groups
from fairloop.audit.leakage import LeakScore, leak_message, leak_scores
from fairloop.audit.proxies import PROXY_METHOD, audit_proxies
from fairloop.audit.record import AuditReport, Finding, Verdict
from fairloop.audit.schema import (
    GxProject,
    ReferenceProfile,
    audit_reference,
    default_gx_root,
    gx_frame,
    validate_schema,
)
from fairloop.data.dataset_spec import DatasetSpec
from fairloop.data.membership import MembershipSettings
from fairloop.data.rows import Split

SEVERITY_ORDER = {"block": 0, "warn": 1, "info": 2}


def run_audit(
    spec: DatasetSpec,
    split: Split,
    sensitive: str | None = None,
    *,
    source: str | None = None,
    reference: ReferenceProfile | None = None,
    gx_root: Path | None = None,
    write_gx: bool = False,
    membership: MembershipSettings | None = None,
) -> AuditReport:
    """Audit ``split`` (rows of ``source``, when given) and decide pass / warn / block.

    The category sets and ranges come from ``reference`` when given, else from the suite
    committed in ``gx_root`` (default ``<project>/gx``), else from ``split`` itself (then
    nothing can be unseen, and an info finding says so). ``write_gx`` saves the suite into
    ``gx_root`` and validates there (results and Data Docs); otherwise nothing is written.
    ``membership``: how rows with no sensitive value are inferred (default settings if None).
    """
    sensitive = sensitive or spec.primary_sensitive
    spec.grouping(sensitive)
    project = GxProject(gx_root or default_gx_root())
    reference, findings = audit_reference(spec, split, source, reference, project)
    expectations, schema_findings, docs = validate_schema(spec, gx_frame(spec, split), reference, project if write_gx else None)
    breakdowns, intersection, declared, group_findings = audit_groups(spec, split, membership or MembershipSettings())
    proxies, sample_rows, proxy_findings = audit_proxies(spec, split)
    leaks, leak_rows, leak_findings = _label_leaks(spec, split)
    findings += schema_findings + group_findings + proxy_findings + leak_findings
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])  # stable: checks keep their order within a severity
    verdict: Verdict = "block" if any(f.severity == "block" for f in findings) else (
        "warn" if any(f.severity == "warn" for f in findings) else "pass")
    prefix = f"{source}: " if source else ""
    primary = next(b for b in [*breakdowns, *declared] if b.name == sensitive)
    return AuditReport(
        dataset=spec.name, source=source, rows=len(split), sensitive=sensitive, verdict=verdict,
        reasons=[prefix + f.message for f in findings if f.severity != "info"], findings=findings,
        expectations=expectations, groups=primary.groups, cells=primary.cells, base_rate_gap=primary.base_rate_gap,
        sensitive_features=breakdowns, sensitive_used_as_features=spec.sensitive_used_as_features,
        intersection=intersection, intersections=declared, proxies=proxies, proxy_sample_rows=sample_rows,
        proxy_method=PROXY_METHOD, leaks=leaks, leak_sample_rows=leak_rows, settings=spec.audit,
        reference=f"{reference.source} ({reference.rows:,} rows)",
        gx_suite=str(project.suite_path(spec.name)), data_docs=docs,
    )


def _label_leaks(spec: DatasetSpec, split: Split) -> tuple[list[LeakScore], int, list[Finding]]:
    """Each feature's one-feature AUC for the label, the rows it was computed on, and the blocking finding of a leak."""
    leaks, leak_rows = leak_scores(split.X, split.y, spec.features.numeric, spec.features.categorical,
                                   threshold=spec.audit.label_leak_auc, sample_rows=spec.audit.proxy_sample_rows,
                                   seed=spec.split.seed)
    leak = leak_message(leaks, f"'{spec.label.column}' (positive: {spec.label.describe(True)})", spec.audit.label_leak_auc,
                        leak_rows, len(split))
    if leak is None:
        return leaks, leak_rows, []
    return leaks, leak_rows, [Finding(severity="block", check="label-leak", column=leaks[0].feature,
                                      value=f"{leaks[0].auc:.3f}", message=leak)]
