"""The search after the grid: bisecting a reduction's bound between a fair and an unfair candidate
until a passing candidate is found, the bracket is too tight to mean anything, or the budget ends."""

from __future__ import annotations

import time

from fairloop.gates.metrics import METRIC_BY_NAME
from fairloop.gates.policy import (
    GateResult,
    Policy,
)
from fairloop.remedy.sweep.jobs import (
    FitAll,
    FittedCandidate,
    SweepData,
    assemble,
    sweep_jobs,
)
from fairloop.remedy.sweep.results import (
    CandidateResult,
    SearchReport,
    SweepOutcome,
    is_upper,
)
from fairloop.remedy.sweep.select import Scored, select
from fairloop.remedy.sweep.spec import SweepCandidate, SweepSpec

MIN_BOUND, MAX_BOUND = 0.001, 0.5  # the search's range of a reduction's bound


BRACKET_RATIO = 1.25  # a passing bound between two this close would be a coin toss of the fit, not a finding


def _fair(result: CandidateResult) -> bool:
    """Does the candidate meet every between-group gate (so a tighter bound cannot help it)?"""
    return all(g.verdict in ("pass", "skipped") for g in result.gates.results if METRIC_BY_NAME[g.metric].between_groups)


def _too_wide(result: CandidateResult) -> GateResult | None:
    """A between-group gate the candidate does not pass whose interval reaches further towards
    its limit than the room between the limit and the metric's best value (0 for a gap, 1 for a
    ratio or a rate): even a perfect estimate would leave the interval across the limit, so no
    bound can pass it on these rows (measured on German, 140 validation rows: DPD intervals
    reaching 0.19 above their estimates against a 0.05 limit; five searched bounds, 200 s, none
    passed)."""
    for gate in result.gates.results:
        if METRIC_BY_NAME[gate.metric].between_groups and gate.verdict != "pass" and gate.interval is not None:
            upper = is_upper(gate.gate)
            reach = gate.interval[1] - gate.value if upper else gate.value - gate.interval[0]
            if reach > (gate.threshold if upper else 1 - gate.threshold):
                return gate
    return None


def _next_bound(tight: float | None, loose: float | None) -> float | None:
    """The next bound to try: halve a bound that is not fair enough, double one that is fair
    but fails another gate, else the geometric middle (3 significant digits); None when the
    bracket is closed or the range is left."""
    if tight is not None and loose is not None:
        if loose / tight < BRACKET_RATIO:
            return None
        bound = (tight * loose) ** 0.5
    else:
        bound = loose / 2 if tight is None else tight * 2
    bound = float(f"{bound:.3g}")
    return bound if MIN_BOUND <= bound <= MAX_BOUND else None


def search_after_grid(
    sweep: SweepSpec, policy: Policy, data: SweepData, sensitive: str, seed: int, grid: SweepOutcome,
    candidates: list[SweepCandidate], fitted: dict[str, FittedCandidate], references: dict[str, Scored],
    fit_all: FitAll,
) -> tuple[list[SweepCandidate], SearchReport]:
    """Refine the grid when no choosable candidate passes: bisect the bound of each choosable
    candidate that has one (most accurate first) between a bound that is not fair enough and
    one that is fair but fails another gate, until a candidate passes, every bisection closes,
    or ``sweep.search``'s budget runs out. Adds every fitted candidate to ``fitted``; returns
    them and what the search did."""
    budget = sweep.search
    started, last_step, fits = time.perf_counter(), 0.0, 0
    by_name = {c.name: c for c in candidates}
    results = {c.name: c for c in grid.candidates}
    boundable = [r for r in sorted(grid.candidates, key=lambda r: -r.validation["accuracy"])
                 if r.choosable and by_name[r.name].template.takes_bound and r.bound is not None]
    seeds = [by_name[r.name] for r in boundable if _too_wide(r) is None]
    tried: list[SweepCandidate] = []
    stopped = "bracketed" if seeds else "too_wide" if boundable else "no_seed"
    for origin in seeds:
        result = results[origin.name]
        tight, loose = (origin.template.bound, None) if _fair(result) else (None, origin.template.bound)
        while stopped != "passed" and (bound := _next_bound(tight, loose)) is not None:
            template = origin.template.model_copy(update={
                "bound": bound, "description": f"{origin.template.description.strip()} [bound {bound:g} found by the "
                                               f"search of sweep '{sweep.name}' v{sweep.version}]"})
            candidate = SweepCandidate(origin.recipe, origin.recipe_path, template, origin.template_path,
                                       bound_overridden=True, searched=True)
            if candidate.name not in results:
                jobs = sweep_jobs({candidate.name: candidate}, data, sweep.candidate_timeout_seconds, sweep.reduction_rows)
                if fits + len(jobs) > budget.max_extra_fits or time.perf_counter() - started + last_step > budget.max_seconds:
                    stopped = "budget"
                    break
                step = time.perf_counter()
                fitted |= assemble(jobs, fit_all(jobs, data, sensitive, seed), data)
                fits, last_step = fits + len(jobs), time.perf_counter() - step
                tried.append(candidate)
                if fitted[candidate.name].error:  # e.g. timed out: this template's bisection ends here
                    break
                results |= {candidate.name: select(sweep, policy, data, sensitive, [candidate], [], fitted,
                                                   references).candidates[0]}
            result = results[candidate.name]
            if result.passed:
                stopped = "passed"
            elif _fair(result):
                tight = bound
            else:
                loose = bound
        if stopped in ("passed", "budget"):
            break
    seconds = time.perf_counter() - started
    spent = f"{len(tried)} extra candidate(s), {fits} fits, {seconds:.0f} s"
    names = ", ".join(f"`{c.name}`" for c in seeds)
    wide = next(((r, g) for r in boundable if (g := _too_wide(r)) is not None), None)
    detail = {
        "no_seed": "The search after the grid had nothing to refine: no choosable candidate has a bound.",
        "too_wide": "The search after the grid did not run: " + (
            f"`{wide[0].name}`'s {wide[1].metric} interval [{wide[1].interval[0]:.4f}, {wide[1].interval[1]:.4f}] "
            f"reaches further from its estimate {wide[1].value:.4f} than the limit {wide[1].threshold} leaves room "
            "for even a perfect estimate, so no bound can pass it on these rows (nor those of the other choosable "
            "candidates with a bound); more rows decide it." if wide else ""),
        "passed": f"The search after the grid bisected the bound of {names} ({spent}): "
                  f"`{tried[-1].name if tried else ''}` passes.",
        "bracketed": f"The search after the grid bisected the bound of {names} ({spent}) and found no passing bound: "
                     f"each bisection closed between a bound that fails a between-group gate and one that meets them "
                     f"but fails another gate (or reached the {MIN_BOUND:g}-{MAX_BOUND:g} range).",
        "budget": f"The search after the grid ran out of its budget (max_extra_fits {budget.max_extra_fits}, "
                  f"max_seconds {budget.max_seconds:g}) bisecting the bound of {names} ({spent}) before any candidate "
                  "passed or the bisection closed: the outcome is open; a larger budget may decide it.",
    }[stopped]
    return tried, SearchReport(seeds=[c.name for c in seeds], tried=[c.name for c in tried], fits=fits,
                               seconds=round(seconds, 1), stopped=stopped, detail=detail)
