"""Where remediation runs run: a Prefect work pool, its deployment, and a local worker.

``fairloop remediate`` does not run the flow in its own process: it creates a run of the
``remediation/on-demand`` deployment in the project's work pool (a local *process* pool named by
FAIRLOOP_WORK_POOL, default ``fairloop``) and follows it. A worker of that pool executes the run
in a fresh process with the caller's working directory and FAIRLOOP_* settings (per-run job
variables). When the run awaits review it is suspended and its process exits; the reviewer's
answer resumes it on whichever worker of the pool is up (``fairloop.flows.review``).

``fairloop server`` (and every command that needs the server) starts one local worker if the one
it started before is gone; workers on other machines join the same pool with
``prefect worker start --pool fairloop`` (README, "Where runs run").
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import get_current_settings

from fairloop.config import Settings
from fairloop.flows import remediation
from fairloop.flows.request import RemediationRequest
from fairloop.serving.processes import (
    record_process,
    recorded_process,
    stop_process_group,
)
from fairloop.serving.server import prefect_executable

DEPLOYMENT_NAME = "on-demand"  # not a dataset's name: served reruns are remediation/<dataset>
WORKER_PID_FILE = "prefect-worker.pid"
# A local worker asks the local server for runs every 2 s (Prefect's default is 10 s): a resumed
# review starts within seconds, and the queries are cheap.
WORKER_QUERY_SECONDS = "2"


def deployment_full_name() -> str:
    return f"remediation/{DEPLOYMENT_NAME}"


def ensure_deployment(settings: Settings) -> None:
    """The work pool (a local process pool) and the remediation deployment in it, created if missing.
    The entrypoint is the installed package's flow (a module path: no code is copied or pulled)."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=settings.work_pool, type="process"))
        except ObjectAlreadyExists:
            pass
    deployment = remediation.to_deployment(
        name=DEPLOYMENT_NAME, entrypoint_type=EntrypointType.MODULE_PATH, tags=["fairloop"],
        description="Remediation runs started by `fairloop remediate`: a process per run, suspended while "
                    "they await review")
    deployment.apply(work_pool_name=settings.work_pool)


def run_job_variables(settings: Settings) -> dict:
    """A run's job variables: it runs where the caller stands, with the caller's fairloop settings."""
    env = {k: v for k, v in os.environ.items() if k.startswith("FAIRLOOP_")}
    return {"working_dir": str(Path.cwd()), "env": env}


def worker_log_path(settings: Settings) -> Path:
    return settings.state_dir / "prefect-worker.log"


def ensure_worker(settings: Settings, api_url: str) -> bool:
    """Start a local worker of the pool unless the one started before still runs; True if started."""
    if recorded_process(settings.state_dir / WORKER_PID_FILE) is not None:
        return False
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_API_URL": api_url}
    secret = get_current_settings().api.auth_string  # the credentials this command uses, from any source
    if secret is not None and secret.get_secret_value():
        env["PREFECT_API_AUTH_STRING"] = secret.get_secret_value()
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", WORKER_QUERY_SECONDS)
    with worker_log_path(settings).open("ab") as log:
        process = subprocess.Popen(
            [prefect_executable(), "worker", "start", "--pool", settings.work_pool, "--type", "process"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # outlives this command, like the server
        )
    record_process(settings.state_dir / WORKER_PID_FILE, process.pid)
    return True


def stop_worker(settings: Settings) -> str | None:
    """Stop the local worker :func:`ensure_worker` started (before the server: a worker whose server
    is gone ignores SIGTERM for a long while). Runs it was executing end with it; suspended runs do
    not need it."""
    process = recorded_process(settings.state_dir / WORKER_PID_FILE)
    (settings.state_dir / WORKER_PID_FILE).unlink(missing_ok=True)
    if process is None:
        return None
    stop_process_group(process)
    return f"Stopped the worker of work pool '{settings.work_pool}' (process {process.pid})."


def worker_problem(settings: Settings) -> str | None:
    """Why no run of the pool would start now (None: a worker is up)."""
    if recorded_process(settings.state_dir / WORKER_PID_FILE) is not None:
        return None
    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(settings.work_pool)
    if any(w.status and w.status.value == "ONLINE" for w in workers):
        return None
    return (f"no worker of work pool '{settings.work_pool}' is up: `fairloop server` starts one (log: "
            f"{worker_log_path(settings)})")



def start_remediation(settings: Settings, request: RemediationRequest) -> FlowRun:
    """Create a run of the remediation deployment for ``request`` (a worker of the pool executes it)."""

    return run_deployment(deployment_full_name(), parameters={"request": request.model_dump(mode="json")},
                          job_variables=run_job_variables(settings), timeout=0, tags=["fairloop"])
