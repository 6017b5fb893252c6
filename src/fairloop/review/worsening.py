"""What gets worse for whom: the fairness figures of a candidate notably worse than the
baseline's, gated or not (between-group gaps, a reversal of which group a rate favours,
calibration by group), as the review packet shows them."""

from __future__ import annotations

from pydantic import BaseModel

from fairloop.gates.evaluate import Evaluation
from fairloop.gates.intervals import CALIBRATION_GAP
from fairloop.gates.metrics import GROUP_METRICS, metric_label

NOTABLE = 0.02  # a change in a rate or gap (absolute) a reviewer should hear about
RATE_WORDS = {"true_positive_rate": ("TPR", "qualified"), "false_positive_rate": ("FPR", "unqualified")}
# metric -> +1 when larger is worse, -1 when smaller is worse
WORSENING_DIRECTION = {metric.name: -1 if metric.higher_is_better else 1 for metric in GROUP_METRICS}


class CalibrationChange(BaseModel):
    """One group's calibration under the baseline and the candidate: mean probability of a
    positive decision against the observed positive rate; the gap (their difference) with its
    bootstrap interval (none for runs recorded before it was measured, or an excluded group)."""

    observed: float
    baseline_predicted: float | None
    baseline_gap: float | None
    baseline_interval: tuple[float, float] | None
    candidate_predicted: float
    candidate_gap: float
    candidate_interval: tuple[float, float] | None


class Worsening(BaseModel):
    """A figure notably worse than the baseline's: a few words for the dialog's first screen and
    a sentence for the details."""

    brief: str
    detail: str
    gated: bool = False  # a gate checks it (its verdict is in the gate line)


def _counted(evaluation: Evaluation, rate: str) -> dict[str, float]:
    return {g: m[rate] for g, m in evaluation.by_group.items()
            if m.get(f"counted_{rate}", 1.0) and m.get(rate) == m.get(rate)}


def reversal(baseline: Evaluation, candidate: Evaluation, rate: str) -> Worsening | None:
    """The candidate favours, by a notable margin, a group the baseline disfavoured by one (the
    widest such pair), and it is no mere overshoot while closing the gap: the new gap is at least
    the old one, or the newly disfavoured group's rate falls notably."""
    before, after = _counted(baseline, rate), _counted(candidate, rate)
    pairs = [(after[b] - after[a], a, b) for a in after for b in after
             if a in before and b in before and before[a] - before[b] >= NOTABLE and after[b] - after[a] >= NOTABLE
             and (after[b] - after[a] >= before[a] - before[b] or before[a] - after[a] >= NOTABLE)]
    if not pairs:
        return None
    _, a, b = max(pairs)
    short, who = RATE_WORDS[rate]
    return Worsening(
        brief=f"{short} reverses ({a} {100 * before[a]:.0f}→{after[a]:.0%}, {b} {100 * before[b]:.0f}→{after[b]:.0%})",
        detail=(f"{short} reverses: {who} {a} were selected more often than {who} {b} ({before[a]:.1%} vs "
                f"{before[b]:.1%}), now less often ({after[a]:.1%} vs {after[b]:.1%})."))


def calibration_change(group: str, baseline: Evaluation | None, candidate: Evaluation) -> CalibrationChange:
    after, key = candidate.by_group[group], f"{CALIBRATION_GAP}[{group}]"
    before = baseline.by_group.get(group) if baseline else None
    return CalibrationChange(
        observed=after["observed_rate"], candidate_predicted=after["mean_score"],
        candidate_gap=after["mean_score"] - after["observed_rate"], candidate_interval=candidate.intervals.get(key),
        baseline_predicted=None if before is None else before["mean_score"],
        baseline_gap=None if before is None else before["mean_score"] - before["observed_rate"],
        baseline_interval=None if before is None else baseline.intervals.get(key),
    )


def miscalibration(baseline: Evaluation, candidate: Evaluation) -> Worsening | None:
    """The groups whose mean prediction strays notably further from their observed positive rate
    than under the baseline's (with the gap's interval), saying when they stray in opposite directions."""
    worse = [(g, change) for g, change in ((g, calibration_change(g, baseline, candidate)) for g, m in candidate.by_group.items()
                                           if g in baseline.by_group and m.get("counted_selection_rate", 1.0))
             if abs(change.candidate_gap) - abs(change.baseline_gap) >= NOTABLE]
    if not worse:
        return None
    opposite = " in opposite directions" if len({c.candidate_gap > 0 for _, c in worse}) > 1 else ""
    direction = lambda c: "over" if c.candidate_gap > 0 else "under"  # noqa: E731
    return Worsening(
        brief=f"group calibration{' opposite ways' if opposite else ''} (" + ", ".join(
            f"{g} {direction(c)}" for g, c in worse) + ")",
        detail=(f"Calibration by group worsens{opposite}: " + "; ".join(
            f"{g} {c.candidate_predicted:.3f} predicted vs {c.observed:.3f} observed ({direction(c)} by "
            f"{abs(c.candidate_gap):.3f}" + (f", gap {_signed_interval(c.candidate_interval)}" if c.candidate_interval else "")
            + f"; baseline predicted {c.baseline_predicted:.3f})" for g, c in worse) + "; no gate checks it."))


def _signed_interval(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"




def worsened_metrics(baseline: Evaluation, candidate: Evaluation, gated: set[str], over: str = "") -> list[Worsening]:
    """The between-group metrics notably worse under the candidate; ``over``: the intersection
    they are measured over when it is not the run's sensitive feature (named in the text)."""
    found = []
    for metric, worse in WORSENING_DIRECTION.items():
        before, after = metric_value(baseline, metric), metric_value(candidate, metric)
        if before is None or after is None or worse * (after - before) < NOTABLE:
            continue
        name = metric_label(metric) + (f" over {over}" if over else "")
        checked = "a gate checks it" if metric in gated else "not gated"
        ratio = f" (×{after / before:.1f})" if before > 0 and worse > 0 else ""
        interval = candidate.intervals.get(metric)
        shown = f"{after:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
        found.append(Worsening(
            brief=f"{name} {before:.3f} → {after:.3f}{ratio}", gated=metric in gated,
            detail=f"{name} {'rises' if worse > 0 else 'falls'} {before:.3f} → {shown}{ratio}; {checked}."))
    return found


def metric_value(evaluation: Evaluation, metric: str) -> float | None:
    """A metric of ``evaluation`` if it has it (the scorer's AUC is recorded by newer runs only)."""
    value = evaluation.metrics.get(metric)
    if value is None:
        value = getattr(evaluation, metric, None)
    return None if value is None or value != value else float(value)
