"""The data audit: the first gate of every remediation run, and a CI step on its own.

Four parts, each a plain function:

1. ``validate_schema``: a Great Expectations suite built from the dataset spec (columns and
   types, label values, non-null where declared, numeric ranges and category sets of a
   reference snapshot, the spec's ``audit.expectations``). The suite, with its reference
   snapshot, lives in the file-backed GX context ``gx/`` so it is versioned in git; the CLI
   validates there too and builds Data Docs. Runs inside the pipeline validate in an
   ephemeral context: they read the committed suite and write nothing.
2. ``group_audit``: per sensitive group and per group x label cell (and per intersection of
   the sensitive features) counts, shares, positive-label rates with Wilson intervals, the gap
   between groups with a chi-square test, cells too small to judge, rows with no sensitive
   value; each intersection the spec declares ('sex:race') gets the base-rate findings of a
   sensitive feature over its cells. Where some rows have none, their groups are inferred from
   the other features and the label (``fairloop.data.membership``, for auditing only) and the base
   rates are reported over all rows too, or the audit says why it refused to infer.
3. ``proxy_scores``: for every feature, how well it alone predicts each sensitive feature
   (cross-fitted AUC of a one-feature target-encoding model, plus normalised mutual
   information), on a seeded row sample so that it costs the same on a million rows.
4. ``leak_scores`` (``fairloop.audit.leakage``): for every feature, how well it alone predicts the
   label; one that does almost perfectly is a label leak, which blocks.

The verdict is ``block`` (stop the run before training) when a blocking expectation fails or a
feature leaks the label, ``warn`` (continue; the findings go into the run's report) when
anything else is found, and ``pass`` otherwise. Same data and spec give a byte-identical record: it is a DVC output and
part of every model's lineage, so it holds no timings or timestamps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fairloop.audit.leakage import LEAK_METHOD, LeakScore, leak_message, leak_scores
from fairloop.audit.onefeature import cross_fitted_auc, feature_codes, sample_positions
from fairloop.config import get_settings
from fairloop.data.datasets import MISSING_GROUP, AuditSpec, DatasetSpec, Split
from fairloop.data.groups import CELL_JOINER, cell_labels, intersection_parts
from fairloop.data.membership import (
    MembershipReport,
    MembershipSettings,
    infer_membership,
)
from fairloop.errors import BadInputError
from fairloop.templating import md_text as md  # data values reach Markdown as text only

Verdict = Literal["pass", "warn", "block"]
Severity = Literal["block", "warn", "info"]

GX_SEVERITY = {"block": "critical", "warn": "warning"}
PROXY_METHOD = (
    "ROC AUC of a one-feature model: the feature's values (numeric ones in 20 quantile bins) target-encoded "
    "for the sensitive feature with 5-fold cross-fitting (sklearn TargetEncoder), scored out of fold; "
    "multi-group features use one-vs-rest AUC weighted by group size. NMI: sklearn normalized_mutual_info_score."
)
SIGNIFICANCE = 0.01  # a base-rate gap warns only when a chi-square test finds it this unlikely by chance
LISTED = 8  # values or cells named in one finding; the record holds all of them


# ---------------------------------------------------------------------------------------------
# The record


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


# ---------------------------------------------------------------------------------------------
# Reference snapshot and the GX suite


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


def _pvalue(pvalue: float | None) -> str:
    if pvalue is None:
        return "n/a"
    return "< 1e-300" if pvalue == 0 else f"= {pvalue:.1e}"  # 0.0 is an underflow, not certainty


def _listed(values: list, limit: int = LISTED) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


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
        return (f"{what}: {int(unseen.sum())} row(s) with values unseen in the reference snapshot: {_listed(items)}",
                str(unseen.index[0]) if len(unseen) else None)
    if check == "reference-range":
        values = result.get("partial_unexpected_list") or []
        return (f"numeric feature '{column}': {unexpected} value(s) outside the reference range "
                f"[{kwargs['min_value']:g}, {kwargs['max_value']:g}], e.g. {_listed(sorted(set(values)), 5)}",
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
    detail = f"{unexpected} unexpected value(s), e.g. {_listed(sorted(set(map(str, values))), 5)}" if values else f"observed {observed}"
    return (f"{check} {configuration.type} failed on '{column}': {detail}",
            str(values[0]) if values else (None if observed is None else str(observed)))


# ---------------------------------------------------------------------------------------------
# Representation and base rates


def group_audit(name: str, columns: list[str], groups: pd.Series, y: pd.Series, min_cell_rows: int) -> SensitiveAudit:
    """Counts, shares and positive rates per group and per group x label cell."""
    from scipy.stats import binomtest, chi2_contingency

    total = len(y)
    table = pd.crosstab(groups.astype(str), y.astype(int)).reindex(columns=[0, 1], fill_value=0)
    summaries, cells = [], []
    for group, row in table.iterrows():
        rows, positives = int(row.sum()), int(row[1])
        interval = binomtest(positives, rows).proportion_ci(confidence_level=0.95, method="wilson")
        summaries.append(GroupSummary(
            group=str(group), rows=rows, share=rows / total, base_rate=positives / rows, positives=positives,
            base_rate_ci_low=float(interval.low), base_rate_ci_high=float(interval.high), judged=rows >= min_cell_rows,
        ))
        for label in (0, 1):
            count = int(row[label])
            cells.append(GroupCell(group=str(group), label=label, rows=count, share=count / total, too_small=count < min_cell_rows))
    judged = [s.base_rate for s in summaries if s.judged]
    rates = judged if len(judged) >= 2 else [s.base_rate for s in summaries]
    gap = max(rates) - min(rates) if rates else 0.0
    ratio = min(rates) / max(rates) if rates and max(rates) > 0 else None
    observed = table.loc[table.sum(axis=1) > 0]
    pvalue = None
    if observed.shape[0] >= 2 and (observed.sum(axis=0) > 0).all():
        pvalue = float(chi2_contingency(observed.to_numpy()).pvalue)
    return SensitiveAudit(
        name=name, columns=columns, groups=summaries, cells=cells, base_rate_gap=float(gap),
        base_rate_ratio=None if ratio is None else float(ratio), chi2_pvalue=pvalue,
        missing_rows=int((groups.astype(str) == MISSING_GROUP).sum()),
    )


def with_inferred_base_rates(audit: SensitiveAudit, split: Split, settings: MembershipSettings, seed: int) -> SensitiveAudit:
    """``audit`` with, when some rows have no value, the inference report and base rates over all rows
    (each missing row counted towards each group with its inferred probability)."""
    if not audit.missing_rows:
        return audit
    report, inferred = infer_membership(split.X, split.groups[audit.name], split.y, settings, seed)
    if inferred is None:
        return audit.model_copy(update={"membership": report})
    names, weights, (y,) = inferred.expanded(split.groups[audit.name].to_numpy(), split.y.to_numpy())
    frame = pd.DataFrame({"weight": weights, "positive": weights * y}).groupby(names).sum()
    rates = (frame["positive"] / frame["weight"]).round(4)
    return audit.model_copy(update={"membership": report, "base_rates_all_rows": {str(g): float(r) for g, r in rates.items()},
                                    "base_rate_gap_all_rows": float(rates.max() - rates.min())})


def _intersection(spec: DatasetSpec, split: Split) -> pd.Series:
    return cell_labels(split.groups, [s.name for s in spec.sensitive])


def _representation_findings(audit: SensitiveAudit, spec: DatasetSpec, what: str) -> list[Finding]:
    settings = spec.audit
    findings = []
    small = audit.small_cells
    if small:
        listed = [f"{c.group} & label={c.label} ({c.rows} rows)" for c in sorted(small, key=lambda c: c.rows)]
        findings.append(Finding(
            severity="warn", check="small-cells", column=", ".join(audit.columns), value=small[0].group,
            message=(f"{what}: {len(small)} of {len(audit.cells)} group x label cells have fewer than "
                     f"{settings.min_cell_rows} rows (audit.min_cell_rows), too small to judge: {_listed(listed)}"),
        ))
    return findings


def _sensitive_findings(audit: SensitiveAudit, spec: DatasetSpec) -> list[Finding]:
    settings = spec.audit
    sensitive = spec.sensitive_named(audit.name)
    findings = _representation_findings(audit, spec, f"sensitive '{audit.name}'")
    if audit.missing_rows:
        inferred = audit.membership
        if inferred is not None and inferred.inferred:
            rates = ", ".join(f"{g} {r:.3f}" for g, r in audit.base_rates_all_rows.items())
            known = [g.base_rate for g in audit.groups if g.group != MISSING_GROUP]
            over_all = (f"; groups inferred from the other features and the label for auditing (held-out AUC "
                        f"{inferred.auc:.3f}, Brier {inferred.brier:.3f}, ECE {inferred.ece:.3f}): base rates over all rows "
                        f"{rates}, gap {audit.base_rate_gap_all_rows:.3f} (known rows only: {max(known) - min(known):.3f})")
        else:
            over_all = f"; {inferred.reason}: base rates are over the known rows only" if inferred is not None else ""
        findings.append(Finding(
            severity="warn", check="missing-sensitive", column=sensitive.column, value=MISSING_GROUP,
            message=(f"sensitive '{audit.name}' (column '{sensitive.column}'): {audit.missing_rows} row(s) have no value; "
                     f"kept as the explicit group '{MISSING_GROUP}' (spec: missing: group){over_all}"),
        ))
    if sensitive.use_as_feature:
        findings.append(Finding(
            severity="info", check="sensitive-as-feature", column=sensitive.column, value=audit.name,
            message=(f"sensitive '{audit.name}' (column '{sensitive.column}') is also a model feature "
                     "(use_as_feature: true): predictions may depend on it directly"),
        ))
    return findings + _base_rate_findings(audit, settings, f"sensitive '{audit.name}'", sensitive.column)


def _base_rate_findings(audit: SensitiveAudit, settings: AuditSpec, what: str, column: str,
                        shown: Callable[[str], str] = str) -> list[Finding]:
    """Gap, ratio and four-fifths findings of one breakdown (a sensitive feature or a declared
    intersection), judged groups only; ``shown`` writes a group's name for the message."""
    findings = []
    judged = [g for g in audit.groups if g.judged]
    significant = audit.chi2_pvalue is not None and audit.chi2_pvalue < SIGNIFICANCE
    if len(judged) >= 2 and significant:
        high, low = max(judged, key=lambda g: g.base_rate), min(judged, key=lambda g: g.base_rate)
        rates = (f"{shown(low.group)} vs {shown(high.group)} base rates {low.base_rate:.3f} vs {high.base_rate:.3f} "
                 f"(ratio {'n/a' if audit.base_rate_ratio is None else f'{audit.base_rate_ratio:.3f}'}); chi-square p "
                 f"{_pvalue(audit.chi2_pvalue)}")
        gap_warns = settings.base_rate_gap_warn is not None and audit.base_rate_gap >= settings.base_rate_gap_warn
        ratio_warns = (settings.base_rate_ratio_warn is not None and audit.base_rate_ratio is not None
                       and audit.base_rate_ratio < settings.base_rate_ratio_warn)
        if gap_warns:
            findings.append(Finding(
                severity="warn", check="base-rate-gap", column=column, value=low.group,
                message=(f"{what}: positive-label rate differs by {audit.base_rate_gap:.3f} between groups "
                         f"({rates}; audit.base_rate_gap_warn = {settings.base_rate_gap_warn})"),
            ))
        elif ratio_warns:  # a small gap between small rates can still be a several-fold difference
            findings.append(Finding(
                severity="warn", check="base-rate-ratio", column=column, value=low.group,
                message=(f"{what}: {shown(low.group)}'s positive-label rate is {audit.base_rate_ratio:.3f} times "
                         f"{shown(high.group)}'s ({rates}; audit.base_rate_ratio_warn = {settings.base_rate_ratio_warn}), "
                         f"although they differ by only {audit.base_rate_gap:.3f}"),
            ))
    floor = settings.rate_floor
    extreme = [g for g in judged if g.base_rate < floor or g.base_rate > 1 - floor]
    if len(judged) >= 2 and extreme:
        listed = [f"{shown(g.group)} {g.base_rate:.3f}" for g in extreme]
        complement = _complement_ratio(judged)
        findings.append(Finding(
            severity="warn", check="four-fifths-meaningless", column=column, value=extreme[0].group,
            message=(f"{what}: positive-label rates near 0 or 1 ({_listed(listed)}; audit.rate_floor = {floor}) "
                     "make a four-fifths (ratio) rule meaningless: near 0 any small difference is a large ratio, near 1 "
                     f"any ratio passes; the ratio of negative-label rates is {'n/a' if complement is None else f'{complement:.3f}'}. "
                     "Judge differences (and their intervals), not ratios, for this feature"),
        ))
    return findings


def _cell_values(cell: str) -> str:
    """'sex=F & race=B' -> '(F, B)': a cell of a declared intersection, by its groups."""
    return "(" + ", ".join(part.partition("=")[2] or part for part in cell.split(CELL_JOINER)) + ")"


def _intersection_findings(audit: SensitiveAudit, spec: DatasetSpec, small_cells_reported: bool) -> list[Finding]:
    """Findings of a declared intersection, like a sensitive feature's (its small cells only when
    the intersection of every sensitive feature has not reported the same cells already)."""
    what = f"intersection {audit.name} ({', '.join(intersection_parts(audit.name))})"
    findings = [] if small_cells_reported else _representation_findings(audit, spec, what)
    return findings + _base_rate_findings(audit, spec.audit, what, ", ".join(audit.columns), _cell_values)


def _complement_ratio(groups: list[GroupSummary]) -> float | None:
    """Lowest / highest negative-label rate: what a ratio rule sees when positive rates are near 1."""
    negatives = [1 - g.base_rate for g in groups]
    return None if max(negatives) == 0 else min(negatives) / max(negatives)


# ---------------------------------------------------------------------------------------------
# Proxies


def proxy_scores(spec: DatasetSpec, split: Split, sensitive: str, seed: int) -> tuple[list[ProxyScore], int]:
    """How well each feature alone predicts ``sensitive``; rows beyond audit.proxy_sample_rows are
    subsampled (seeded, stratified by group). Returns scores, best first, and the rows used."""
    from sklearn.metrics import normalized_mutual_info_score

    settings = spec.audit
    groups = split.groups[sensitive].astype(str)
    positions = sample_positions(groups.to_numpy(), settings.proxy_sample_rows, seed)
    # Integer codes throughout: sklearn's checks on string arrays (np.unique of objects) cost more than the models.
    target, _ = pd.factorize(groups.iloc[positions], sort=True)
    if len(np.unique(target)) < 2:
        return [], len(positions)
    scores = []
    own_column = spec.sensitive_named(sensitive).column  # with use_as_feature it is a feature: it predicts itself
    for column in spec.features.columns:
        if column == own_column:
            continue
        numeric = column in spec.features.numeric
        codes = feature_codes(split.X[column].iloc[positions], numeric)
        auc = cross_fitted_auc(codes, target, seed)
        distinct = len(np.unique(codes))
        # NMI rises with the number of categories whatever they mean: not reported for identifier-like columns
        nmi = None if distinct > settings.max_categories else float(normalized_mutual_info_score(target, codes))
        scores.append(ProxyScore(sensitive=sensitive, feature=column, kind="numeric" if numeric else "categorical",
                                 auc=round(auc, 4), nmi=None if nmi is None else round(nmi, 4),
                                 flagged=auc >= settings.proxy_auc_threshold))
    return sorted(scores, key=lambda s: (-s.auc, s.feature)), len(positions)


def _proxy_finding(sensitive: str, scores: list[ProxyScore], spec: DatasetSpec, sample_rows: int, rows: int) -> Finding | None:
    flagged = [s for s in scores if s.flagged]
    if not flagged:
        return None
    sample = f"a seeded sample of {sample_rows:,} of {rows:,} rows" if sample_rows < rows else f"all {rows:,} rows"
    listed = [f"{s.feature} (AUC {s.auc:.3f}" + (f", NMI {s.nmi:.3f})" if s.nmi is not None else ")") for s in flagged]
    return Finding(
        severity="warn", check="proxy", column=flagged[0].feature, value=f"{flagged[0].auc:.3f}",
        message=(f"proxies of sensitive '{sensitive}': {_listed(listed)} alone predict it with AUC >= "
                 f"{spec.audit.proxy_auc_threshold} (audit.proxy_auc_threshold; {sample}); removing '{sensitive}' "
                 "does not remove what they encode"),
    )


# ---------------------------------------------------------------------------------------------
# The audit


def default_gx_root() -> Path:
    return get_settings().project_dir / "gx"


def run_audit(
    spec: DatasetSpec,
    split: Split,
    sensitive: str | None = None,
    *,
    source: str | None = None,
    reference: ReferenceProfile | None = None,
    gx_root: Path | None = None,
    write_gx: bool = False,
    membership: MembershipSettings | None = None,
) -> AuditReport:
    """Audit ``split`` (rows of ``source``, when given) and decide pass / warn / block.

    The category sets and ranges come from ``reference`` when given, else from the suite
    committed in ``gx_root`` (default ``<project>/gx``), else from ``split`` itself (then
    nothing can be unseen, and an info finding says so). ``write_gx`` saves the suite into
    ``gx_root`` and validates there (results and Data Docs); otherwise nothing is written.
    ``membership``: how rows with no sensitive value are inferred (default settings if None).
    """
    sensitive = sensitive or spec.primary_sensitive
    spec.grouping(sensitive)
    project = GxProject(gx_root or default_gx_root())
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
    frame = gx_frame(spec, split)
    expectations, schema_findings, docs = validate_schema(spec, frame, reference, project if write_gx else None)
    findings += schema_findings

    breakdowns = [
        with_inferred_base_rates(
            group_audit(s.name, [s.column], split.groups[s.name], split.y, spec.audit.min_cell_rows), split,
            membership or MembershipSettings(), spec.split.seed)
        for s in spec.sensitive
    ]
    intersection = None
    if len(spec.sensitive) >= 2:
        title = " x ".join(s.name for s in spec.sensitive)
        intersection = group_audit(title, [s.column for s in spec.sensitive], _intersection(spec, split), split.y,
                                   spec.audit.min_cell_rows)
    # declared intersections are sensitive features of their own ('sex:race'): their cells get base-rate findings
    declared = [group_audit(name, [s.column for s in spec.grouping(name)], split.groups[name], split.y,
                            spec.audit.min_cell_rows) for name in spec.intersection_names]
    for breakdown in breakdowns:
        findings += _sensitive_findings(breakdown, spec)
    if intersection is not None:
        findings += _representation_findings(intersection, spec, f"intersection {intersection.name}")
    every_feature = {s.name for s in spec.sensitive}
    for breakdown in declared:
        same_cells = intersection is not None and set(intersection_parts(breakdown.name)) == every_feature
        findings += _intersection_findings(breakdown, spec, small_cells_reported=same_cells)

    proxies: list[ProxyScore] = []
    sample_rows = 0
    for s in spec.sensitive:
        scores, sample_rows = proxy_scores(spec, split, s.name, spec.split.seed)
        proxies += scores
        finding = _proxy_finding(s.name, scores, spec, sample_rows, len(split))
        if finding is not None:
            findings.append(finding)
    leaks, leak_rows = leak_scores(split.X, split.y, spec.features.numeric, spec.features.categorical,
                                   threshold=spec.audit.label_leak_auc, sample_rows=spec.audit.proxy_sample_rows,
                                   seed=spec.split.seed)
    leak = leak_message(leaks, f"'{spec.label.column}' (positive: {spec.label.describe(True)})", spec.audit.label_leak_auc,
                        leak_rows, len(split))
    if leak is not None:
        findings.append(Finding(severity="block", check="label-leak", column=leaks[0].feature, value=f"{leaks[0].auc:.3f}",
                                message=leak))

    order = {"block": 0, "warn": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])  # stable: checks keep their order within a severity
    verdict: Verdict = "block" if any(f.severity == "block" for f in findings) else (
        "warn" if any(f.severity == "warn" for f in findings) else "pass")
    prefix = f"{source}: " if source else ""
    primary = next(b for b in [*breakdowns, *declared] if b.name == sensitive)
    report = AuditReport(
        dataset=spec.name, source=source, rows=len(split), sensitive=sensitive, verdict=verdict,
        reasons=[prefix + f.message for f in findings if f.severity != "info"], findings=findings,
        expectations=expectations, groups=primary.groups, cells=primary.cells, base_rate_gap=primary.base_rate_gap,
        sensitive_features=breakdowns, sensitive_used_as_features=spec.sensitive_used_as_features,
        intersection=intersection, intersections=declared, proxies=proxies, proxy_sample_rows=sample_rows,
        proxy_method=PROXY_METHOD, leaks=leaks, leak_sample_rows=leak_rows, settings=spec.audit,
        reference=f"{reference.source} ({reference.rows:,} rows)",
        gx_suite=str(project.suite_path(spec.name)), data_docs=docs,
    )
    return report


# ---------------------------------------------------------------------------------------------
# For people: markdown, Prefect artifacts


def _group_table(audit: SensitiveAudit) -> list[str]:
    lines = ["| group | rows | share | positive rate (95% CI) | cells < min |", "|---|---|---|---|---|"]
    for g in audit.groups:
        small = ", ".join(f"label {c.label}: {c.rows}" for c in audit.cells if c.group == g.group and c.too_small)
        lines.append(f"| {md(g.group)} | {g.rows:,} | {g.share:.3f} | {g.base_rate:.3f} ({g.base_rate_ci_low:.3f}-"
                     f"{g.base_rate_ci_high:.3f}) | {small or '-'} |")
    ratio = "n/a" if audit.base_rate_ratio is None else f"{audit.base_rate_ratio:.3f}"
    lines.append(f"\nGap {audit.base_rate_gap:.3f}, ratio {ratio}, chi-square p {_pvalue(audit.chi2_pvalue)}, rows with no value {audit.missing_rows}.")
    if audit.membership is not None:
        over_all = ", ".join(f"{md(g)} {r:.3f}" for g, r in audit.base_rates_all_rows.items())
        lines.append(f"Rows with no value: {md(audit.membership.statement())}" + (
            f"; positive rates over all rows {over_all} (gap {audit.base_rate_gap_all_rows:.3f})." if over_all else "."))
    return lines


def render_markdown(report: AuditReport) -> str:
    """The audit for a person (Prefect markdown artifact, review report)."""
    settings = report.settings
    parts = [
        f"## Data audit of `{report.dataset.replace('`', '')}`: **{report.verdict.upper()}**",  # a code span shows HTML as text
        f"{report.rows:,} rows{f' of {md(report.source)}' if report.source else ''}; audited sensitive feature "
        f"{md(report.sensitive)}; reference snapshot: {md(report.reference)}.",
        "Sensitive features also used as model features (use_as_feature): "
        + (", ".join(md(name) for name in report.sensitive_used_as_features) or "none") + ".",
        "### Findings",
        "\n".join([f"- **{f.severity}** {md(f.message)}" for f in report.findings] or ["- none"]),
    ]
    for breakdown in report.sensitive_features:
        parts += [f"### Sensitive {md(breakdown.name)}", "\n".join(_group_table(breakdown))]
    if report.intersection is not None:
        small = report.intersection.small_cells
        parts += [f"### Intersection {md(report.intersection.name)}: {len(small)} of {len(report.intersection.cells)} cells "
                  f"below {settings.min_cell_rows} rows", "\n".join(_group_table(report.intersection))]
    for breakdown in report.intersections:
        parts += [f"### Declared intersection {md(breakdown.name)}", "\n".join(_group_table(breakdown))]
    proxy_rows = [
        f"| {md(p.sensitive)} | {md(p.feature)} | {p.auc:.3f} | {'-' if p.nmi is None else f'{p.nmi:.3f}'} | {'yes' if p.flagged else ''} |"
        for s in report.sensitive_features for p in report.top_proxies(s.name)
    ]
    parts += [
        f"### Proxies (threshold AUC {settings.proxy_auc_threshold}; {report.proxy_sample_rows:,} seeded rows of {report.rows:,})",
        "\n".join(["| sensitive | feature | AUC | NMI | proxy |", "|---|---|---|---|---|", *proxy_rows]),
    ]
    leak_rows = [f"| {md(s.feature)} | {s.auc:.3f} | {s.method} | {'yes' if s.flagged else ''} |" for s in report.leaks[:5]]
    parts += [
        f"### Label leaks (threshold AUC {settings.label_leak_auc}; {report.leak_sample_rows:,} seeded rows of {report.rows:,})",
        f"{LEAK_METHOD}.",
        "\n".join(["| feature | AUC for the label | figure | leak |", "|---|---|---|---|", *leak_rows]),
    ]
    failed = [e for e in report.expectations if not e.success]
    parts += [f"### Great Expectations suite {md(report.gx_suite)}: {len(report.expectations) - len(failed)} of "
              f"{len(report.expectations)} expectations met"]
    if failed:
        parts.append("\n".join(["| expectation | column | severity | result |", "|---|---|---|---|",
                                *[f"| {md(e.expectation)} | {md(e.column)} | {e.severity} | {md(e.details)} |" for e in failed]]))
    if report.data_docs:
        parts.append(f"Data Docs: {md(report.data_docs)}")
    return "\n\n".join(parts) + "\n"


def publish_artifacts(report: AuditReport) -> None:
    """Markdown and table artifacts on the current Prefect run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(key="audit-report", markdown=render_markdown(report),
                             description=f"Data audit of {report.dataset}: {report.verdict}")
    cells: list[dict[str, Any]] = [
        {"breakdown": b.name, **c.model_dump()}
        for b in [*report.sensitive_features, *filter(None, [report.intersection]), *report.intersections] for c in b.cells
    ]
    create_table_artifact(key="audit-cells", table=cells, description="Group x label cells (too_small: below audit.min_cell_rows)")
    create_table_artifact(key="audit-leaks", table=[s.model_dump() for s in report.leaks],
                          description="One-feature AUC of each feature for the label (flagged: a label leak)")
    create_table_artifact(key="audit-proxies", table=[p.model_dump() for p in report.proxies],
                          description="One-feature proxy scores for each sensitive feature")
