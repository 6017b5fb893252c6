"""The audit's record: findings, group breakdowns, proxy scores and the report, plus how a message lists values."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from fairloop.audit.leakage import LeakScore
from fairloop.data.dataset_spec import AuditSpec
from fairloop.data.membership import MembershipReport

Verdict = Literal["pass", "warn", "block"]
Severity = Literal["block", "warn", "info"]
LISTED = 8  # values or cells named in one finding; the record holds all of them


class Finding(BaseModel):
    severity: Severity
    check: str
    message: str
    column: str | None = None
    value: str | None = None


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None
    check: str
    severity: Literal["block", "warn"]
    success: bool
    details: str = ""


class GroupSummary(BaseModel):
    group: str
    rows: int
    share: float
    base_rate: float
    positives: int
    base_rate_ci_low: float
    base_rate_ci_high: float
    judged: bool  # False: fewer than min_cell_rows rows, its rate is not used for the gap


class GroupCell(BaseModel):
    group: str
    label: int
    rows: int
    share: float
    too_small: bool


class SensitiveAudit(BaseModel):
    """One breakdown: a sensitive feature, or the intersection of all of them."""

    name: str
    columns: list[str]
    groups: list[GroupSummary]
    cells: list[GroupCell]
    base_rate_gap: float
    base_rate_ratio: float | None  # lowest / highest rate among judged groups
    chi2_pvalue: float | None  # group x label independence (scipy chi2_contingency)
    missing_rows: int = 0
    membership: MembershipReport | None = None  # rows with no value: their groups inferred, or why not
    base_rates_all_rows: dict[str, float] = {}  # with inferred memberships: positive-label rate per group over all rows
    base_rate_gap_all_rows: float | None = None

    @property
    def small_cells(self) -> list[GroupCell]:
        return [c for c in self.cells if c.too_small]


class ProxyScore(BaseModel):
    sensitive: str
    feature: str
    kind: Literal["numeric", "categorical"]
    auc: float
    nmi: float | None  # None for features with more categories than audit.max_categories
    flagged: bool


class AuditReport(BaseModel):
    dataset: str
    source: str | None
    rows: int
    sensitive: str
    verdict: Verdict
    reasons: list[str]
    findings: list[Finding]
    expectations: list[ExpectationOutcome]
    groups: list[GroupSummary]
    cells: list[GroupCell]
    base_rate_gap: float
    sensitive_features: list[SensitiveAudit]
    sensitive_used_as_features: list[str] = []  # sensitive features the model also reads (use_as_feature)
    intersection: SensitiveAudit | None
    intersections: list[SensitiveAudit] = []  # the spec's declared intersections ('sex:race'), each like a sensitive feature
    proxies: list[ProxyScore]
    proxy_sample_rows: int
    proxy_method: str
    leaks: list[LeakScore] = []  # each feature's one-feature AUC for the label, best first
    leak_sample_rows: int = 0
    settings: AuditSpec
    reference: str  # where the category sets and ranges the data was checked against come from
    gx_suite: str
    data_docs: str | None = None

    def top_proxies(self, sensitive: str, count: int = 5) -> list[ProxyScore]:
        return [p for p in self.proxies if p.sensitive == sensitive][:count]


def pvalue_text(pvalue: float | None) -> str:
    if pvalue is None:
        return "n/a"
    return "< 1e-300" if pvalue == 0 else f"= {pvalue:.1e}"  # 0.0 is an underflow, not certainty


def shortlist(values: list, limit: int = LISTED) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
