"""What a gate the audit calls unreliable for this data costs: the candidate the policy picks
beside the one it would pick without that gate (issue 25 item 1).

The policy still decides: a reviewer sees the price of keeping the gate, and a policy owner the
evidence for dropping it. Today one audit finding names a gate: positive-label rates near 0 or 1
make the four-fifths (ratio) rule meaningless (``audit.breakdowns``, check
``four-fifths-meaningless``): near 0 a tiny difference is a large ratio, so the ratio gate can
block a candidate with a negligible gap and push the choice to one that is worse on every other
fairness figure.
"""

from __future__ import annotations

from fairloop.audit.record import Finding
from fairloop.gates.policy import Policy
from fairloop.remedy.sweep.results import (
    SIDE_BY_SIDE,
    CandidateResult,
    GateCost,
    SweepOutcome,
)

# audit check -> the policy gate its finding calls unreliable, and why in a few words
UNRELIABLE_GATE = {"four-fifths-meaningless": ("min_disparate_impact_ratio",
                                               "positive-label rates near 0 or 1 make a ratio of rates meaningless")}


def unreliable_gates(findings: list[Finding], sensitive: str, policy: Policy) -> dict[str, str]:
    """The policy's gates the audit calls unreliable for ``sensitive``: gate -> why, in a few words."""
    gated = {gate for gate, threshold in policy.thresholds.model_dump().items() if threshold is not None}
    return {UNRELIABLE_GATE[f.check][0]: UNRELIABLE_GATE[f.check][1] for f in findings
            if f.check in UNRELIABLE_GATE and f.column == sensitive and UNRELIABLE_GATE[f.check][0] in gated}


def gate_costs(outcome: SweepOutcome, unreliable: dict[str, str]) -> list[GateCost]:
    """For each unreliable gate, the policy's choice beside the choice without that gate."""
    chosen = outcome.result(outcome.chosen) if outcome.chosen else None
    costs = []
    for gate, reason in unreliable.items():
        passing_without = [c for c in outcome.candidates if c.choosable and all(g.gate == gate for g in c.gates.blocking)]
        without = max(passing_without, key=lambda c: c.validation["accuracy"], default=None)
        costs.append(GateCost(gate=gate, reason=reason, chosen=outcome.chosen, without=without.name if without else None,
                              chosen_test=_figures(chosen), without_test=_figures(without)))
    return costs


def _figures(candidate: CandidateResult | None) -> dict[str, float]:
    return {} if candidate is None else {m: candidate.test[m] for m in SIDE_BY_SIDE if m in candidate.test}
