"""The typed records of a check: one ``Metric`` per statistic, one ``WindowReport`` per window."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fairloop.gates.metrics import GROUP_METRICS

# the drift statistics, and the metric table's between-group metrics a labelled window reports
Kind = Literal[("ks", "psi", "group_share", "prediction_rate_gap", "missing_sensitive_rate", *(m.name for m in GROUP_METRICS))]


class Metric(BaseModel):
    key: str
    kind: Kind
    feature: str | None = None
    group: str | None = None
    value: float
    low: float
    high: float
    threshold: float | None
    reference: float | None = None
    p_value: float | None = None
    alpha: float | None = Field(None, description="level of the drift test; a breach needs p_value < alpha")
    bins: int | None = Field(None, description="categorical: levels after pooling rare ones")
    confidence: float | None = Field(None, description="level of the interval when not the policy's (gated fairness gaps)")
    rows: int
    breach: bool = False
    interval_breach: bool = False
    streak: int = 0
    alert: bool = False



class GroupRates(BaseModel):
    """One group's rates in a window, with the gates' bootstrap intervals where the group is large enough."""

    group: str
    rows: int
    selection_rate: float
    selection_interval: tuple[float, float] | None = None
    labelled: int = 0
    positives: int = 0
    true_positive_rate: float | None = None
    tpr_interval: tuple[float, float] | None = None


class WindowReport(BaseModel):
    dataset: str
    champion_version: str
    sensitive: str
    source: str
    window_start: str | None
    window_end: str | None
    rows: int
    labelled_rows: int
    reference_rows: int
    checked_at: str
    seconds: float
    metrics: list[Metric]
    selection_rates: dict[str, float]
    reference_selection_rates: dict[str, float]
    skipped: list[str] = []
    group_rates: list[GroupRates] = []
    cell_rates: list[GroupRates] = Field(
        [], description="cells of the spec's intersections (other than the champion's feature), worst first")
    window_file: str | None = None
    alert: bool = False
    window_hash: str | None = Field(None, description="SHA-256 of the window's rows (order-independent)")
    window_file_sha256: str | None = Field(None, description="SHA-256 of the stored window file's bytes")
    record_file: str | None = Field(None, description="the JSON record; its plot is next to it (.png)")
    streak_from: str | None = Field(None, description="the earlier window whose streaks this one continues ('start .. end')")
    rechecked: bool = Field(False, description="this window (range and content) was checked before: its recorded result")
    new_alert: bool = Field(False, description="alert, and no earlier check of this range alerted: emit the drift event")
    incident: str | None = Field(None, description="the open incident this alerting window belongs to (opened by the first alert)")
    clears_incident: str | None = Field(
        None, description="the incident this window closes: it checked without an alert while the incident was open")

    @property
    def label(self) -> str:
        return f"{self.window_start} .. {self.window_end}" if self.window_start else "all rows"

    @property
    def breaches(self) -> list[Metric]:
        return [m for m in self.metrics if m.breach]

    @property
    def alerts(self) -> list[Metric]:
        return [m for m in self.metrics if m.alert]

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    def table(self) -> list[dict[str, Any]]:
        """One row per metric (for the Prefect table artifact and the CLI)."""
        return [
            {"metric": m.key, "value": round(m.value, 4), "interval": f"[{m.low:.3f}, {m.high:.3f}]",
             "threshold": m.threshold, "p_value": None if m.p_value is None else float(f"{m.p_value:.3g}"),
             "rows": m.rows, "breach": m.breach, "streak": m.streak, "alert": m.alert}
            for m in sorted(self.metrics, key=lambda m: (not m.alert, not m.breach, -(m.value / (m.threshold or 1))))
        ]

