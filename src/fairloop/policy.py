"""Gate policies (``policies/*.yaml``): thresholds a candidate must meet, and who may approve it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fairloop.evaluate import Evaluation
from fairloop.specfile import SpecModel, VersionedSpec, load_spec


class Thresholds(SpecModel):
    max_demographic_parity_difference: float | None = Field(None, ge=0, le=1)
    max_equalized_odds_difference: float | None = Field(None, ge=0, le=1)
    min_disparate_impact_ratio: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop_vs_baseline: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop_vs_champion: float | None = Field(None, ge=0, le=1)
    max_auc_drop_vs_baseline: float | None = Field(None, ge=0, le=1)
    max_auc_drop_vs_champion: float | None = Field(None, ge=0, le=1)


class ApprovalRules(SpecModel):
    timeout_seconds: int = Field(7 * 24 * 3600, gt=0, description="a paused run not reviewed by then expires")
    reviewers: list[str] = Field([], description="who may approve; empty means any named reviewer")


class Policy(VersionedSpec):
    thresholds: Thresholds
    approval: ApprovalRules = ApprovalRules()


def load_policy(path) -> Policy:
    return load_spec(path, Policy)


# threshold field -> (metric, comparison, reference model)
GATES: dict[str, tuple[str, Literal["max", "min", "drop"], Literal["none", "baseline", "champion"]]] = {
    "max_demographic_parity_difference": ("demographic_parity_difference", "max", "none"),
    "max_equalized_odds_difference": ("equalized_odds_difference", "max", "none"),
    "min_disparate_impact_ratio": ("disparate_impact_ratio", "min", "none"),
    "max_accuracy_drop_vs_baseline": ("accuracy", "drop", "baseline"),
    "max_accuracy_drop_vs_champion": ("accuracy", "drop", "champion"),
    "max_auc_drop_vs_baseline": ("auc", "drop", "baseline"),
    "max_auc_drop_vs_champion": ("auc", "drop", "champion"),
}


class GateResult(BaseModel):
    gate: str
    metric: str
    value: float | None
    threshold: float
    verdict: Literal["pass", "fail", "skipped"]
    reason: str


class GateReport(BaseModel):
    policy: str
    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(r.verdict != "fail" for r in self.results)

    @property
    def failures(self) -> list[str]:
        return [r.reason for r in self.results if r.verdict == "fail"]


def apply_gates(
    policy: Policy, candidate: Evaluation, baseline: Evaluation, champion: Evaluation | None
) -> GateReport:
    """Check every threshold the policy sets; drops are measured against baseline or champion."""
    results = []
    for gate, threshold in policy.thresholds.model_dump().items():
        if threshold is None:
            continue
        metric, comparison, reference = GATES[gate]
        value = candidate.metrics[metric]
        if comparison == "drop":
            ref = {"baseline": baseline, "champion": champion}[reference]
            if ref is None:
                results.append(GateResult(gate=gate, metric=metric, value=None, threshold=threshold,
                                          verdict="skipped", reason=f"{gate}: no current {reference} to compare with"))
                continue
            value = ref.metrics[metric] - value
            ok = value <= threshold
            text = f"{metric} drop vs {reference} {value:+.4f} {'<=' if ok else '>'} {threshold}"
        elif comparison == "max":
            ok = value <= threshold
            text = f"{metric} {value:.4f} {'<=' if ok else '>'} {threshold}"
        else:
            ok = value >= threshold
            text = f"{metric} {value:.4f} {'>=' if ok else '<'} {threshold}"
        results.append(GateResult(gate=gate, metric=metric, value=value, threshold=threshold,
                                  verdict="pass" if ok else "fail", reason=text))
    return GateReport(policy=policy.name, results=results)
