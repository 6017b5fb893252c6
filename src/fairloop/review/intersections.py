"""The spec's declared intersections a run does not gate on, as the reviewer sees them: the
between-cell metrics and each cell's selection rate, baseline against candidate, worst cell first.

A run gating on ``sex`` can make the (Female, Black) cell worse while both marginal gaps shrink;
the packet carries both models' evaluations on every declared intersection (simultaneous
intervals, as if gated) so the dialog and ``fairloop show`` state it next to the decision."""

from __future__ import annotations

from pydantic import BaseModel

from fairloop.gates.evaluate import Evaluation, worst_groups_first
from fairloop.gates.metrics import GROUP_METRICS, metric_label

CELLS_SHOWN = 6  # cells listed one by one (an intersection may have dozens); the rest are counted


class CellChange(BaseModel):
    cell: str
    rows: int
    baseline: float | None  # selection rate
    candidate: float
    candidate_interval: tuple[float, float] | None
    counted: bool


class MetricChange(BaseModel):
    label: str
    baseline: float | None
    candidate: float
    candidate_interval: tuple[float, float] | None


class IntersectionView(BaseModel):
    name: str  # 'sex:race'
    metrics: list[MetricChange]
    cells: list[CellChange]  # worst first, at most CELLS_SHOWN
    more_cells: int  # cells not listed


def intersection_view(name: str, evaluations: dict[str, Evaluation]) -> IntersectionView:
    candidate, baseline = evaluations["candidate"], evaluations.get("baseline")
    metrics = [MetricChange(label=metric_label(m.name), candidate=candidate.metrics[m.name],
                            baseline=None if baseline is None else baseline.metrics.get(m.name),
                            candidate_interval=candidate.intervals.get(m.name))
               for m in GROUP_METRICS if m.name in candidate.metrics]
    order = worst_groups_first(candidate)
    cells = [CellChange(cell=cell, rows=int(candidate.by_group[cell]["count"]), candidate=candidate.by_group[cell]["selection_rate"],
                        baseline=None if baseline is None or cell not in baseline.by_group else baseline.by_group[cell]["selection_rate"],
                        candidate_interval=candidate.intervals.get(f"selection_rate[{cell}]"),
                        counted=bool(candidate.by_group[cell].get("counted_selection_rate", 1.0)))
             for cell in order[:CELLS_SHOWN]]
    return IntersectionView(name=name, metrics=metrics, cells=cells, more_cells=max(0, len(order) - CELLS_SHOWN))
