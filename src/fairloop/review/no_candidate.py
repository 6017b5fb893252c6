"""What a run whose sweep chose no candidate records for ``fairloop show``.

Such a run reaches its gates (every candidate is gated) but ends GateFailed before any review
packet (:class:`~fairloop.review.packet.ReviewPacket`) can exist: a packet is about one candidate
to approve, and there is none. A reviewer or model-risk reader still needs what the run found:
why nothing passed (the sweep's explanation and classification), every candidate's gates, the
baseline's test figures, and the groups the policy's floors left out of the group metrics. That
is a :class:`NoCandidateReport`, stored with the run beside where a packet would be.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from fairloop.data.groups import ExcludedGroup
from fairloop.gates.evaluate import Evaluation
from fairloop.remedy.sweep.results import SweepOutcome
from fairloop.review.packet import Link, read_record, write_record

# Not review.json: whatever reads a packet there (``fairloop show``, the expiry of suspended
# reviews) takes it for a run that awaits or awaited review.
NO_CANDIDATE_FILE = "no-candidate.json"


class NoCandidateReport(BaseModel):
    """A run whose sweep found no candidate the policy can choose: nothing to approve, and why."""

    run_id: str
    run_url: str | None = None
    dataset: str
    sensitive: str
    policy: str
    sweep: SweepOutcome  # its explanation, classification and every candidate's gates
    references: dict[str, Evaluation]  # test figures of 'baseline' and, when there is one, 'champion'
    champion_version: str | None = None
    # The floors depend on a group's rows and labels only, so one list holds for every model
    # scored on the same rows; the gates were judged on the selection rows, the figures on test.
    excluded_on_selection: list[ExcludedGroup] = []
    audit_verdict: str
    audit_reasons: list[str] = []
    requested_by: str | None = None
    requester_verified: bool = False
    links: list[Link] = []

    @property
    def excluded_on_test(self) -> list[ExcludedGroup]:
        return list(self.references["baseline"].excluded_groups)

    def headline(self) -> str:
        """The one sentence a reader reads first (plain text)."""
        kind = self.sweep.classification or "no candidate passes"
        return (f"Nothing to approve: sweep '{self.sweep.sweep}' found no candidate that policy '{self.policy}' "
                f"can choose ({kind}, {len(self.sweep.candidates)} candidates); nothing was promoted.")


def save_no_candidate(report: NoCandidateReport, run_dir: Path) -> Path:
    # such a run often has a NaN metric (fewer than two counted groups): written as the packet is
    return write_record(report, run_dir / NO_CANDIDATE_FILE)


def load_no_candidate(run_dir: Path) -> NoCandidateReport | None:
    return read_record(NoCandidateReport, run_dir / NO_CANDIDATE_FILE)
