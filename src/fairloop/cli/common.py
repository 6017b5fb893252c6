"""What the commands share: the consoles, turning user errors into exit codes, the local Prefect
server, the flows, how a run ended, who requests it, its progress, and ending runs whose flow process died."""

from __future__ import annotations

import functools
import getpass
import os
import time
from contextlib import contextmanager

import typer
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fairloop import flows
from fairloop.config import Settings
from fairloop.errors import BadInputError, FairloopError
from fairloop.registry.store import Registry
from fairloop.review.credentials import identify, read_book
from fairloop.review.packet import load_packet
from fairloop.serving.expiry import reconcile_expired_reviews
from fairloop.serving.flow_process import forget_flow_process, gone_flow_processes
from fairloop.serving.outcomes import ExitCode, Outcome
from fairloop.serving.progress import read_progress
from fairloop.serving.runs import (
    crash_run,
    read_flow_run,
    read_flow_runs,
)
from fairloop.serving.server import ensure_server, server_env
from fairloop.serving.worker import ensure_deployment, ensure_worker, worker_log_path

console = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for logs and grep
DEFAULT_RECIPE = "recipes/none.yaml"
DEFAULT_CONSTRAINT = "constraints/gs-dp.yaml"
DEFAULT_POLICY = "policies/default.yaml"
TRUST_WARNING = ("[yellow]warning: --trust: unpickling model files from outside the registry runs any code they "
                 "contain; use it only for files from a source you trust[/yellow]")
TRAINING_TIMEOUT_SECONDS = 3600


def user_errors(command):
    """Turn fairloop's user-facing errors into a one-line message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BadInputError as exc:
            err.print(f"[red]bad input:[/red] {escape(str(exc))}")
            raise typer.Exit(ExitCode.BAD_INPUT) from None
        except FairloopError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(ExitCode.FAILED) from None

    return wrapper


@contextmanager
def prefect_server(settings: Settings, worker: bool = False):
    """Make every Prefect call in the block go to the local server (started if needed); with ``worker``,
    also the remediation deployment and a local worker of its pool (``fairloop.serving.worker``)."""


    api_url, started = ensure_server(settings)
    if started:
        err.print(f"Started a local Prefect server at {api_url} (log: {settings.state_dir / 'prefect-server.log'})")
    ui_url = os.environ.get("PREFECT_UI_URL") or PREFECT_UI_URL.value() or api_url.removesuffix("/api")
    os.environ.update({"PREFECT_API_URL": api_url, "PREFECT_UI_URL": ui_url,
                       "PREFECT_SERVER_ANALYTICS_ENABLED": server_env(settings)["PREFECT_SERVER_ANALYTICS_ENABLED"]})
    with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
        if worker:
            ensure_deployment(settings)
            if ensure_worker(settings, api_url):
                err.print(f"Started a worker of work pool '{settings.work_pool}' (log: {worker_log_path(settings)})")
        yield api_url


def load_flow(name: str):
    """The flow ``name`` (``remediation`` or ``monitor``) from ``fairloop.flows``."""
    return getattr(flows, name)


def exit_for_state(state, run_id) -> ExitCode:
    """Print how the run ended and return its exit code."""
    outcome = Outcome.from_state(state)
    if outcome is None and state.is_failed():
        try:
            state.result(raise_on_failure=True)
        except BadInputError as exc:
            err.print(f"[red]bad input:[/red] {escape(str(exc))}")
            return ExitCode.BAD_INPUT
        except Exception as exc:  # noqa: BLE001 - the run failed; say how, without a traceback
            err.print(f"[red]run {run_id} failed:[/red] {type(exc).__name__}: {escape(str(exc))}")
            return ExitCode.FAILED
    colour = "green" if outcome is Outcome.PROMOTED else "red"
    console.print(f"[{colour}]{outcome.value if outcome else state.name}[/{colour}]: {escape(state.message or '')}")
    return outcome.exit_code if outcome else ExitCode.FAILED


def requester(settings: Settings, token: str) -> tuple[str, bool]:
    """Who starts a run: the reviewer a token belongs to (verified), else the OS user (not verified)."""
    if token:
        return identify(read_book(settings.registry_path), token), True
    return getpass.getuser(), False


def follow_progress(run_id, done, timeout: float | None):
    """Show the run's stage, 'k/N models fitted' and elapsed time (its progress artifact) until ``done(run)``
    (or ``timeout`` seconds, if given)."""



    deadline = time.monotonic() + timeout if timeout is not None else None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("starting", total=100)
        while True:
            run = read_flow_run(run_id)
            progress = read_progress(run_id)
            if progress is not None:
                bar.update(task, completed=progress[0], description=escape(progress[1]))
            if done(run) or (deadline is not None and time.monotonic() > deadline):
                return run
            time.sleep(1.0)


def _abandoned(settings: Settings, run_id: str, process, state, who: dict, decided: bool) -> ExitCode:
    """The run's flow process died while the run was in ``state``: end the run Crashed with the
    reason, let the registry finish or undo an interrupted promotion, and audit it with ``who``
    found it (the reviewer, or the command). Nothing acts on a decision for such a run."""

    when = ("after the decision was delivered" if decided else "while the run awaited review"
            if state is None or state.is_paused() else f"while the run was {state.name}")
    registry = Registry(settings.registry_path, settings.remote_path)
    recovered = [note["detail"] for note in registry.recover()]  # an interrupted promotion: finished or undone
    promoted = [r["version"] for r in registry.audit_log() if r.get("run_id") == run_id and r["action"] == "promote"]
    reason = (f"the flow process (pid {process.pid} on {process.host}) ended {when}; "
              + (f"it had promoted {promoted[-1]}" if promoted else "nothing was promoted by this run")
              + "".join(f"; registry: {note}" for note in recovered))
    crash_run(run_id, reason)
    packet = load_packet(settings.state_dir / "runs" / run_id)
    dataset = packet.dataset if packet is not None else process.dataset  # None: it died before reading its spec
    if dataset is not None:
        registry.record_decision({"dataset": dataset, "run_id": run_id, "action": "flow_process_died", **who,
                                  "decision_delivered": decided, "reason": reason})
    forget_flow_process(settings.state_dir / "runs" / run_id)
    err.print(f"[red]run {run_id} crashed[/red]: {escape(reason)}. Start a new run to remediate again.", soft_wrap=True)
    return ExitCode.FAILED


def end_abandoned_runs(settings: Settings, command: str) -> None:
    """End Crashed, with the reason, each run this host recorded whose flow process is gone while the
    server still shows it Paused or Running (nothing else ever would), and audit the same for a run its
    worker already ended Crashed; forget the processes of runs that ended otherwise. Runs this server does not know (recorded with another one) are left alone. Then give
    each suspended review that expired its audit line and Expired state (``fairloop.serving.expiry``)."""

    gone = gone_flow_processes(settings.state_dir)
    for run in read_flow_runs(list(gone)) if gone else []:
        # a crash its worker reported still gets the reason and the audit line (its record is still here)
        held = run.state is None or run.state.is_running() or run.state.is_paused() or run.state.is_crashed()
        if not held:
            forget_flow_process(settings.state_dir / "runs" / str(run.id))  # ended, or waiting for a worker
        else:
            _abandoned(settings, str(run.id), gone[run.id], run.state, {"found_by": f"fairloop {command}"}, decided=False)
    record_expired_reviews(settings)


def record_expired_reviews(settings: Settings) -> None:
    """Give each suspended review that expired its audit line and Expired state, and say so once."""
    for run_id in reconcile_expired_reviews(settings.state_dir, Registry(settings.registry_path, settings.remote_path)):
        err.print(f"Run {run_id} expired: nobody decided its review in time; nothing was promoted.", soft_wrap=True)
