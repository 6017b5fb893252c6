"""The record of a run whose sweep chose no candidate survives the NaN such runs often have (a
between-group metric with fewer than two counted groups), and prints it as n/a."""

from __future__ import annotations

import math

from rich.console import Console

from fairloop.data.groups import ExcludedGroup
from fairloop.gates.evaluate import Evaluation
from fairloop.gates.policy import GateReport, GateResult
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.sweep.results import CandidateResult, SweepOutcome
from fairloop.review.no_candidate import (
    NoCandidateReport,
    load_no_candidate,
    save_no_candidate,
)
from fairloop.review.terminal import print_no_candidate

NAN = float("nan")
ONLY_A = ExcludedGroup(group="b", rate="selection_rate", rows=12, positives=4, negatives=8, needed=30,
                       reason="12 rows < floor 30: its selection rate does not count")


def one_group_counted() -> NoCandidateReport:
    """Group b is under the rows floor: DPD has one counted group and is NaN everywhere."""
    dpd = GateResult(gate="max_demographic_parity_difference", metric="demographic_parity_difference", value=None,
                     threshold=0.1, verdict="inconclusive", reason="selection rate counts 1 group(s) ['a']")
    test = {"accuracy": 0.8, "demographic_parity_difference": NAN, "equalized_odds_difference": NAN,
            "disparate_impact_ratio": NAN, "auc": 0.85}
    candidate = CandidateResult(
        name="none+unconstrained", recipe="none", template="unconstrained", method="none", constraint=None, bound=None,
        learner="hgb", needs_sensitive_at_predict=False, fit_seconds=1.0, synthetic_rows=0,
        validation={"accuracy": 0.79, "demographic_parity_difference": NAN}, test=test,
        gates=GateReport(policy="p", results=[dpd]))
    sweep = SweepOutcome(sweep="s", policy="p", evaluation=ModeDecision(mode="holdout", reason="asked"),
                         candidates=[candidate], skipped=[("x", "cannot fit")], chosen=None,
                         explanation="No candidate of sweep 's' passes policy 'p'.", classification="undecided")
    baseline = Evaluation(rows=112, sensitive="g", metrics={"accuracy": 0.8, "demographic_parity_difference": NAN},
                          by_group={g: {"count": n, "positives": p, "selection_rate": 0.3, "true_positive_rate": 0.6,
                                        "false_positive_rate": 0.1, "counted_selection_rate": float(g == "a")}
                                    for g, n, p in (("a", 100, 40), ("b", 12, 4))},
                          excluded_groups=[ONLY_A])
    return NoCandidateReport(run_id="r", dataset="d", sensitive="g", policy="p", sweep=sweep,
                             references={"baseline": baseline}, excluded_on_selection=[ONLY_A], audit_verdict="pass")


def test_a_report_with_nan_metrics_reads_back_and_prints_them_as_not_available(tmp_path):
    report = one_group_counted()
    save_no_candidate(report, tmp_path)
    loaded = load_no_candidate(tmp_path)
    assert math.isnan(loaded.references["baseline"].metrics["demographic_parity_difference"])
    assert math.isnan(loaded.sweep.candidates[0].test["demographic_parity_difference"])
    assert loaded.excluded_on_test == [ONLY_A] and loaded.sweep.skipped == [("x", "cannot fit")]
    assert load_no_candidate(tmp_path / "elsewhere") is None

    console = Console(record=True, width=160)
    print_no_candidate(console, loaded, state="GateFailed")
    text = " ".join(console.export_text().split())
    assert "run r, GateFailed" in text and "Nothing to approve" in text and "Why (undecided):" in text
    assert "none+unconstrained" in text and "blocked: undecided demographic_parity_difference" in text
    assert "DPD │ n/a" in text and "nan" not in text.lower()
    assert ("left out of the group metrics on the test rows: b (12 rows, 4 positive, 8 negative): "
            "12 rows < floor 30: its selection rate does not count") in text
    assert "not fitted: x: cannot fit" in text
