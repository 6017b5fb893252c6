"""The trend dashboard of a dataset's monitor (``fairloop history``, ``history.html``): per window,
the groups' selection rates and true positive rates with their intervals, drift, breaches and
alerts; and the incidents, each with its timeline from the monitor's history (detected, cleared)
and the registry's decision log (the remediation side: rerun started, review requested, outcome).

An **incident** opens at an alerting window (the monitor names it, ``alerting.with_incident``);
later alerting windows join it. It ends at the first window checked without an alert: **cleared**
when a champion promoted since the detection was checked there, **subsided** when the drift went
away under the same champion. A champion promoted for it that still alerts leaves it open
("promoted, still breaching"). *Detection latency*: from the start of the first window of the
alerting metric's streak to the check that alerted. *Time to promotion*: from detection to the
promotion of the incident's rerun. *Time to clearance*: from detection to the check that cleared it.
Decision records are matched on their ``incident``; older records without one on
``requested_by: drift-trigger`` within the incident's span.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from fairloop.monitor.plots import plot_group_trends
from fairloop.monitor.report import WindowReport
from fairloop.registry.decision_log import OUTCOMES, STEPS, Decision, parse
from fairloop.templating import render

TRIGGERED_BY = "drift-trigger"


class TimelineEvent(BaseModel):
    at: str
    what: str
    detail: str = ""


class Incident(BaseModel):
    incident: str | None = None
    detected_at: str
    window: str
    alerts: list[str]
    streak_windows: int
    detection_latency_hours: float | None
    timeline: list[TimelineEvent]
    outcome: str | None = None  # the last remediation outcome recorded for it
    status: Literal["open", "cleared", "subsided"] = "open"
    cleared_on: str | None = None  # the window that closed it
    promoted: list[str] = []  # versions promoted for it
    time_to_promotion_hours: float | None = None
    time_to_clearance_hours: float | None = None

    @property
    def state(self) -> str:
        """One phrase: 'cleared on window W by v2', 'promoted v2, still breaching', 'open', ..."""
        if self.status == "cleared":
            return f"cleared on window {self.cleared_on}"
        if self.status == "subsided":
            return f"subsided on window {self.cleared_on} (no promotion)"
        if self.promoted:
            return f"promoted {self.promoted[-1]}, " + ("still breaching" if any(
                e.what == "still breaching" for e in self.timeline) else "awaiting the next window")
        return "open: " + (self.outcome or "no remediation recorded")


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


def _spans(reports: list[WindowReport]) -> list[tuple[WindowReport, list[WindowReport], WindowReport | None]]:
    """Per incident: the detecting report, its later alerting reports, and the report that closed it.
    Histories written before incidents were named: an alert opens one, the next window without an alert closes it."""
    spans: dict[str, tuple[WindowReport, list[WindowReport], list]] = {}
    legacy_open = None
    for index, report in enumerate(reports):
        key = report.incident or (None if not report.alert else (legacy_open or f"#{index}"))
        if report.alert and key:
            if key not in spans:
                spans[key] = (report, [], [None])
            else:
                spans[key][1].append(report)
            legacy_open = key if report.incident is None else legacy_open
        closing = report.clears_incident or (legacy_open if not report.alert and report.incident is None else None)
        if closing in spans and spans[closing][2][0] is None and not report.alert:
            spans[closing][2][0] = report
            legacy_open = None if closing == legacy_open else legacy_open
    return [(first, later, closed[0]) for first, later, closed in spans.values()]


def incidents(reports: list[WindowReport], audit: list[Decision | dict[str, Any]]) -> list[Incident]:
    """The incidents of a dataset's monitor history (oldest first) with their remediation timeline."""
    decisions = [d if isinstance(d, Decision) else parse(d) for d in audit]
    spans = _spans(reports)
    result = []
    for number, (report, later, closed) in enumerate(spans):
        detected = report.checked_at
        until = spans[number + 1][0].checked_at if number + 1 < len(spans) else None

        def mine(d: Decision) -> bool:
            if d.dataset != report.dataset or not d.at:
                return False
            if d.incident is not None:
                return d.incident == report.incident
            # records written before incidents were named: a drift-triggered run between this detection and the next
            return d.requested_by == TRIGGERED_BY and _time(d.at) >= _time(detected) and (
                until is None or _time(d.at) < _time(until))

        timeline = [TimelineEvent(at=detected, what="detected", detail=", ".join(m.key for m in report.alerts))]
        outcome, promoted, promoted_at = None, [], None
        for d in sorted(filter(mine, decisions), key=lambda d: _time(d.at)):
            if d.action in STEPS:
                timeline.append(TimelineEvent(at=d.at, what=STEPS[d.action], detail=str(d.run_id or "")))
            elif d.action in OUTCOMES:
                detail = f"version {d.version}" if d.action == "promote" else "; ".join(map(str, getattr(d, "reasons", []) or []))[:200]
                timeline.append(TimelineEvent(at=d.at, what=OUTCOMES[d.action], detail=detail))
                outcome = OUTCOMES[d.action]
                if d.action == "promote":
                    promoted.append(d.version)
                    promoted_at = promoted_at or d.at
        for again in later:  # an alert under a champion promoted for this incident: not remediated yet
            if again.champion_version in promoted:
                timeline.append(TimelineEvent(at=again.checked_at, what="still breaching",
                                              detail=f"window {again.label}, champion {again.champion_version}"))
        status, cleared_at = "open", None
        if closed is not None:
            cleared = closed.champion_version != report.champion_version
            status, cleared_at = ("cleared" if cleared else "subsided"), closed.checked_at
            timeline.append(TimelineEvent(at=closed.checked_at, what=status,
                                          detail=f"window {closed.label}, champion {closed.champion_version}"))
        timeline.sort(key=lambda e: _time(e.at))
        first, length = _streak_start(report, reports[:reports.index(report)])
        result.append(Incident(
            incident=report.incident, detected_at=detected, window=report.label, alerts=[m.key for m in report.alerts],
            streak_windows=length, detection_latency_hours=_hours(first.window_start, detected) if first.window_start else None,
            timeline=timeline, outcome=outcome, status=status, cleared_on=closed.label if closed else None, promoted=promoted,
            time_to_promotion_hours=_hours(detected, promoted_at) if promoted_at else None,
            time_to_clearance_hours=_hours(detected, cleared_at) if status == "cleared" else None,
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
    return render(
        "monitor_history.html.j2", dataset=dataset, windows=window_rows(reports), incidents=found,
        groups=sorted({g.group for r in reports for g in r.group_rates}),
        trend_png_base64=base64.b64encode(trend_png).decode() if trend_png else None,
    )


def history_markdown(dataset: str, reports: list[WindowReport], audit: list[dict]) -> str:
    """The dashboard as Markdown (the monitor flow's artifact)."""
    return render("monitor_history.md.j2", dataset=dataset, windows=window_rows(reports), incidents=incidents(reports, audit),
                  groups=sorted({g.group for r in reports for g in r.group_rates}))


def write_history_page(dataset: str, reports: list[WindowReport], audit: list[dict], path: Path) -> Path:
    """``history.html`` with the trend plot inline; returns its path."""
    found = incidents(reports, audit)
    png = plot_group_trends(reports, path.with_suffix(".png")).read_bytes() if reports else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(history_html(dataset, reports, found, png), encoding="utf-8")
    return path


def print_history(console, dataset: str, reports: list[WindowReport], found: list[Incident]) -> None:
    """The dashboard as rich tables (``fairloop history``); data values are escaped for rich markup."""

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
    for column in ("detected", "window", "alerts", "detection latency", "timeline", "state", "time to promotion",
                   "time to clearance"):
        incidents_table.add_column(column)
    hours = lambda value, none: none if value is None else f"{value:.1f} h"  # noqa: E731
    for incident in found:
        incidents_table.add_row(
            incident.detected_at, escape(incident.window), escape(", ".join(incident.alerts)),
            hours(incident.detection_latency_hours, "n/a") + f" ({incident.streak_windows} window(s))",
            "\n".join(f"{e.at} {e.what}" for e in incident.timeline), escape(incident.state),
            hours(incident.time_to_promotion_hours, "not promoted"), hours(incident.time_to_clearance_hours, "not cleared"),
        )
    console.print(incidents_table)
