"""Schema validation: a Great Expectations suite built from the dataset spec and a reference snapshot.

The suite, with its reference snapshot, lives in the file-backed GX context ``gx/`` so it is
versioned in git; the CLI validates there too and builds Data Docs. Runs inside the pipeline
validate in an ephemeral context: they read the committed suite and write nothing.
great_expectations is imported inside the functions that use it: it takes ~3 s to import.

Great Expectations is imported where the schema is validated (seconds to import; only the audit needs it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from fairloop.audit.record import LISTED, ExpectationOutcome, Finding, shortlist
from fairloop.config import get_settings
from fairloop.data.dataset_spec import DatasetSpec
from fairloop.data.rows import Split
from fairloop.errors import BadInputError

GX_SEVERITY = {"block": "critical", "warn": "warning"}


class ReferenceProfile(BaseModel):
    """What new data is compared with: category sets and numeric ranges of a reference snapshot."""

    categories: dict[str, list[str]]
    ranges: dict[str, tuple[float, float]]
    rows: int
    source: str


def learn_reference(spec: DatasetSpec, split: Split, source: str) -> ReferenceProfile:
    """Category sets (sensitive groups included) and min/max of ``split``.

    A categorical feature with more than ``audit.max_categories`` values gets no set: the suite
    blocks it anyway, and a set that large would bloat the committed suite.
    """
    frame = split.to_frame(spec.label.column)
    categories: dict[str, list[str]] = {}
    for column in [*spec.features.categorical, *(f"sensitive.{s.name}" for s in spec.sensitive)]:
        values = frame[column].dropna().unique()
        if len(values) <= spec.audit.max_categories:
            categories[column] = sorted(map(str, values))
    ranges = {}
    for column in spec.features.numeric:
        values = frame[column].dropna()
        if len(values):
            ranges[column] = (float(values.min()), float(values.max()))
    return ReferenceProfile(categories=categories, ranges=ranges, rows=len(split), source=source)


def _gx():
    import great_expectations as gx  # ~3 s to import: only when an audit runs

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx


def _configuration(type_: str, kwargs: dict, check: str, severity: str, **meta):
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return ExpectationConfiguration(
        type=type_, kwargs=kwargs, meta={"check": check, **meta}, severity=GX_SEVERITY[severity]
    )


def suite_configurations(spec: DatasetSpec, reference: ReferenceProfile) -> list:
    """The suite's expectations, derived from the spec and the reference snapshot only."""
    audit = spec.audit
    items = []
    add = lambda type_, check, severity, **kwargs: items.append(_configuration(type_, kwargs, check, severity))  # noqa: E731
    for column in spec.features.columns:
        add("expect_column_to_exist", "column-present", "block", column=column)
    for column in spec.features.numeric:
        add("expect_column_values_to_be_in_type_list", "numeric-type", "block", column=column,
            type_list=["float64", "int64", "Float64", "Int64"])
        if column in reference.ranges:
            low, high = reference.ranges[column]
            add("expect_column_values_to_be_between", "reference-range", "warn", column=column, min_value=low, max_value=high)
    for column in spec.features.categorical:
        add("expect_column_values_to_be_in_type_list", "categorical-type", "block", column=column, type_list=["str"])
        add("expect_column_unique_value_count_to_be_between", "category-count", "block", column=column,
            min_value=None, max_value=audit.max_categories)
        if column in reference.categories:
            add("expect_column_values_to_be_in_set", "reference-categories", "warn", column=column,
                value_set=reference.categories[column])
    label = spec.label.column
    add("expect_column_values_to_not_be_null", "label-not-null", "block", column=label)
    add("expect_column_values_to_be_in_set", "label-binary", "block", column=label, value_set=[0, 1])
    add("expect_column_distinct_values_to_equal_set", "label-both-classes", "block", column=label, value_set=[0, 1])
    for sensitive in spec.sensitive:
        column = f"sensitive.{sensitive.name}"
        add("expect_column_values_to_not_be_null", "sensitive-not-null", "block", column=column)
        add("expect_column_unique_value_count_to_be_between", "sensitive-two-groups", "block", column=column,
            min_value=2, max_value=None)
        if column in reference.categories:
            add("expect_column_values_to_be_in_set", "reference-groups", "warn", column=column,
                value_set=reference.categories[column])
    for column in audit.not_null:
        add("expect_column_values_to_not_be_null", "declared-not-null", "block", column=column)
    for position, extra in enumerate(audit.expectations):
        configuration = _configuration(extra.type, extra.kwargs, f"audit.expectations[{position}]", extra.severity)
        items.append(configuration)
    return items


def build_suite(spec: DatasetSpec, reference: ReferenceProfile):
    """The GX suite; a bad entry in ``audit.expectations`` is a BadInputError naming it."""
    gx = _gx()
    from great_expectations.exceptions import ExpectationNotFoundError

    expectations = []
    for configuration in suite_configurations(spec, reference):
        check = configuration.meta["check"]
        try:
            expectations.append(configuration.to_domain_obj())
        except ExpectationNotFoundError:
            raise BadInputError(f"unknown Great Expectations type '{configuration.type}'", field=f"{check}.type") from None
        except Exception as exc:  # noqa: BLE001 - GX reports bad kwargs as pydantic (v1) errors of its own
            summary = " ".join(str(exc).split())[:300]
            raise BadInputError(f"{configuration.type} does not accept {configuration.kwargs}: {summary}",
                                field=f"{check}.kwargs") from None
    meta = {
        "fairloop": {
            # No spec hash: a spec edit that does not change what is checked must not make the suite stale.
            "dataset": spec.name, "reference_rows": reference.rows, "reference_source": reference.source,
        }
    }
    return gx.ExpectationSuite(name=spec.name, expectations=expectations, meta=meta)


def reference_from_suite(suite) -> ReferenceProfile | None:
    """The reference snapshot stored in a suite's learned expectations (None: not a fairloop suite)."""
    info = (suite.meta or {}).get("fairloop")
    if not info:
        return None
    categories, ranges = {}, {}
    for expectation in suite.expectations:
        check = (expectation.meta or {}).get("check")
        if check in ("reference-categories", "reference-groups"):
            categories[expectation.column] = list(expectation.value_set)
        elif check == "reference-range":
            ranges[expectation.column] = (float(expectation.min_value), float(expectation.max_value))
    return ReferenceProfile(categories=categories, ranges=ranges, rows=info["reference_rows"], source=info["reference_source"])


def _suite_content(suite) -> list:
    """What a suite says, without the ids GX assigns on every save (so unchanged suites are not rewritten)."""
    items = []
    for expectation in suite.expectations:
        configuration = expectation.configuration.to_json_dict()
        configuration.pop("id", None)
        items.append(configuration)
    return [json.dumps(items, sort_keys=True, default=str), json.dumps(suite.meta.get("fairloop"), sort_keys=True)]


class GxProject:
    """The file-backed GX context (default ``<project>/gx``): suites, results and Data Docs."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def exists(self) -> bool:
        return (self.root / "great_expectations.yml").is_file()

    def suite_path(self, name: str) -> Path:
        return self.root / "expectations" / f"{name}.json"

    def context(self):
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="file", context_root_dir=str(self.root))
        quiet = ProgressBarsConfig(globally=False, metric_calculations=False)
        if context.variables.progress_bars != quiet:  # saved once, so later runs leave the file alone
            context.variables.progress_bars = quiet
            context.variables.save()
        return context

    def stored_suite(self, name: str):
        """The committed suite ``name``, read without creating anything (None when absent)."""
        if not (self.exists and self.suite_path(name).is_file()):
            return None
        from great_expectations.exceptions import DataContextError

        try:
            return self.context().suites.get(name)
        except DataContextError:
            return None


def _ephemeral_validation(name: str, suite, frame: pd.DataFrame):
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = context.data_sources.add_pandas("fairloop").add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"{name}-audit", data=batch, suite=suite))
    return definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY"), None


def _project_validation(project: GxProject, name: str, suite, frame: pd.DataFrame):
    """Save the suite if its content changed, validate through a checkpoint and update Data Docs.

    Every GX object is fetched when it exists and created once otherwise: re-adding rewrites
    the committed files with fresh ids, which would show as a change in git on every audit.
    """
    gx = _gx()
    from great_expectations.exceptions import DataContextError

    context = project.context()
    try:
        stored = context.suites.get(name)
    except DataContextError:
        stored = None
    changed = stored is None or _suite_content(stored) != _suite_content(suite)
    if changed:
        suite = context.suites.add_or_update(suite)
    else:
        suite = stored
    try:
        source = context.data_sources.get("fairloop")
    except KeyError:
        source = context.data_sources.add_pandas("fairloop")
    asset = source.get_asset(name) if name in {a.name for a in source.assets} else source.add_dataframe_asset(name)
    if "whole" in {b.name for b in asset.batch_definitions}:
        batch = asset.get_batch_definition("whole")
    else:
        batch = asset.add_batch_definition_whole_dataframe("whole")
    definition_name = f"{name}-audit"
    try:
        definition = context.validation_definitions.get(definition_name)
        stale = changed
    except DataContextError:
        definition, stale = None, True
    if stale:
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=definition_name, data=batch, suite=suite)
        )
    try:
        checkpoint = context.checkpoints.get(definition_name)
    except DataContextError:
        checkpoint, stale = None, True
    if stale:
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=definition_name, validation_definitions=[definition], result_format="SUMMARY",
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update-data-docs")],
        ))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (validation,) = result.run_results.values()
    docs = project.root / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return validation, str(docs) if docs.is_file() else None


def gx_frame(spec: DatasetSpec, split: Split) -> pd.DataFrame:
    """The table GX validates: ``Split.to_frame`` with text columns as ``object``.

    GX 1.24 cannot match pandas 3's ``str`` dtype in expect_column_values_to_be_in_type_list
    (it compares the dtype with numpy types and fails whatever the list says); on ``object``
    columns it checks each value's Python type instead, which is what "text" means here.
    """
    frame = split.to_frame(spec.label.column)
    text = [*spec.features.categorical, *(f"sensitive.{s.name}" for s in spec.sensitive)]
    return frame.astype({column: object for column in text})


def validate_schema(
    spec: DatasetSpec, frame: pd.DataFrame, reference: ReferenceProfile, project: GxProject | None = None
) -> tuple[list[ExpectationOutcome], list[Finding], str | None]:
    """Run the suite on ``frame`` (see ``gx_frame``): in ``project`` (saving the suite, updating
    Data Docs) or in memory."""
    suite = build_suite(spec, reference)
    if project is None:
        result, docs = _ephemeral_validation(spec.name, suite, frame)
    else:
        result, docs = _project_validation(project, spec.name, suite, frame)
    outcomes, findings = [], []
    for item in result.results:
        configuration = item.expectation_config
        check = configuration.meta.get("check", "")
        severity = "block" if str(configuration.severity).lower().endswith("critical") else "warn"
        column = configuration.kwargs.get("column")
        shown = {k: v for k, v in item.result.items() if k in ("observed_value", "unexpected_count", "partial_unexpected_list")}
        if "partial_unexpected_list" in shown:
            shown["partial_unexpected_list"] = sorted(set(map(str, shown["partial_unexpected_list"])))[:LISTED]
        outcomes.append(ExpectationOutcome(
            expectation=configuration.type, column=column, check=check, severity=severity, success=bool(item.success),
            details=", ".join(f"{k}={v}" for k, v in shown.items()),
        ))
        if not item.success:
            message, value = _expectation_message(spec, frame, configuration, item.result)
            findings.append(Finding(severity=severity, check=check, message=message, column=column, value=value))
    return outcomes, findings, docs


def _expectation_message(spec: DatasetSpec, frame: pd.DataFrame, configuration, result: dict) -> tuple[str, str | None]:
    """A sentence a person can act on, naming column and value, for a failed expectation."""
    check = configuration.meta.get("check", "")
    kwargs = configuration.kwargs
    column = kwargs.get("column")
    observed = result.get("observed_value")
    unexpected = result.get("unexpected_count")
    sensitive = next((s for s in spec.sensitive if f"sensitive.{s.name}" == column), None)
    if check in ("reference-categories", "reference-groups") and column in frame:
        values = frame[column].dropna()
        unseen = values[~values.isin(kwargs["value_set"])].value_counts()
        what = f"sensitive '{sensitive.name}' (column '{sensitive.column}')" if sensitive else f"categorical feature '{column}'"
        items = [f"'{v}' ({n} rows)" for v, n in unseen.items()]
        return (f"{what}: {int(unseen.sum())} row(s) with values unseen in the reference snapshot: {shortlist(items)}",
                str(unseen.index[0]) if len(unseen) else None)
    if check == "reference-range":
        values = result.get("partial_unexpected_list") or []
        return (f"numeric feature '{column}': {unexpected} value(s) outside the reference range "
                f"[{kwargs['min_value']:g}, {kwargs['max_value']:g}], e.g. {shortlist(sorted(set(values)), 5)}",
                str(values[0]) if values else None)
    if check == "category-count":
        return (f"categorical feature '{column}' has {observed} distinct values (audit.max_categories = "
                f"{kwargs['max_value']}): an identifier or free text, not a category", str(observed))
    if check == "label-both-classes":
        present = sorted(frame[column].dropna().unique().tolist())  # GX reports only what is missing
        only = present[0] if len(present) == 1 else present
        return (f"label '{column}': every row has label {only} (raw values {spec.label.describe(only == 1)}); a model "
                "needs both classes",
                str(only))
    if check == "sensitive-two-groups" and sensitive is not None:
        group = frame[column].iloc[0] if len(frame) else None
        return (f"sensitive '{sensitive.name}' (column '{sensitive.column}'): every row is in group '{group}'; "
                "fairness needs two or more groups to compare", str(group))
    if check in ("label-not-null", "sensitive-not-null", "declared-not-null"):
        return f"column '{column}' has {unexpected} empty value(s) ({check})", None
    if check in ("numeric-type", "categorical-type"):
        return f"feature '{column}' has type {observed}, expected one of {kwargs['type_list']}", str(observed)
    if check == "column-present":
        return f"column '{column}' is missing", column
    values = result.get("partial_unexpected_list")
    detail = f"{unexpected} unexpected value(s), e.g. {shortlist(sorted(set(map(str, values))), 5)}" if values else f"observed {observed}"
    return (f"{check} {configuration.type} failed on '{column}': {detail}",
            str(values[0]) if values else (None if observed is None else str(observed)))


def default_gx_root() -> Path:
    return get_settings().project_dir / "gx"


def audit_reference(
    spec: DatasetSpec, split: Split, source: str | None, reference: ReferenceProfile | None, project: GxProject
) -> tuple[ReferenceProfile, list[Finding]]:
    """The category sets and ranges ``split`` is checked against: ``reference`` when given, else the suite
    committed in ``project``, else ``split`` itself; an info finding says where they came from when not given."""
    findings: list[Finding] = []
    if reference is None:
        stored = project.stored_suite(spec.name)
        reference = reference_from_suite(stored) if stored is not None else None
        if reference is not None:
            # Columns the spec gained since the suite was learned get their sets from the audited data.
            learned = learn_reference(spec, split, "audited data")
            gained = sorted((set(learned.categories) - set(reference.categories)) | (set(learned.ranges) - set(reference.ranges)))
            if gained:
                findings.append(Finding(severity="info", check="reference", message=(
                    f"the reference suite {project.suite_path(spec.name)} has no category set or range for {gained}: "
                    "learned from the audited data (run `fairloop audit --dataset SPEC --update-reference`)")))
                reference = reference.model_copy(update={
                    "categories": {**learned.categories, **reference.categories},
                    "ranges": {**learned.ranges, **reference.ranges},
                })
    if reference is None:
        reference = learn_reference(spec, split, source or "audited data")
        findings.append(Finding(severity="info", check="reference", message=(
            f"no reference suite at {project.suite_path(spec.name)}: category sets and ranges were learned from the "
            "audited data itself, so nothing can be unseen (run `fairloop audit --dataset SPEC` to store one)")))
    return reference, findings
