"""Gate policies (``policies/*.yaml``): thresholds a candidate must meet, and who may approve it."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from fairloop.data.groups import RATE_LABELS, GroupFloors, is_intersection
from fairloop.data.membership import MembershipSettings
from fairloop.data.spec import SpecModel, VersionedSpec, load_spec
from fairloop.gates.decidability import sample_size_answer
from fairloop.gates.evaluate import Evaluation
from fairloop.gates.metrics import GATES, METRIC_BY_NAME, Gate
from fairloop.person_names import name_problem


def _threshold(gate: Gate):
    """The ``thresholds:`` field of one gate of the metric table."""
    unset_left_out = {} if gate.hashed_when_unset else {"exclude_if": lambda value: value is None}
    return (float | None, Field(None, ge=gate.bounds[0], le=gate.bounds[1], description=gate.description, **unset_left_out))


# One optional field per gate of the metric table (fairloop.gates.metrics): an unknown threshold
# is an error naming the file and the field.
Thresholds = create_model(
    "Thresholds", __base__=SpecModel, __module__=__name__, **{name: _threshold(gate) for name, (_, gate) in GATES.items()}
)


class ApprovalRules(SpecModel):
    timeout_seconds: int = Field(7 * 24 * 3600, gt=0, description="a paused run not reviewed by then expires")
    reviewers: list[str] = Field([], description="who may approve; empty means any named reviewer")

    @field_validator("reviewers")
    @classmethod
    def _nameable(cls, reviewers: list[str]) -> list[str]:
        problems = [f"entry {position} {name!r}: {problem}" for position, name in enumerate(reviewers)
                    if (problem := name_problem(name))]
        if problems:
            raise ValueError("; ".join(problems) + " (such an entry matches nobody: a run would wait for a reviewer "
                             "who cannot exist)")
        return reviewers


class MonitoringSchedule(SpecModel):
    """Cron schedules of the served deployments (``fairloop serve``); None: no schedule."""

    monitor_cron: str | None = Field("0 6 * * *", description="when the monitor checks the production feed")
    remediation_cron: str | None = Field(None, description="periodic remediation reruns (requested_by 'schedule')")


class RerunSweep(SpecModel):
    sweep: str = Field(description="sweep file (constraints/sweeps/*.yaml) a triggered or scheduled rerun runs")


# Outcomes after which further alerts start no rerun for ``rerun_cooldown_minutes``. A rerun that
# failed, crashed, expired or was refused its input did not decide anything: the next alert retries.
COOLDOWN_OUTCOMES = ("Promoted", "Rejected", "GateFailed", "AuditBlocked")


class RerunSettings(SpecModel):
    """What a drift-triggered or scheduled rerun remediates with, and what it is trained and judged on.

    A rerun started by an alert splits the alerting window's rows (``fairloop.monitor.drifted``): it trains
    on ``1 - held_out_share`` of them and is judged on the rest with the metrics that alerted, so
    approving it is a decision about the data that alerted, not about the old test split.
    The legacy spellings ``rerun: champion`` and ``rerun: {sweep: FILE}`` mean ``remediate_with``.
    """

    remediate_with: Literal["champion"] | RerunSweep = Field(
        "champion", description="the champion's recorded recipe and template, or {sweep: FILE}")
    held_out_share: float = Field(
        0.5, gt=0, lt=1, description="share of the alerting window's rows held out (stratified by group x label) to judge "
        "the rerun on; the rest join its training rows")
    weighting: Literal["density_ratio", "none"] = Field(
        "density_ratio", description="density_ratio: the training rows (old and drifted) are redrawn with importance "
        "weights towards the drifted distribution, P(drifted | row) from a classifier of old vs drifted rows over "
        "features, group and label; none: drifted rows are appended as they are")
    max_weight: float = Field(20.0, gt=1, description="density-ratio weights are clipped here (a few rows must not dominate)")
    undecided: Literal["block", "wait", "review_with_acceptance"] = Field(
        "review_with_acceptance", description="when the held-out drifted rows are too few to tell whether approving "
        "clears the alert: block (GateFailed), wait for the next window (AwaitingData, the incident stays open), or "
        "let a reviewer accept the risk explicitly")
    cooldown_after: list[Literal["Promoted", "Rejected", "GateFailed", "AuditBlocked", "AwaitingData", "Expired"]] = Field(
        list(COOLDOWN_OUTCOMES), description="outcomes of a rerun after which further alerts start no rerun for "
        "rerun_cooldown_minutes; a Failed, Crashed or Refused rerun never silences the incident")

    @model_validator(mode="before")
    @classmethod
    def _legacy_spelling(cls, value):
        if isinstance(value, str) or (isinstance(value, dict) and set(value) == {"sweep"}):
            return {"remediate_with": value}
        return value


class CalendarWindow(SpecModel):
    calendar: Literal["month", "week"] = Field(
        description="month: from the 1st to the end of each month; week: ISO weeks, Monday to Sunday")


class Monitoring(SpecModel):
    """Production monitoring (``fairloop monitor``, ``flows/monitor.py``); every field has a default."""

    window_days: int = Field(30, ge=1, description="length of one production window (tumbling, from window_origin)")
    window_origin: date | None = Field(
        None, description="first day of the tumbling windows (window k covers origin + k * window_days); default: the feed's first day"
    )
    # Omitted from the content hash when absent, so policies written before calendar windows keep their hash.
    window: CalendarWindow | None = Field(
        None, exclude_if=lambda value: value is None,
        description="{calendar: month | week}: calendar windows instead of window_days ones (monthly batches fill whole windows)",
    )
    keep_window_rows: int = Field(
        3, ge=0, description="the latest N checked windows keep their rows on disk (sensitive columns included) for reruns; 0: store none"
    )
    ks_threshold: float = Field(0.20, gt=0, le=1, description="numeric feature: a two-sample KS statistic above this is a breach")
    psi_threshold: float = Field(0.20, gt=0, description="categorical feature and group shares: a PSI above this is a breach")
    max_prediction_rate_gap: float | None = Field(
        None, ge=0, le=1, description="max - min selection rate between groups; default: thresholds.max_demographic_parity_difference"
    )
    max_equalized_odds_difference: float | None = Field(
        None, ge=0, le=1, description="when labels are present; default: thresholds.max_equalized_odds_difference"
    )
    persistence_windows: int = Field(3, ge=1, description="an alert fires when a metric breaches in this many consecutive windows")
    alert_on: list[Literal["persistent", "interval"]] = Field(
        ["persistent", "interval"],
        description="persistent: N consecutive breaches; interval: the metric's confidence interval lies above its threshold",
    )
    false_alert_rate: float = Field(
        0.01, gt=0, lt=1, description="with no drift, the share of windows in which any drift test breaches (split over the tests)"
    )
    min_expected_count: float = Field(
        5.0, gt=0, description="categorical drift: levels expected fewer times in a window are pooled before the chi-square test"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the intervals")
    bootstrap: int = Field(400, ge=50, description="bootstrap draws for PSI intervals and the group rates and gaps (the gates' method)")
    min_group_rows: int = Field(30, ge=2, description="groups with fewer window rows get no per-group drift test")
    missing_sensitive_rate_change: float = Field(
        0.05, gt=0, le=1, description="share of rows with no sensitive value: a change from the reference above this is a breach",
    )
    schedule: MonitoringSchedule = MonitoringSchedule()
    rerun: RerunSettings = Field(
        RerunSettings(), description="what a triggered or scheduled rerun remediates with, trains on and is judged on")
    rerun_cooldown_minutes: int = Field(
        720, ge=0, description="after a rerun of a dataset ends, further alerts start no rerun for this long (one rerun per incident)",
    )

    @model_validator(mode="after")
    def _one_kind_of_window(self) -> Monitoring:
        # both spelled out would leave the reader guessing which one cuts the feed
        if self.window is not None and {"window_days", "window_origin"} & self.model_fields_set:
            raise ValueError(
                f"window: {{calendar: {self.window.calendar}}} and window_days / window_origin exclude each other "
                "(calendar windows start on the 1st of a month or on a Monday); keep one of them"
            )
        return self

    @property
    def period(self) -> int | Literal["month", "week"]:
        """How the monitor cuts a feed into windows (``fairloop.monitor.windows.Period``)."""
        return self.window.calendar if self.window is not None else self.window_days


class CrossfitSettings(SpecModel):
    folds: int = Field(5, ge=2, le=20, description="folds of the training pool (stratified by group x label)")
    auto_below_group_rows: int = Field(
        1000, ge=1, description="evaluation 'auto' cross-fits when a counted group has fewer validation rows"
    )


class BootstrapSettings(SpecModel):
    n_boot: int = Field(300, ge=50, le=5000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0


class Policy(VersionedSpec):
    thresholds: Thresholds
    group_floors: GroupFloors = Field(
        GroupFloors(), description="rows a group needs before it counts in a rate (all rows, positives, negatives)"
    )
    evaluation: Literal["auto", "holdout", "crossfit"] = Field(
        "auto", description="where candidates are selected: a validation split, or out-of-fold over the pool"
    )
    crossfit: CrossfitSettings = CrossfitSettings()
    net_benefit_band: tuple[float, float] = Field((0.1, 0.2), description="probability thresholds for min_net_benefit")
    bootstrap: BootstrapSettings = BootstrapSettings()
    inconclusive: Literal["block", "review_with_acceptance"] = Field(
        "block", description="an interval straddling a threshold blocks, or goes to a reviewer who must accept the risk"
    )
    allow_sensitive_at_predict: bool = Field(
        False, description="may a candidate that needs the sensitive feature at prediction time be chosen"
    )
    approval: ApprovalRules = ApprovalRules()
    # Omitted from the content hash when absent, so existing policies keep their recorded hash.
    monitoring: Monitoring | None = Field(None, exclude_if=lambda value: value is None)
    missing_sensitive: MembershipSettings | None = Field(
        None, exclude_if=lambda value: value is None,
        description="rows with no sensitive value (spec missing: group): infer their groups for the gates, or judge the "
        "known rows only (infer: false, or when the inference is refused); absent: they are the group 'missing'",
    )

    @field_validator("net_benefit_band")
    @classmethod
    def _band_is_an_interval(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0 < band[0] < band[1] < 1:
            raise ValueError(f"needs 0 < low < high < 1 (probability thresholds), got {list(band)}")
        return band

    @model_validator(mode="after")
    def _gates_something(self) -> Policy:
        if not any(value is not None for value in self.thresholds.model_dump().values()):
            raise ValueError("thresholds: no threshold is set, so this policy would pass every candidate; set at least one")
        return self

    @property
    def monitoring_settings(self) -> Monitoring:
        return self.monitoring or Monitoring()


def load_policy(path) -> Policy:
    return load_spec(path, Policy)


SENSITIVE_AT_PREDICT = "allow_sensitive_at_predict"  # the gate a group-aware candidate fails unless the policy allows it

Verdict = Literal["pass", "fail", "inconclusive", "skipped"]


class GateResult(BaseModel):
    gate: str
    metric: str
    value: float | None
    interval: tuple[float, float] | None = None
    threshold: float
    verdict: Verdict
    reason: str
    advice: str | None = None  # for an inconclusive gate: the sample-size answer
    on_inconclusive: Literal["block", "wait", "review_with_acceptance"] | None = Field(
        None, description="this gate's own rule when inconclusive (a rerun's gates on drifted rows); None: the policy's")


class GateReport(BaseModel):
    policy: str
    inconclusive: Literal["block", "review_with_acceptance"] = "block"
    evaluation_mode: str = "holdout"
    results: list[GateResult]

    def _undecided(self, rule: str) -> list[GateResult]:
        return [r for r in self.results if r.verdict == "inconclusive" and (r.on_inconclusive or self.inconclusive) == rule]

    @property
    def blocking(self) -> list[GateResult]:
        return [r for r in self.results if r.verdict == "fail"] + self._undecided("block") + self._undecided("wait")

    @property
    def passed(self) -> bool:
        return not self.blocking

    @property
    def needs_acceptance(self) -> list[GateResult]:
        """Inconclusive gates a reviewer must explicitly accept (policy ``review_with_acceptance``)."""
        return self._undecided("review_with_acceptance")

    @property
    def awaiting_data(self) -> list[GateResult]:
        """Inconclusive gates whose rule is to wait for more rows (a rerun's gates on drifted rows)."""
        return self._undecided("wait")

    @property
    def only_awaiting_data(self) -> bool:
        """Blocked by nothing but gates that wait for more rows: the run ends AwaitingData, not GateFailed."""
        return bool(self.blocking) and all(r.verdict == "inconclusive" and r.on_inconclusive == "wait" for r in self.blocking)

    @property
    def failures(self) -> list[str]:
        return [r.reason for r in self.blocking]

    @property
    def blocked_by(self) -> str:
        """'fails demographic_parity_difference, undecided equalized_odds_difference': what blocks,
        a failed gate told from one whose interval straddles its limit."""
        return ", ".join(f"{'fails' if r.verdict == 'fail' else 'undecided'} {r.metric}" for r in self.blocking)

    @property
    def advice(self) -> list[str]:
        return [r.advice for r in self.results if r.advice]


def verdict_of(value: float, interval: tuple[float, float] | None, threshold: float, upper: bool) -> Verdict:
    """pass / fail when the whole interval (or, without one, the value) is on one side of the
    threshold; inconclusive when the interval straddles it."""
    low, high = interval if interval is not None and interval[0] == interval[0] else (value, value)
    if upper:
        return "pass" if high <= threshold else "fail" if low > threshold else "inconclusive"
    return "pass" if low >= threshold else "fail" if high < threshold else "inconclusive"


def missing_metric_reason(metric: str, evaluation: Evaluation) -> str:
    """Why a between-group metric has no value: which groups the floors left out, and their counts."""
    spec = METRIC_BY_NAME.get(metric)
    rates = spec.rates if spec is not None else ()
    excluded = [e for e in evaluation.excluded_groups if e.rate in rates]
    counted = {rate: [g for g, m in evaluation.by_group.items() if m.get(f"counted_{rate}", 1.0)] for rate in rates}
    short = [rate for rate in rates if len(counted[rate]) < spec.groups_needed]
    if not short:
        if spec is not None and spec.shape == "ratio":
            return "undefined: no counted group has a single positive decision"
        return "no value on these rows"
    parts = [f"{RATE_LABELS[rate]} counts {len(counted[rate])} group(s) {counted[rate]}" for rate in short]
    left_out = "; ".join(f"'{e.group}' ({e.reason})" for e in excluded if e.rate in short)
    needs = "one" if spec.groups_needed == 1 else "two"
    return f"needs {needs} counted group(s): " + ", ".join(parts) + (f"; left out: {left_out}" if left_out else "")


def worst_cells(metric: str, evaluation: Evaluation) -> str:
    """Which counted groups set a between-group metric: the lowest and highest rate (the lowest
    TPR for the min-TPR gate); for EOD the rate with the larger gap. '' when none count."""
    spec = METRIC_BY_NAME[metric]
    spans = []
    for rate in spec.rates:
        counted = {g: m[rate] for g, m in evaluation.by_group.items() if m.get(f"counted_{rate}", 1.0) and m[rate] == m[rate]}
        if counted:
            low, high = min(counted, key=counted.get), max(counted, key=counted.get)
            spans.append((counted[high] - counted[low], rate, low, high, counted))
    if not spans:
        return ""
    _, rate, low, high, counted = max(spans)
    label = RATE_LABELS[rate]
    if spec.shape == "min" or low == high:
        return f"worst cell '{low}' ({label} {counted[low]:.3f})"
    return f"worst cells '{low}' ({label} {counted[low]:.3f}) and '{high}' ({counted[high]:.3f})"


def apply_gates(
    policy: Policy, evaluations: dict[str, Evaluation], *, needs_sensitive_at_predict: bool = False,
    evaluation_mode: str = "holdout", unavailable: dict[str, str] | None = None,
) -> GateReport:
    """Check every threshold the policy sets on ``evaluations['candidate']``; drops are measured
    against ``'baseline'`` or ``'champion'`` (skipped when there is none, with the reason in
    ``unavailable`` if given). An inconclusive gate carries its sample-size answer. A candidate
    that needs the sensitive feature at prediction time fails unless the policy allows it."""
    candidate = evaluations["candidate"]
    unavailable = unavailable or {}
    results = []
    if needs_sensitive_at_predict and not policy.allow_sensitive_at_predict:
        results.append(GateResult(
            gate=SENSITIVE_AT_PREDICT, metric="needs_sensitive_at_predict", value=1.0, threshold=0.0,
            verdict="fail", reason="needs the sensitive feature at prediction time (disparate treatment in many "
            "jurisdictions); the policy does not allow it (allow_sensitive_at_predict: false)",
        ))
    for gate, threshold in policy.thresholds.model_dump().items():
        if threshold is None:
            continue
        spec, rule = GATES[gate]
        metric, comparison, reference = spec.name, rule.comparison, rule.reference
        label = metric
        if comparison == "drop":
            ref = evaluations.get(reference)
            if ref is None:
                why = unavailable.get(reference, f"no current {reference} to compare with")
                results.append(GateResult(gate=gate, metric=metric, value=None, threshold=threshold,
                                          verdict="skipped", reason=f"{gate}: {why}"))
                continue
            value = ref.metrics[metric] - candidate.metrics[metric]
            interval = candidate.intervals.get(f"{metric}_drop_vs_{reference}")
            label, upper = f"{label} drop vs {reference}", True
        else:
            value, interval = candidate.metrics.get(metric, float("nan")), candidate.intervals.get(metric)
            upper = comparison == "max"
        bound = "<=" if upper else ">="
        if value != value:
            results.append(GateResult(
                gate=gate, metric=metric, value=None, threshold=threshold, verdict="inconclusive",
                reason=f"{label}: inconclusive ({bound} {threshold}): {missing_metric_reason(metric, candidate)}",
            ))
            continue
        verdict = verdict_of(value, interval, threshold, upper)
        shown = f"{value:+.4f}" if comparison == "drop" else f"{value:.4f}"
        if interval is not None:
            shown += f" [{interval[0]:.4f}, {interval[1]:.4f}]"
        reason = f"{label} {shown}: {verdict} ({bound} {threshold})"
        if is_intersection(candidate.sensitive) and spec.between_groups:  # name the cells, with simultaneous intervals
            reason += f"; {worst_cells(metric, candidate)} (simultaneous intervals over the counted cells)"
        if spec.between_groups and candidate.missing_sensitive is not None:  # which rows the groups' rates rest on
            reason += f"; {candidate.missing_sensitive.statement()}"
        result = GateResult(gate=gate, metric=metric, value=value, interval=interval, threshold=threshold,
                            verdict=verdict, reason=reason)
        if verdict == "inconclusive":
            result = result.model_copy(update={"advice": sample_size_answer(
                result, label, upper, candidate, policy.bootstrap.confidence, evaluation_mode)})
        results.append(result)
    return GateReport(policy=policy.name, inconclusive=policy.inconclusive, evaluation_mode=evaluation_mode,
                      results=results)
