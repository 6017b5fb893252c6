"""How a remediation run ends: the flow's final state name, and the CLI exit code for it.

Prefect's states and exceptions are imported where used: the log filter is installed before the engine is.
"""

from __future__ import annotations

import logging
from enum import Enum, IntEnum

from fairloop.person_names import name_key, name_problem


class ExitCode(IntEnum):
    PROMOTED = 0
    FAILED = 1
    BAD_INPUT = 2
    GATE_FAILED = 3
    REJECTED = 4
    EXPIRED = 5
    AUDIT_BLOCKED = 6
    SKIPPED = 7
    AWAITING_DATA = 8
    CHAMPION_CHANGED = 9
    REFUSED = 2  # same code as BAD_INPUT: a served rerun refused its input
    STOPPED_FOLLOWING = 130  # Ctrl-C or a time limit stopped `remediate` following a run that goes on


class Outcome(str, Enum):
    """The value is the name of the flow run's final state, as the Prefect UI shows it."""

    PROMOTED = "Promoted"
    GATE_FAILED = "GateFailed"
    AUDIT_BLOCKED = "AuditBlocked"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    SKIPPED = "Skipped"  # a served rerun that did not start: another is running or awaiting review, or cooldown
    REFUSED = "Refused"  # a served rerun refused its input (a window the monitor did not record, held-out rows)
    AWAITING_DATA = "AwaitingData"  # a rerun too few drifted rows could judge, and the policy waits for the next window
    # approved, but another promotion or a rollback replaced the champion it was gated against: not promoted
    CHAMPION_CHANGED = "ChampionChanged"

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
    problem = name_problem(name)
    if problem:
        return problem
    # names compare as a person reads them: 'ROOT', 'ｒｏｏｔ' and 'root' + a zero-width space are 'root'
    if allowed and name_key(name) not in {name_key(a) for a in allowed}:
        return f"'{name}' is not on the policy's reviewer list {allowed}"
    if name_key(name) == name_key(requested_by):
        return f"'{name}' started this run and cannot approve it (separation of duties)"
    return None


# Messages of the outcome states this process's flow runs ended with (see outcome_state).
_ended_with: set[str] = set()


def outcome_state(outcome: Outcome, message: str):
    """The final state a remediation flow returns for ``outcome``, remembered so that the engine's
    log line about it is shown as the outcome, not as a crash (see ``OutcomeLogFilter``)."""
    from prefect.states import Cancelled, Completed, Failed

    make = {Outcome.PROMOTED: Completed, Outcome.SKIPPED: Completed, Outcome.REJECTED: Cancelled}.get(outcome, Failed)
    _ended_with.add(message)
    if outcome is Outcome.EXPIRED:
        _ended_with.add(EXPIRED_BY_SERVER)
    return make(name=outcome.value, message=message)


EXPIRED_BY_SERVER = "never resumed"  # what the server's Failed state says when it replaces Expired


class OutcomeLogFilter(logging.Filter):
    """Prefect's engine reads a flow's final Failed or Cancelled state as an exception, and in a
    served (deployment) run it logs "Engine execution exited with unexpected exception" with a
    traceback. For the outcomes this process's flow returned, that record becomes one line
    naming the outcome and its reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import CancelledRun, FailedRun

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (FailedRun, CancelledRun)) and any(m and m in str(exc) for m in _ended_with):
            record.msg, record.args = f"Run ended with its outcome: {exc}", ()
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.INFO, "INFO"
        return True


def quiet_outcome_tracebacks() -> None:
    """Install ``OutcomeLogFilter`` on the logger the engine reports a run's end with (idempotent)."""
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, OutcomeLogFilter) for f in logger.filters):
        logger.addFilter(OutcomeLogFilter())
