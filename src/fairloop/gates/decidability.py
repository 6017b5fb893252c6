"""The sample-size answer: what it would take to decide an inconclusive gate.

A gate is inconclusive when its interval straddles the threshold. Whether more search can help
depends on why: if the estimate sits close to the threshold and the interval is wide, no other
candidate will fix it, more rows will. The answer here is a **bootstrap extrapolation**: a
percentile interval's half-width shrinks as 1 / sqrt(rows) when every group grows in proportion
(group sizes and base rates kept, as the stratified bootstrap keeps them), so deciding the gate
needs the half-width to drop below the estimate's distance to the threshold, i.e.
``(half-width / distance)^2`` times the rows. It assumes the estimate stays where it is; an
estimate on the threshold can never be decided. The loosest threshold these rows *can* decide
is the interval's far end.

Every answer says which way the gate would most likely go: an estimate on the failing side of
its threshold is decided by more rows as a *fail*, so the rows needed to pass are given only for
an estimate on the passing side (a reader takes "1.1x the rows" as "almost passing").
"""

from __future__ import annotations

import math

from fairloop.gates.evaluate import Evaluation
from fairloop.gates.metrics import METRIC_BY_NAME

MAX_FACTOR = 100.0  # beyond this the estimate is, for any practical purpose, on the threshold


def rows_factor(value: float, interval: tuple[float, float], threshold: float) -> float | None:
    """How many times the current rows would make the interval clear ``threshold`` (None: more
    than :data:`MAX_FACTOR` times, i.e. never in practice).

    Percentile intervals are asymmetric (a ratio's is cut at 1, a gap's at 0), so the part of
    the interval between the estimate and the threshold's side is what must shrink below the
    estimate's distance to the threshold."""
    low, high = interval
    distance = abs(value - threshold)
    reach = high - value if threshold >= value else value - low
    if distance == 0 or reach != reach:
        return None
    factor = max(1.0, (reach / distance) ** 2)
    return factor if factor <= MAX_FACTOR else None


def leans_to_pass(value: float, threshold: float, upper: bool) -> bool:
    """Is the estimate on the passing side of the threshold (where more rows would most likely
    decide the gate as a pass)?"""
    return value <= threshold if upper else value >= threshold


def sample_size_answer(result, label: str, upper: bool, evaluation: Evaluation, confidence: float, mode: str) -> str:
    """One paragraph for an inconclusive :class:`~fairloop.gates.policy.GateResult` with a value and interval."""
    low, high = result.interval
    where = "out-of-fold over the training pool" if mode == "crossfit" else f"on {evaluation.rows} rows"
    text = (f"{label}: the {confidence:.0%} interval [{low:.4f}, {high:.4f}] ({where}) is {high - low:.4f} wide and "
            f"straddles {result.threshold}. ")
    factor = rows_factor(result.value, result.interval, result.threshold)
    passing = leans_to_pass(result.value, result.threshold, upper)
    side = ("<=" if passing else ">") if upper else (">=" if passing else "<")
    estimate = f"estimate {result.value:.4f} {side} {result.threshold}"
    if factor is None:
        text += (f"The estimate {result.value:.4f} sits (almost) on the threshold: even {MAX_FACTOR:.0f}x the rows "
                 "would not decide it. ")
    elif not passing:
        text += (f"With about {factor:.1f}x the rows this gate would most likely fail ({estimate}): more rows "
                 "would not make it pass. ")
    elif METRIC_BY_NAME[result.metric].between_groups:  # between-group metrics grow with every group's rows
        sizes = {g: int(m["count"]) for g, m in evaluation.by_group.items()
                 if any(m.get(f"counted_{rate}", 1.0) for rate in ("selection_rate", "true_positive_rate"))}
        needed = ", ".join(f"'{g}' {n} -> {math.ceil(n * factor)}" for g, n in sorted(sizes.items(), key=lambda kv: kv[1]))
        text += (f"With about {factor:.1f}x the rows this gate would most likely pass ({estimate}): passing it at this "
                 f"confidence needs about {factor:.1f}x the rows of every group ({needed}; bootstrap extrapolation, "
                 "half-width ~ 1/sqrt(rows), at the observed rates). ")
    else:
        text += (f"With about {factor:.1f}x the rows this gate would most likely pass ({estimate}): passing it at this "
                 f"confidence needs about {factor:.1f}x the rows ({evaluation.rows} -> "
                 f"{math.ceil(evaluation.rows * factor)}; bootstrap extrapolation, half-width ~ 1/sqrt(rows)). ")
    if upper:
        text += f"These rows can decide this gate only at a threshold of at least {high:.4f} (pass) or below {low:.4f} (fail)."
    else:
        text += f"These rows can decide this gate only at a threshold of at most {low:.4f} (pass) or above {high:.4f} (fail)."
    return text
