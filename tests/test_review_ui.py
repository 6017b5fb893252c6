"""The reviewer's path as a reviewer uses it: a real ``prefect server start`` (the UI is not
served by prefect_test_harness), the remediation flow paused for review, and the Resume dialog
driven in headless Chromium with Playwright. Then the same server with credentials required.

Needs Debian's ``chromium`` and the ``playwright`` package (``make test`` installs both); the
tests fail, never skip, when either is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import BackgroundRun, write_policy
from fairloop.outcomes import Outcome
from fairloop.registry import Registry

AUTH_STRING = "reviewers:Corr3ct-Horse"
SERVER_STARTUP_SECONDS = 120
UI_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def params(policy, **extra):
    return {
        "dataset": "datasets/adult.yaml", "recipe": "recipes/none.yaml", "constraint": "constraints/threshold-dp.yaml",
        "policy": str(policy), "train_rows": 3000, "requested_by": "pytest", "review_poll_seconds": 1, **extra,
    }


@pytest.fixture
def lenient_policy(tmp_path):
    return write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)


# A real Prefect server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealServer:
    """``prefect server start`` on a free loopback port, SQLite in a temporary PREFECT_HOME."""

    def __init__(self, home: Path, auth_string: str | None = None):
        self.port = free_port()
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.ui_url}/api"
        self.auth_string = auth_string
        self.log_path = home / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(home / "prefect-home"),
            "PREFECT_SERVER_UI_API_URL": self.api_url,  # else the UI calls port 4200
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        })
        if auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        prefect = Path(sys.executable).with_name("prefect")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # its own process group, killed as a whole in stop()
            )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"prefect server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"prefect server did not answer within {SERVER_STARTUP_SECONDS}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    @contextlib.contextmanager
    def client_settings(self, auth_string: str | None = None):
        """Point this process's Prefect clients (and the flow's thread) at this server."""
        import prefect.context
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        updates = {PREFECT_API_URL: self.api_url, PREFECT_UI_URL: self.ui_url}
        restore = []
        if auth_string:
            updates[PREFECT_API_AUTH_STRING] = auth_string
        else:
            restore.append(PREFECT_API_AUTH_STRING)
        with temporary_settings(updates=updates, restore_defaults=restore):
            # As prefect_test_harness does: threads (the flow run, log and event workers) read
            # the process-global settings context, not this thread's.
            with prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
                yield

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    server = RealServer(tmp_path_factory.mktemp("prefect-open"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    server = RealServer(tmp_path_factory.mktemp("prefect-auth"), auth_string=AUTH_STRING)
    yield server
    server.stop()


# Headless Chromium -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; `make install` does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is not installed (it is in the `test` extra: pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    with contextlib.suppress(Exception):  # evidence for a failed test, in its tmp_path
        page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
    context.close()


# 1. The reviewer approves in the Prefect UI -----------------------------------------------------


def test_reviewer_approves_in_the_prefect_ui_and_the_model_is_promoted(
    open_server, page, remediation_flow, registry_dir, lenient_policy
):
    from playwright.sync_api import expect

    with open_server.client_settings():
        run = BackgroundRun(remediation_flow, **params(lenient_policy))
        paused = run.wait_paused()

        page.goto(f"{open_server.ui_url}/runs/flow-run/{paused.id}")
        resume = page.get_by_role("button", name="Resume").first
        expect(resume).to_be_visible(timeout=UI_TIMEOUT_MS)
        resume.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible(timeout=UI_TIMEOUT_MS)
        # the review report, rendered from the pause's description
        expect(dialog).to_contain_text("Held-out test metrics", timeout=UI_TIMEOUT_MS)
        expect(dialog).to_contain_text("Gates")
        expect(dialog).to_contain_text("max_demographic_parity_difference")

        approve = dialog.get_by_role("switch")
        approve.click()
        expect(approve).to_be_checked()
        reviewer, comment = dialog.locator("textarea").all()
        reviewer.fill("dana")
        comment.fill("Approved in the UI: DPD within policy")
        dialog.get_by_role("button", name="Submit").click()
        expect(dialog).to_be_hidden(timeout=UI_TIMEOUT_MS)

        state = run.finish()
    assert state.name == Outcome.PROMOTED.value, state.message

    entry = Registry(registry_dir).champion("adult")
    assert entry is not None and entry.version == "v1"
    assert entry.approval == {"reviewer": "dana", "comment": "Approved in the UI: DPD within policy", "approved": True}
    assert entry.lineage["prefect_flow_run_id"] == str(paused.id)
