"""Unattended reruns of a served remediation deployment: what they remediate with, and when they start at all.

A drift alert or the policy's remediation cron starts a rerun of ``remediation/<dataset>``.
Such a run must

* remediate the champion's way: its recorded recipe and constraint template (copied out of the
  registry when the run starts, so a promotion or rollback meanwhile cannot change them under
  it), or the sweep the policy names (``monitoring.rerun: {sweep: FILE}``);
* be the only one per incident: not start while an earlier run of the deployment is still
  running or awaiting review, nor within the policy's cooldown after the last one ended;
* train only on a window the monitor recorded itself, never on a file an event payload names,
  and never on copies of the validation or test rows it is judged on.

Plain functions; the flow (``flows/remediation.py``) calls them before any training.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import DeploymentStatus, StateType
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from fairloop import pipeline
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import read_extra_training_rows
from fairloop.errors import BadInputError
from fairloop.gates.policy import (
    COOLDOWN_OUTCOMES,
    Monitoring,
    RerunSettings,
    RerunSweep,
    load_policy,
)
from fairloop.monitor import history, refuse_held_out_overlap, resolve_window_file
from fairloop.monitor.drifted import AlertSeen, DriftedRows, pin_windows, split_drifted
from fairloop.serving.outcomes import Outcome

# Requested-by values of runs a served deployment starts on its own.
DRIFT_TRIGGER = "drift-trigger"
SCHEDULE = "schedule"


class RerunPlan(BaseModel):
    """The recipe and template (or sweep) a rerun uses, and where they came from."""

    recipe: str
    constraint: str
    sweep_file: str | None = None
    source: str
    base_model: str | None = None  # a frozen champion's base model (its registry copy, or import path)
    base_model_sha256: str | None = None


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
    remediate_with = monitoring.rerun.remediate_with
    if isinstance(remediate_with, RerunSweep):
        return RerunPlan(recipe=recipe, constraint=constraint, sweep_file=remediate_with.sweep,
                         source=f"sweep {remediate_with.sweep} (policy monitoring.rerun)")
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
    base = champion.lineage.base_model  # a frozen champion is post-processed again, never retrained
    base_model = base.location if base else None
    if base is not None and "base_model" in champion.lineage.inputs_spec_files:
        stored = recorded / champion.lineage.inputs_spec_files["base_model"]
        base_model = str(shutil.copyfile(stored, run_dir / f"champion-{champion.version}-{stored.name}"))
    return RerunPlan(recipe=str(copies["recipe"]), constraint=str(copies["constraint"]), base_model=base_model,
                     base_model_sha256=base.sha256 if base else None,
                     source=f"champion {champion.version}'s recipe and template"
                            + (f" on its base model {base.location} (not retrained)" if base else ""))


def training_window(state_dir: Path, given: str, params, splits=None) -> str:
    """The window file a drift event names, checked before a rerun trains on it.

    Only a window the monitor of the dataset recorded under ``state_dir`` is accepted
    (``fairloop.monitor.store.resolve_window_file``), and its labelled rows must not be copies of
    the validation or test rows the rerun will be judged on (``refuse_held_out_overlap``, on
    ``splits``: by default those ``params`` forms without the window; a rerun checking several
    windows forms them once). Either refusal is a BadInputError naming the file.
    """

    spec = load_dataset_spec(params.dataset)
    path = resolve_window_file(state_dir, spec.name, given)
    if splits is None:
        splits = pipeline.prepare(pipeline.load_inputs(replace(params, extra_training_data=None)))
    refuse_held_out_overlap(read_extra_training_rows(spec, path), splits, source=str(path))
    return str(path)


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def reason_to_skip(flow_run_id: UUID | str, cooldown_minutes: int, *, cooldown: bool,
                   cooldown_after: list[str] = COOLDOWN_OUTCOMES) -> str | None:
    """Why this run of a served remediation deployment must not remediate (None: it goes ahead).

    Asks the Prefect API for the deployment's other runs: an earlier one still pending, running
    or awaiting review is the rerun of this incident (the earliest created one goes ahead, so two
    alerts arriving together still start exactly one); with ``cooldown``, a run that ended (and
    was not itself skipped) less than ``cooldown_minutes`` ago is too.
    """

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
            if run.id != me.id and run.state and run.state.is_final() and run.state.name in cooldown_after:
                return (f"rerun {run.name} ({run.id}) ended {run.state.name} at {_as_utc(run.end_time):%Y-%m-%d %H:%M} UTC, "
                        f"within the policy's cooldown of {cooldown_minutes} minutes")
    return None


def unserved_reason(dataset: str) -> str | None:
    """Why a drift alert on ``dataset`` would start no rerun right now (None: ``remediation/<dataset>`` is served)."""

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"remediation/{dataset}")
        except ObjectNotFound:
            return f"no remediation deployment for '{dataset}' on this server"
    if deployment.status != DeploymentStatus.READY:
        return f"remediation/{dataset} exists but nothing serves it now"
    return None


@dataclass(frozen=True)
class RerunStart:
    """How a served rerun starts: the run's parameters, or why it stops before any training."""

    dataset: str
    params: object  # pipeline.RunParams with the plan's recipe, template and the drifted rows' training part
    sweep_file: str | None = None
    source: str = ""
    stop: Outcome | None = None  # SKIPPED (another run has this incident) or REFUSED (bad input)
    reason: str = ""
    incident: str | None = None
    drifted: DriftedRows | None = None  # the alerting window(s), pinned and split into training and held-out rows
    alert: AlertSeen | None = None


def alert_of(state_dir: Path, dataset: str, window: str) -> tuple[AlertSeen | None, list[Path]]:
    """The recorded check of the window file ``window`` names (the alert a rerun answers; None when the
    monitor recorded no such file), and the files of its incident's alerting windows still kept,
    oldest first: a rerun that waited for more rows is followed by one that uses them all."""

    recorded = history(state_dir, dataset)
    given = Path(window).resolve()
    mine = next((r for r in reversed(recorded) if r.window_file and Path(r.window_file).resolve() == given), None)
    if mine is None:
        return None, []
    alert = AlertSeen(incident=mine.incident, window=mine.label, champion_version=mine.champion_version,
                      sensitive=mine.sensitive, metrics=mine.alerts)
    same = [Path(r.window_file).resolve() for r in recorded if mine.incident and r.incident == mine.incident and r.alert
            and r.window_file and Path(r.window_file).resolve() != given and Path(r.window_file).is_file()]
    return alert, list(dict.fromkeys(same))


def drifted_rows(state_dir: Path, window: str, earlier: list[Path], alert: AlertSeen | None, params,
                 settings: RerunSettings, run_dir: Path):
    """Check, pin and split the alerting window(s) of a rerun (BadInputError when one cannot be used):
    returns the run's parameters (training on the drifted rows' training part, weighted as the policy
    says) and the split's record."""

    inputs = pipeline.load_inputs(replace(params, extra_training_data=None))
    spec, splits = inputs.loaded.spec, pipeline.prepare(inputs)  # read once for every window's overlap check
    checked = [Path(training_window(state_dir, str(path), params, splits)) for path in [*earlier, window]]
    pinned = pin_windows(spec, checked, run_dir)
    sensitive = params.sensitive or (alert.sensitive if alert else spec.primary_sensitive)
    split = split_drifted(spec, pinned, settings, seed=params.seed, sensitive=sensitive, folder=run_dir)
    params = replace(params, extra_training_data=split.train_file, extra_weighting=settings.weighting,
                     extra_max_weight=settings.max_weight)
    return params, split


def start_rerun(run_id: str, params, *, sweep_file: str | None, requested_by: str, registry, state_dir: Path,
                run_dir: Path, incident: str | None = None) -> RerunStart:
    """Everything a served rerun decides before training: one per incident, what it remediates
    with, and the window it may train on. Bad input stops it as REFUSED (nobody is at a console
    to read a traceback)."""

    try:
        dataset = load_dataset_spec(params.dataset).name
        monitoring = load_policy(params.policy).monitoring_settings
    except BadInputError as exc:
        return RerunStart(dataset=str(params.dataset), params=params, stop=Outcome.REFUSED, reason=str(exc), incident=incident)
    skip = reason_to_skip(run_id, monitoring.rerun_cooldown_minutes, cooldown=requested_by == DRIFT_TRIGGER,
                          cooldown_after=monitoring.rerun.cooldown_after)
    if skip:
        return RerunStart(dataset=dataset, params=params, stop=Outcome.SKIPPED, reason=skip, incident=incident)
    if params.extra_training_data in ("", "None"):  # the event's template rendered a window the monitor did not keep
        params = replace(params, extra_training_data=None)
    alert, earlier = alert_of(state_dir, dataset, params.extra_training_data) if params.extra_training_data else (None, [])
    incident = (alert.incident if alert else None) or incident  # the monitor's record wins over an event's payload
    try:
        plan = plan_rerun(dataset, monitoring, registry, run_dir, recipe=params.recipe, constraint=params.constraint,
                          sweep_file=sweep_file)
        params = replace(params, recipe=plan.recipe, constraint=plan.constraint,
                         **({"base_model": plan.base_model, "base_model_sha256": plan.base_model_sha256}
                            if plan.base_model else {}))
        split = None
        if params.extra_training_data:
            params, split = drifted_rows(state_dir, params.extra_training_data, earlier, alert, params, monitoring.rerun,
                                         run_dir)
    except BadInputError as exc:
        return RerunStart(dataset=dataset, params=params, stop=Outcome.REFUSED, reason=str(exc), incident=incident)
    return RerunStart(dataset=dataset, params=params, sweep_file=plan.sweep_file, source=plan.source,
                      incident=incident, drifted=split, alert=alert)
