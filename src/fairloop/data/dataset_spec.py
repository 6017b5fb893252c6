"""Dataset specs (``datasets/*.yaml``): the models of a spec and loading one.

A spec says where the raw files are, how to parse them, which column is the label and which
value is positive, which columns are sensitive (with an optional value mapping), which are
features, which rows to keep and how to split. Everything dataset-specific lives in the
spec, so a new dataset needs a new YAML file and no code.
"""

from __future__ import annotations

import codecs
import operator
import re
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from fairloop.data.groups import (
    INTERSECTION_SEPARATOR,
    intersection_name,
    intersection_parts,
)
from fairloop.data.spec import SpecModel, VersionedSpec, load_spec, read_yaml
from fairloop.data.values import canonical, canonical_series
from fairloop.errors import BadInputError

Scalar = str | int | float | bool
LABEL_LEAK_AUC = 0.99  # default audit.label_leak_auc: a feature alone this good at the label is the label


class CsvFormat(SpecModel):
    separator: str = Field(",", description="field separator; ', ' (one character and blanks) reads as ',' with skip_initial_space")
    header: bool = True
    columns: list[str] | None = Field(None, description="column names, required when header is false")
    na_values: list[str] = Field(
        [], description="texts meaning 'no value' besides an empty field (pandas' own list, with 'NA', is not used)"
    )
    skip_initial_space: bool = Field(False, description="ignore blanks after each separator (files written as 'a, b')")
    quote_char: str = Field('"', min_length=1, max_length=1, description="character that quotes a field")
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
        return encoding

    @field_validator("separator")
    @classmethod
    def _some_separator(cls, separator: str) -> str:
        if not separator:
            raise ValueError("the separator cannot be empty")
        return separator

    @property
    def read_separator(self) -> str:
        """What pandas is given: ', ' is ',' with skip_initial_space (the C parser, no regex)."""
        return self.separator.strip() if len(self.separator.strip()) == 1 else self.separator

    @property
    def read_skip_initial_space(self) -> bool:
        return self.skip_initial_space or self.read_separator != self.separator

    @model_validator(mode="after")
    def _columns_when_headerless(self) -> CsvFormat:
        if not self.header and not self.columns:
            raise ValueError("'columns' is required when 'header' is false")
        if self.columns and len(set(self.columns)) != len(self.columns):
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ValueError(f"duplicated column names {dupes}")
        return self


class SourceFile(SpecModel):
    path: str = Field(description="relative to the spec file")
    role: Literal["all", "train", "test"] = "all"
    skip_rows: int = Field(0, ge=0, description="lines to skip before the data (junk lines)")


COMPARISONS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt}
COMPARISON = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


class LabelSpec(SpecModel):
    column: str
    positive: list[Scalar] | None = Field(
        None, min_length=1, exclude_if=lambda value: value is None,  # a thresholded label's hash has no 'positive: null'
        description="raw values meaning the positive class",
    )
    negative: list[Scalar] | None = Field(
        None, description="raw values meaning the negative class; omitted: the one other value"
    )
    positive_if: str | None = Field(
        None, exclude_if=lambda value: value is None,  # absent: the spec's content hash is unchanged
        description="instead of positive/negative: a comparison with a number, e.g. '> 120'; rows whose (numeric) "
        "label column satisfies it are positive, every other row negative",
    )

    @field_validator("positive_if")
    @classmethod
    def _a_comparison(cls, text: str | None) -> str | None:
        if text is not None and not COMPARISON.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a comparison with a number: write one of {', '.join(sorted(COMPARISONS))} and a "
                "number, quoted in YAML (a value starting with '>' is YAML syntax otherwise), e.g. positive_if: \"> 120\""
            )
        return text

    @model_validator(mode="after")
    def _one_rule(self) -> LabelSpec:
        if (self.positive is None) == (self.positive_if is None):
            raise ValueError("give either 'positive' (raw values) or 'positive_if' (a comparison such as '> 120'), not "
                             + ("both" if self.positive is not None else "neither"))
        if self.positive_if is not None and self.negative is not None:
            raise ValueError("'negative' cannot go with 'positive_if': every row that fails the comparison is negative")
        return self

    @property
    def threshold(self) -> tuple[str, float] | None:
        """(operator, number) of ``positive_if``; None for a label given by its raw values."""
        if self.positive_if is None:
            return None
        operator_text, number = COMPARISON.fullmatch(self.positive_if).groups()
        return operator_text, float(number)

    def describe(self, positive: bool) -> str:
        """The raw values of one class, in words for a message."""
        if self.threshold is None:
            return str(self.positive if positive else self.negative)
        comparison = f"{self.column} {' '.join(COMPARISON.fullmatch(self.positive_if).groups())}"
        return comparison if positive else f"not {comparison}"


class SensitiveSpec(SpecModel):
    name: str
    column: str
    values: dict[str, str] | None = Field(
        None, description="raw value -> group name; keys may be numbers or text (compared by value)"
    )
    missing: Literal["fail", "group"] = Field(
        "fail", description="rows with no value: fail the run, or form an explicit 'missing' group"
    )
    use_as_feature: bool = Field(
        False, description="also a model feature (list the column under features too); audited as sensitive all the same"
    )

    @field_validator("values", mode="before")
    @classmethod
    def _keys_as_text(cls, values: Any) -> Any:
        """YAML reads ``{1: male}`` with a number as key: keys are raw values, compared by ``canonical``."""
        if not isinstance(values, dict):
            return values
        keyed: dict[str, Any] = {}
        for key, group in values.items():
            text = canonical(key)
            if text in keyed:
                raise ValueError(f"raw values {key!r} and another key both mean {text!r}")
            keyed[text] = group
        return keyed


class RowFilter(SpecModel):
    """Keep rows whose ``column`` satisfies exactly one condition."""

    column: str
    keep_in: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    between: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> RowFilter:
        given = [n for n in ("keep_in", "not_in", "between") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a filter needs exactly one of 'in', 'not_in', 'between'")
        return self

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        values = frame[self.column]
        if self.keep_in is not None:
            return canonical_series(values).isin([canonical(v) for v in self.keep_in])
        if self.not_in is not None:
            return ~canonical_series(values).isin([canonical(v) for v in self.not_in]) & values.notna()
        low, high = self.between
        return pd.to_numeric(values, errors="coerce").between(low, high)


class FeatureSpec(SpecModel):
    numeric: list[str] = []
    categorical: list[str] = []

    @model_validator(mode="after")
    def _some_disjoint(self) -> FeatureSpec:
        if not self.numeric and not self.categorical:
            raise ValueError("at least one numeric or categorical feature is needed")
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns declared both numeric and categorical: {both}")
        return self

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class SplitSpec(SpecModel):
    test_size: float = Field(0.3, gt=0, lt=1, description="ignored when a file has role 'test'")
    validation_size: float = Field(0.2, gt=0, lt=1, description="share of training rows for validation")
    seed: int = 0


class ExtraExpectation(SpecModel):
    """A Great Expectations expectation the audit adds to the suite built from the spec.

    It runs on the parsed data: features as declared, the label as 0/1, each sensitive
    feature as column ``sensitive.NAME`` holding group names.
    """

    type: str = Field(description="GX expectation type, e.g. expect_column_values_to_be_between")
    kwargs: dict[str, Any] = Field(description="its arguments, e.g. {column: age, min_value: 17}")
    severity: Literal["block", "warn"] = Field("block", description="what a failure does to the verdict")


class AuditSpec(SpecModel):
    """Thresholds of the data audit (every field has a default; see ``fairloop.audit.checks``)."""

    min_cell_rows: int = Field(30, ge=1, description="group x label cells with fewer rows are too small to judge")
    proxy_auc_threshold: float = Field(
        0.70, gt=0.5, le=1.0, description="a feature whose one-feature AUC for a sensitive feature reaches this is a proxy"
    )
    proxy_sample_rows: int = Field(10_000, ge=200, description="seeded row sample the proxy and label-leak models are fitted on")
    label_leak_auc: float = Field(
        LABEL_LEAK_AUC, gt=0.5, le=1.0, exclude_if=lambda value: value == LABEL_LEAK_AUC,  # default: the hash is unchanged
        description="a feature whose one-feature AUC for the label reaches this is a label leak: the audit blocks",
    )
    base_rate_gap_warn: float | None = Field(
        0.10, ge=0, le=1, description="warn when groups' positive rates differ by this much (and significantly)"
    )
    base_rate_ratio_warn: float | None = Field(
        0.80, gt=0, le=1, description="warn when the lowest group's positive rate is below this share of the highest "
        "(and the difference is significant); 2.5% vs 10% is a ratio of 0.25"
    )
    rate_floor: float = Field(
        0.05, ge=0, lt=0.5, description="positive rates below this or above 1 - this make a four-fifths (ratio) "
        "comparison meaningless; the audit says so"
    )
    max_categories: int = Field(1000, ge=2, description="more distinct values in a categorical feature block the run")
    not_null: list[str] = Field([], description="columns that must have no empty value")
    expectations: list[ExtraExpectation] = []


class DatasetSpec(VersionedSpec):
    provenance: str = ""
    format: CsvFormat = CsvFormat()
    files: list[SourceFile] = Field(min_length=1)
    label: LabelSpec
    sensitive: list[SensitiveSpec] = Field(min_length=1)
    features: FeatureSpec
    filters: list[RowFilter] = []
    split: SplitSpec = SplitSpec()
    audit: AuditSpec = AuditSpec()
    time_column: str | None = Field(
        None, exclude_if=lambda value: value is None,  # absent: the spec's content hash is unchanged
        description="timestamp column of production windows (monitoring); not a feature",
    )
    intersections: list[list[str]] = Field(
        [], exclude_if=lambda value: not value,  # absent: the spec's content hash is unchanged
        description="sensitive features whose cells form one more sensitive feature, e.g. [[sex, race]] gives 'sex:race'",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        roles = sorted(f.role for f in self.files)
        if roles not in (["all"], ["test", "train"]):
            raise ValueError("files: give one file with role 'all', or one 'train' and one 'test'")
        names = [s.name for s in self.sensitive]
        if len(set(names)) != len(names):
            raise ValueError(f"sensitive: duplicated names {names}")
        for position, parts in enumerate(self.intersections):
            unknown = [name for name in parts if name not in names]
            if unknown or len(set(parts)) != len(parts) or len(parts) < 2:
                raise ValueError(
                    f"intersections[{position}]: needs two or more distinct sensitive feature names, got {parts}"
                    + (f"; unknown {unknown}, the spec declares {names}" if unknown else "")
                )
        if self.intersections and any(INTERSECTION_SEPARATOR in name for name in names):
            raise ValueError(f"sensitive: with intersections, a name may not contain '{INTERSECTION_SEPARATOR}' "
                             f"(it joins the names of an intersection), got {names}")
        if self.label.column in self.features.columns:
            raise ValueError(f"features: the label column '{self.label.column}' cannot be a feature")
        for position, sensitive in enumerate(self.sensitive):
            listed = sensitive.column in self.features.columns
            if listed and not sensitive.use_as_feature:
                raise ValueError(
                    f"features: sensitive column '{sensitive.column}' is listed as a feature; a sensitive column is "
                    f"not a feature unless sensitive[{position}].use_as_feature: true says so"
                )
            if sensitive.use_as_feature and not listed:
                raise ValueError(
                    f"sensitive[{position}].use_as_feature: column '{sensitive.column}' must also be listed under "
                    "features.numeric or features.categorical (that says how the model reads it)"
                )
        audited = set(self.audited_columns)
        for position, column in enumerate(self.audit.not_null):
            if column not in audited:
                raise ValueError(f"audit.not_null[{position}]: unknown column '{column}'; the audit sees {sorted(audited)}")
        for position, extra in enumerate(self.audit.expectations):
            column = extra.kwargs.get("column")
            if column is not None and column not in audited:
                raise ValueError(
                    f"audit.expectations[{position}].kwargs.column: unknown column '{column}'; the audit sees {sorted(audited)}"
                )
        return self

    @property
    def audited_columns(self) -> list[str]:
        """Columns of the table the audit validates (``Split.to_frame``): features, 0/1 label, groups."""
        return [*self.features.columns, self.label.column, *(f"sensitive.{s.name}" for s in self.sensitive)]

    @property
    def sensitive_used_as_features(self) -> list[str]:
        """Names of the sensitive features that are also model features (``use_as_feature``): every report says so."""
        return [s.name for s in self.sensitive if s.use_as_feature]

    @property
    def primary_sensitive(self) -> str:
        return self.sensitive[0].name

    @property
    def intersection_names(self) -> list[str]:
        """The declared intersections as sensitive features ('sex:race')."""
        return [intersection_name(parts) for parts in self.intersections]

    def grouping(self, name: str) -> list[SensitiveSpec]:
        """The sensitive features a run's sensitive feature ``name`` is made of: itself, or the
        parts of a declared intersection (clear error for any other name)."""
        if name in self.intersection_names:
            return [self.sensitive_named(part) for part in intersection_parts(name)]
        if name in {s.name for s in self.sensitive}:
            return [self.sensitive_named(name)]
        raise BadInputError(
            f"unknown sensitive feature '{name}'; the spec declares {[s.name for s in self.sensitive]}"
            + (f" and the intersections {self.intersection_names}" if self.intersections else ""),
            field="sensitive",
        )

    def sensitive_named(self, name: str) -> SensitiveSpec:
        for sensitive in self.sensitive:
            if sensitive.name == name:
                return sensitive
        raise BadInputError(
            f"unknown sensitive feature '{name}'; the spec declares {[s.name for s in self.sensitive]}",
            field="sensitive",
        )


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    spec = load_spec(path, DatasetSpec)
    check_unique_name(Path(path), spec)
    return spec


def check_unique_name(spec_path: Path, spec: DatasetSpec) -> None:
    """Refuse a spec whose name another dataset spec beside it uses: the name keys its GX suite and
    its registry folder, so two specs of one name would overwrite each other's."""
    for other in sorted([*spec_path.parent.glob("*.yaml"), *spec_path.parent.glob("*.yml")]):
        if other.resolve() == spec_path.resolve():
            continue
        try:
            raw = read_yaml(other)
        except BadInputError:
            continue  # not this spec's problem; that file fails when it is used
        if isinstance(raw, dict) and raw.get("name") == spec.name and {"files", "label"} <= raw.keys():
            raise BadInputError(
                f"dataset name '{spec.name}' is also the name of {other}: names key the GX suite and the registry, "
                "so give each dataset spec its own name",
                source=str(spec_path), field="name",
            )
