"""How a remediation run ends: the flow's final state name, and the CLI exit code for it."""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    PROMOTED = 0
    FAILED = 1
    BAD_INPUT = 2
    GATE_FAILED = 3
    REJECTED = 4
    EXPIRED = 5
    AUDIT_BLOCKED = 6


class Outcome(str, Enum):
    """The value is the name of the flow run's final state, as the Prefect UI shows it."""

    PROMOTED = "Promoted"
    GATE_FAILED = "GateFailed"
    AUDIT_BLOCKED = "AuditBlocked"
    REJECTED = "Rejected"
    EXPIRED = "Expired"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode[self.name]

    @classmethod
    def from_state(cls, state) -> Outcome | None:
        """The outcome a flow run's final Prefect state stands for (None: not a remediation outcome).

        When a pause times out, Prefect's server policy itself replaces whatever the flow
        proposes with ``Failed("The flow was ... and never resumed.")``: that is an expiry.
        """
        named = next((o for o in cls if o.value == state.name), None)
        if named is None and state.is_failed() and "never resumed" in (state.message or ""):
            return cls.EXPIRED
        return named


def refusal_reason(reviewer: str, allowed: list[str], requested_by: str) -> str | None:
    """Why ``reviewer`` may not decide a run requested by ``requested_by`` (None: they may)."""
    name = reviewer.strip()
    if not name:
        return "a reviewer name is required"
    # names compare case-insensitively: 'ROOT' is the same person as 'root'
    if allowed and name.casefold() not in {a.strip().casefold() for a in allowed}:
        return f"'{name}' is not on the policy's reviewer list {allowed}"
    if name.casefold() == requested_by.strip().casefold():
        return f"'{name}' started this run and cannot approve it (separation of duties)"
    return None
