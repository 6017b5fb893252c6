"""Shared fixtures: one Prefect test server per session, a fresh registry repo per test; the session
fails if any process the suite started outlives it."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Every process the suite starts inherits this mark (xdist workers get the controller's), so the check at
# the session's end finds the ones that outlived it, orphans included, and no other developer's processes.
SUITE_MARK = "FAIRLOOP_TEST_SESSION"
os.environ.setdefault(SUITE_MARK, uuid.uuid4().hex)
# A loaded machine (every core busy) needs minutes to start a Prefect server; 60 s timed out under load.
SERVER_START_TIMEOUT = int(os.environ.get("FAIRLOOP_TEST_SERVER_TIMEOUT", "300"))
# How long a test waits for a flow run to reach a state: at load 15 a sweep ran past the 180 s this was.
RUN_WAIT_TIMEOUT = float(os.environ.get("FAIRLOOP_TEST_RUN_TIMEOUT", "600"))


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect server per xdist worker, shared by every test that runs flows in this process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=SERVER_START_TIMEOUT):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session):
    """After every fixture's teardown (and, under xdist, every worker's exit): kill what the suite left running
    and fail the session naming it."""
    result = yield
    if not hasattr(session.config, "workerinput"):  # the controller sees every worker's processes
        left = leftover_processes()
        if left:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            session.config.get_terminal_writer().line(
                "\nprocesses the suite started were still running (killed now):\n" + "\n".join(left), red=True)
    return result


def leftover_processes(grace: float = 10) -> list[str]:
    """Kill the processes carrying this session's mark other than this one and its own resource trackers
    (multiprocessing's and loky's, which end when this process does), given ``grace`` seconds to exit first,
    and describe them."""
    import psutil

    mark, me = os.environ[SUITE_MARK], os.getpid()
    marked = []
    for process in psutil.process_iter():
        try:
            if process.pid == me or (process.ppid() == me and "resource_tracker" in " ".join(process.cmdline())):
                continue
            if process.environ().get(SUITE_MARK) == mark:
                marked.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    _, alive = psutil.wait_procs(marked, timeout=grace)
    described = []
    for process in alive:
        try:
            described.append(f"  pid {process.pid}: {' '.join(process.cmdline())[:300]}")
            process.kill()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return described


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
    from fairloop.flows import remediation

    return remediation


POLICY_SETTINGS = ("approval", "allow_sensitive_at_predict", "evaluation", "crossfit", "inconclusive", "group_floors",
                   "bootstrap")


def isolated_env(base: Path) -> dict[str, str]:
    """The environment of fairloop commands a test module runs against its own server, state and registry under ``base``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FAIRLOOP_"))}
    env.update({SUITE_MARK: os.environ[SUITE_MARK]})
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
