"""What a human reviewer sees and answers: the report markdown and the Prefect input form."""

from __future__ import annotations

from prefect.input import RunInput

from fairloop.audit import AuditReport
from fairloop.evaluate import Evaluation, metrics_table
from fairloop.policy import GateReport
from fairloop.recipes import AugmentReport


class ReviewDecision(RunInput):
    """The Resume form in the Prefect UI (and what ``fairloop approve/reject`` sends)."""

    approve: bool = False
    reviewer: str  # no default: the UI marks it required
    comment: str = ""
    # Required (with approve) only when the policy sends inconclusive gates to review
    # (inconclusive: review_with_acceptance); the acceptance goes to the audit log, lineage and model card.
    accept_inconclusive_risk: bool = False


def _markdown_table(frame) -> str:
    header = "| metric | " + " | ".join(frame.columns) + " |"
    rule = "|---|" + "---|" * len(frame.columns)
    rows = [f"| {idx} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for idx, row in frame.iterrows()]
    return "\n".join([header, rule, *rows])


def _with_champion_difference(table):
    if "champion" in table.columns:
        table = table.assign(**{"candidate - champion": table["candidate"] - table["champion"]})
    return table


def gate_table(gates: GateReport) -> str:
    # verdict second: the UI dialog is narrow and clips the last column of wide tables
    def cells(r) -> str:
        value = "" if r.value is None else f"{r.value:.4f}"
        interval = "" if r.interval is None else f"[{r.interval[0]:.4f}, {r.interval[1]:.4f}]"
        return f"| {r.gate} | **{r.verdict}** | {value} | {interval} | {r.threshold} |"

    header = ["| gate | verdict | value | 95% interval | threshold |", "|---|---|---|---|---|"]
    return "\n".join([*header, *map(cells, gates.results)])


def group_table(evaluation: Evaluation) -> str:
    rows = [
        f"| {g} | {int(m['count'])} | {m['selection_rate']:.3f} | {m['true_positive_rate']:.3f} | {m['false_positive_rate']:.3f} |"
        for g, m in evaluation.by_group.items()
    ]
    return "\n".join(["| group | rows | selection rate | TPR | FPR |", "|---|---|---|---|---|", *rows])


def render_report(
    *,
    dataset: str,
    sensitive: str,
    candidate_label: str,
    champion_version: str | None,
    recipe_label: str,
    evaluations: dict[str, Evaluation],
    gates: GateReport,
    audit: AuditReport,
    augment: AugmentReport,
    needs_sensitive_at_predict: bool,
    frontier: str,
) -> str:
    """The review report: metrics of baseline vs candidate (and champion), gates, the
    accuracy-fairness frontier (markdown: plot, and the sweep's candidates if any), data changes."""
    parts = [
        f"## fairloop review: {dataset} (sensitive feature: `{sensitive}`)",
        f"**Candidate**: {candidate_label}; **recipe**: {recipe_label}; "
        f"**current champion**: {champion_version or 'none'}",
    ]
    if needs_sensitive_at_predict:
        parts.append(
            "> **Warning**: this candidate uses the sensitive feature at prediction time "
            "(ThresholdOptimizer), which is disparate treatment in many jurisdictions."
        )
    parts += [
        "### Held-out test metrics",
        _markdown_table(_with_champion_difference(metrics_table(evaluations))),
        f"### Gates (policy `{gates.policy}`): {'PASS' if gates.passed else 'BLOCKED'}"
        + ("" if gates.inconclusive == "block" else " (inconclusive gates need the reviewer's explicit acceptance)"),
        f"Evaluation mode: **{gates.evaluation_mode}** (selection rows; the verdict above is on the test split).",
        gate_table(gates),
        *[f"- {advice}" for advice in gates.advice],
        *[f"- Left out of {e.rate.replace('_', ' ')}: group '{e.group}' ({e.reason})"
          for e in evaluations["candidate"].excluded_groups],
        "### Accuracy-fairness frontier",
        frontier,
        "### Selection rate by group (candidate)",
        group_table(evaluations["candidate"]),
        f"### Training data: audit **{audit.verdict}**, augmentation `{augment.kind}`",
        f"Base-rate gap between groups: {audit.base_rate_gap:.3f}; rows {augment.rows_before} -> "
        f"{augment.rows_after} ({augment.synthetic_rows} synthetic, never in validation or test).",
        *[f"- {reason}" for reason in audit.reasons],
    ]
    return "\n\n".join(parts) + "\n"
