"""Gate policies (``policies/*.yaml``): thresholds a candidate must meet, and who may approve it."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from fairloop.evaluate import Evaluation
from fairloop.specfile import SpecModel, VersionedSpec, load_spec


class Thresholds(SpecModel):
    max_demographic_parity_difference: float | None = Field(None, ge=0, le=1)
    max_equalized_odds_difference: float | None = Field(None, ge=0, le=1)
    min_disparate_impact_ratio: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop_vs_baseline: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop_vs_champion: float | None = Field(None, ge=0, le=1)
    max_auc_drop_vs_baseline: float | None = Field(None, ge=0, le=1)
    max_auc_drop_vs_champion: float | None = Field(None, ge=0, le=1)
    min_group_true_positive_rate: float | None = Field(None, ge=0, le=1)
    min_net_benefit: float | None = Field(None, ge=-1, le=1, description="over net_benefit_band; 0 = never worse than acting on nobody")


class ApprovalRules(SpecModel):
    timeout_seconds: int = Field(7 * 24 * 3600, gt=0, description="a paused run not reviewed by then expires")
    reviewers: list[str] = Field([], description="who may approve; empty means any named reviewer")


class MonitoringSchedule(SpecModel):
    """Cron schedules of the served deployments (``fairloop serve``); None: no schedule."""

    monitor_cron: str | None = Field("0 6 * * *", description="when the monitor checks the production feed")
    remediation_cron: str | None = Field(None, description="periodic remediation reruns (requested_by 'schedule')")


class RerunSweep(SpecModel):
    sweep: str = Field(description="sweep file (constraints/sweeps/*.yaml) a triggered or scheduled rerun runs")


class Monitoring(SpecModel):
    """Production monitoring (``fairloop monitor``, ``flows/monitor.py``); every field has a default."""

    window_days: int = Field(30, ge=1, description="length of one production window")
    window_origin: date | None = Field(
        None, description="first day of the tumbling windows (window k covers origin + k * window_days); default: the feed's first day"
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
    schedule: MonitoringSchedule = MonitoringSchedule()
    rerun: Literal["champion"] | RerunSweep = Field(
        "champion", description="what a triggered or scheduled rerun remediates with: the champion's recorded recipe and "
        "template, or {sweep: FILE}",
    )
    rerun_cooldown_minutes: int = Field(
        720, ge=0, description="after a rerun of a dataset ends, further alerts start no rerun for this long (one rerun per incident)",
    )


class BootstrapSettings(SpecModel):
    n_boot: int = Field(300, ge=50, le=5000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0


class Policy(VersionedSpec):
    thresholds: Thresholds
    min_group_size: int = Field(0, ge=0, description="groups with fewer test rows do not count in group fairness metrics")
    net_benefit_band: tuple[float, float] = Field((0.1, 0.2), description="probability thresholds for min_net_benefit")
    bootstrap: BootstrapSettings = BootstrapSettings()
    inconclusive_blocks: bool = Field(True, description="an interval straddling a threshold blocks promotion")
    approval: ApprovalRules = ApprovalRules()
    # Omitted from the content hash when absent, so existing policies keep their recorded hash.
    monitoring: Monitoring | None = Field(None, exclude_if=lambda value: value is None)

    @property
    def monitoring_settings(self) -> Monitoring:
        return self.monitoring or Monitoring()


def load_policy(path) -> Policy:
    return load_spec(path, Policy)


# threshold field -> (metric, comparison, reference model)
GATES: dict[str, tuple[str, Literal["max", "min", "drop"], Literal["none", "baseline", "champion"]]] = {
    "max_demographic_parity_difference": ("demographic_parity_difference", "max", "none"),
    "max_equalized_odds_difference": ("equalized_odds_difference", "max", "none"),
    "min_disparate_impact_ratio": ("disparate_impact_ratio", "min", "none"),
    "max_accuracy_drop_vs_baseline": ("accuracy", "drop", "baseline"),
    "max_accuracy_drop_vs_champion": ("accuracy", "drop", "champion"),
    "max_auc_drop_vs_baseline": ("auc", "drop", "baseline"),
    "max_auc_drop_vs_champion": ("auc", "drop", "champion"),
    "min_group_true_positive_rate": ("min_group_true_positive_rate", "min", "none"),
    "min_net_benefit": ("net_benefit_min", "min", "none"),
}


Verdict = Literal["pass", "fail", "inconclusive", "skipped"]


class GateResult(BaseModel):
    gate: str
    metric: str
    value: float | None
    interval: tuple[float, float] | None = None
    threshold: float
    verdict: Verdict
    reason: str


class GateReport(BaseModel):
    policy: str
    inconclusive_blocks: bool = True
    results: list[GateResult]

    @property
    def blocking(self) -> list[GateResult]:
        stops = {"fail", "inconclusive"} if self.inconclusive_blocks else {"fail"}
        return [r for r in self.results if r.verdict in stops]

    @property
    def passed(self) -> bool:
        return not self.blocking

    @property
    def failures(self) -> list[str]:
        return [r.reason for r in self.blocking]


def _verdict(value: float, interval: tuple[float, float] | None, threshold: float, upper: bool) -> Verdict:
    """pass / fail when the whole interval (or, without one, the value) is on one side of the
    threshold; inconclusive when the interval straddles it or there is no value (NaN)."""
    if value != value:
        return "inconclusive"
    low, high = interval if interval is not None else (value, value)
    if upper:
        return "pass" if high <= threshold else "fail" if low > threshold else "inconclusive"
    return "pass" if low >= threshold else "fail" if high < threshold else "inconclusive"


def apply_gates(policy: Policy, evaluations: dict[str, Evaluation]) -> GateReport:
    """Check every threshold the policy sets on ``evaluations['candidate']``; drops are measured
    against ``'baseline'`` or ``'champion'`` (skipped when there is none)."""
    candidate = evaluations["candidate"]
    results = []
    for gate, threshold in policy.thresholds.model_dump().items():
        if threshold is None:
            continue
        metric, comparison, reference = GATES[gate]
        if comparison == "drop":
            ref = evaluations.get(reference)
            if ref is None:
                results.append(GateResult(gate=gate, metric=metric, value=None, threshold=threshold,
                                          verdict="skipped", reason=f"{gate}: no current {reference} to compare with"))
                continue
            value = ref.metrics[metric] - candidate.metrics[metric]
            interval = candidate.intervals.get(f"{metric}_drop_vs_{reference}")
            label, upper = f"{metric} drop vs {reference}", True
        else:
            value, interval = candidate.metrics[metric], candidate.intervals.get(metric)
            label, upper = metric, comparison == "max"
        verdict = _verdict(value, interval, threshold, upper)
        shown = f"{value:+.4f}" if comparison == "drop" else f"{value:.4f}"
        if interval is not None:
            shown += f" [{interval[0]:.4f}, {interval[1]:.4f}]"
        bound = "<=" if upper else ">="
        results.append(GateResult(gate=gate, metric=metric, value=value, interval=interval, threshold=threshold,
                                  verdict=verdict, reason=f"{label} {shown}: {verdict} ({bound} {threshold})"))
    return GateReport(policy=policy.name, inconclusive_blocks=policy.inconclusive_blocks, results=results)
