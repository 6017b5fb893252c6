"""The audit for people: markdown and Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from fairloop.audit.leakage import LEAK_METHOD
from fairloop.audit.record import AuditReport, SensitiveAudit, pvalue_text
from fairloop.templating import md_text as md  # data values reach Markdown as text only


def _group_table(audit: SensitiveAudit) -> list[str]:
    lines = ["| group | rows | share | positive rate (95% CI) | cells < min |", "|---|---|---|---|---|"]
    for g in audit.groups:
        small = ", ".join(f"label {c.label}: {c.rows}" for c in audit.cells if c.group == g.group and c.too_small)
        lines.append(f"| {md(g.group)} | {g.rows:,} | {g.share:.3f} | {g.base_rate:.3f} ({g.base_rate_ci_low:.3f}-"
                     f"{g.base_rate_ci_high:.3f}) | {small or '-'} |")
    ratio = "n/a" if audit.base_rate_ratio is None else f"{audit.base_rate_ratio:.3f}"
    lines.append(f"\nGap {audit.base_rate_gap:.3f}, ratio {ratio}, chi-square p {pvalue_text(audit.chi2_pvalue)}, rows with no value {audit.missing_rows}.")
    if audit.membership is not None:
        over_all = ", ".join(f"{md(g)} {r:.3f}" for g, r in audit.base_rates_all_rows.items())
        lines.append(f"Rows with no value: {md(audit.membership.statement())}" + (
            f"; positive rates over all rows {over_all} (gap {audit.base_rate_gap_all_rows:.3f})." if over_all else "."))
    return lines


def render_markdown(report: AuditReport) -> str:
    """The audit for a person (Prefect markdown artifact, review report)."""
    settings = report.settings
    parts = [
        f"## Data audit of `{report.dataset.replace('`', '')}`: **{report.verdict.upper()}**",  # a code span shows HTML as text
        f"{report.rows:,} rows{f' of {md(report.source)}' if report.source else ''}; audited sensitive feature "
        f"{md(report.sensitive)}; reference snapshot: {md(report.reference)}.",
        "Sensitive features also used as model features (use_as_feature): "
        + (", ".join(md(name) for name in report.sensitive_used_as_features) or "none") + ".",
        "### Findings",
        "\n".join([f"- **{f.severity}** {md(f.message)}" for f in report.findings] or ["- none"]),
    ]
    for breakdown in report.sensitive_features:
        parts += [f"### Sensitive {md(breakdown.name)}", "\n".join(_group_table(breakdown))]
    if report.intersection is not None:
        small = report.intersection.small_cells
        parts += [f"### Intersection {md(report.intersection.name)}: {len(small)} of {len(report.intersection.cells)} cells "
                  f"below {settings.min_cell_rows} rows", "\n".join(_group_table(report.intersection))]
    for breakdown in report.intersections:
        parts += [f"### Declared intersection {md(breakdown.name)}", "\n".join(_group_table(breakdown))]
    proxy_rows = [
        f"| {md(p.sensitive)} | {md(p.feature)} | {p.auc:.3f} | {'-' if p.nmi is None else f'{p.nmi:.3f}'} | {'yes' if p.flagged else ''} |"
        for s in report.sensitive_features for p in report.top_proxies(s.name)
    ]
    parts += [
        f"### Proxies (threshold AUC {settings.proxy_auc_threshold}; {report.proxy_sample_rows:,} seeded rows of {report.rows:,})",
        "\n".join(["| sensitive | feature | AUC | NMI | proxy |", "|---|---|---|---|---|", *proxy_rows]),
    ]
    leak_rows = [f"| {md(s.feature)} | {s.auc:.3f} | {s.method} | {'yes' if s.flagged else ''} |" for s in report.leaks[:5]]
    parts += [
        f"### Label leaks (threshold AUC {settings.label_leak_auc}; {report.leak_sample_rows:,} seeded rows of {report.rows:,})",
        f"{LEAK_METHOD}.",
        "\n".join(["| feature | AUC for the label | figure | leak |", "|---|---|---|---|", *leak_rows]),
    ]
    failed = [e for e in report.expectations if not e.success]
    parts += [f"### Great Expectations suite {md(report.gx_suite)}: {len(report.expectations) - len(failed)} of "
              f"{len(report.expectations)} expectations met"]
    if failed:
        parts.append("\n".join(["| expectation | column | severity | result |", "|---|---|---|---|",
                                *[f"| {md(e.expectation)} | {md(e.column)} | {e.severity} | {md(e.details)} |" for e in failed]]))
    if report.data_docs:
        parts.append(f"Data Docs: {md(report.data_docs)}")
    return "\n\n".join(parts) + "\n"


def publish_artifacts(report: AuditReport) -> None:
    """Markdown and table artifacts on the current Prefect run."""

    create_markdown_artifact(key="audit-report", markdown=render_markdown(report),
                             description=f"Data audit of {report.dataset}: {report.verdict}")
    cells: list[dict[str, Any]] = [
        {"breakdown": b.name, **c.model_dump()}
        for b in [*report.sensitive_features, *filter(None, [report.intersection]), *report.intersections] for c in b.cells
    ]
    create_table_artifact(key="audit-cells", table=cells, description="Group x label cells (too_small: below audit.min_cell_rows)")
    create_table_artifact(key="audit-leaks", table=[s.model_dump() for s in report.leaks],
                          description="One-feature AUC of each feature for the label (flagged: a label leak)")
    create_table_artifact(key="audit-proxies", table=[p.model_dump() for p in report.proxies],
                          description="One-feature proxy scores for each sensitive feature")
