"""Talking to flow runs on the Prefect server: links, review submission, waiting for outcomes."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.states import Crashed

from fairloop.errors import BadInputError, ServerError
from fairloop.review.packet import form_input
from fairloop.serving.progress import end_progress

#: How long a review waits for the form's schema of a run that has just paused. The flow process
#: saves it right after the pause; on a busy SQLite-backed server one write can wait out SQLite's
#: 60 s busy timeout and fail, and the flow then saves it again on its next poll (a CI run at
#: 93 % of the suite saw no schema 30 s after the pause).
SCHEMA_WAIT_SECONDS = 180


def ui_url() -> str:
    return PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")


def flow_run_url(run_id: str | UUID) -> str:
    return f"{ui_url()}/runs/flow-run/{run_id}"


def review_commands(run_id: str | UUID) -> str:
    return (
        f"  fairloop show {run_id}\n"
        f"  fairloop approve {run_id} --reviewer NAME [--token TOKEN] [--comment TEXT]\n"
        f"  fairloop reject {run_id} --reviewer NAME [--token TOKEN] --comment TEXT"
    )


def read_flow_run(run_id: str | UUID) -> FlowRun:
    try:
        run_uuid = UUID(str(run_id))
    except ValueError:
        raise BadInputError(f"'{run_id}' is not a flow run id (a UUID)") from None
    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(run_uuid)
        except ObjectNotFound:
            raise BadInputError(f"no flow run {run_id} on the Prefect server at {PREFECT_API_URL.value()}") from None


def read_flow_runs(run_ids: list[UUID]) -> list[FlowRun]:
    """The runs of these ids that the server knows (in pages: the server caps how many one call returns)."""

    page = 100
    with get_client(sync_client=True) as client:
        return [run for start in range(0, len(run_ids), page) for run in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids[start:start + page])), limit=page)]


def submit_review(run_id: str | UUID, decision: dict) -> None:
    """Resume a paused run with the reviewer's answer, exactly as the UI's Resume form does.

    The server applies the first decision that reaches a paused run; any later one is told
    (the run is no longer paused: the server aborts it and nothing of it is stored). The form's
    schema is saved just after the run pauses; until it exists the server rejects input, so
    retry for a while (:data:`SCHEMA_WAIT_SECONDS`).
    """
    run_input = form_input(decision)
    run = read_flow_run(run_id)
    if not (run.state and run.state.is_paused()):
        state = run.state.name if run.state else "unknown"
        raise BadInputError(f"flow run {run_id} is not awaiting review (its state is {state})")
    deadline = time.monotonic() + SCHEMA_WAIT_SECONDS
    with get_client(sync_client=True) as client:  # the public sync client: no event-loop surprises
        while True:
            try:
                result = client.resume_flow_run(run.id, run_input=run_input)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 409:  # a concurrent decision stored its input first
                    raise BadInputError(_decided_elsewhere(run_id)) from None
                raise ServerError(f"the server refused the review of {run_id}: {exc}") from None
            if result.status == SetStateStatus.ACCEPT:
                return
            if result.status == SetStateStatus.ABORT:  # no longer paused when the server got it
                raise BadInputError(_decided_elsewhere(run_id))
            reason = result.details.reason or result.status.value
            if "schema" not in reason.lower() or time.monotonic() > deadline:
                raise ServerError(f"the server refused the review of {run_id}: {reason}")
            time.sleep(1.0)


def _decided_elsewhere(run_id: str | UUID) -> str:
    state = read_flow_run(run_id).state
    return (f"flow run {run_id} was no longer awaiting review when this decision arrived (its state is "
            f"{state.name if state else 'unknown'}): another decision reached it first, and this one was not applied")


def wait_for_flow_run(
    run_id: str | UUID, done: Callable[[FlowRun], bool], timeout: float, poll: float = 1.0
) -> FlowRun:
    """Poll a run until ``done(run)`` or the timeout; return the last run read."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_flow_run(run_id)
        if done(run) or time.monotonic() > deadline:
            return run
        time.sleep(poll)


def crash_run(run_id: str | UUID, reason: str) -> None:
    """End a run whose flow process is gone in Prefect's Crashed state with ``reason`` (forced:
    nothing else will ever move it out of Paused or Running), and its progress bar with it."""

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(str(run_id)), Crashed(message=reason), force=True)
    end_progress(run_id, f"Crashed: {reason}")


def find_tagged_run(tag: str) -> FlowRun | None:

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=1)
    return runs[0] if runs else None


def artifact_url(artifact_id: str | UUID) -> str:
    """The artifact's page in the Prefect UI (wide: for tables the Resume dialog cannot show)."""
    return f"{ui_url()}/artifacts/artifact/{artifact_id}"
