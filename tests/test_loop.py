"""The unattended loop on a real ``prefect server start`` (one per module, free port, own PREFECT_HOME):
``fairloop serve`` with a one-minute monitor schedule, drift alerts that start one rerun per incident
with the champion's template, outcomes as named states and notifications to a local webhook, and
``fairloop doctor``.

Nothing here waits a fixed time: every wait polls until a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PROJECT, Webhook, drain_prefect_workers, free_port
from fairloop import pipeline
from fairloop.remedy.constraints import fit_candidate
from fairloop.errors import BadInputError
from fairloop.registry.lineage import describe_run
from fairloop.registry.store import Registry

COMPAS = PROJECT / "datasets" / "compas.yaml"
RAW = PROJECT / "datasets" / "data" / "compas" / "compas-scores-two-years.csv.gz"
TIME = "compas_screening_date"
CHAMPION_TEMPLATE = "constraints/threshold-dp.yaml"  # serve is left at its default (gs-dp): reruns must not use that
SERVER_START_SECONDS = 180  # a busy 2-core machine
SCHEDULED_RUN_SECONDS = 180  # the bar: a scheduled run appears and completes within 3 minutes of serve


def until(predicate, timeout: float, what: str, poll: float = 1.0, context=lambda: ""):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f}s\n{context()}")
        time.sleep(poll)


def stop_group(pid: int) -> None:
    """Stop a process group this module started (its leader's id): SIGTERM, SIGKILL as a last resort."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def base_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update({
        "PREFECT_HOME": str(folder / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "FAIRLOOP_PROJECT_DIR": str(PROJECT), "FAIRLOOP_STATE_DIR": str(folder / "state"),
        "FAIRLOOP_REGISTRY_DIR": str(folder / "registry"), "FAIRLOOP_REGISTRY_REMOTE": str(folder / "dvc-remote"),
        "DVC_NO_ANALYTICS": "1",
    })
    return env


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory):
    """``fairloop server`` starts a real Prefect server on a free port; this module talks only to it."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    folder = tmp_path_factory.mktemp("loop")
    port = free_port()
    env = {**base_env(folder), "FAIRLOOP_SERVER_PORT": str(port)}
    started = subprocess.run([sys.executable, "-m", "fairloop", "server"], env=env, cwd=PROJECT, capture_output=True,
                             text=True, timeout=SERVER_START_SECONDS + 30)
    pid_file = folder / "state" / "prefect-server.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.is_file() else None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        api = f"http://127.0.0.1:{port}/api"
        drain_prefect_workers()  # workers started for an earlier module's server would keep sending there
        with pytest.MonkeyPatch.context() as patch, \
                temporary_settings(updates={PREFECT_API_URL: api, PREFECT_UI_URL: api.removesuffix("/api")}), \
                prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
            # the global context too: flow runs' threads and the event worker read it, not this thread's
            for name, value in env.items():  # flows run in this process use the same registry and state
                if name.startswith("FAIRLOOP_") and name != "FAIRLOOP_SERVER_PORT":
                    patch.setenv(name, value)
            try:
                yield {"folder": folder, "api": api, "env": {**env, "PREFECT_API_URL": api}, "pid": pid,
                       "log": folder / "state" / "prefect-server.log"}
            finally:
                drain_prefect_workers()
    finally:
        stopped = subprocess.run([sys.executable, "-m", "fairloop", "server", "--stop"], env=env, cwd=PROJECT,
                                 capture_output=True, text=True, timeout=120)
        if pid and stopped.returncode != 0:
            stop_group(pid)


@pytest.fixture(scope="module")
def world(loop_server):
    """A COMPAS champion (ThresholdOptimizer) in a real registry; production rows it never saw."""
    folder = loop_server["folder"]
    raw = pd.read_csv(RAW, low_memory=False)
    kept = raw[raw["race"].isin(["African-American", "Caucasian"]) & raw["days_b_screening_arrest"].between(-30, 30)
               & (raw["is_recid"] != -1) & (raw["c_charge_degree"] != "O") & (raw["score_text"] != "N/A")]
    train_part = kept.sample(frac=0.6, random_state=1)
    stream = kept.drop(train_part.index).reset_index(drop=True)
    train_part.to_csv(folder / "compas-train.csv", index=False)
    spec_data = yaml.safe_load(COMPAS.read_text())
    spec_data["files"] = [{"path": str(folder / "compas-train.csv")}]
    spec_path = folder / "compas.yaml"
    spec_path.write_text(yaml.safe_dump(spec_data, sort_keys=False))

    registry = Registry(folder / "registry", folder / "dvc-remote")
    inputs = pipeline.load_inputs(pipeline.RunParams(str(spec_path), constraint=str(PROJECT / CHAMPION_TEMPLATE),
                                                     recipe=str(PROJECT / "recipes/none.yaml"),
                                                     policy=str(PROJECT / "policies/default.yaml"), train_rows=600))
    splits = pipeline.prepare(inputs)
    model, _ = fit_candidate(splits.train, inputs.template, inputs.sensitive, 0)
    metrics = pipeline.evaluate_models({"c": model}, splits.test, inputs.sensitive)["c"].metrics
    with tempfile.TemporaryDirectory() as scratch:
        copies = pipeline.snapshot_inputs(inputs, Path(scratch))
        registry.promote("compas", model, splits.train.to_frame("two_year_recid"), metrics=metrics, baseline_metrics=metrics,
                         gates=[], lineage=describe_run(
                             inputs, pipeline.audit(inputs, splits), pipeline.augment(inputs, splits, pipeline.decide_mode(inputs, splits))[1],
                             run_id=None, requested_by="pytest", project_dir=PROJECT).model_copy(update={"inputs_spec_files": copies}),
                         approval={"reviewer": "pytest", "comment": "loop fixture", "approved": True},
                         inputs_dir=Path(scratch), documents=lambda version: {"report.md": "loop fixture\n"})
    return {"spec_path": spec_path, "registry": registry, "stream": stream, "template_label": inputs.template.label(),
            "test_split": splits.test}


def dated(rows: list[pd.DataFrame], start: str = "2015-01-01") -> pd.DataFrame:
    """Row sets dated into consecutive 30-day windows from ``start`` (one window each)."""
    parts = []
    for k, part in enumerate(rows):
        part = part.copy()
        days = np.random.default_rng(k).integers(0, 30, len(part))
        part[TIME] = (pd.Timestamp(start) + pd.to_timedelta(30 * k + days, unit="D")).strftime("%Y-%m-%d")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def shifted(stream: pd.DataFrame, seed: int, rows: int = 1000) -> pd.DataFrame:
    """Group shares moved to 90 % African-American (the stream has about 60 %)."""
    weights = np.where(stream["race"] == "African-American", 0.9 / (stream["race"] == "African-American").mean(),
                       0.1 / (stream["race"] == "Caucasian").mean())
    return stream.sample(rows, replace=True, weights=weights, random_state=seed)


@pytest.fixture(scope="module")
def served(loop_server, world):
    """``fairloop serve`` with a one-minute monitor schedule and a webhook notification, in its own process group."""
    folder = loop_server["folder"]
    webhook = Webhook()
    policy = folder / "loop-policy.yaml"
    policy.write_text(yaml.safe_dump({
        "name": "loop-test", "version": 1,
        # a gate no candidate meets (DPD exactly 0): a triggered rerun ends GateFailed within seconds
        "thresholds": {"max_demographic_parity_difference": 0.0},
        "monitoring": {"max_prediction_rate_gap": 0.15, "alert_on": ["interval"], "rerun": "champion",
                       "rerun_cooldown_minutes": 60, "keep_window_rows": 20, "schedule": {"monitor_cron": "* * * * *", "remediation_cron": None}},
    }))
    feed = folder / "feed.csv"
    # an earlier period than the drifted windows the alert test checks (those must be new, later windows)
    dated([world["stream"].sample(1000, random_state=3)], start="2014-01-01").to_csv(feed, index=False)
    log_path = folder / "serve.log"
    # one thread per fit: the flow runs share two cores with the scheduled monitor (and other tests)
    env = {**loop_server["env"], "PREFECT_RUNNER_POLL_FREQUENCY": "1", "OMP_NUM_THREADS": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fairloop", "serve", "--dataset", str(world["spec_path"]), "--feed", str(feed),
             "--policy", str(policy), "--train-rows", "400", "--notify-url", webhook.url],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield {"process": process, "policy": policy, "log": log_path, "webhook": webhook, "started": time.monotonic(),
               "state": folder / "state"}
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: serve pauses its schedules and stops its runner
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        stop_group(process.pid)  # anything it left behind
        webhook.close()


def served_api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def serve_log(served) -> str:
    return served["log"].read_text(errors="replace")


def deployment(name: str, served):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    def found():
        assert served["process"].poll() is None, serve_log(served)[-3000:]
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                return None

    return until(found, 120, f"deployment {name}", poll=0.5, context=lambda: serve_log(served)[-3000:])


def runs_of(deployment_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def automations_ready(served, names: list[str]):
    from prefect.client.orchestration import get_client

    def found():
        with get_client(sync_client=True) as client:
            return all(client.read_automations_by_name(n) for n in names)

    until(found, 60, f"automations {names}", poll=0.5, context=lambda: serve_log(served)[-3000:])


def test_two_alerts_start_one_rerun_with_the_champions_template_that_ends_gate_failed_and_is_notified(world, served):
    import httpx
    from fairloop.flows import monitor as monitor_flow
    from fairloop.serving.doctor import check_triggers

    remediation = deployment("remediation/compas", served)
    automations_ready(served, ["fairloop-compas-drift-rerun", "fairloop-compas-alert-notify", "fairloop-compas-outcome-notify"])
    # the triggers service picks new automations up within a few seconds; the first alert below is
    # only sent once a probe event has fired an automation (fairloop doctor's probe)
    with httpx.Client(base_url=served_api(), timeout=10) as client:
        assert check_triggers(client, timeout=240).ok  # generous: the triggers service is slow on a busy machine

    # two consecutive drifted windows: the monitor alerts on each, two drift events in a row
    folder = served["state"].parent
    feed = folder / "drifted.csv"
    dated([shifted(world["stream"], 21, 400), shifted(world["stream"], 22, 400)]).to_csv(feed, index=False)
    records = monitor_flow(dataset=str(world["spec_path"]), window=str(feed), policy=str(served["policy"]),
                           every_window=True, state_dir=str(served["state"]))
    assert [r["alert"] for r in records] == [True, True], records

    def both_final():
        runs = [r for r in runs_of(remediation.id) if r.parameters["request"].get("requested_by") == "drift-trigger"]
        assert served["process"].poll() is None, serve_log(served)[-3000:]
        return runs if len(runs) == 2 and all(r.state and r.state.is_final() for r in runs) else None

    runs = until(both_final, 240, "two triggered runs, both final", context=lambda: serve_log(served)[-4000:])
    by_state = {r.state.name: r for r in runs}
    assert set(by_state) == {"GateFailed", "Skipped"}, [(r.state.name, r.state.message) for r in runs]
    rerun, skipped = by_state["GateFailed"], by_state["Skipped"]
    assert "demographic_parity_difference" in rerun.state.message
    assert str(rerun.id) in skipped.state.message and ("already" in skipped.state.message or "cooldown" in skipped.state.message)
    assert rerun.parameters["request"]["extra_training_data"] in {r["window_file"] for r in records}

    # the rerun remediated with the champion's recorded template, not serve's default (gs-dp)
    decisions = {d["action"]: d for d in world["registry"].audit_log() if d.get("run_id") == str(rerun.id)}
    assert set(decisions) == {"rerun_started", "gate_failed"}, decisions  # the incident timeline's entries
    assert decisions["gate_failed"]["candidate"] == world["template_label"]
    assert decisions["gate_failed"]["remediates_with"].startswith("champion v1")

    # a normal outcome is not a crash on the serve console
    log = serve_log(served)
    assert "Engine execution exited with unexpected exception" not in log and "Traceback" not in log, log[-4000:]

    # someone is told: both alerts, and the outcome with its reason, reached the webhook
    webhook = served["webhook"].received

    def told():
        alerts = [m for m in webhook if "drift alert" in m.get("subject", "")]
        outcomes = [m for m in webhook if m.get("subject", "").endswith("GateFailed")]
        return (alerts, outcomes) if len(alerts) >= 2 and outcomes else None

    alerts, outcomes = until(told, 90, "alert and outcome notifications", context=lambda: json.dumps(webhook, indent=1))
    assert "group_share:race" in alerts[0]["body"]
    assert rerun.name in outcomes[0]["body"] and "demographic_parity_difference" in outcomes[0]["body"]


def test_fairloop_rerun_starts_the_served_rerun_of_the_open_incident(loop_server, world, served):
    """After the alerts above, the incident is open (its rerun failed its gates): ``fairloop rerun`` starts the
    deployment's rerun on the incident's window by hand, without the cooldown; a dataset with no incident is refused."""
    from fairloop.monitor import history
    from fairloop.monitor.alerting import open_incident

    remediation = deployment("remediation/compas", served)
    incident = open_incident(history(served["state"], "compas"))
    assert incident, "the alert test leaves an open incident"
    env = {**loop_server["env"], "FAIRLOOP_STATE_DIR": str(served["state"])}
    done = subprocess.run([sys.executable, "-m", "fairloop", "rerun", "compas"], env=env, cwd=PROJECT,
                          capture_output=True, text=True, timeout=600)
    assert f"incident {incident}" in done.stdout and done.returncode == 3, done.stdout + done.stderr  # GateFailed, named
    (run,) = [r for r in runs_of(remediation.id) if r.parameters["request"].get("incident") == incident
              and r.parameters["request"].get("requested_by") != "drift-trigger"]
    assert run.state.name == "GateFailed" and "demographic_parity_difference" in run.state.message
    assert "Traceback" not in done.stderr

    nothing = subprocess.run([sys.executable, "-m", "fairloop", "rerun", "german"], env=env, cwd=PROJECT,
                             capture_output=True, text=True, timeout=180)
    assert nothing.returncode == 2 and "has no open incident" in nothing.stderr and "Traceback" not in nothing.stderr


def test_scheduled_run_is_created_and_executed_by_the_servers_scheduler(served):
    """The issue's bar: served with a one-minute schedule, a run the scheduler created completes within 3 minutes."""
    monitor = deployment("monitor/compas", served)
    assert [s.schedule.cron for s in monitor.schedules] == ["* * * * *"]
    remaining = SCHEDULED_RUN_SECONDS - (time.monotonic() - served["started"])

    def completed():
        assert served["process"].poll() is None, serve_log(served)[-3000:]
        return next((r for r in runs_of(monitor.id) if r.auto_scheduled and r.state and r.state.is_final()), None)

    run = until(completed, max(remaining, 1), "a scheduled monitor run, executed", context=lambda: serve_log(served)[-3000:])
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairloop", "doctor", *args], env=env, cwd=PROJECT,
                          capture_output=True, text=True, timeout=180)


def test_doctor_passes_on_the_served_loop_and_names_a_scheduler_error_in_the_server_log(loop_server, served, tmp_path):
    deployment("monitor/compas", served)
    healthy = doctor(loop_server["env"])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    for line in ("reachable", "services", "scheduler", "triggers", "server log"):
        assert f"ok   {line}" in healthy.stdout, healthy.stdout

    # the failure the issue saw (SQLAlchemy 2.1): the scheduler's error in the server's log
    state = tmp_path / "state"
    state.mkdir()
    (state / "prefect-server.log").write_text(loop_server["log"].read_text() + (
        "12:01:00.123 | ERROR   | prefect.server.services.scheduler - Unexpected error in: schedule_deployments\n"
        "Traceback (most recent call last):\n"
        '  File "prefect/server/services/scheduler.py", line 260, in schedule_deployments\n'
        "sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement; please supply a bulk_dml decorated function\n"
    ))
    sick = doctor({**loop_server["env"], "FAIRLOOP_STATE_DIR": str(state)})
    assert sick.returncode == 1, sick.stdout + sick.stderr
    assert "FAIL server log" in sick.stdout and "InvalidRequestError: Can't evaluate bulk DML" in sick.stdout
    assert "unhealthy" in sick.stderr and "Traceback" not in sick.stderr

    nobody = doctor({**loop_server["env"], "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert nobody.returncode == 1 and "FAIL reachable" in nobody.stdout, nobody.stdout + nobody.stderr


def test_monitor_warns_when_no_remediation_deployment_is_served(loop_server, world, tmp_path):
    """Run before anything serves 'compas-unserved': the alert would start nothing, and the monitor says so."""
    spec = yaml.safe_load(world["spec_path"].read_text())
    spec["name"] = "compas-unserved"
    spec_path = tmp_path / "unserved.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    window = tmp_path / "window.csv"
    dated([world["stream"].sample(200, random_state=5)]).to_csv(window, index=False)
    done = subprocess.run([sys.executable, "-m", "fairloop", "monitor", "--dataset", str(spec_path), "--window", str(window)],
                          env=loop_server["env"], cwd=PROJECT, capture_output=True, text=True, timeout=180)
    assert "no remediation deployment for 'compas-unserved'" in done.stderr and "fairloop serve" in done.stderr, done.stderr


def test_a_rerun_trains_only_on_a_recorded_window_that_holds_no_held_out_rows(world, served):
    """The checks a drift-triggered rerun makes before training (wired in ``reruns.training_window``)."""
    from dataclasses import replace

    from fairloop import pipeline
    from fairloop.monitor import run_monitor
    from fairloop.serving.reruns import training_window

    params = pipeline.RunParams(str(world["spec_path"]), train_rows=400)
    state = served["state"].parent / "rerun-state"
    with pytest.raises(BadInputError, match="not in the monitor's window folder"):
        training_window(state, str(world["spec_path"].parent / "compas-train.csv"), params)

    # the monitor records a window cut from the dataset's own test rows: the rerun refuses it
    test = world["test_split"]
    held_out = pd.concat([test.X, test.groups, test.y.rename("two_year_recid")], axis=1).head(300)
    leaked = served["state"].parent / "leaked.csv"
    dated([held_out], start="2016-01-01").to_csv(leaked, index=False)
    (report,) = run_monitor(world["spec_path"], leaked, served["policy"], world["registry"], state)
    with pytest.raises(BadInputError, match="exact copies of rows of the test split"):
        training_window(state, report.window_file, params)

    # rows of people the model never saw pass, and join the training split only
    fresh = served["state"].parent / "fresh.csv"
    dated([world["stream"].head(300)], start="2016-03-01").to_csv(fresh, index=False)
    (report,) = run_monitor(world["spec_path"], fresh, served["policy"], world["registry"], state)
    assert training_window(state, report.window_file, params) == report.window_file
    plain = pipeline.prepare(pipeline.load_inputs(params))
    extended = pipeline.prepare(pipeline.load_inputs(replace(params, extra_training_data=report.window_file)))
    assert len(extended.train) == len(plain.train) + 300
    assert extended.validation.X.equals(plain.validation.X) and extended.test.X.equals(plain.test.X)


def test_a_rerun_remediates_with_the_champions_recipe_and_template_or_a_sweep(world, tmp_path):
    from fairloop.remedy.constraints import load_constraint_template
    from fairloop.gates.policy import Monitoring
    from fairloop.serving.reruns import plan_rerun

    served_default = {"recipe": "recipes/none.yaml", "constraint": "constraints/gs-dp.yaml"}
    plan = plan_rerun("compas", Monitoring(), world["registry"], tmp_path / "run", sweep_file=None, **served_default)
    assert plan.source == "champion v1's recipe and template"
    assert load_constraint_template(plan.constraint).label() == world["template_label"]
    assert Path(plan.constraint).parent == tmp_path / "run"  # a copy: a promotion meanwhile cannot change it

    swept = Monitoring(rerun={"sweep": "constraints/sweeps/default.yaml"})
    plan = plan_rerun("compas", swept, world["registry"], tmp_path / "run", sweep_file=None, **served_default)
    assert plan.sweep_file == "constraints/sweeps/default.yaml" and "policy" in plan.source
    plan = plan_rerun("compas", swept, world["registry"], tmp_path / "run", sweep_file="mine.yaml", **served_default)
    assert plan.sweep_file == "mine.yaml" and "served" in plan.source  # serve --sweep wins

    plan = plan_rerun("no-champion-yet", Monitoring(), world["registry"], tmp_path / "run", sweep_file=None, **served_default)
    assert (plan.recipe, plan.constraint, plan.sweep_file) == (served_default["recipe"], served_default["constraint"], None)


def test_doctor_reports_sqlite_lock_contention_without_failing(tmp_path):
    """The server retries a locked SQLite database (seen in this module's own server log under load)."""
    from fairloop.serving.doctor import check_log

    log = tmp_path / "prefect-server.log"
    log.write_text(
        "16:01:00.000 | ERROR   | prefect.server.services.scheduler - old failure before the restart\n"
        "Check out the dashboard at http://127.0.0.1:4200\n"
        "16:07:20.123 | ERROR   | prefect.server.utilities.messaging.memory - Failed in consume_loop\n"
        "sqlite3.OperationalError: database is locked\n"
    )
    check = check_log(log)
    assert check.ok and "1 transient SQLite lock error" in check.detail and "old failure" not in check.detail
    log.write_text(log.read_text() + "sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement\n")
    check = check_log(log)
    assert not check.ok and "InvalidRequestError" in check.detail
