"""Why no candidate passes, in words a reviewer can act on: fails, undecided, or infeasible on these
rows (an accuracy ceiling no model can beat under the gates)."""

from __future__ import annotations

from fairloop.gates.decidability import leans_to_pass
from fairloop.gates.evaluate import Evaluation
from fairloop.gates.policy import (
    GateResult,
    Policy,
)
from fairloop.remedy.sweep.results import (
    CandidateResult,
    Classification,
    SweepOutcome,
    is_upper,
)


def _gate(candidate: CandidateResult, gate: str) -> GateResult | None:
    return next((g for g in candidate.gates.results if g.gate == gate), None)


def _ratio_floor_note(candidate: CandidateResult, threshold: float) -> str:
    """For a ratio gate: how small a gap the ratio needs at the observed selection rates."""
    rates = candidate.validation_selection_rates
    if len(rates) < 2:
        return ""
    low, high = min(rates.values()), max(rates.values())
    return (f" At selection rates of {low:.1%} to {high:.1%}, a ratio of {threshold} needs the gap under "
            f"{(1 - threshold) * high:.2%} points (now {high - low:.2%}): at low selection rates the ratio is "
            "decided by a handful of decisions.")


def _best_at(candidates: list[CandidateResult], gate: str) -> tuple[CandidateResult, GateResult] | None:
    """The candidate with the best value of ``gate`` among ``candidates`` (None: no value)."""
    valued = [(c, g) for c in candidates if (g := _gate(c, gate)) is not None and g.value is not None]
    return (min if is_upper(gate) else max)(valued, key=lambda cg: cg[1].value) if valued else None


def _never_met(choosable: list[CandidateResult], gate: str) -> str:
    """A gate no choosable candidate meets: the best value reached, and what the candidates
    meeting every other gate offer on it."""
    best = _best_at(choosable, gate)
    if best is None:
        reason = next(g.reason for c in choosable if (g := _gate(c, gate)) is not None)
        return f"No choosable candidate has a value for {gate}: {reason}."
    text = f"No choosable candidate meets {gate}: the best, `{best[0].name}`, reaches {best[1].reason}."
    if gate == "min_disparate_impact_ratio":
        text += _ratio_floor_note(best[0], best[1].threshold)
    others = [c for c in choosable if all(g.verdict in ("pass", "skipped") for g in c.gates.results if g.gate != gate)]
    offer = _best_at(others, gate)
    if offer is not None and offer[0] is not best[0]:
        text += (f" Among the {len(others)} meeting every other gate the best is `{offer[0].name}`: "
                 f"{offer[1].reason}.")
    return text


def _undecided_answer(undecided: list[CandidateResult], selection_rows: str) -> list[str]:
    """The sample-size answer over the undecided choosable candidates, with its direction: the
    rows needed to pass only for a candidate whose every undecided estimate is on the passing
    side (the one needing the fewest), and which ones more rows would most likely fail."""
    lines = [f"Undecided: {len(undecided)} choosable candidate(s) fail no gate outright but an interval on the "
             f"{selection_rows} straddles a limit; more rows decide that, not more search."]

    def leaning(candidate: CandidateResult) -> str:
        """Which way more rows would most likely take it ('unknown': a gate has no value yet)."""
        open_gates = candidate.gates.blocking
        if any(g.value is None or g.interval is None for g in open_gates):
            return "unknown"
        return "pass" if all(leans_to_pass(g.value, g.threshold, is_upper(g.gate)) for g in open_gates) else "fail"

    towards_pass = [c for c in undecided if leaning(c) == "pass"]
    towards_fail = [c for c in undecided if leaning(c) == "fail"]
    if towards_pass:
        closest = min(towards_pass, key=lambda c: (c.rows_to_decide(), c.name))
        lines.append(f"Closest to passing, `{closest.name}`: " + " ".join(closest.gates.advice))
    if towards_fail:
        example = towards_fail[0]
        gate = next(g for g in example.gates.blocking if not leans_to_pass(g.value, g.threshold, is_upper(g.gate)))
        sign = ">" if is_upper(gate.gate) else "<"
        lines.append(f"{len(towards_fail)} undecided candidate(s) would most likely fail with more rows, e.g. "
                     f"`{example.name}` (estimate {gate.value:.4f} {sign} {gate.threshold} on {gate.gate}).")
    if not towards_pass:
        lines.append("No undecided candidate has every estimate on the passing side of its limit: no rows-to-pass "
                     "answer is given.")
    return lines


def explain_no_pass(outcome: SweepOutcome, proof: str | None = None) -> tuple[Classification, str]:
    """Why no candidate the policy can choose passes, and the outcome's class. Every count and
    list ranges over the choosable candidates only; the group-aware ones the policy forbids are
    mentioned once. ``proof``: the numbers showing the gates cannot be met on these rows
    (:func:`infeasibility`), if any."""
    lines = [f"No candidate of sweep '{outcome.sweep}' passes policy '{outcome.policy}' on the {outcome.selection_rows}."]
    choosable = [c for c in outcome.candidates if c.choosable]
    forbidden = len(outcome.candidates) - len(choosable)
    if forbidden:
        lines.append(f"{forbidden} candidate(s) need the sensitive attribute at prediction time; the policy forbids "
                     "them (allow_sensitive_at_predict: false): they are drawn on the frontier for comparison and "
                     "counted nowhere below.")
    if not choosable:
        why = "; ".join(f"{name}: {reason}" for name, reason in outcome.skipped)
        lines.append("No fitted candidate is one the policy can choose" + (f"; skipped or failed: {why}" if why else "."))
        return "nothing_choosable", "\n".join(lines)
    undecided = [c for c in choosable if not any(g.verdict == "fail" for g in c.gates.blocking)]
    if proof is not None:
        classification: Classification = "infeasible"
        lines.append(proof)
    elif outcome.search is not None and outcome.search.stopped == "budget":
        classification = "search_out_of_budget"
    else:
        classification = "undecided" if undecided else "fails"
    if outcome.search is not None:
        lines.append(outcome.search.detail)
    if undecided:
        lines += _undecided_answer(undecided, outcome.selection_rows)
    else:
        lines.append(f"Fails: each of the {len(choosable)} choosable candidate(s) fails a gate with its whole "
                     "interval past the limit.")
        met_by = {g.gate: 0 for g in choosable[0].gates.results}
        for candidate in choosable:
            for gate in candidate.gates.results:
                met_by[gate.gate] += gate.verdict in ("pass", "skipped")
        never = [gate for gate, count in met_by.items() if count == 0]
        lines += [_never_met(choosable, gate) for gate in never]
        if not never:
            counts = ", ".join(f"{gate} by {count}" for gate, count in met_by.items())
            lines.append(f"Each gate is met by some choosable candidate ({counts} of {len(choosable)}), none meets all "
                         "at once: on this data these candidates trade one gate for another.")
        if classification == "fails":
            lines.append("Widen the sweep (bounds, templates, a search budget) or revisit the policy.")
    lines.append("Closest choosable candidates:")
    for candidate in outcome.closest():
        lines.append(f"- `{candidate.name}`: " + "; ".join(candidate.gates.failures))
    return classification, "\n".join(lines)


def accuracy_ceiling(base_rates: dict[str, float], shares: dict[str, float], gate: str, threshold: float) -> float:
    """The highest accuracy any model, group-blind or not, can have on rows with these groups'
    base rates and row shares while its selection rates meet ``gate`` (DPD at most ``threshold``:
    every rate within some band [c, c + t]; disparate-impact ratio at least r: within [r c, c]).
    In a group with base rate p, a selection rate s misclassifies at least |s - p| of its rows,
    so the cheapest band costs sum(share x distance of p to the band). That cost is convex and
    piecewise linear in c: its minimum is where an end of the band meets a base rate."""
    if gate == "max_demographic_parity_difference":
        band = lambda c: (c, c + threshold)  # noqa: E731
        ends = [e for p in base_rates.values() for e in (p, p - threshold)]
    else:
        band = lambda c: (threshold * c, c)  # noqa: E731
        ends = [e for p in base_rates.values() for e in (p, p / threshold if threshold > 0 else 1.0)]

    def cost(c: float) -> float:
        low, high = band(c)
        return sum(shares[g] * max(0.0, low - p, p - high) for g, p in base_rates.items())

    return 1.0 - min(cost(min(max(c, 0.0), 1.0)) for c in ends)


def infeasibility(policy: Policy, baseline: Evaluation) -> str | None:
    """The numbers showing that no model can pass this policy on the selection rows, if they do:
    the base rates force a parity gate's price in errors above what the accuracy floor allows
    (``baseline``: the unconstrained reference on the selection rows). None when they do not
    (which proves nothing either way)."""
    thresholds = policy.thresholds
    floors = []
    if thresholds.max_accuracy_drop_vs_baseline is not None:
        floors.append((baseline.metrics["accuracy"] - thresholds.max_accuracy_drop_vs_baseline,
                       f"the baseline's accuracy {baseline.metrics['accuracy']:.4f} less max_accuracy_drop_vs_baseline "
                       f"{thresholds.max_accuracy_drop_vs_baseline}"))
    if thresholds.min_accuracy_lift_over_majority is not None:
        majority = baseline.metrics["majority_class_accuracy"]
        floors.append((majority + thresholds.min_accuracy_lift_over_majority,
                       f"the majority-class accuracy {majority:.4f} plus min_accuracy_lift_over_majority "
                       f"{thresholds.min_accuracy_lift_over_majority}"))
    counted = {g: m for g, m in baseline.by_group.items() if m.get("counted_selection_rate", 1.0) and m["count"] > 0}
    if not floors or len(counted) < 2:
        return None
    floor, floor_text = max(floors)
    rows = sum(m["count"] for m in baseline.by_group.values())
    base_rates = {g: m["positives"] / m["count"] for g, m in counted.items()}
    shares = {g: m["count"] / rows for g, m in counted.items()}
    for gate, label, op in (("max_demographic_parity_difference", "DPD", "<="),
                            ("min_disparate_impact_ratio", "disparate-impact ratio", ">=")):
        threshold = getattr(thresholds, gate)
        if threshold is None:
            continue
        ceiling = accuracy_ceiling(base_rates, shares, gate, threshold)
        if ceiling < floor:
            rates = ", ".join(f"'{g}' {p:.3f}" for g, p in sorted(base_rates.items(), key=lambda kv: kv[1]))
            return (f"Infeasible on these rows: with base rates {rates} (row shares "
                    + ", ".join(f"{shares[g]:.0%}" for g in sorted(base_rates, key=base_rates.get))
                    + f"), any model with {label} {op} {threshold}, group-blind or not, misclassifies at least "
                    f"{1 - ceiling:.1%} of the rows (a group's selection rate s errs on at least |s - base rate| of "
                    f"its rows), so its accuracy is at most {ceiling:.4f}; {floor_text} asks for at least {floor:.4f}. "
                    f"No candidate can meet both {gate} and the accuracy floor.")
    return None
