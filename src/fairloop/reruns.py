"""Unattended reruns of a served remediation deployment: what they remediate with, and when they start at all.

A drift alert or the policy's remediation cron starts a rerun of ``remediation/<dataset>``.
Such a run must

* remediate the champion's way: its recorded recipe and constraint template (copied out of the
  registry when the run starts, so a promotion or rollback meanwhile cannot change them under
  it), or the sweep the policy names (``monitoring.rerun: {sweep: FILE}``);
* be the only one per incident: not start while an earlier run of the deployment is still
  running or awaiting review, nor within the policy's cooldown after the last one ended;
* train only on a window the monitor wrote itself, never on a file an event payload names.

Plain functions; the flow (``flows/remediation.py``) calls them before any training.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel

from fairloop.errors import BadInputError
from fairloop.policy import Monitoring, RerunSweep

# Requested-by values of runs a served deployment starts on its own.
DRIFT_TRIGGER = "drift-trigger"
SCHEDULE = "schedule"


class RerunPlan(BaseModel):
    """The recipe and template (or sweep) a rerun uses, and where they came from."""

    recipe: str
    constraint: str
    sweep_file: str | None = None
    source: str


def plan_rerun(
    dataset: str, monitoring: Monitoring, registry, run_dir: Path, *, recipe: str, constraint: str, sweep_file: str | None
) -> RerunPlan:
    """What a triggered or scheduled rerun of ``dataset`` remediates with.

    A sweep given to ``fairloop serve`` wins, then the policy's ``monitoring.rerun``; with
    ``champion`` the champion's recorded recipe and template are copied into ``run_dir``.
    Before any champion exists the served ``recipe`` and ``constraint`` are used.
    """
    if sweep_file:
        return RerunPlan(recipe=recipe, constraint=constraint, sweep_file=sweep_file, source=f"sweep {sweep_file} (served)")
    if isinstance(monitoring.rerun, RerunSweep):
        return RerunPlan(recipe=recipe, constraint=constraint, sweep_file=monitoring.rerun.sweep,
                         source=f"sweep {monitoring.rerun.sweep} (policy monitoring.rerun)")
    champion = registry.champion(dataset)
    if champion is None:
        return RerunPlan(recipe=recipe, constraint=constraint, source="served recipe and template (no champion yet)")
    recorded = registry.root / dataset / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    copies = {}
    for role in ("recipe", "constraint"):
        source = recorded / f"{role}.yaml"
        if not source.is_file():
            raise BadInputError(f"champion {champion.version} has no recorded {role} file", source=str(source))
        copies[role] = shutil.copyfile(source, run_dir / f"champion-{champion.version}-{role}.yaml")
    return RerunPlan(recipe=str(copies["recipe"]), constraint=str(copies["constraint"]),
                     source=f"champion {champion.version}'s recipe and template")


def monitor_window_file(state_dir: Path, dataset: str, requested: str) -> Path:
    """``requested`` (a drift event's ``window_file``) if it is a window file the monitor of
    ``dataset`` wrote under ``state_dir``; anything else is refused, naming the file."""
    from fairloop.monitor import state_folder

    windows = (state_folder(state_dir, dataset) / "windows").resolve()
    path = Path(requested).resolve()
    if not path.is_relative_to(windows):
        raise BadInputError(f"a rerun trains only on windows the monitor wrote under {windows}", source=requested)
    if not path.is_file():
        raise BadInputError("no such window file", source=requested)
    return path


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def reason_to_skip(flow_run_id: UUID | str, cooldown_minutes: int, *, cooldown: bool) -> str | None:
    """Why this run of a served remediation deployment must not remediate (None: it goes ahead).

    Asks the Prefect API for the deployment's other runs: an earlier one still pending, running
    or awaiting review is the rerun of this incident (the earliest created one goes ahead, so two
    alerts arriving together still start exactly one); with ``cooldown``, a run that ended (and
    was not itself skipped) less than ``cooldown_minutes`` ago is too.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterEndTime, FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from fairloop.outcomes import Outcome

    with get_client(sync_client=True) as client:
        me = client.read_flow_run(UUID(str(flow_run_id)))
        if me.deployment_id is None:
            return None
        deployment = DeploymentFilter(id=DeploymentFilterId(any_=[me.deployment_id]))
        active = client.read_flow_runs(
            deployment_filter=deployment,
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.SCHEDULED]))),
        )
        now = datetime.now(timezone.utc)
        mine = (_as_utc(me.created), str(me.id))
        for run in active:
            if run.id == me.id or (run.state.is_scheduled() and run.expected_start_time and _as_utc(run.expected_start_time) > now):
                continue  # a future cron run is not an incident's rerun
            if (_as_utc(run.created), str(run.id)) < mine:
                doing = "awaiting review" if run.state.is_paused() else run.state.name.lower()
                return f"rerun {run.name} ({run.id}) of this deployment is already {doing}"
        if not cooldown or cooldown_minutes == 0:
            return None
        since = now - timedelta(minutes=cooldown_minutes)
        ended = client.read_flow_runs(
            deployment_filter=deployment,
            flow_run_filter=FlowRunFilter(end_time=FlowRunFilterEndTime(after_=since)),
        )
        for run in sorted(ended, key=lambda r: r.end_time, reverse=True):
            if run.id != me.id and run.state and run.state.is_final() and run.state.name != Outcome.SKIPPED.value:
                return (f"rerun {run.name} ({run.id}) ended {run.state.name} at {_as_utc(run.end_time):%Y-%m-%d %H:%M} UTC, "
                        f"within the policy's cooldown of {cooldown_minutes} minutes")
    return None


def unserved_reason(dataset: str) -> str | None:
    """Why a drift alert on ``dataset`` would start no rerun right now (None: ``remediation/<dataset>`` is served)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import DeploymentStatus
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"remediation/{dataset}")
        except ObjectNotFound:
            return f"no remediation deployment for '{dataset}' on this server"
    if deployment.status != DeploymentStatus.READY:
        return f"remediation/{dataset} exists but nothing serves it now"
    return None
