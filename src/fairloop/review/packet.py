"""What a human reviewer sees and answers: the decision packet, its reports and the Prefect input form.

A :class:`ReviewPacket` holds everything the decision rests on (typed models, no markup). It
is rendered three ways from the same derived figures: the Resume dialog's summary (Markdown
made for a ~500 px box: plain-language summary first, narrow tables, a frontier drawn for
that width, links to the wide pages), the full report (Prefect artifact, registry
``report.md``/``report.html``) and the terminal (``fairloop show``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from markupsafe import Markup
from prefect.input import RunInput
from pydantic import BaseModel, SecretStr

from fairloop.audit.record import AuditReport, ProxyScore
from fairloop.data.groups import is_intersection
from fairloop.gates.evaluate import (
    Evaluation,
    GroupShift,
    metrics_table,
    worst_groups_first,
)
from fairloop.gates.metrics import GATES, metric_label
from fairloop.gates.policy import SENSITIVE_AT_PREDICT, GateReport, GateResult
from fairloop.monitor.drifted import DRIFT_GATE_PREFIX, DriftedJudgement
from fairloop.remedy.frozen import BaseModelSource
from fairloop.remedy.recipes import AugmentReport
from fairloop.remedy.sweep.results import CandidateResult, SweepOutcome
from fairloop.review.intersections import IntersectionView, intersection_view
from fairloop.review.worsening import (
    NOTABLE,
    RATE_WORDS,
    CalibrationChange,
    Worsening,
    calibration_change,
    metric_value,
    miscalibration,
    reversal,
    worsened_metrics,
)
from fairloop.templating import render

PACKET_FILE = "review.json"
RecordT = TypeVar("RecordT", bound=BaseModel)


class ReviewDecision(RunInput):
    """The Resume form in the Prefect UI (and what ``fairloop approve/reject`` sends)."""

    # A choice with no default: the UI renders a required select with nothing chosen, so a
    # Submit with untouched fields cannot reject (as a switch left off did) or approve.
    decision: Literal["approve", "reject"]
    reviewer: str  # no default: the UI marks it required
    comment: str = ""
    # The reviewer's credential from `fairloop reviewers add`: a password field in the UI, never
    # logged or stored by fairloop (the flow deletes each submitted form once read).
    token: SecretStr = SecretStr("")
    # Required (with approve) only when the policy sends inconclusive gates to review
    # (inconclusive: review_with_acceptance); who accepted which gates, and why, goes to the
    # audit log, lineage and model card.
    accept_inconclusive_risk: bool = False

    @property
    def approve(self) -> bool:
        return self.decision == "approve"


class CredentialedReviewDecision(ReviewDecision):
    """The form while reviewers are registered: no review is valid without a token, so the UI
    marks it required instead of "(Optional)"."""

    token: SecretStr


def review_form(packet: ReviewPacket, frontier_markdown: str, credentials_required: bool,
                refusal: str | None = None) -> type[ReviewDecision]:
    """The form of one attempt at a review, with the dialog's description. Whether a token is
    required is decided for each attempt (reviewers registered while the run waits count)."""
    form = CredentialedReviewDecision if credentials_required else ReviewDecision
    shown = packet.model_copy(update={"credentials_required": credentials_required})
    return form.with_initial_data(description=render_summary(shown, frontier_markdown, refusal))


def form_input(answer: dict) -> dict:
    """``answer`` as the Resume form sends it: a caller's ``approve`` (True/False, as
    ``fairloop approve/reject`` put it) becomes the form's ``decision``."""
    if "approve" not in answer:
        return answer
    rest = {k: v for k, v in answer.items() if k != "approve"}
    return {**rest, "decision": "approve" if answer["approve"] else "reject"}


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
    calibration: CalibrationChange


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
    requested_by: str | None = None
    requester_verified: bool = False
    proxies: list[ProxyScore] = []  # the audit's flagged proxies of the sensitive feature, strongest first
    drift: DriftedJudgement | None = None  # a rerun: the alert it answers, and both models on the held-out drifted rows
    review_timeout_seconds: int | None = None  # how long the review may take before the run expires
    candidate_sha256: str | None = None  # of the candidate's registry bytes: what is promoted is what was reviewed
    # the spec's declared intersections the run does not gate on ('sex:race' while gating on 'sex'):
    # baseline and candidate on their cells, shown so a disparity between cells is never hidden
    intersections: dict[str, dict[str, Evaluation]] = {}

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
                                       counted=bool(after.get("counted_selection_rate", 1.0)), rates=rates,
                                       calibration=calibration_change(group, baseline, candidate)))
        return changes

    def intersection_views(self) -> list[IntersectionView]:
        """The declared intersections the run does not gate on, baseline against candidate."""
        return [intersection_view(name, evaluations) for name, evaluations in self.intersections.items()]

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

    def shifts(self) -> list[GroupShift]:
        """Per group, the people whose decision the candidate changes against the baseline, the
        groups with most changes first (an intersection may have dozens of cells)."""
        return sorted(self.evaluations["candidate"].shifts.get("baseline", []),
                      key=lambda s: -(s.newly_selected + s.newly_rejected))

    @property
    def decides_as_champion(self) -> bool:
        """The current champion makes the same decision on every test row (a rerun that chose what
        is already deployed)."""
        against = self.evaluations["candidate"].shifts.get("champion")
        return bool(against) and not any(s.newly_selected or s.newly_rejected for s in against)

    def who_gains_and_loses(self) -> tuple[str, list[str]]:
        """The decision in people, plain text: the totals, and one line per group whose decisions
        change (at most SHIFT_LINES, the rest summed up). ('', []) for a run recorded without them."""
        shifts = self.shifts()
        if not shifts:
            return "", []
        rows = sum(s.rows for s in shifts)
        before, after = sum(s.selected_before for s in shifts), sum(s.selected_after for s in shifts)
        total = f"vs the baseline, {rows:,} test rows; selected {before:,} → {after:,}"
        changed = [s for s in shifts if s.newly_selected or s.newly_rejected]
        lines = []
        for s in changed[:SHIFT_LINES]:
            parts = [f"{s.newly_rejected:,} lose selection ({s.newly_rejected_qualified:,} qualified)" if s.newly_rejected else "",
                     f"{s.newly_selected:,} gain it ({s.newly_selected_qualified:,} qualified)" if s.newly_selected else ""]
            lines.append(f"{s.group} ({s.rows:,}): {', '.join(p for p in parts if p)}")
        rest = changed[SHIFT_LINES:]
        if rest:
            lines.append(f"{len(rest)} more group{'s' if len(rest) > 1 else ''}: {sum(s.newly_rejected for s in rest):,} lose selection, "
                         f"{sum(s.newly_selected for s in rest):,} gain it")
        if not changed:
            lines.append("no one's decision changes")
        return total, lines

    def worsening(self) -> list[Worsening]:
        """Every fairness figure notably worse than the baseline's, gated or not: a between-group
        metric, a reversal of which group the TPR or FPR favours, groups whose predictions stray
        further from their observed rate (calibration by group), and the between-cell metrics of
        each declared intersection the run does not gate on."""
        baseline = self.evaluations.get("baseline")
        if baseline is None:
            return []
        candidate = self.evaluations["candidate"]
        gated = {r.metric for r in self.gates.results if r.verdict != "skipped"}
        found = worsened_metrics(baseline, candidate, gated)
        found += [w for w in (reversal(baseline, candidate, rate) for rate in RATE_WORDS) if w]
        calibration = miscalibration(baseline, candidate)
        found += [calibration] if calibration else []
        for name, cells in self.intersections.items():
            if "baseline" in cells:
                found += worsened_metrics(cells["baseline"], cells["candidate"], set(), over=name)
        return found

    def why_this_candidate(self) -> tuple[str, list[str]]:
        """A sweep's selection rule in one sentence, and what each of the two candidates nearest
        in accuracy would change instead. ('', []) without a sweep."""
        sweep = self.sweep
        if sweep is None or sweep.chosen is None:
            return "", []
        chosen = sweep.result(sweep.chosen)
        passing = [c for c in sweep.candidates if c.passed]
        rule = (f"Chosen as the most accurate on the {sweep.selection_rows} of the {len(passing)} of "
                f"{len(sweep.candidates)} candidates that pass policy '{sweep.policy}'.")
        nearest = sorted((c for c in sweep.candidates if c.name != chosen.name),
                         key=lambda c: abs(c.validation["accuracy"] - chosen.validation["accuracy"]))[:2]
        return rule, [f"{c.name}: {alternative(c, chosen, self.sensitive)}" for c in nearest]

    @property
    def notable_change(self) -> float:
        return NOTABLE

    def gate_summary(self) -> str:
        """The gates in one line: how many pass (surely: their whole interval on the passing side),
        and each one that does not, with its limit, value and interval."""
        counted = [r for r in self.gates.results if r.verdict != "skipped"]
        if all(r.verdict == "pass" for r in counted):
            return f"Gates: all {len(counted)} pass, whole {self.confidence:.0%} intervals"
        undecided = "; ".join(f"{r.verdict}: {gate_label(r)}, measured {_figure(r.value)}"
                              + (f" [{_figure(r.interval[0])}, {_figure(r.interval[1])}]" if r.interval else "")
                              for r in counted if r.verdict != "pass")
        passing = sum(r.verdict == "pass" for r in counted)
        return f"Gates: {undecided}; {passing} of {len(counted)} pass"

    def headline(self) -> str:
        """The one sentence a reviewer reads first (plain text; templates escape it)."""
        counted = [r for r in self.gates.results if r.verdict != "skipped"]
        if self.needs_sensitive_at_predict:
            use = f"needs {self.sensitive} at prediction time"
        elif self.proxies:  # "blind" is qualified where it is claimed
            use = f"is group-blind, though {self.proxies[0].feature} alone predicts {self.sensitive} (AUC {self.proxies[0].auc:.2f})"
        else:
            use = f"is group-blind: it predicts without {self.sensitive}"
        accept = len(self.gates.needs_acceptance)
        if not self.gates.passed:
            verdict = f"is BLOCKED by {len(self.gates.blocking)} of {len(counted)} gates"
        elif accept:  # undecided gates the policy lets through only with the reviewer's acceptance
            verdict = (f"passes {len(counted) - accept} of {len(counted)} gates; {accept} "
                       f"{'is' if accept == 1 else 'are'} undecided, a risk approving must accept")
        else:
            verdict = f"passes all {len(counted)} gates"
        # how surely each gate passes is the gate line's (gate_summary): the first screen is small
        same = (f" It decides every test row as the current champion ({self.champion_version}) does."
                if self.decides_as_champion else "")
        return (f"Approving promotes {self.candidate_name} for {self.dataset}. It {verdict} of policy "
                f"'{self.gates.policy}', and {use}.{same}")


SHIFT_LINES = 4  # groups named one by one in the dialog's first screen


def _figure(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3g}"


def alternative(other: CandidateResult, chosen: CandidateResult, sensitive: str) -> str:
    """What choosing ``other`` instead would change: its accuracy on the selection rows, and why
    the policy passed it over (each blocking gate: fails, or undecided) or, if it passes too,
    its test gaps beside the chosen one's."""
    accuracy = f"{100 * (other.validation['accuracy'] - chosen.validation['accuracy']):+.1f} pp accuracy"
    if other.passed:
        gaps = ", ".join(f"{metric_label(m)} {other.test[m]:.3f} vs {chosen.test[m]:.3f}"
                         for m in ("demographic_parity_difference", "equalized_odds_difference") if m in other.test)
        return f"{accuracy}, passes too; test {gaps}"
    why = [f"needs {sensitive} to predict" if g.gate == SENSITIVE_AT_PREDICT
           else f"{'fails' if g.verdict == 'fail' else 'undecided on'} {gate_label(g)} ({_figure(g.value)})"
           for g in other.gates.blocking]
    return f"{accuracy}, but {'; '.join(why)}"


COST_LABELS = {"accuracy": "accuracy", "decision_auc": "AUC of the decisions", "auc": "AUC of the underlying scorer"}


def gate_label(result: GateResult) -> str:
    """'DPD <= 0.05', 'accuracy drop vs baseline <= 0.03': what the gate demands, in a few characters."""
    metric, comparison, reference = result.metric, "max", "none"
    if result.gate in GATES:
        metric, rule = GATES[result.gate][0].name, GATES[result.gate][1]
        comparison, reference = rule.comparison, rule.reference
    name = metric_label(metric)
    if result.gate.startswith(DRIFT_GATE_PREFIX):  # a rerun's gate on the held-out rows of the alerting window
        name = f"{name} on drifted rows"
    if comparison == "drop":
        return f"{name} drop vs {reference} ≤ {result.threshold:g}"
    return f"{name} {'≤' if comparison == 'max' else '≥'} {result.threshold:g}"


def gate_row(result: GateResult) -> dict:
    return {"label": gate_label(result), "verdict": result.verdict, "value": result.value,
            "interval": result.interval, "reason": result.reason}


# -- renderings ----------------------------------------------------------------------------------


def render_summary(packet: ReviewPacket, frontier_markdown: str, refusal: str | None = None) -> str:
    """The Resume dialog's description: decision summary first, sized for a ~500 px box; a
    ``refusal`` of the previous attempt at the very top, where the reopened dialog shows it."""

    return render("review_summary.md.j2", p=packet, frontier=Markup(frontier_markdown), refusal=refusal)


def render_report(packet: ReviewPacket, frontier_markdown: str, audit: AuditReport | None = None) -> str:
    """The full report (wide page): the summary's figures plus every metric, the frontier with
    its candidates, and the training data's audit and augmentation."""

    table = metrics_table(packet.evaluations)
    if "champion" in table.columns:
        table = table.assign(**{"candidate - champion": table["candidate"] - table["champion"]})
    return render("review_report.md.j2", p=packet, frontier=Markup(frontier_markdown), metrics=table,
                  audit_findings=[f for f in (audit.findings if audit else []) if f.severity != "info"])


def write_record(record: BaseModel, path: Path) -> Path:
    """``record`` as JSON through Python's json, not pydantic's: a metric can be NaN (fewer than two
    counted groups, one label on the rows), which pydantic writes as null and then refuses to read
    back as a float; Python's json writes NaN and reads it back (:func:`read_record`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.model_dump(mode="json"), indent=1), encoding="utf-8")
    return path


def read_record(model: type[RecordT], path: Path) -> RecordT | None:
    """What :func:`write_record` wrote at ``path`` (or pydantic's JSON), None when there is nothing."""
    return model.model_validate(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def save_packet(packet: ReviewPacket, run_dir: Path) -> Path:
    return write_record(packet, run_dir / PACKET_FILE)


def load_packet(run_dir: Path) -> ReviewPacket | None:
    return read_record(ReviewPacket, run_dir / PACKET_FILE)
