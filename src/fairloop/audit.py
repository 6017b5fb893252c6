"""Audit of the training data: a Great Expectations validation of the spec's schema, and a
fairness audit of how sensitive groups and labels are represented.

The verdict is ``pass``, ``warn`` (continue, findings go into the report) or ``block``
(stop the run before training).
"""

from __future__ import annotations

import logging
from typing import Literal

import pandas as pd
from pydantic import BaseModel

from fairloop.datasets import DatasetSpec, Split

Verdict = Literal["pass", "warn", "block"]
MIN_CELL_ROWS = 30  # below this a group x label cell is too small to judge a rate on


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None
    success: bool
    details: str = ""


class GroupCell(BaseModel):
    group: str
    label: int
    rows: int
    share: float


class GroupSummary(BaseModel):
    group: str
    rows: int
    share: float
    base_rate: float


class AuditReport(BaseModel):
    dataset: str
    rows: int
    sensitive: str
    verdict: Verdict
    reasons: list[str]
    expectations: list[ExpectationOutcome]
    groups: list[GroupSummary]
    cells: list[GroupCell]
    base_rate_gap: float


def _expectations(spec: DatasetSpec):
    import great_expectations as gx  # costs seconds to import: only when an audit runs

    exp = gx.expectations
    items = [exp.ExpectColumnToExist(column=c) for c in spec.features.columns]
    items += [
        exp.ExpectColumnValuesToBeInTypeList(column=c, type_list=["float64", "int64", "Float64", "Int64"])
        for c in spec.features.numeric
    ]
    items += [
        exp.ExpectColumnValuesToNotBeNull(column=spec.label.column),
        exp.ExpectColumnValuesToBeInSet(column=spec.label.column, value_set=[0, 1]),
        exp.ExpectColumnDistinctValuesToEqualSet(column=spec.label.column, value_set=[0, 1]),
    ]
    for sensitive in spec.sensitive:
        column = f"sensitive.{sensitive.name}"
        items += [exp.ExpectColumnValuesToNotBeNull(column=column), exp.ExpectColumnUniqueValueCountToBeBetween(column=column, min_value=2)]
    return items


def validate_schema(spec: DatasetSpec, frame: pd.DataFrame) -> list[ExpectationOutcome]:
    """Run the spec's expectation suite on ``frame`` with GX (an ephemeral context)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(f"{spec.name}-source")
        .add_dataframe_asset(f"{spec.name}-training-data")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}-schema", expectations=_expectations(spec)))
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=f"{spec.name}-audit", data=batch, suite=suite))
    result = validation.run(batch_parameters={"dataframe": frame})
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        details = {k: v for k, v in item.result.items() if k in ("observed_value", "unexpected_count", "partial_unexpected_list")}
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column"),
                success=bool(item.success),
                details=", ".join(f"{k}={v}" for k, v in details.items()),
            )
        )
    return outcomes


def fairness_summary(split: Split, sensitive: str) -> tuple[list[GroupSummary], list[GroupCell], float]:
    groups = split.groups[sensitive].astype(str)
    n = len(split)
    summary = [
        GroupSummary(group=str(g), rows=int(len(ys)), share=len(ys) / n, base_rate=float(ys.mean()))
        for g, ys in split.y.groupby(groups)
    ]
    cells = [
        GroupCell(group=str(g), label=int(label), rows=int(rows), share=rows / n)
        for (g, label), rows in pd.crosstab(groups, split.y).stack().items()
    ]
    rates = [s.base_rate for s in summary]
    return summary, cells, max(rates) - min(rates)


def run_audit(spec: DatasetSpec, split: Split, sensitive: str | None = None) -> AuditReport:
    """Schema validation plus group representation; block on schema failures, warn on small cells."""
    sensitive = sensitive or spec.primary_sensitive
    expectations = validate_schema(spec, split.to_frame(spec.label.column))
    groups, cells, gap = fairness_summary(split, sensitive)
    reasons = [
        f"GX {e.expectation} failed on '{e.column}' ({e.details})" for e in expectations if not e.success
    ]
    verdict: Verdict = "block" if reasons else "pass"
    small = [c for c in cells if c.rows < MIN_CELL_ROWS]
    if small and verdict == "pass":
        verdict = "warn"
    reasons += [f"cell {sensitive}={c.group}, label={c.label} has only {c.rows} rows (< {MIN_CELL_ROWS})" for c in small]
    return AuditReport(
        dataset=spec.name, rows=len(split), sensitive=sensitive, verdict=verdict, reasons=reasons,
        expectations=expectations, groups=groups, cells=cells, base_rate_gap=gap,
    )
