"""What a human reviewer sees and answers: the decision packet, its reports and the Prefect input form.

A :class:`ReviewPacket` holds everything the decision rests on (typed models, no markup). It
is rendered three ways from the same derived figures: the Resume dialog's summary (Markdown
made for a ~500 px box: plain-language summary first, narrow tables, a frontier drawn for
that width, links to the wide pages), the full report (Prefect artifact, registry
``report.md``/``report.html``) and the terminal (``fairloop show``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, SecretStr
from prefect.input import RunInput

from fairloop.audit import AuditReport
from fairloop.drifted import DRIFT_GATE_PREFIX, DriftedJudgement
from fairloop.evaluate import METRIC_LABELS, Evaluation, metrics_table, worst_groups_first
from fairloop.groups import is_intersection
from fairloop.lineage import BaseModelSource
from fairloop.policy import GATES, GateReport, GateResult
from fairloop.recipes import AugmentReport
from fairloop.sweep import SweepOutcome
from fairloop.templating import render

PACKET_FILE = "review.json"


class ReviewDecision(RunInput):
    """The Resume form in the Prefect UI (and what ``fairloop approve/reject`` sends)."""

    approve: bool = False
    reviewer: str  # no default: the UI marks it required
    comment: str = ""
    # The reviewer's credential from `fairloop reviewers add`: a password field in the UI, never
    # logged or stored by fairloop (the flow deletes each submitted form once read).
    token: SecretStr = SecretStr("")
    # Required (with approve) only when the policy sends inconclusive gates to review
    # (inconclusive: review_with_acceptance); who accepted which gates, and why, goes to the
    # audit log, lineage and model card.
    accept_inconclusive_risk: bool = False


# -- the decision packet ---------------------------------------------------------------------

# rate -> (short name for narrow tables, what it means)
RATES = {
    "selection_rate": ("selected", "selected"),
    "true_positive_rate": ("TPR", "TPR: qualified selected"),
    "false_positive_rate": ("FPR", "FPR: unqualified selected"),
}


class RateChange(BaseModel):
    """One group's rate under the baseline and the candidate, each with the gates' bootstrap
    interval (none for a group the policy's floors leave out of that rate)."""

    rate: str
    short: str
    label: str
    baseline: float | None
    baseline_interval: tuple[float, float] | None
    candidate: float
    candidate_interval: tuple[float, float] | None


class GroupChange(BaseModel):
    group: str
    rows: int
    positives: int
    counted: bool
    rates: list[RateChange]


class Link(BaseModel):
    label: str
    url: str


class ReviewPacket(BaseModel):
    """Everything a reviewer decides from; stored with the run (``review.json``) for ``fairloop show``."""

    run_id: str | None = None
    run_url: str | None = None
    dataset: str
    sensitive: str
    candidate_name: str
    candidate_label: str
    method: str = "none"  # the template's mitigation method
    recipe_label: str
    champion_version: str | None
    needs_sensitive_at_predict: bool
    evaluations: dict[str, Evaluation]
    gates: GateReport
    confidence: float = 0.95
    audit_verdict: str
    audit_reasons: list[str]
    base_rate_gap: float
    augment: AugmentReport
    sweep: SweepOutcome | None = None
    base_model: BaseModelSource | None = None  # remediate --model: the frozen model every candidate post-processes
    links: list[Link] = []
    credentials_required: bool = False  # reviewers are registered: a review needs its token
    drift: DriftedJudgement | None = None  # a rerun: the alert it answers, and both models on the held-out drifted rows

    # figures derived for every rendering --------------------------------------------------
    def group_changes(self) -> list[GroupChange]:
        baseline = self.evaluations.get("baseline")
        candidate = self.evaluations["candidate"]
        changes = []
        # the cells of an intersection: worst first (there can be dozens); one feature's groups: as sorted
        order = worst_groups_first(candidate) if self.intersectional else list(candidate.by_group)
        for group in order:
            after = candidate.by_group[group]
            before = baseline.by_group.get(group) if baseline else None
            rows = int(after["count"])
            positives = int(after["positives"])
            key = lambda rate: f"{rate}[{group}]"  # noqa: E731 - the bootstrap's per-group interval
            rates = [
                RateChange(
                    rate=rate, short=short, label=label,
                    baseline=None if before is None else before[rate],
                    baseline_interval=None if before is None else baseline.intervals.get(key(rate)),
                    candidate=after[rate], candidate_interval=candidate.intervals.get(key(rate)),
                )
                for rate, (short, label) in RATES.items()
            ]
            changes.append(GroupChange(group=group, rows=rows, positives=positives,
                                       counted=bool(after.get("counted_selection_rate", 1.0)), rates=rates))
        return changes

    @property
    def intersectional(self) -> bool:
        """Gated on the cells of an intersection, with simultaneous intervals."""
        return is_intersection(self.sensitive)

    def gate_rows(self) -> list[dict]:
        return [gate_row(r) for r in self.gates.results]

    def costs(self) -> list[dict]:
        """Accuracy and AUC, baseline (and champion) -> candidate, drops with their intervals."""
        candidate = self.evaluations["candidate"]
        rows = []
        for metric in ("accuracy", "decision_auc", "auc"):
            value = metric_value(candidate, metric)
            if value is None:
                continue
            row = {"metric": COST_LABELS[metric], "candidate": value, "references": []}
            for reference in ("baseline", "champion"):
                ev = self.evaluations.get(reference)
                if ev is not None and metric_value(ev, metric) is not None:
                    row["references"].append({"name": reference, "value": metric_value(ev, metric),
                                              "drop_interval": candidate.intervals.get(f"{metric}_drop_vs_{reference}")})
            rows.append(row)
        return rows

    def excluded_groups(self) -> list:
        return list(getattr(self.evaluations["candidate"], "excluded_groups", None) or [])

    @property
    def advice(self) -> list[str]:
        return list(getattr(self.gates, "advice", None) or [])

    @property
    def evaluation_mode(self) -> str | None:
        return getattr(self.gates, "evaluation_mode", None)

    def headline(self) -> str:
        """The one sentence a reviewer reads first (plain text; templates escape it)."""
        passed = [r for r in self.gates.results if r.verdict == "pass"]
        counted = [r for r in self.gates.results if r.verdict != "skipped"]
        use = (f"needs {self.sensitive} at prediction time" if self.needs_sensitive_at_predict
               else f"is group-blind: it predicts without {self.sensitive}")
        verdict = (f"passes all {len(counted)} gates" if self.gates.passed
                   else f"is BLOCKED by {len(self.gates.blocking)} of {len(counted)} gates")
        sure = f" with its whole {self.confidence:.0%} interval on the passing side" if len(passed) == len(counted) else ""
        return (f"Approving promotes {self.candidate_name} for {self.dataset}. It {verdict} of policy "
                f"'{self.gates.policy}'{sure}, and {use}.")


COST_LABELS = {"accuracy": "accuracy", "decision_auc": "AUC of the decisions", "auc": "AUC of the underlying scorer"}


def metric_value(evaluation: Evaluation, metric: str) -> float | None:
    """A metric of ``evaluation`` if it has it (the scorer's AUC is recorded by newer runs only)."""
    value = evaluation.metrics.get(metric)
    if value is None:
        value = getattr(evaluation, metric, None)
    return None if value is None or value != value else float(value)


def gate_label(result: GateResult) -> str:
    """'DPD <= 0.05', 'accuracy drop vs baseline <= 0.03': what the gate demands, in a few characters."""
    metric, comparison, reference = GATES.get(result.gate, (result.metric, "max", "none"))
    name = METRIC_LABELS.get(metric, metric)
    if result.gate.startswith(DRIFT_GATE_PREFIX):  # a rerun's gate on the held-out rows of the alerting window
        name = f"{name} on drifted rows"
    if comparison == "drop":
        return f"{name} drop vs {reference} ≤ {result.threshold:g}"
    return f"{name} {'≤' if comparison == 'max' else '≥'} {result.threshold:g}"


def gate_row(result: GateResult) -> dict:
    return {"label": gate_label(result), "verdict": result.verdict, "value": result.value,
            "interval": result.interval, "reason": result.reason}


# -- renderings ----------------------------------------------------------------------------------


def render_summary(packet: ReviewPacket, frontier_markdown: str) -> str:
    """The Resume dialog's description: decision summary first, sized for a ~500 px box."""
    from markupsafe import Markup

    return render("review_summary.md.j2", p=packet, frontier=Markup(frontier_markdown))


def render_report(packet: ReviewPacket, frontier_markdown: str, audit: AuditReport | None = None) -> str:
    """The full report (wide page): the summary's figures plus every metric, the frontier with
    its candidates, and the training data's audit and augmentation."""
    from markupsafe import Markup

    table = metrics_table(packet.evaluations)
    if "champion" in table.columns:
        table = table.assign(**{"candidate - champion": table["candidate"] - table["champion"]})
    return render("review_report.md.j2", p=packet, frontier=Markup(frontier_markdown), metrics=table,
                  audit_findings=[f for f in (audit.findings if audit else []) if f.severity != "info"])


def save_packet(packet: ReviewPacket, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / PACKET_FILE
    path.write_text(packet.model_dump_json(indent=1), encoding="utf-8")
    return path


def load_packet(run_dir: Path) -> ReviewPacket | None:
    path = run_dir / PACKET_FILE
    return ReviewPacket.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None
