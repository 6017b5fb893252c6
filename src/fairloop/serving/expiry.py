"""Suspended reviews that expired: the audit line and the run's state name, written afterwards.

A suspended run holds no process (``fairloop.flows.review``), so when its review deadline
passes no fairloop code runs: Prefect's server ends it Failed("The flow was paused and never
resumed."). Every command that lists or decides runs (``approve``, ``reject``, ``show``,
``models``, ``serve``, ``server``, a following ``remediate``) reconciles: each run of this state
folder that reached review, has no outcome in the decision log, and was failed by the server out of
a suspension gets one ``expired`` line and its state renamed Expired, its progress bar too (so the UI
and the exit code say what happened). Idempotent: a run with an outcome line is never looked at again.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.states import Failed

from fairloop.registry import decision_log
from fairloop.registry.store import Registry
from fairloop.review.packet import PACKET_FILE, load_packet
from fairloop.serving.outcomes import Outcome
from fairloop.serving.progress import end_progress
from fairloop.serving.runs import read_flow_runs

# decision-log actions that end a run: such a run is not reconciled again
ENDING_ACTIONS = {"promote", "reject", "expired", "gate_failed", "audit_blocked", "awaiting_data", "flow_process_died",
                  "refused_input"}


def expired_by_server(run_id: UUID) -> bool:
    """Whether the server failed the run because its suspension timed out. Read from the state
    history, not the message text (which Prefect may reword)."""
    with get_client(sync_client=True) as client:
        states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    if len(states) < 2 or not states[-1].is_failed():
        return False
    suspended, details = states[-2], states[-2].state_details
    return bool(suspended.is_paused() and details.pause_reschedule and details.pause_timeout
                and details.pause_timeout <= states[-1].timestamp)


def reconcile_expired_reviews(state_dir: Path, registry: Registry) -> list[str]:
    """Record each expired suspended review of ``state_dir``'s runs; returns the run ids recorded."""
    ended = {d.run_id for d in registry.decisions() if d.action in ENDING_ACTIONS}
    waiting = {}
    for packet_file in (state_dir / "runs").glob(f"*/{PACKET_FILE}"):
        try:
            run_id = UUID(packet_file.parent.name)
        except ValueError:
            continue
        if str(run_id) not in ended:
            waiting[run_id] = packet_file.parent
    recorded = []
    for run in read_flow_runs(list(waiting)) if waiting else []:
        if run.state is None or not run.state.is_failed() or run.state.name == Outcome.EXPIRED.value:
            continue
        if not expired_by_server(run.id):
            continue
        packet = load_packet(waiting[run.id])
        seconds = packet.review_timeout_seconds
        registry.record_decision(decision_log.Expired(
            dataset=packet.dataset, run_id=str(run.id), requested_by=packet.requested_by,
            requester_verified=packet.requester_verified, candidate=packet.candidate_label, timeout_seconds=seconds))
        message = f"no approval within {seconds}s; nothing promoted (the review was suspended: no process waited)"
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Failed(name=Outcome.EXPIRED.value, message=message), force=True)
        end_progress(run.id, f"{Outcome.EXPIRED.value}: {message}")  # its bar still read "awaiting review"
        recorded.append(str(run.id))
    return recorded
