"""Shared fixtures: one Prefect test server per session, a fresh registry repo per test; the session
fails if any process the suite started outlives it."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# DVC binds its console log handlers to sys.stdout/sys.stderr when it is first imported. A first
# import inside a CliRunner.invoke (``fairloop show`` reading the registry) binds them to the
# runner's stream, which the runner closes: every later DVC log line in this worker (``Repo.init``
# of the next test's registry) then raises LoggingException and fails that run. Import it here,
# while the streams are pytest's own for the whole session.
import dvc.repo  # noqa: F401,E402

PROJECT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Every process a test starts inherits this (isolated_env keeps it): at the end of the session none
# may be left (servers, workers, flow processes), see pytest_sessionfinish.
SESSION_MARK = "PYTEST_FAIRLOOP_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex
# Seconds a Prefect server started by a test may take to answer: generous, for a machine whose
# every core is busy (a start-up took over a minute at load 15-40).
SERVER_STARTUP_SECONDS = int(os.environ.get("FAIRLOOP_TEST_SERVER_TIMEOUT", "300"))
# How long a test waits for a flow run to reach a state: at load 15 a sweep ran past the 180 s this was.
RUN_WAIT_TIMEOUT = float(os.environ.get("FAIRLOOP_TEST_RUN_TIMEOUT", "600"))
# Read timeout of a test's own call to a Prefect server's API: a SQLite-backed server under load
# holds a request for up to SQLite's 60 s busy timeout (a CI run timed out at 30 s).
API_TIMEOUT = float(os.environ.get("FAIRLOOP_TEST_API_TIMEOUT", "120"))


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect server per xdist worker, shared by every test that runs flows in this process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=SERVER_STARTUP_SECONDS):
        yield


def leftover_processes() -> list:
    """Processes this session's tests started that still run (this process excepted)."""
    import psutil

    mine, found = os.environ[SESSION_MARK], []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or (process.ppid() == os.getpid()
                                               and "resource_tracker" in " ".join(process.cmdline())):
                continue  # multiprocessing's and loky's trackers of this process end with it
            if process.environ().get(SESSION_MARK) == mine:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """No test may leave a process behind (servers, workers, flow processes): torn down after every
    other session fixture, this names each one found, kills it and fails the session."""
    import psutil

    yield
    _, left = psutil.wait_procs(leftover_processes(), timeout=10)  # some are still on their way out
    names = []
    for process in left:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(left, timeout=30)
    if names:
        pytest.fail("processes left behind by the tests (killed):\n  " + "\n  ".join(names), pytrace=False)


@pytest.fixture
def registry_dir(tmp_path, monkeypatch) -> Path:
    """A registry (git + DVC repo) and DVC remote of its own for each test."""
    monkeypatch.setenv("FAIRLOOP_PROJECT_DIR", str(PROJECT))
    monkeypatch.setenv("FAIRLOOP_REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("FAIRLOOP_REGISTRY_REMOTE", str(tmp_path / "dvc-remote"))
    monkeypatch.chdir(PROJECT)
    return tmp_path / "registry"


@pytest.fixture(scope="session")
def remediation_flow():
    """The remediation flow, called with the request's fields as keywords (as the tests read best)."""
    from fairloop.flows import remediation
    from fairloop.flows.request import RemediationRequest

    def run(*, return_state: bool = False, **fields):
        return remediation(request=RemediationRequest(**fields), return_state=return_state)

    return run


POLICY_SETTINGS = ("approval", "allow_sensitive_at_predict", "evaluation", "crossfit", "inconclusive", "group_floors",
                   "bootstrap")


def isolated_env(base: Path) -> dict[str, str]:
    """The environment of fairloop commands a test module runs against its own server, state and registry under ``base``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FAIRLOOP_"))}
    env.update(FAIRLOOP_PROJECT_DIR=str(PROJECT), FAIRLOOP_STATE_DIR=str(base / "state"),
               FAIRLOOP_REGISTRY_DIR=str(base / "registry"), FAIRLOOP_REGISTRY_REMOTE=str(base / "remote"),
               FAIRLOOP_SERVER_PORT=str(free_port()), PREFECT_HOME=str(base / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DVC_NO_ANALYTICS="1", COLUMNS="250")
    return env


def free_port() -> int:
    """A TCP port nobody listens on now, for a server a test starts itself."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Webhook:
    """A local HTTP server that records every JSON body POSTed to it (the notification block's target)."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fairloop"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def write_policy(directory: Path, name: str = "test-policy", **thresholds) -> Path:
    """A policy file for a test: gates chosen by the test, not by whatever the subsample yields
    (keyword arguments named in POLICY_SETTINGS are policy settings, the rest thresholds)."""
    import yaml

    path = directory / f"{name}.yaml"
    settings = {key: thresholds.pop(key) for key in POLICY_SETTINGS if key in thresholds}
    # wiring tests fit the fast post-processor, which needs the sensitive feature at prediction time
    settings.setdefault("allow_sensitive_at_predict", True)
    path.write_text(yaml.safe_dump({"name": name, "version": 1, "thresholds": thresholds, **settings}))
    return path


class BackgroundRun:
    """A remediation flow run in a thread (it blocks while paused), found on the server by tag."""

    def __init__(self, flow, *, run_tags: tuple[str, ...] = (), **parameters):
        from prefect import tags

        self.tag = f"test-{uuid.uuid4().hex[:10]}"
        self.state = None
        self.error: BaseException | None = None

        def target():
            try:
                with tags(self.tag, *run_tags):  # run_tags: e.g. the served deployment's, which automations match
                    self.state = flow(**parameters, return_state=True)
            except BaseException as exc:  # surfaced by finish()
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def wait_until(self, predicate, timeout: float = RUN_WAIT_TIMEOUT):
        from fairloop.serving.runs import find_tagged_run, wait_for_flow_run

        deadline = time.monotonic() + timeout
        run = None
        while run is None and time.monotonic() < deadline:
            if not self.thread.is_alive():
                break
            run = find_tagged_run(self.tag)
            time.sleep(0.2)
        if run is None:
            self.finish()
            raise AssertionError(f"run {self.tag} never appeared (state {self.state})")
        return wait_for_flow_run(run.id, predicate, deadline - time.monotonic(), poll=0.3)

    def wait_paused(self, timeout: float = RUN_WAIT_TIMEOUT):
        run = self.wait_until(lambda r: bool(r.state and (r.state.is_paused() or r.state.is_final())), timeout)
        assert run.state.is_paused(), f"expected Paused, got {run.state.name}: {run.state.message}"
        return run

    def approve_and_finish(self, comment: str, reviewer: str = "alice"):
        """Wait for the review, approve it as ``reviewer``, and return the final state (asserted Promoted)."""
        from fairloop.serving.outcomes import Outcome
        from fairloop.serving.runs import submit_review

        submit_review(self.wait_paused().id, {"approve": True, "reviewer": reviewer, "comment": comment})
        state = self.finish()
        assert state.name == Outcome.PROMOTED.value, state.message
        return state

    def finish(self, timeout: float = RUN_WAIT_TIMEOUT):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "flow run did not finish"
        if self.error:
            raise self.error
        return self.state


def drain_prefect_workers() -> None:
    """Flush this process's Prefect log and event workers (bounded), as prefect_test_harness does
    before it switches servers: a worker started for one server keeps sending to it."""
    import contextlib

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):
        APILogWorker.instance().drain()
    EventsWorker.drain_all(timeout=60)  # bounded: a server that went away must fail the test, not hang it



def progress_steps(run_id, until: str, timeout: float = 60) -> list[str]:
    """The progress reporter's log lines of a run on this process's server ("fit: 3/12 models
    fitted"), in order, without their elapsed seconds; read again until one starts with ``until``
    (logs reach the server in batches, seconds after the run logged them)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                    sort=LogSort.TIMESTAMP_ASC, limit=200)
        steps = [found.group(1) for log in logs if (found := re.match(r"\[\s*[\d.]+s\] (.*)", log.message))]
        if any(step.startswith(until) for step in steps) or time.monotonic() > deadline:
            return steps
        time.sleep(1)
