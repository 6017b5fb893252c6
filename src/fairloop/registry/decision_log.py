"""The decision log (``audit.jsonl`` in the registry): one typed record per action, written and read here.

Every line is one JSON object with ``action``; the registry appends it inside a transaction
(``Registry.record_decision``) and ``Registry.decisions`` reads the file back as these models,
so the flow, the CLI and the monitor's dashboard agree on what a record holds. Anything a rerun
does carries its ``incident`` (the monitor's id of the alert it answers), which is how
``fairloop history`` follows an incident from detection to promotion to clearance. Lines written
before a field existed still read (the field is None); unknown actions read as ``Decision``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class Decision(BaseModel):
    """Fields every record has; the extra ones a record type does not name are kept (older lines)."""

    model_config = ConfigDict(extra="allow")

    action: str
    dataset: str
    at: str | None = Field(None, description="when the registry wrote it (ISO 8601, UTC)")
    run_id: str | None = None
    requested_by: str | None = None
    requester_verified: bool | None = None
    incident: str | None = Field(None, description="the monitor's incident a rerun answers")
    remediates_with: str | None = None
    candidate: str | None = None


class RerunStarted(Decision):
    action: Literal["rerun_started"] = "rerun_started"
    window: str | None = None


class RefusedInput(Decision):
    action: Literal["refused_input"] = "refused_input"
    reason: str


class AuditBlocked(Decision):
    action: Literal["audit_blocked"] = "audit_blocked"
    reasons: list[str] = []


class GateFailed(Decision):
    action: Literal["gate_failed"] = "gate_failed"
    reasons: list[str] = []


class AwaitingData(Decision):
    action: Literal["awaiting_data"] = "awaiting_data"
    reasons: list[str] = []


class ReviewRequested(Decision):
    action: Literal["review_requested"] = "review_requested"


class ReviewRefused(Decision):
    action: Literal["refused"] = "refused"
    reviewer: str | None = None
    comment: str | None = None
    reason: str | None = None
    attempt: int | None = None  # which review attempt of the run (a resumed run replays earlier ones)


class Expired(Decision):
    action: Literal["expired"] = "expired"
    timeout_seconds: int


class Rejected(Decision):
    action: Literal["reject"] = "reject"
    reviewer: str
    comment: str = ""
    approved: bool = False


class Promoted(Decision):
    action: Literal["promote"] = "promote"
    version: str
    reviewer: str | None = None
    comment: str | None = None


class RolledBack(Decision):
    action: Literal["rollback"] = "rollback"
    version: str


class FlowProcessDied(Decision):
    action: Literal["flow_process_died"] = "flow_process_died"


Record = Annotated[
    Union[RerunStarted, RefusedInput, AuditBlocked, GateFailed, AwaitingData, ReviewRequested, ReviewRefused, Expired,
          Rejected, Promoted, RolledBack, FlowProcessDied],
    Field(discriminator="action"),
]
_RECORD = TypeAdapter(Record)
KNOWN_ACTIONS = {cls.model_fields["action"].default for cls in Decision.__subclasses__()}

# What each action means for an incident's timeline (``fairloop history``).
STEPS = {"rerun_started": "rerun started", "review_requested": "review requested"}
OUTCOMES = {"promote": "promoted", "reject": "rejected", "expired": "review expired", "gate_failed": "gate failed",
            "audit_blocked": "audit blocked", "refused_input": "rerun refused", "awaiting_data": "waiting for more rows",
            "flow_process_died": "rerun crashed"}


def as_line(record: Decision | dict[str, Any], at: str) -> str:
    """One JSON line for ``audit.jsonl``: a record, or a plain dict of an action this module does not
    type (the registry's own recovery notes)."""
    data = record.model_dump(mode="json", exclude_none=True) if isinstance(record, Decision) else dict(record)
    return json.dumps({**data, "at": at}, sort_keys=True)


def parse(data: dict[str, Any]) -> Decision:
    """A line of ``audit.jsonl`` as its record type (``Decision`` for actions not typed here, and for
    lines written before a required field existed)."""
    if data.get("action") in KNOWN_ACTIONS:
        try:
            return _RECORD.validate_python(data)
        except ValidationError:
            pass
    return Decision.model_validate(data)
