"""Alerting: breach, streak and alert per metric, and the Prefect event an alert emits."""

from __future__ import annotations

from typing import Any

from fairloop.gates.policy import Monitoring
from fairloop.monitor.report import WindowReport

DRIFT_EVENT = "fairloop.drift.detected"


def same_window(earlier: WindowReport, report: WindowReport) -> bool:
    """The same window checked against the same champion: same range and the same rows."""
    identity = lambda r: (r.dataset, r.champion_version, r.window_start, r.window_end, r.window_hash)  # noqa: E731
    return identity(earlier) == identity(report)


def continues_from(earlier: WindowReport, report: WindowReport) -> bool:
    """Whether ``report``'s streaks may continue ``earlier``'s: same dataset and champion, and a new,
    later, non-overlapping window (timed: ``earlier`` ends on or before ``report`` starts; untimed:
    other rows). A revision of a range (rows added) or an overlapping rolling window does not."""
    if (earlier.dataset, earlier.champion_version) != (report.dataset, report.champion_version):
        return False
    if not (earlier.window_end and report.window_start):  # untimed: a window is its rows
        return earlier.window_hash != report.window_hash
    return earlier.window_end <= report.window_start  # ISO dates order as strings


def streak_base(history: list[WindowReport], report: WindowReport) -> WindowReport | None:
    """The window ``report`` continues from: of the recorded windows it may continue, the one that
    ends last (its latest check, if the range was revised); untimed: the last one checked."""
    base = None
    for earlier in history:
        if continues_from(earlier, report) and (base is None or (earlier.window_end or "") >= (base.window_end or "")):
            base = earlier
    return base


def judge(report: WindowReport, cfg: Monitoring, previous: WindowReport | None) -> WindowReport:
    """Breach, streak (windows in breach in a row, this one included) and alert per metric.

    A breach: the value above its threshold and evidence beyond noise (a drift metric: its test
    rejecting at the metric's level; a fairness gap: its interval above the threshold). An
    alert: ``persistence_windows`` breaches in a row, or a breach whose interval lies wholly
    above the threshold (``alert_on`` chooses; for a fairness gap every breach is one).

    Streaks continue from ``previous`` only when this window may continue it
    (``continues_from``); otherwise they start again. ``new_alert`` assumes no earlier check of
    this range alerted (``run_monitor`` corrects it from the history).
    """
    before = {}
    if previous is not None and continues_from(previous, report):
        before = {m.key: m.streak for m in previous.metrics}
    judged = []
    for m in report.metrics:
        # evidence beyond noise, so that small windows do not breach by chance: a drift metric's
        # test rejects "no drift" at its level (drift.py); a fairness gap's interval lies above
        # its threshold (the point estimate of a max - min gap over small groups is biased upward)
        if m.alpha is not None:
            evidence = m.p_value is not None and m.p_value < m.alpha
        else:
            evidence = m.threshold is not None and m.low > m.threshold
        breach = m.threshold is not None and m.value > m.threshold and evidence
        interval_breach = breach and m.low > m.threshold
        streak = before.get(m.key, 0) + 1 if breach else 0
        alert = ("persistent" in cfg.alert_on and breach and streak >= cfg.persistence_windows) or (
            "interval" in cfg.alert_on and interval_breach
        )
        judged.append(m.model_copy(update={"breach": breach, "interval_breach": interval_breach, "streak": streak, "alert": alert}))
    alert = any(m.alert for m in judged)
    return report.model_copy(update={"metrics": judged, "alert": alert, "new_alert": alert,
                                     "streak_from": previous.label if before else None})


def already_alerted(history: list[WindowReport], report: WindowReport) -> bool:
    """Whether an earlier check of ``report``'s range (untimed: of its rows) against the same champion
    alerted: the drift event for it was emitted then."""
    scope = lambda r: (r.dataset, r.champion_version, r.window_start, r.window_end,  # noqa: E731
                       r.window_hash if r.window_start is None else None)
    return any(earlier.alert and scope(earlier) == scope(report) for earlier in history)


def open_incident(history: list[WindowReport]) -> str | None:
    """The dataset's open incident: the last one an alerting window belongs to, unless a later window closed it."""
    current = None
    for report in history:
        if report.incident:
            current = report.incident
        elif report.clears_incident == current:
            current = None
    return current


def with_incident(report: WindowReport, history: list[WindowReport]) -> WindowReport:
    """``report`` placed in the dataset's incidents: an alert joins the open incident or opens one (named
    by dataset, window and rows); a window without an alert that comes after the incident's alerting
    windows (timed: starts on or after the last one's end) closes it, and an earlier window checked late
    (a replay, an old feed) does not. Whether a closing window cleared the incident through a promoted
    champion or the drift subsided under the same champion is read off the champion versions
    (``fairloop.monitor.dashboard``)."""
    current = open_incident(history)
    if report.alert:
        opened = f"{report.dataset}-{report.window_start or report.checked_at[:10]}-{(report.window_hash or '')[:8]}"
        return report.model_copy(update={"incident": current or opened})
    if current is None:
        return report
    last = max((r for r in history if r.incident == current), key=lambda r: r.window_end or "")
    later = not (last.window_end and report.window_start) or report.window_start >= last.window_end  # ISO dates
    return report.model_copy(update={"clears_incident": current}) if later else report


# -- the event a remediation deployment is triggered by ------------------------------------
def dataset_resource_id(dataset: str) -> str:
    return f"fairloop.dataset.{dataset}"


def drift_event(report: WindowReport, history_page: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``prefect.events.emit_event`` for an alerting window; ``history_page``
    (the dataset's history.html) is where the notification points a reader."""
    return {
        "event": DRIFT_EVENT,
        "resource": {
            "prefect.resource.id": dataset_resource_id(report.dataset),
            "prefect.resource.name": report.dataset,
            "fairloop.champion": report.champion_version,
        },
        "related": [{
            "prefect.resource.id": f"fairloop.remedy.model.{report.dataset}.{report.champion_version}",
            "prefect.resource.role": "champion",
            "prefect.resource.name": f"{report.dataset} {report.champion_version}",
        }],
        "payload": {
            "dataset": report.dataset,
            "champion_version": report.champion_version,
            "window_start": report.window_start,
            "window_end": report.window_end,
            "window_file": report.window_file,
            "window_file_sha256": report.window_file_sha256,
            "window_hash": report.window_hash,
            "incident": report.incident,
            "history_page": history_page,
            "rows": report.rows,
            "alerts": [m.model_dump(include={"key", "value", "low", "high", "threshold", "streak"}) for m in report.alerts],
        },
    }


