"""The trend dashboard of a dataset's monitor (``fairloop history``, ``history.html``): per window,
the groups' selection rates and true positive rates with their intervals, drift, breaches and
alerts; and the incidents, each with its timeline from the monitor's history (detected) and the
registry's ``audit.jsonl`` (the remediation side: rerun started, review requested, outcome).

An **incident** opens at an alerting window and closes at the next window without an alert.
*Detection latency*: from the start of the first window of the alerting metric's streak to the
check that alerted (and that streak's length in windows). *Time to remediation*: from detection
to the promotion that followed it; a rerun that ended otherwise (gate failed, rejected, expired,
refused) leaves the incident unremediated and says so.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from fairloop.monitor.report import WindowReport

TRIGGERED_BY = "drift-trigger"
STARTED = {"rerun_started": "rerun started", "review_requested": "review requested"}
OUTCOMES = {"promote": "promoted", "reject": "rejected", "expired": "review expired", "gate_failed": "gate failed",
            "audit_blocked": "audit blocked", "refused_input": "rerun refused"}


class TimelineEvent(BaseModel):
    at: str
    what: str
    detail: str = ""


class Incident(BaseModel):
    detected_at: str
    window: str
    alerts: list[str]
    streak_windows: int
    detection_latency_hours: float | None
    timeline: list[TimelineEvent]
    outcome: str | None = None
    time_to_remediation_hours: float | None = None


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.now().astimezone().tzinfo)


def _hours(start: str, end: str) -> float:
    return round((_time(end) - _time(start)).total_seconds() / 3600, 2)


def _streak_start(report: WindowReport, reports: list[WindowReport]) -> tuple[WindowReport, int]:
    """The window where the longest alerting streak of ``report`` began, and that streak's length."""
    key = max(report.alerts, key=lambda m: m.streak).key
    first, length = report, max(1, report.metric(key).streak)
    for _ in range(length - 1):
        earlier = next((r for r in reversed(reports) if r.label == first.streak_from), None)
        if earlier is None:
            break
        first = earlier
    return first, length


def incidents(reports: list[WindowReport], audit: list[dict]) -> list[Incident]:
    """The incidents of a dataset's monitor history (oldest first) with their remediation timeline."""
    opened: list[tuple[WindowReport, int, WindowReport]] = []
    current = None
    for index, report in enumerate(reports):
        if report.alert and current is None:
            first, length = _streak_start(report, reports[:index])
            current = (report, length, first)
            opened.append(current)
        elif not report.alert:
            current = None
    result = []
    for number, (report, length, first) in enumerate(opened):
        detected = report.checked_at
        until = opened[number + 1][0].checked_at if number + 1 < len(opened) else None
        remediation = [
            r for r in audit
            if r.get("dataset") == report.dataset and r.get("requested_by") == TRIGGERED_BY and r.get("at")
            and _time(r["at"]) >= _time(detected) and (until is None or _time(r["at"]) < _time(until))
        ]
        timeline = [TimelineEvent(at=detected, what="detected", detail=", ".join(m.key for m in report.alerts))]
        outcome, remedied = None, None
        for record in sorted(remediation, key=lambda r: _time(r["at"])):
            action = record.get("action", "")
            if action in STARTED:
                timeline.append(TimelineEvent(at=record["at"], what=STARTED[action], detail=str(record.get("run_id", ""))))
            elif action in OUTCOMES and outcome is None:
                detail = f"version {record['version']}" if action == "promote" else "; ".join(map(str, record.get("reasons", [])))[:200]
                timeline.append(TimelineEvent(at=record["at"], what=OUTCOMES[action], detail=detail))
                outcome = OUTCOMES[action]
                remedied = _hours(detected, record["at"]) if action == "promote" else None
        latency = _hours(first.window_start, detected) if first.window_start else None
        result.append(Incident(
            detected_at=detected, window=report.label, alerts=[m.key for m in report.alerts], streak_windows=length,
            detection_latency_hours=latency, timeline=timeline, outcome=outcome, time_to_remediation_hours=remedied,
        ))
    return result


def window_rows(reports: list[WindowReport]) -> list[dict]:
    """One row per checked window for the dashboard's table: group rates with intervals, worst drift, alerts."""
    rows = []
    for report in reports:
        drift = [m for m in report.metrics if m.kind in ("ks", "psi", "group_share") and m.threshold]
        worst = max(drift, key=lambda m: m.value / m.threshold, default=None)
        gap = next((m for m in report.metrics if m.kind == "prediction_rate_gap"), None)
        rows.append({
            "window": report.label, "checked_at": report.checked_at, "rows": report.rows, "labelled": report.labelled_rows,
            "champion": report.champion_version, "groups": report.group_rates,
            "worst_drift": worst, "gap": gap, "breaches": [m.key for m in report.breaches],
            "alerts": [m.key for m in report.alerts], "skipped": report.skipped,
        })
    return rows


def history_html(dataset: str, reports: list[WindowReport], found: list[Incident], trend_png: bytes | None) -> str:
    """The dashboard page (jinja2, autoescaped: group names and feature names come from data files)."""
    from fairloop.templating import render

    return render(
        "monitor_history.html.j2", dataset=dataset, windows=window_rows(reports), incidents=found,
        groups=sorted({g.group for r in reports for g in r.group_rates}),
        trend_png_base64=base64.b64encode(trend_png).decode() if trend_png else None,
    )


def history_markdown(dataset: str, reports: list[WindowReport], audit: list[dict]) -> str:
    """The dashboard as Markdown (the monitor flow's artifact)."""
    from fairloop.templating import render

    return render("monitor_history.md.j2", dataset=dataset, windows=window_rows(reports), incidents=incidents(reports, audit),
                  groups=sorted({g.group for r in reports for g in r.group_rates}))


def write_history_page(dataset: str, reports: list[WindowReport], audit: list[dict], path: Path) -> Path:
    """``history.html`` with the trend plot inline; returns its path."""
    from fairloop.monitor.plots import plot_group_trends

    found = incidents(reports, audit)
    png = plot_group_trends(reports, path.with_suffix(".png")).read_bytes() if reports else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(history_html(dataset, reports, found, png), encoding="utf-8")
    return path


def print_history(console, dataset: str, reports: list[WindowReport], found: list[Incident]) -> None:
    """The dashboard as rich tables (``fairloop history``); data values are escaped for rich markup."""
    from rich.markup import escape
    from rich.table import Table

    def rate(value, interval) -> str:
        if value is None:
            return ""
        return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")

    groups = sorted({g.group for r in reports for g in r.group_rates})
    table = Table(title=f"{escape(dataset)}: {len(reports)} checked window(s)")
    for column in ("window", "rows", *(f"{g}: selection" for g in groups), *(f"{g}: TPR" for g in groups),
                   "gap", "worst drift / threshold", "alerts"):
        table.add_column(escape(column))
    for row in window_rows(reports):
        by_group = {g.group: g for g in row["groups"]}
        worst = row["worst_drift"]
        table.add_row(
            escape(row["window"]), f"{row['rows']} ({row['labelled']})",
            *(rate(by_group[g].selection_rate, by_group[g].selection_interval) if g in by_group else "" for g in groups),
            *(rate(by_group[g].true_positive_rate, by_group[g].tpr_interval) if g in by_group else "" for g in groups),
            rate(row["gap"].value, (row["gap"].low, row["gap"].high)) if row["gap"] else "",
            f"{escape(worst.key)} {worst.value:.3f} / {worst.threshold}" if worst else "",
            "[red]" + escape(", ".join(row["alerts"])) + "[/red]" if row["alerts"] else "",
        )
    console.print(table)
    incidents_table = Table(title=f"{len(found)} incident(s)")
    for column in ("detected", "window", "alerts", "detection latency", "timeline", "outcome", "time to remediation"):
        incidents_table.add_column(column)
    for incident in found:
        incidents_table.add_row(
            incident.detected_at, escape(incident.window), escape(", ".join(incident.alerts)),
            ("n/a" if incident.detection_latency_hours is None else f"{incident.detection_latency_hours:.1f} h")
            + f" ({incident.streak_windows} window(s))",
            "\n".join(f"{e.at} {e.what}" for e in incident.timeline), escape(incident.outcome or "no remediation recorded"),
            "not remediated" if incident.time_to_remediation_hours is None else f"{incident.time_to_remediation_hours:.1f} h",
        )
    console.print(incidents_table)
