"""Alerting: breach, streak and alert per metric, and the Prefect event an alert emits."""

from __future__ import annotations

from typing import Any

from fairloop.monitor.report import WindowReport
from fairloop.policy import Monitoring

DRIFT_EVENT = "fairloop.drift.detected"


def judge(report: WindowReport, cfg: Monitoring, previous: WindowReport | None) -> WindowReport:
    """Breach, streak (consecutive windows in breach, this one included) and alert per metric.

    The streak continues only from the previous window checked against the same champion.
    """
    before = {}
    if previous is not None and previous.dataset == report.dataset and previous.champion_version == report.champion_version:
        before = {m.key: m.streak for m in previous.metrics}
    judged = []
    for m in report.metrics:
        breach = m.threshold is not None and m.value > m.threshold
        interval_breach = breach and m.low > m.threshold
        streak = before.get(m.key, 0) + 1 if breach else 0
        alert = ("persistent" in cfg.alert_on and breach and streak >= cfg.persistence_windows) or (
            "interval" in cfg.alert_on and interval_breach
        )
        judged.append(m.model_copy(update={"breach": breach, "interval_breach": interval_breach, "streak": streak, "alert": alert}))
    return report.model_copy(update={"metrics": judged, "alert": any(m.alert for m in judged)})


# -- the event a remediation deployment is triggered by ------------------------------------
def dataset_resource_id(dataset: str) -> str:
    return f"fairloop.dataset.{dataset}"


def drift_event(report: WindowReport) -> dict[str, Any]:
    """Keyword arguments of ``prefect.events.emit_event`` for an alerting window."""
    return {
        "event": DRIFT_EVENT,
        "resource": {
            "prefect.resource.id": dataset_resource_id(report.dataset),
            "prefect.resource.name": report.dataset,
            "fairloop.champion": report.champion_version,
        },
        "related": [{
            "prefect.resource.id": f"fairloop.model.{report.dataset}.{report.champion_version}",
            "prefect.resource.role": "champion",
            "prefect.resource.name": f"{report.dataset} {report.champion_version}",
        }],
        "payload": {
            "dataset": report.dataset,
            "champion_version": report.champion_version,
            "window_start": report.window_start,
            "window_end": report.window_end,
            "window_file": report.window_file,
            "rows": report.rows,
            "alerts": [m.model_dump(include={"key", "value", "low", "high", "threshold", "streak"}) for m in report.alerts],
        },
    }


