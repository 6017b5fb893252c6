"""A flow's wait for its reviewer that outlives the Prefect server going away.

``prefect.flow_runs.pause_flow_run`` polls the server and raises on the first connection error:
a server restart while a run awaits review (a review may take a week) used to fail the flow
process, and the run was lost. Here the pause is proposed by Prefect as usual (the UI shows the
same Resume form); if the server stops answering, the wait goes on, polling the run until the
server is back, and then either reads the reviewer's answer (the run was resumed), keeps waiting
(still paused: the server keeps paused runs in its database across restarts) or ends (the server
expired the pause, or the review deadline passed). The run holds its flow process through the
outage; a process that dies while waiting is reported by ``fairloop.serving.flow_process``.

Prefect APIs used beyond ``pause_flow_run``: the run-input keyset of a pause
(``prefect.input.run_input.keyset_from_base_key``), ``RunInput.save/load`` and the public
client. ``tests/test_review_wait.py`` pins the keyset naming against ``pause_flow_run``'s own, so a
Prefect upgrade that changes it fails loudly.
"""

from __future__ import annotations

import logging
import time
from typing import TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_base_key
from pydantic import ValidationError

Form = TypeVar("Form", bound=RunInput)

#: how often the wait asks whether the server is back (seconds); the reviewer's poll interval
#: applies once it answers again
RECONNECT_SECONDS = 5.0


class PauseNotTaken(Exception):
    """The server went away before the pause was recorded, or the run was resumed without the
    form's answer: the caller pauses again under a new key."""


def server_unreachable(exc: BaseException) -> bool:
    """A connection failure or a server-side error (a restarting server answers 5xx), as
    opposed to a refusal that would repeat. A 409 on the run's input is a retried save whose
    first attempt went through (a busy SQLite server answers late): the pause stands."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 409:
        return exc.request.url.path.endswith("/input")
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


def pause_keyset(key: str) -> dict[str, str]:
    """The run-input keys Prefect uses for a ``pause_flow_run(key=key)`` (a Paused state's name
    is "Paused")."""
    return keyset_from_base_key(f"paused-{key}")


def wait_for_review(form: type[Form], *, flow_run_id: UUID, key: str, deadline: float, poll_seconds: int,
                    logger: logging.Logger | logging.LoggerAdapter) -> Form | None:
    """Pause the current flow run for ``form`` until it is answered (the answer) or
    ``deadline`` (``time.monotonic()``) passes (None). Raises :class:`PauseNotTaken` when the
    pause must be proposed again."""
    remaining = int(deadline - time.monotonic())
    if remaining <= 0:
        return None
    try:
        return pause_flow_run(wait_for_input=form, timeout=remaining,
                              poll_interval=min(poll_seconds, max(1, remaining // 2)), key=key)
    except FlowPauseTimeout:
        return None
    except Exception as exc:
        if not server_unreachable(exc):
            raise
        logger.warning("The Prefect server stopped answering while this run awaits review (%s: %s). Still waiting: "
                       "the review goes on once the server is back (review deadline in %ds).",
                       type(exc).__name__, exc, int(deadline - time.monotonic()))
    return _rejoin(form, flow_run_id, key, deadline, poll_seconds, logger)


def _rejoin(form: type[Form], flow_run_id: UUID, key: str, deadline: float, poll_seconds: int,
            logger: logging.Logger | logging.LoggerAdapter) -> Form | None:
    keyset = pause_keyset(key)
    unreachable, schema_checked = True, False
    while time.monotonic() < deadline:
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run_id).state
                if unreachable:
                    logger.info("The Prefect server answers again; the run is %s.", state.name if state else "unknown")
                    unreachable = False
                if state is not None and state.is_paused():
                    if state.state_details.pause_key != key:
                        raise PauseNotTaken(f"the run is paused under another key ({state.state_details.pause_key})")
                    if not schema_checked:
                        _ensure_schema(form, keyset, flow_run_id)
                        schema_checked = True
                    time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
                    continue
                if state is not None and state.is_running():
                    return _answer(form, keyset, flow_run_id)
                return None  # the server ended the pause (expired) or the run was cancelled
        except PauseNotTaken:
            raise
        except Exception as exc:
            if not server_unreachable(exc):
                raise
            unreachable = True
            time.sleep(min(RECONNECT_SECONDS, max(0.0, deadline - time.monotonic())))
    return None


def _ensure_schema(form: type[RunInput], keyset: dict[str, str], flow_run_id: UUID) -> None:
    """The form's schema is saved just after the pause; an outage in between leaves a pause the
    UI cannot answer, so save it if it is missing."""

    if read_flow_run_input(keyset["schema"], flow_run_id=flow_run_id) is None:
        form.save(keyset, flow_run_id=flow_run_id)


def _answer(form: type[Form], keyset: dict[str, str], flow_run_id: UUID) -> Form:
    try:
        return form.load(keyset, flow_run_id=flow_run_id)
    except ValidationError as exc:  # no answer stored: the form's required fields are missing
        raise PauseNotTaken(f"the run was resumed without the review form's answer ({type(exc).__name__})") from None
