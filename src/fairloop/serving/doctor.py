"""``fairloop doctor``: is the Prefect server able to run the loop unattended?

A deployment can show its cron in the UI while the server's scheduler fails every minute (seen
with SQLAlchemy 2.1: no run is ever created), and an automation can exist while nothing fires
it. So the doctor checks effects, not only configuration:

* reachable: ``/health`` answers and ``/ready`` reaches the database;
* services: the scheduler, triggers and event persister are enabled in the server's settings;
* scheduler: every deployment with an active schedule has a scheduled run ahead of it, and no
  scheduled run is left late (late runs: nobody serves the deployment);
* triggers: a probe event fires a probe automation (removed afterwards);
* server log: errors since the server last started (the log of a server fairloop started).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from prefect.automations import DoNothing, EventTrigger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events import Event
from prefect.events.schemas.automations import AutomationCore
from pydantic import BaseModel

from fairloop.serving.server import auth_headers

PROBE_EVENT = "fairloop.serving.doctor.probe"
# A served deployment's schedule gets its runs within seconds (the scheduler's recent-deployments
# loop); one older than this without a scheduled run means the scheduler is not creating runs.
SCHEDULE_GRACE = timedelta(minutes=2)
LATE_AFTER = timedelta(minutes=5)
SERVER_START_LINE = "Check out the dashboard at"
ERROR_LINE = re.compile(r"\|\s*(ERROR|CRITICAL)\s*\|")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
TRANSIENT = "database is locked"
TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d(\.\d+)? \| ")


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class DoctorReport(BaseModel):
    api_url: str
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def _get(client: httpx.Client, path: str) -> httpx.Response:
    return client.get(path, headers=auth_headers())


def check_reachable(client: httpx.Client) -> Check:
    try:
        health, ready = _get(client, "/health"), _get(client, "/ready")
    except httpx.HTTPError as exc:
        return Check(name="reachable", ok=False, detail=f"no answer: {exc}")
    if health.status_code != 200:
        return Check(name="reachable", ok=False, detail=f"/health answered HTTP {health.status_code}")
    if ready.status_code != 200:
        return Check(name="reachable", ok=False, detail=f"the server cannot reach its database: {ready.text[:200]}")
    return Check(name="reachable", ok=True, detail="API and database answer")


def check_services(client: httpx.Client) -> Check:
    services = _get(client, "/admin/settings").json()["server"]["services"]
    wanted = {"scheduler": "scheduled runs", "triggers": "drift-triggered reruns and notifications",
              "event_persister": "events"}
    off = [f"{name} (no {purpose}; PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED is false)"
           for name, purpose in wanted.items() if not services.get(name, {}).get("enabled", False)]
    if off:
        return Check(name="services", ok=False, detail="disabled on the server: " + "; ".join(off))
    return Check(name="services", ok=True, detail="scheduler, triggers and event persister enabled")


def check_scheduler(now: datetime | None = None) -> Check:
    """Deployments with an active schedule must have runs ahead; scheduled runs must not be late."""

    now = now or datetime.now(timezone.utc)
    starved, late, scheduled = [], [], 0
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if deployment.paused or not any(s.active for s in deployment.schedules or []):
                continue
            scheduled += 1
            this = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            waiting = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ahead = client.read_flow_runs(deployment_filter=this, flow_run_filter=FlowRunFilter(
                state=waiting, expected_start_time=FlowRunFilterExpectedStartTime(after_=now)), limit=1)
            updated = deployment.updated or deployment.created
            if not ahead and updated is not None and now - updated > SCHEDULE_GRACE:
                starved.append(deployment.name)
            overdue = client.read_flow_runs(deployment_filter=this, flow_run_filter=FlowRunFilter(
                state=waiting, expected_start_time=FlowRunFilterExpectedStartTime(before_=now - LATE_AFTER)), limit=1)
            if overdue:
                late.append(f"{deployment.name} (due {overdue[0].expected_start_time:%Y-%m-%d %H:%M} UTC)")
    problems = []
    if starved:
        problems.append(f"no scheduled run ahead for {', '.join(starved)}: the scheduler is not creating runs "
                        "(see the server log)")
    if late:
        problems.append(f"scheduled runs left late for {', '.join(late)}: is `fairloop serve` running?")
    if problems:
        return Check(name="scheduler", ok=False, detail="; ".join(problems))
    return Check(name="scheduler", ok=True, detail=f"{scheduled} scheduled deployment(s) have runs ahead, none late")


def check_triggers(client: httpx.Client, timeout: float) -> Check:
    """Post probe events until a probe automation reports it triggered (or ``timeout``).

    The automation and the events go through ``client`` (the server being checked), not through
    Prefect's process-wide client and events worker, which may still point at another server."""

    probe_id = f"fairloop.serving.doctor.{uuid.uuid4().hex[:12]}"
    probe = AutomationCore(
        name=f"fairloop-doctor-probe-{probe_id.rsplit('.', 1)[1]}", description="fairloop doctor's probe (removed after use)",
        trigger=EventTrigger(expect={PROBE_EVENT}, match={"prefect.resource.id": probe_id}, posture="Reactive", threshold=1),
        actions=[DoNothing()],
    )
    created = client.post("/automations/", headers=auth_headers(), json=probe.model_dump(mode="json"))
    created.raise_for_status()
    automation_id = created.json()["id"]
    started = datetime.now(timezone.utc)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            event = Event(event=PROBE_EVENT, resource={"prefect.resource.id": probe_id})
            client.post("/events", headers=auth_headers(), json=[event.model_dump(mode="json")]).raise_for_status()
            time.sleep(2)
            found = client.post("/events/filter", headers=auth_headers(), json={"filter": {
                "occurred": {"since": started.isoformat()}, "event": {"name": ["prefect.automation.triggered"]},
                "resource": {"id": [f"prefect.automation.{automation_id}"]}}, "limit": 1}).json()
            if found.get("events"):
                return Check(name="triggers", ok=True, detail="a probe event fired a probe automation")
    finally:
        client.delete(f"/automations/{automation_id}", headers=auth_headers())
    return Check(name="triggers", ok=False,
                 detail=f"a probe event fired no automation within {timeout:.0f}s: drift alerts would start no rerun")


def recent_server_errors(log_path: Path, limit: int = 5) -> list[str]:
    """Errors logged since the server last started, each once, the latest last: an ERROR line with
    the exception its traceback ends in, or an exception printed on its own."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if SERVER_START_LINE in line]
    records: list[list[str]] = []
    for line in lines[starts[-1] + 1:] if starts else lines:
        if TIMESTAMP.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)  # a traceback or message continuation of the record above
    errors: dict[str, None] = {}
    for record in records:
        exceptions = [line.strip() for line in record if EXCEPTION_LINE.match(line)]
        if not (ERROR_LINE.search(record[0]) or exceptions):
            continue
        head = TIMESTAMP.sub("", record[0].strip()) if TIMESTAMP.match(record[0]) else ""
        text = " -> ".join(part for part in (head, exceptions[-1] if exceptions else "") if part)
        errors.pop(text, None)
        errors[text] = None
    return list(errors)[-limit:]


def check_log(log_path: Path | None) -> Check:
    """Errors since the server started fail the check, except SQLite lock contention, which the
    server retries (Prefect filters some of it from its own logs): that is reported, not failed."""
    if log_path is None or not log_path.is_file():
        return Check(name="server log", ok=True, detail="no log of a server fairloop started (skipped)")
    errors = recent_server_errors(log_path, limit=50)
    contention = [e for e in errors if TRANSIENT in e]
    errors = [e for e in errors if TRANSIENT not in e][-5:]
    note = (f"; {len(contention)} transient SQLite lock error(s), retried by the server (under sustained load use "
            "PostgreSQL: PREFECT_SERVER_DATABASE_CONNECTION_URL)") if contention else ""
    if errors:
        return Check(name="server log", ok=False,
                     detail=f"errors in {log_path} since the server started: " + " | ".join(errors) + note)
    return Check(name="server log", ok=True, detail=f"no errors in {log_path} since the server started{note}")


def run_doctor(api_url: str, log_path: Path | None, *, trigger_timeout: float = 60) -> DoctorReport:
    """Every check against the server at ``api_url``; later checks are skipped when it does not answer."""
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=10) as client:
        checks = [check_reachable(client)]
        if checks[0].ok:
            services = check_services(client)
            checks += [services, check_scheduler()]
            if services.ok:  # a disabled triggers service would only make the probe wait out its timeout
                checks.append(check_triggers(client, trigger_timeout))
    checks.append(check_log(log_path))
    return DoctorReport(api_url=api_url, checks=checks)
