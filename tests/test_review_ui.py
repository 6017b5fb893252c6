"""The reviewer's path as a reviewer uses it: a real ``prefect server start`` that requires
credentials (the UI is not served by prefect_test_harness), a remediation run executed by a real
worker of the work pool and suspended for review (no process waits), and the UI's login and Resume
dialog driven in headless Chromium with Playwright.

Needs Debian's ``chromium`` and the ``playwright`` package (``make test`` installs both); the
tests fail, never skip, when either is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import SERVER_STARTUP_SECONDS, drain_prefect_workers, free_port, write_policy
from fairloop.review import credentials
from fairloop.serving.outcomes import Outcome
from fairloop.registry.store import Registry
from fairloop.serving.runs import read_flow_run, submit_review

AUTH_STRING = "reviewers:Corr3ct-Horse"
UI_TIMEOUT_MS = 60_000
SUBMIT_TRIES = 3  # see submit_the_form
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
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_URL,
            PREFECT_UI_URL,
            temporary_settings,
        )

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
                try:
                    yield
                finally:
                    drain_prefect_workers()

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
def locked_server(tmp_path_factory):
    server = RealServer(tmp_path_factory.mktemp("prefect-auth"), auth_string=AUTH_STRING)
    yield server
    server.stop()


# Headless Chromium -----------------------------------------------------------------------------


@contextlib.contextmanager
def chromium_page(evidence: Path):
    """A headless Chromium page, closed on exit.

    Playwright's sync API runs an asyncio loop in this thread while it is open, and Prefect's
    dual sync/async functions (resume_flow_run, hence fairloop.serving.runs.submit_review) then return
    an un-awaited coroutine instead of acting: make Prefect calls only outside this block.
    """
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; `make install` does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is not installed (it is in the `test` extra: pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            with contextlib.suppress(Exception):  # evidence for a failed test, in its tmp_path
                page.screenshot(path=str(evidence / "last-page.png"), full_page=True)
            browser.close()


# The reviewer's path in the Prefect UI ---------------------------------------------------------


# Everything in the dialog that sticks out of its box, or scrolls sideways inside it.
OVERFLOW_JS = """dialog => {
    const box = dialog.getBoundingClientRect();
    const out = [];
    for (const el of [dialog, ...dialog.querySelectorAll('*')]) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue;
        if (r.left < box.left - 1 || r.right > box.right + 1)
            out.push(`${el.tagName}.${el.className} sticks out: ${Math.round(r.left)}..${Math.round(r.right)} of ${Math.round(box.left)}..${Math.round(box.right)}`);
        if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
            out.push(`${el.tagName}.${el.className} scrolls sideways: ${el.scrollWidth} > ${el.clientWidth}: ${el.innerText.slice(0, 60)}`);
    }
    return out;
}"""


def screenshot_dirs(evidence: Path) -> list[Path]:
    """The test's tmp dir, and FAIRLOOP_SCREENSHOT_DIR when set (kept as test output)."""
    extra = os.environ.get("FAIRLOOP_SCREENSHOT_DIR")
    dirs = [evidence, *([Path(extra)] if extra else [])]
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
    return dirs


def shoot(page, evidence: Path, name: str) -> None:
    for directory in screenshot_dirs(evidence):
        page.screenshot(path=str(directory / name))


# Where an element sits against what the dialog shows before any scrolling: the box of its
# nearest scrolling ancestor (the dialog's reading box), clipped to the window.
FIRST_SCREEN_JS = """el => {
    let box = el.parentElement;
    while (box && !(box.scrollHeight > box.clientHeight + 1 && /(auto|scroll)/.test(getComputedStyle(box).overflowY)))
        box = box.parentElement;
    const shown = box ? box.getBoundingClientRect() : {top: 0, bottom: innerHeight};
    const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, shown_top: Math.max(shown.top, 0), shown_bottom: Math.min(shown.bottom, innerHeight),
            scrolled: box ? box.scrollTop : scrollY};
}"""

# What the first screen must say (Adult, sex; threshold-dp against the unconstrained baseline):
# the headline, the people whose decision changes, the worsening no gate checks, the gates in one line
FIRST_SCREEN = {
    "headline": re.compile(r"^Approving promotes .+ passes all \d+ gates"),
    "counts": re.compile(r"^Male \([\d,]+\): [\d,]+ lose selection \([\d,]+ qualified\)"),
    "worsening": re.compile(r"^Worse, not gated: EOD 0\.\d{3} → 0\.\d{3} \(×\d+\.\d\)"),
    "gates": re.compile(r"^Gates: all \d+ pass, whole 95% intervals"),
}


def assert_on_the_first_screen(dialog, name: str, text: re.Pattern) -> None:
    from playwright.sync_api import expect

    line = dialog.get_by_text(text)
    expect(line).to_be_visible(timeout=UI_TIMEOUT_MS)
    where = line.evaluate(FIRST_SCREEN_JS)
    assert where["scrolled"] == 0 and where["shown_top"] <= where["top"] and where["bottom"] <= where["shown_bottom"], (name, where)


def check_the_dialog_as_the_reviewer_sees_it(page, dialog, gate_labels: list[str], evidence: Path) -> None:
    """At 1400x1000: the decision on the first screen, before any scrolling (headline, who gains
    and who loses, what gets worse, the gates in one line); names shown as written (no HTML
    entity, no e-mail link); nothing in the dialog wider than it; every gate row and the
    frontier (at its natural size, not shrunk) each visible when scrolled to; screenshots."""
    from playwright.sync_api import expect

    overflow = dialog.evaluate(OVERFLOW_JS)  # asserted last, after the screenshots that show it
    for name, text in FIRST_SCREEN.items():
        assert_on_the_first_screen(dialog, name, text)
    shoot(page, evidence, "review-dialog-1-summary.png")
    shown = dialog.inner_text()
    assert "&#" not in shown and "&amp;" not in shown
    expect(dialog.locator("a[href^='mailto:']")).to_have_count(0)
    rows = [dialog.get_by_role("listitem").filter(has_text=label) for label in gate_labels]  # one line per gate
    for row in rows:
        row.scroll_into_view_if_needed()
        expect(row).to_be_visible()
        expect(row).to_be_in_viewport()
        expect(row).to_contain_text(re.compile(r"^(pass|fail|inconclusive|skipped): "))
    shoot(page, evidence, "review-dialog-2-gates.png")
    frontier = dialog.get_by_role("img", name="accuracy-fairness frontier")
    frontier.scroll_into_view_if_needed()
    expect(frontier).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(frontier).to_be_in_viewport()
    natural, shown = frontier.evaluate("img => [img.complete && img.naturalWidth, img.getBoundingClientRect().width]")
    shoot(page, evidence, "review-dialog-3-frontier.png")
    assert natural > 300 and shown >= 0.9 * natural, (natural, shown)  # drawn for the dialog, not shrunk
    assert overflow == []


def approve_in_the_ui(page, run_url: str, reviewer: str, comment: str, token: str, gate_labels: list[str],
                      evidence: Path, pause_key) -> None:
    """What the reviewer does: open the run, press Resume, read the decision on the first screen.
    A Submit with no decision chosen is stopped by the form (the run stays paused under the same
    key); an approval with a wrong token is refused by the run, whose reopened dialog starts with
    the reason; then approve with the right token. ``pause_key()``: the run's current pause key."""
    from playwright.sync_api import expect

    dialog = open_the_dialog(page, run_url)
    # the decision summary, rendered from the pause's description
    expect(dialog).to_contain_text("What changes for whom", timeout=UI_TIMEOUT_MS)
    expect(dialog).to_contain_text("What it costs")
    expect(dialog.get_by_role("link", name="full report")).to_have_attribute("href", re.compile(r"/artifacts/artifact/"))
    check_the_dialog_as_the_reviewer_sees_it(page, dialog, gate_labels, evidence)

    first_pause = pause_key()
    fill_the_form(page, dialog, None, reviewer, comment, token)  # everything but the decision
    dialog.get_by_role("button", name="Submit").click()
    page.wait_for_timeout(2000)  # a submitted form would close the dialog within this
    expect(dialog).to_be_visible()
    shoot(page, evidence, "review-dialog-5-no-decision.png")
    assert pause_key() == first_pause  # nothing reached the run

    fill_the_form(page, dialog, "approve", reviewer, comment, "not-" + token)
    submit_the_form(page, dialog, evidence, "wrong token", pause_key)
    deadline = time.monotonic() + 300  # a worker resumes the run in a new process, which suspends it anew
    while pause_key() in (first_pause, None) and time.monotonic() < deadline:  # refused, then suspended anew
        time.sleep(0.5)
    dialog = open_the_dialog(page, run_url)
    assert_on_the_first_screen(dialog, "refusal", re.compile(r"^Your review was refused: the token does not match"))
    expect(dialog.locator("article").first).to_contain_text(re.compile(r"^Your review was refused"))  # before all else
    shoot(page, evidence, "review-dialog-6-refused.png")

    fill_the_form(page, dialog, "approve", reviewer, comment, token)
    shoot(page, evidence, "review-dialog-4-form.png")
    submit_the_form(page, dialog, evidence, "approval", pause_key)


def open_the_dialog(page, run_url: str):
    from playwright.sync_api import expect

    page.goto(run_url)
    resume = page.get_by_role("button", name="Resume").first
    expect(resume).to_be_visible(timeout=UI_TIMEOUT_MS)
    resume.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT_MS)
    return dialog


def submit_the_form(page, dialog, evidence: Path, attempt: str, paused_under) -> None:
    """Submit; the UI closes the dialog once the server accepts the resume. When the server fails
    the request, Prefect's UI shows "Oops. Something went wrong." and keeps the dialog open (a
    SQLite-backed server answers 503 after its busy timeout: seen at load 7); the reviewer submits
    again while the run is still paused under the same key (``paused_under()``), at most
    SUBMIT_TRIES times. If the dialog stays open otherwise, fail with what the reviewer would see:
    the toasts, the form's own messages and the run page (screenshot ``submit-<attempt>.png``)."""
    key = paused_under()
    server_failed = page.get_by_text("Something went wrong")
    for _ in range(SUBMIT_TRIES):
        failures_before = server_failed.count()
        dialog.get_by_role("button", name="Submit").click()
        deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
        while time.monotonic() < deadline and dialog.is_visible() and server_failed.count() <= failures_before:
            page.wait_for_timeout(500)
        if not dialog.is_visible() or paused_under() != key:  # accepted (the server may answer late)
            return
        if server_failed.count() <= failures_before:  # no answer, no error: nothing a retry would change
            break
    shoot(page, evidence, f"submit-{attempt.replace(' ', '-')}.png")
    toasts = page.locator(".p-toast").all_inner_texts() + server_failed.all_inner_texts()
    form = dialog.locator("form, .p-label").all_inner_texts()
    raise AssertionError(f"the dialog stayed open after the {attempt} Submit; toasts: {toasts}; form: {form}")


def fill_the_form(page, dialog, decision: str | None, reviewer: str, comment: str, token: str) -> None:
    """The form in field order: the decision (a select with nothing chosen), reviewer, comment and
    token (textareas: Prefect's form shows a SecretStr as plain text), accept_inconclusive_risk
    (a switch, left off: every gate decided)."""
    from playwright.sync_api import expect

    if decision is not None:
        # headless, a click on Prefect's select only focuses it; the keyboard opens its options
        dialog.locator(".p-select-button__control").press("ArrowDown")
        expect(page.get_by_role("option")).to_have_text(["approve", "reject"])  # nothing preselected
        page.get_by_role("option", name=decision, exact=True).click()
        expect(dialog.locator(".p-select-button__value")).to_have_text(decision)
    expect(dialog.get_by_role("switch")).not_to_be_checked()
    reviewer_field, comment_field, token_field = dialog.locator("textarea").all()
    reviewer_field.fill(reviewer)
    comment_field.fill(comment)
    token_field.fill(token)


# A server that requires credentials --------------------------------------------------------


def read_report_artifacts(run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {a.key: a.data for a in artifacts if a.key}


def assert_unauthorized(call, *args, **kwargs) -> None:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        call(*args, **kwargs)
    assert refused.value.response.status_code == 401, refused.value


def basic(auth_string: str) -> httpx.BasicAuth:
    return httpx.BasicAuth(*auth_string.split(":", 1))


def log_in_to_the_ui(page, ui_url: str, run_url: str) -> None:
    """Without credentials the UI shows nothing of the run; its login page takes the string."""
    from playwright.sync_api import expect

    # UI quirk: a run link opened before logging in does not lead to the login page; the run's
    # request is refused and the UI falls back to "/" showing "Page not found".
    page.goto(run_url)
    expect(page).not_to_have_url(run_url, timeout=UI_TIMEOUT_MS)  # sent away from the run
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    page.goto(ui_url)
    expect(page).to_have_url(re.compile(r"/login"), timeout=UI_TIMEOUT_MS)
    login = page.get_by_placeholder("admin:pass")
    login.fill("reviewers:wrong")
    page.get_by_role("button", name="Login").click()
    page.wait_for_timeout(1500)  # nothing to wait for: a refused login changes nothing
    expect(page).to_have_url(re.compile(r"/login"))
    login.fill(AUTH_STRING)
    page.get_by_role("button", name="Login").click()
    expect(page).not_to_have_url(re.compile(r"/login"), timeout=UI_TIMEOUT_MS)


def test_only_a_reviewer_with_credentials_can_approve_and_does_so_in_the_ui(
    locked_server, registry_dir, lenient_policy, tmp_path, monkeypatch
):
    """On a server that requires credentials, clients without them can neither resume the suspended
    run nor read runs or artifacts; a reviewer logs in to the Prefect UI, reads the report in the
    Resume dialog, approves there, and the worker resumes the run, which promotes the model."""
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    from fairloop.config import Settings
    from fairloop.errors import ServerError
    from fairloop.flows.request import RemediationRequest
    from fairloop.serving.runs import wait_for_flow_run
    from fairloop.serving.server import ensure_server
    from fairloop.serving.worker import ensure_deployment, ensure_worker, start_remediation, stop_worker

    monkeypatch.setenv("FAIRLOOP_STATE_DIR", str(tmp_path / "state"))

    registry = Registry(Settings().registry_path, Settings().remote_path)  # as `fairloop reviewers add` does
    book, token = credentials.issue(credentials.read_book(registry.root), "dana")
    registry.commit_file(credentials.REVIEWERS_FILE, book.model_dump_json(), "Reviewer credential for dana")
    approve = {"approve": True, "reviewer": "erin", "comment": "approved with credentials"}
    with locked_server.client_settings(AUTH_STRING), contextlib.ExitStack() as cleanup:
        # the worker (and the flow processes it starts) talk to the server with this process's credentials
        ensure_deployment(Settings())
        assert ensure_worker(Settings(), locked_server.api_url)
        cleanup.callback(stop_worker, Settings())
        started = start_remediation(Settings(), RemediationRequest(**params(lenient_policy)))
        paused = wait_for_flow_run(started.id, lambda r: bool(r.state and (r.state.is_paused() or r.state.is_final())),
                                   600)
        assert paused.state.name == "Suspended", paused.state
        assert "Gates" in read_report_artifacts(paused.id)["remediation-report"]
        assert ensure_server(Settings()) == (locked_server.api_url, False)

        # A client without credentials (this thread only; the flow keeps its own)
        with temporary_settings(restore_defaults={PREFECT_API_AUTH_STRING}):
            assert_unauthorized(read_flow_run, paused.id)
            assert_unauthorized(read_report_artifacts, paused.id)
            assert_unauthorized(submit_review, paused.id, approve)
            assert_unauthorized(resume_flow_run, paused.id, run_input=approve)
            # fairloop's commands stop at once, naming the setting to provide
            with pytest.raises(ServerError, match="requires credentials: set PREFECT_API_AUTH_STRING"):
                ensure_server(Settings())
        with temporary_settings(updates={PREFECT_API_AUTH_STRING: "reviewers:wrong"}):
            assert_unauthorized(submit_review, paused.id, approve)
            with pytest.raises(ServerError, match="refused the credentials"):
                ensure_server(Settings())
        # The raw API: the resume request itself, flow runs, artifacts, logs; only probes are open
        api = locked_server.api_url
        for auth in (None, basic("reviewers:wrong")):
            assert httpx.post(f"{api}/flow_runs/{paused.id}/resume", json={"run_input": approve}, auth=auth).status_code == 401
            assert httpx.post(f"{api}/flow_runs/filter", json={}, auth=auth).status_code == 401
            assert httpx.get(f"{api}/flow_runs/{paused.id}", auth=auth).status_code == 401
            assert httpx.post(f"{api}/artifacts/filter", json={}, auth=auth).status_code == 401
            assert httpx.post(f"{api}/logs/filter", json={}, auth=auth).status_code == 401
        assert httpx.get(f"{api}/health").status_code == 200
        assert httpx.get(f"{api}/flow_runs/{paused.id}", auth=basic(AUTH_STRING)).status_code == 200
        assert httpx.post(f"{api}/artifacts/filter", json={}, auth=basic(AUTH_STRING)).status_code == 200

        # Nothing got through: still paused, nothing promoted
        assert read_flow_run(paused.id).state.is_paused()
        assert Registry(registry_dir).audit_log() == []

        # The reviewer logs in with the user:password string and approves in the Resume dialog
        run_url = f"{locked_server.ui_url}/runs/flow-run/{paused.id}"
        def pause_key():  # plain HTTP: Prefect's clients do not work inside the chromium block
            run = httpx.get(f"{api}/flow_runs/{paused.id}", auth=basic(AUTH_STRING)).json()
            return run["state"]["state_details"].get("pause_key") if run["state"]["type"] == "PAUSED" else None

        with chromium_page(tmp_path) as page:
            log_in_to_the_ui(page, locked_server.ui_url, run_url)
            approve_in_the_ui(page, run_url, "dana", "Approved in the UI: DPD within policy", token,
                              ["DPD ≤ 0.5", "accuracy drop vs baseline ≤ 0.2"], tmp_path, pause_key)
        state = wait_for_flow_run(paused.id, lambda r: bool(r.state and r.state.is_final()), 600).state
        assert read_flow_run(paused.id).state.name == Outcome.PROMOTED.value  # what the UI now shows
    assert state.name == Outcome.PROMOTED.value, state.message
    entry = Registry(registry_dir).champion("adult")
    assert entry.version == "v1"
    assert entry.approval == {"reviewer": "dana", "comment": "Approved in the UI: DPD within policy", "approved": True,
                              "verified": True}  # the token typed in the dialog's password field matched
    assert entry.lineage.prefect_flow_run_id == str(paused.id)
    refused = [d for d in Registry(registry_dir).audit_log() if d.get("action") == "refused"]
    assert [d["comment"] for d in refused] == ["the token does not match reviewer 'dana'"]
    check_the_promoted_report_page(registry_dir / "adult" / "report.html", str(paused.id), tmp_path)


def check_the_promoted_report_page(page_file: Path, run_id: str, evidence: Path) -> None:
    """report.html at 1400 px: no sideways scroll, headed by the run, the date and the decision."""
    from playwright.sync_api import expect

    with chromium_page(evidence) as page:
        page.goto(page_file.as_uri())
        header = page.locator("body > p").first
        expect(header).to_contain_text(re.compile(rf"^Run {run_id} · decided \d{{4}}-\d\d-\d\d \d\d:\d\d UTC · "
                                                  r"approved by dana \(token verified\)"))
        shoot(page, evidence, "report-html-top.png")
        wide, shown = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert wide <= shown, (wide, shown)


def test_the_form_has_no_default_decision_and_asks_a_token_only_when_reviewers_are_registered():
    """What the Resume form's schema (as Prefect saves it for the UI) demands: a decision chosen
    from approve/reject with nothing preset, and a token exactly when credentials are registered;
    what `fairloop approve/reject` send (approve=True/False) becomes that decision."""
    from prefect.input.run_input import create_v2_schema
    from pydantic import ValidationError

    from fairloop.review.packet import CredentialedReviewDecision, ReviewDecision, form_input

    for form, token_required in ((ReviewDecision, False), (CredentialedReviewDecision, True)):
        schema = create_v2_schema(form.__name__, model_base=form)
        decision = schema["properties"]["decision"]
        assert decision["enum"] == ["approve", "reject"] and "default" not in decision
        assert "decision" in schema["required"] and ("token" in schema["required"]) is token_required
    with pytest.raises(ValidationError, match="decision"):
        ReviewDecision(reviewer="dana")
    assert form_input({"approve": False, "reviewer": "bob"}) == {"reviewer": "bob", "decision": "reject"}
    assert ReviewDecision(**form_input({"approve": True, "reviewer": "ann"})).approve
