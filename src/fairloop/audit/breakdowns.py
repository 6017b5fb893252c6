"""Group breakdowns: representation, positive-label (base) rates and rows with no sensitive value,
per sensitive feature, per cell of every sensitive feature together, per declared intersection."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from scipy.stats import binomtest, chi2_contingency

from fairloop.audit.record import (
    Finding,
    GroupCell,
    GroupSummary,
    SensitiveAudit,
    pvalue_text,
    shortlist,
)
from fairloop.data.dataset_spec import AuditSpec, DatasetSpec
from fairloop.data.groups import CELL_JOINER, cell_labels, intersection_parts
from fairloop.data.membership import MembershipSettings, infer_membership
from fairloop.data.parsing import MISSING_GROUP
from fairloop.data.rows import Split

SIGNIFICANCE = 0.01  # a base-rate gap warns only when a chi-square test finds it this unlikely by chance


def group_audit(name: str, columns: list[str], groups: pd.Series, y: pd.Series, min_cell_rows: int) -> SensitiveAudit:
    """Counts, shares and positive rates per group and per group x label cell."""

    total = len(y)
    table = pd.crosstab(groups.astype(str), y.astype(int)).reindex(columns=[0, 1], fill_value=0)
    summaries, cells = [], []
    for group, row in table.iterrows():
        rows, positives = int(row.sum()), int(row[1])
        interval = binomtest(positives, rows).proportion_ci(confidence_level=0.95, method="wilson")
        summaries.append(GroupSummary(
            group=str(group), rows=rows, share=rows / total, base_rate=positives / rows, positives=positives,
            base_rate_ci_low=float(interval.low), base_rate_ci_high=float(interval.high), judged=rows >= min_cell_rows,
        ))
        for label in (0, 1):
            count = int(row[label])
            cells.append(GroupCell(group=str(group), label=label, rows=count, share=count / total, too_small=count < min_cell_rows))
    judged = [s.base_rate for s in summaries if s.judged]
    rates = judged if len(judged) >= 2 else [s.base_rate for s in summaries]
    gap = max(rates) - min(rates) if rates else 0.0
    ratio = min(rates) / max(rates) if rates and max(rates) > 0 else None
    observed = table.loc[table.sum(axis=1) > 0]
    pvalue = None
    if observed.shape[0] >= 2 and (observed.sum(axis=0) > 0).all():
        pvalue = float(chi2_contingency(observed.to_numpy()).pvalue)
    return SensitiveAudit(
        name=name, columns=columns, groups=summaries, cells=cells, base_rate_gap=float(gap),
        base_rate_ratio=None if ratio is None else float(ratio), chi2_pvalue=pvalue,
        missing_rows=int((groups.astype(str) == MISSING_GROUP).sum()),
    )


def with_inferred_base_rates(audit: SensitiveAudit, split: Split, settings: MembershipSettings, seed: int) -> SensitiveAudit:
    """``audit`` with, when some rows have no value, the inference report and base rates over all rows
    (each missing row counted towards each group with its inferred probability)."""
    if not audit.missing_rows:
        return audit
    report, inferred = infer_membership(split.X, split.groups[audit.name], split.y, settings, seed)
    if inferred is None:
        return audit.model_copy(update={"membership": report})
    names, weights, (y,) = inferred.expanded(split.groups[audit.name].to_numpy(), split.y.to_numpy())
    frame = pd.DataFrame({"weight": weights, "positive": weights * y}).groupby(names).sum()
    rates = (frame["positive"] / frame["weight"]).round(4)
    return audit.model_copy(update={"membership": report, "base_rates_all_rows": {str(g): float(r) for g, r in rates.items()},
                                    "base_rate_gap_all_rows": float(rates.max() - rates.min())})


def _intersection(spec: DatasetSpec, split: Split) -> pd.Series:
    return cell_labels(split.groups, [s.name for s in spec.sensitive])


def _representation_findings(audit: SensitiveAudit, spec: DatasetSpec, what: str) -> list[Finding]:
    settings = spec.audit
    findings = []
    small = audit.small_cells
    if small:
        listed = [f"{c.group} & label={c.label} ({c.rows} rows)" for c in sorted(small, key=lambda c: c.rows)]
        findings.append(Finding(
            severity="warn", check="small-cells", column=", ".join(audit.columns), value=small[0].group,
            message=(f"{what}: {len(small)} of {len(audit.cells)} group x label cells have fewer than "
                     f"{settings.min_cell_rows} rows (audit.min_cell_rows), too small to judge: {shortlist(listed)}"),
        ))
    return findings


def _sensitive_findings(audit: SensitiveAudit, spec: DatasetSpec) -> list[Finding]:
    settings = spec.audit
    sensitive = spec.sensitive_named(audit.name)
    findings = _representation_findings(audit, spec, f"sensitive '{audit.name}'")
    if audit.missing_rows:
        inferred = audit.membership
        if inferred is not None and inferred.inferred:
            rates = ", ".join(f"{g} {r:.3f}" for g, r in audit.base_rates_all_rows.items())
            known = [g.base_rate for g in audit.groups if g.group != MISSING_GROUP]
            over_all = (f"; groups inferred from the other features and the label for auditing (held-out AUC "
                        f"{inferred.auc:.3f}, Brier {inferred.brier:.3f}, ECE {inferred.ece:.3f}): base rates over all rows "
                        f"{rates}, gap {audit.base_rate_gap_all_rows:.3f} (known rows only: {max(known) - min(known):.3f})")
        else:
            over_all = f"; {inferred.reason}: base rates are over the known rows only" if inferred is not None else ""
        findings.append(Finding(
            severity="warn", check="missing-sensitive", column=sensitive.column, value=MISSING_GROUP,
            message=(f"sensitive '{audit.name}' (column '{sensitive.column}'): {audit.missing_rows} row(s) have no value; "
                     f"kept as the explicit group '{MISSING_GROUP}' (spec: missing: group){over_all}"),
        ))
    if sensitive.use_as_feature:
        findings.append(Finding(
            severity="info", check="sensitive-as-feature", column=sensitive.column, value=audit.name,
            message=(f"sensitive '{audit.name}' (column '{sensitive.column}') is also a model feature "
                     "(use_as_feature: true): predictions may depend on it directly"),
        ))
    return findings + _base_rate_findings(audit, settings, f"sensitive '{audit.name}'", sensitive.column)


def _base_rate_findings(audit: SensitiveAudit, settings: AuditSpec, what: str, column: str,
                        shown: Callable[[str], str] = str) -> list[Finding]:
    """Gap, ratio and four-fifths findings of one breakdown (a sensitive feature or a declared
    intersection), judged groups only; ``shown`` writes a group's name for the message."""
    findings = []
    judged = [g for g in audit.groups if g.judged]
    significant = audit.chi2_pvalue is not None and audit.chi2_pvalue < SIGNIFICANCE
    if len(judged) >= 2 and significant:
        high, low = max(judged, key=lambda g: g.base_rate), min(judged, key=lambda g: g.base_rate)
        rates = (f"{shown(low.group)} vs {shown(high.group)} base rates {low.base_rate:.3f} vs {high.base_rate:.3f} "
                 f"(ratio {'n/a' if audit.base_rate_ratio is None else f'{audit.base_rate_ratio:.3f}'}); chi-square p "
                 f"{pvalue_text(audit.chi2_pvalue)}")
        gap_warns = settings.base_rate_gap_warn is not None and audit.base_rate_gap >= settings.base_rate_gap_warn
        ratio_warns = (settings.base_rate_ratio_warn is not None and audit.base_rate_ratio is not None
                       and audit.base_rate_ratio < settings.base_rate_ratio_warn)
        if gap_warns:
            findings.append(Finding(
                severity="warn", check="base-rate-gap", column=column, value=low.group,
                message=(f"{what}: positive-label rate differs by {audit.base_rate_gap:.3f} between groups "
                         f"({rates}; audit.base_rate_gap_warn = {settings.base_rate_gap_warn})"),
            ))
        elif ratio_warns:  # a small gap between small rates can still be a several-fold difference
            findings.append(Finding(
                severity="warn", check="base-rate-ratio", column=column, value=low.group,
                message=(f"{what}: {shown(low.group)}'s positive-label rate is {audit.base_rate_ratio:.3f} times "
                         f"{shown(high.group)}'s ({rates}; audit.base_rate_ratio_warn = {settings.base_rate_ratio_warn}), "
                         f"although they differ by only {audit.base_rate_gap:.3f}"),
            ))
    floor = settings.rate_floor
    extreme = [g for g in judged if g.base_rate < floor or g.base_rate > 1 - floor]
    if len(judged) >= 2 and extreme:
        listed = [f"{shown(g.group)} {g.base_rate:.3f}" for g in extreme]
        complement = _complement_ratio(judged)
        findings.append(Finding(
            severity="warn", check="four-fifths-meaningless", column=column, value=extreme[0].group,
            message=(f"{what}: positive-label rates near 0 or 1 ({shortlist(listed)}; audit.rate_floor = {floor}) "
                     "make a four-fifths (ratio) rule meaningless: near 0 any small difference is a large ratio, near 1 "
                     f"any ratio passes; the ratio of negative-label rates is {'n/a' if complement is None else f'{complement:.3f}'}. "
                     "Judge differences (and their intervals), not ratios, for this feature"),
        ))
    return findings


def _cell_values(cell: str) -> str:
    """'sex=F & race=B' -> '(F, B)': a cell of a declared intersection, by its groups."""
    return "(" + ", ".join(part.partition("=")[2] or part for part in cell.split(CELL_JOINER)) + ")"


def _intersection_findings(audit: SensitiveAudit, spec: DatasetSpec, small_cells_reported: bool) -> list[Finding]:
    """Findings of a declared intersection, like a sensitive feature's (its small cells only when
    the intersection of every sensitive feature has not reported the same cells already)."""
    what = f"intersection {audit.name} ({', '.join(intersection_parts(audit.name))})"
    findings = [] if small_cells_reported else _representation_findings(audit, spec, what)
    return findings + _base_rate_findings(audit, spec.audit, what, ", ".join(audit.columns), _cell_values)


def _complement_ratio(groups: list[GroupSummary]) -> float | None:
    """Lowest / highest negative-label rate: what a ratio rule sees when positive rates are near 1."""
    negatives = [1 - g.base_rate for g in groups]
    return None if max(negatives) == 0 else min(negatives) / max(negatives)


def audit_groups(
    spec: DatasetSpec, split: Split, membership: MembershipSettings
) -> tuple[list[SensitiveAudit], SensitiveAudit | None, list[SensitiveAudit], list[Finding]]:
    """The breakdown of each sensitive feature, of all of them together (two or more), of each declared
    intersection, and their findings in that order."""
    breakdowns = [
        with_inferred_base_rates(
            group_audit(s.name, [s.column], split.groups[s.name], split.y, spec.audit.min_cell_rows), split,
            membership, spec.split.seed)
        for s in spec.sensitive
    ]
    intersection = None
    if len(spec.sensitive) >= 2:
        title = " x ".join(s.name for s in spec.sensitive)
        intersection = group_audit(title, [s.column for s in spec.sensitive], _intersection(spec, split), split.y,
                                   spec.audit.min_cell_rows)
    # declared intersections are sensitive features of their own ('sex:race'): their cells get base-rate findings
    declared = [group_audit(name, [s.column for s in spec.grouping(name)], split.groups[name], split.y,
                            spec.audit.min_cell_rows) for name in spec.intersection_names]
    findings: list[Finding] = []
    for breakdown in breakdowns:
        findings += _sensitive_findings(breakdown, spec)
    if intersection is not None:
        findings += _representation_findings(intersection, spec, f"intersection {intersection.name}")
    every_feature = {s.name for s in spec.sensitive}
    for breakdown in declared:
        same_cells = intersection is not None and set(intersection_parts(breakdown.name)) == every_feature
        findings += _intersection_findings(breakdown, spec, small_cells_reported=same_cells)
    return breakdowns, intersection, declared, findings
