"""Dataset specs (``datasets/*.yaml``) and loading them into train / validation / test splits.

A spec says where the raw files are, how to parse them, which column is the label and which
value is positive, which columns are sensitive (with an optional value mapping), which are
features, which rows to keep and how to split. Everything dataset-specific lives in the
spec, so a new dataset needs a new YAML file and no code.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import math
import operator
import re
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator, model_validator
from sklearn.model_selection import train_test_split

from fairloop.data.groups import (
    INTERSECTION_SEPARATOR,
    cell_labels,
    intersection_name,
    intersection_parts,
)
from fairloop.data.spec import (
    SpecModel,
    VersionedSpec,
    check_allowed_path,
    load_spec,
    read_yaml,
)
from fairloop.errors import BadInputError

Scalar = str | int | float | bool
MISSING_GROUP = "missing"
HEAD_LINES = 20  # first lines of a file checked for layout (field counts, header, separator)
LABEL_LEAK_AUC = 0.99  # default audit.label_leak_auc: a feature alone this good at the label is the label
YAML_BOOLEANS = {word: "true" for word in ("yes", "true", "on")} | {word: "false" for word in ("no", "false", "off")}


def canonical(value: Any) -> str:
    """The text a raw value is compared by: numbers by their value, everything else by its text.

    A spec says ``1``, ``1.0`` or ``"1"`` and a file holds ``1`` (read as a number) or ``"1"`` (read
    as text, e.g. because the column also holds ``"n/a"``): all are the same value. YAML reads
    ``yes``/``no``/``on``/``off`` as true/false, so those words match true/false. Other text is
    compared as written, leading and trailing blanks removed.
    """
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    text = str(value).strip()
    if text.lower() in YAML_BOOLEANS:
        return YAML_BOOLEANS[text.lower()]
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isnan(number) or math.isinf(number):
        return text
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def canonical_series(values: pd.Series) -> pd.Series:
    """``canonical`` of every non-empty value (computed once per distinct value); empty stays empty."""
    present = values.dropna()
    mapping = {v: canonical(v) for v in pd.unique(present)}
    return values.map(mapping, na_action="ignore")


def read_as(values: pd.Series) -> str:
    """How pandas read a column, in words for a message."""
    return "numbers" if pd.api.types.is_numeric_dtype(values) else "text"


def written_as(values: list) -> str:
    kinds = {"numbers" if isinstance(v, int | float) and not isinstance(v, bool) else "text" for v in values}
    return " and ".join(sorted(kinds))


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
    """Thresholds of the data audit (every field has a default; see audit.py)."""

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


@dataclass(frozen=True)
class Split:
    """One split: features, 0/1 label, sensitive groups, optional weights, synthetic-row flags."""

    X: pd.DataFrame
    y: pd.Series
    groups: pd.DataFrame
    sample_weight: pd.Series | None = None
    synthetic: pd.Series | None = None

    def __post_init__(self) -> None:
        if self.synthetic is None:
            object.__setattr__(self, "synthetic", pd.Series(False, index=self.X.index, name="synthetic"))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, positions: np.ndarray) -> Split:
        pick = lambda part: None if part is None else part.iloc[positions].reset_index(drop=True)  # noqa: E731
        return Split(
            X=pick(self.X), y=pick(self.y), groups=pick(self.groups),
            sample_weight=pick(self.sample_weight), synthetic=pick(self.synthetic),
        )

    def to_frame(self, label_column: str) -> pd.DataFrame:
        """Everything in one table (the training snapshot stored with a model)."""
        parts = [self.X, self.y.rename(label_column), self.groups.add_prefix("sensitive."), self.synthetic]
        if self.sample_weight is not None:
            parts.append(self.sample_weight.rename("sample_weight"))
        return pd.concat(parts, axis=1)

    def with_weights(self, weights: pd.Series) -> Split:
        return replace(self, sample_weight=weights.rename("sample_weight"))

    @staticmethod
    def concat(parts: list[Split]) -> Split:
        """The rows of ``parts`` one after the other (real rows only: no weights, no synthetic flags)."""
        if any(p.sample_weight is not None or p.synthetic.any() for p in parts):
            raise BadInputError("only unweighted real rows can be concatenated")
        join = lambda frames: pd.concat(frames, ignore_index=True)  # noqa: E731
        return Split(X=join([p.X for p in parts]), y=join([p.y for p in parts]), groups=join([p.groups for p in parts]))


class Weighting(BaseModel):
    """How a rerun's training rows were redrawn towards a drifted window's distribution (``fairloop.monitor.drifted``)."""

    method: Literal["density_ratio", "none"]
    old_rows: int
    drifted_rows: int
    drawn_rows: int
    effective_rows: float = Field(description="Kish's effective sample size of the weights, (sum w)^2 / sum w^2")
    drifted_share_drawn: float = Field(description="share of the drawn rows that are drifted rows")
    clipped_share: float = Field(description="share of rows whose weight was clipped at max_weight")
    domain_auc: float | None = Field(None, description="out-of-fold AUC of the old-vs-drifted classifier (0.5: no shift seen)")


@dataclass(frozen=True)
class Splits:
    train: Split
    validation: Split
    test: Split
    weighting: Weighting | None = None  # set when the training split holds a drifted window's rows


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset read through its spec: labelled rows per file role, plus provenance."""

    spec: DatasetSpec
    spec_path: Path
    frames: dict[str, Split]
    files_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def file_paths(self) -> dict[str, Path]:
        """Raw file of each role ('all', or 'train' and 'test'), resolved against the spec."""
        return {f.role: (self.spec_path.parent / f.path).resolve() for f in self.spec.files}

    @property
    def data_sha256(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.files_sha256):
            digest.update(f"{name}:{self.files_sha256[name]}\n".encode())
        return digest.hexdigest()

    def all_rows(self) -> Split:
        """Every labelled row, whatever its file role (what the audit looks at)."""
        parts = list(self.frames.values())
        return Split(
            X=pd.concat([p.X for p in parts], ignore_index=True),
            y=pd.concat([p.y for p in parts], ignore_index=True),
            groups=pd.concat([p.groups for p in parts], ignore_index=True),
        )


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    spec = load_spec(path, DatasetSpec)
    check_unique_name(Path(path), spec)
    return spec


def read_raw_file(spec: DatasetSpec, source: SourceFile, file_path: Path) -> pd.DataFrame:
    """Parse one raw file as the spec's format says; raise BadInputError naming the file."""
    if not file_path.is_file():
        what = "is a directory, not a data file" if file_path.is_dir() else "data file not found"
        raise BadInputError(f"{what} (spec field files.path = '{source.path}')", source=str(file_path))
    frame, head = read_table(spec.format, file_path, source.skip_rows)
    if frame.empty:
        raise BadInputError("file has a header but no data rows", source=str(file_path))
    _check_layout(spec, frame, [text for _, text in head], file_path)
    return frame


def read_table(fmt: CsvFormat, file_path: Path, skip_rows: int = 0, nrows: int | None = None
               ) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """The file as ``fmt`` reads it (every column as pandas types it), and its first lines with their
    numbers; every problem is a BadInputError naming the file and the cause."""
    _check_compression(file_path)
    head = _head(file_path, fmt.encoding, skip_rows)
    _check_no_nul(file_path, fmt.encoding)
    _check_field_counts(fmt, head, file_path)
    separator = fmt.read_separator
    options: dict[str, Any] = {"engine": "c", "low_memory": False}
    if len(separator) > 1:  # pandas reads a longer separator as a regex, with its python engine
        options = {"engine": "python"}
        separator = re.escape(separator)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(
                file_path,
                sep=separator,
                header=0 if fmt.header else None,
                names=fmt.columns if not fmt.header else None,
                index_col=False,  # never take a first column as the row index (it would shift every name)
                # Only empty fields and the spec's own na_values are missing: pandas' default list would
                # silently turn a group called "NA" or a value "n/a" into a missing value.
                keep_default_na=False,
                na_values=["", *fmt.na_values],
                skipinitialspace=fmt.read_skip_initial_space,
                quotechar=fmt.quote_char,
                skiprows=skip_rows or None,
                nrows=nrows,
                encoding=fmt.encoding,
                **options,
            )
        parser_warnings = [w for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
        if parser_warnings:
            raise BadInputError(
                f"lines of the file have different numbers of fields with separator {fmt.separator!r}"
                f"{_separator_hint(fmt, [text for _, text in head])}",
                source=str(file_path),
            )
    except pd.errors.EmptyDataError:
        lines = _count_lines(file_path, fmt.encoding) if skip_rows else 0
        if lines:
            raise BadInputError(f"skip_rows = {skip_rows} skips every line: the file has {lines:,} lines",
                                source=str(file_path), field="files[].skip_rows") from None
        raise BadInputError("file is empty", source=str(file_path)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInputError(
            f"corrupt or truncated gzip file ({type(exc).__name__}); compress the data again or use the plain file",
            source=str(file_path),
        ) from None
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"not {exc.encoding} text (spec field format.encoding = '{fmt.encoding}'): byte "
            f"{exc.object[exc.start:exc.start + 1]!r} at offset {exc.start} cannot be decoded; "
            f"set format.encoding to the file's encoding (e.g. latin-1)",
            source=str(file_path),
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        hint = _separator_hint(fmt, [text for _, text in head])
        counts = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if counts:
            expected, line, saw = counts.groups()
            raise BadInputError(
                f"line {int(line) + skip_rows} has {saw} fields, the lines before it {expected} "
                f"(separator {fmt.separator!r}){hint}", source=str(file_path),
            ) from None
        detail = " ".join(str(exc).split())[:200]
        raise BadInputError(
            f"cannot parse as {fmt.separator!r}-separated text ({detail}){hint}", source=str(file_path)
        ) from None
    return frame, head


def _open_text(file_path: Path, encoding: str):
    opener = gzip.open if file_path.suffix == ".gz" else open
    return opener(file_path, "rt", encoding=encoding, errors="replace", newline="")


def _count_lines(file_path: Path, encoding: str) -> int:
    with _open_text(file_path, encoding) as handle:
        return sum(1 for _ in handle)


def _check_no_nul(file_path: Path, encoding: str) -> None:
    """Delimited text never holds a NUL character: it means a binary or corrupt file, or the wrong
    encoding. pandas keeps one inside a value, where no later check would notice it."""
    line = 1
    try:
        with _open_text(file_path, encoding) as handle:
            for chunk in iter(lambda: handle.read(1 << 22), ""):
                at = chunk.find("\x00")
                if at >= 0:
                    raise BadInputError(
                        f"NUL character (\\x00) on line {line + chunk.count(chr(10), 0, at):,}: this is not delimited "
                        f"text (a binary or corrupt file, or not {encoding} as spec field format.encoding says)",
                        source=str(file_path),
                    )
                line += chunk.count("\n")
    except (gzip.BadGzipFile, EOFError, zlib.error):
        return  # a corrupt archive: the parse in read_table reports it


def _check_compression(file_path: Path) -> None:
    """A '.gz' name must hold gzip data (pandas chooses the decompression by the name)."""
    if file_path.suffix != ".gz":
        return
    with file_path.open("rb") as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        raise BadInputError(
            "the file is named .gz but is not gzip-compressed: compress it (gzip -n) or drop the .gz from its name",
            source=str(file_path),
        )


def _head(file_path: Path, encoding: str, skip_rows: int, count: int = HEAD_LINES) -> list[tuple[int, str]]:
    """The first non-blank lines after the skipped ones with their 1-based line numbers (for
    diagnosing a file pandas would misread)."""
    lines: list[tuple[int, str]] = []
    try:
        with _open_text(file_path, encoding) as handle:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if number > skip_rows and text.strip():
                    lines.append((number, text))
                if len(lines) >= count:
                    break
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInputError(
            f"corrupt or truncated gzip file ({type(exc).__name__}); compress the data again or use the plain file",
            source=str(file_path),
        ) from None
    return lines


def split_records(fmt: CsvFormat, head: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """The head's records as the spec's format reads them, each with the line it starts on (the csv
    module: a quoted field may span lines; a longer separator is split as plain text)."""
    separator = fmt.read_separator
    if len(separator) > 1:
        return [(number, text.split(separator)) for number, text in head]
    reader = csv.reader((text for _, text in head), delimiter=separator, quotechar=fmt.quote_char,
                        skipinitialspace=fmt.read_skip_initial_space)
    records, start = [], 0
    try:
        for fields in reader:
            records.append((head[start][0], fields))
            start = reader.line_num
    except csv.Error:  # a quote left open at the end of the head: the records before it still count
        pass
    return records


def split_fields(fmt: CsvFormat, line: str) -> list[str]:
    """One line's fields as the spec's format reads them."""
    records = split_records(fmt, [(1, line)])
    return records[0][1] if records else []


def _check_field_counts(fmt: CsvFormat, head: list[tuple[int, str]], file_path: Path) -> None:
    """Names and fields must match in number: pandas otherwise shifts every column silently
    (41 names for 42 fields: the first field becomes the index, every name moves one to the right)."""
    records = split_records(fmt, head)
    if not records:
        return
    if len(head) >= HEAD_LINES and len(records) > 1:
        records = records[:-1]  # the head's end may cut the last record
    if fmt.header:
        (header_line, header_fields), data = records[0], records[1:]
        expected = len(header_fields)
        named = f"the header (line {header_line}) has {expected} names"
    else:
        data, expected = records, len(fmt.columns)
        named = f"format.columns lists {expected} names"
    for number, record in data:
        fields = len(record)
        if fields != expected:
            fix = ("add the missing name(s) to format.columns" if not fmt.header and fields > expected
                   else "remove the extra name(s) from format.columns" if not fmt.header
                   else "every line needs one field per header name")
            raise BadInputError(
                f"{named} but line {number} has {fields} fields (separator {fmt.separator!r}): {fix}"
                f"{_separator_hint(fmt, [t for _, t in head])}",
                source=str(file_path),
            )


def _separator_hint(fmt: CsvFormat, head: list[str]) -> str:
    """'; the file looks ';'-separated ...' when the sniffer finds another separator, else ''."""
    try:
        found = csv.Sniffer().sniff("\n".join(head), delimiters=",;\t|: ").delimiter
    except csv.Error:
        return ""
    if found in (fmt.separator, fmt.read_separator):
        return ""
    return f"; the file looks {found!r}-separated: set format.separator to {found!r} (it is {fmt.separator!r})"


def _spec_columns(spec: DatasetSpec) -> list[str]:
    return [spec.label.column, *(s.column for s in spec.sensitive), *spec.features.columns, *(f.column for f in spec.filters)]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_layout(spec: DatasetSpec, frame: pd.DataFrame, head: list[str], file_path: Path) -> None:
    """Catch a wrong separator, a missing or an unexpected header and duplicated column names,
    which pandas reads without complaint and which would otherwise surface as a confusing
    'column not found' or non-numeric-value error."""
    fmt = spec.format
    wanted = list(dict.fromkeys(_spec_columns(spec)))
    if len(frame.columns) == 1 and len(wanted) > 1:
        hint = _separator_hint(fmt, head) or (f"; first line: {head[0][:80]!r}" if head else "")
        raise BadInputError(f"every line reads as one column with separator {fmt.separator!r}{hint}", source=str(file_path))
    if fmt.header:
        names = [str(c) for c in frame.columns]
        # Only when no column the spec names is there (an error anyway): a header made of numbers is data.
        if not set(wanted) & set(names) and any(_looks_numeric(n) for n in names):
            raise BadInputError(
                f"the first line looks like data, not a header (columns read: {names[:6]}); if the file has no "
                "header, set format.header: false and list format.columns",
                source=str(file_path),
            )
        if head:
            _check_duplicated_columns(split_fields(fmt, head[0]), frame, wanted, file_path)
    elif fmt.columns:
        first = [str(v).strip() for v in frame.iloc[0].tolist()]
        repeated = sum(a == b for a, b in zip(first, fmt.columns))
        if repeated * 2 >= len(fmt.columns):
            raise BadInputError(
                f"the first line repeats the column names ({first[:6]}) but format.header is false: "
                "set format.header: true (and drop format.columns) or remove the header line",
                source=str(file_path),
            )


def _check_duplicated_columns(header: list[str], frame: pd.DataFrame, wanted: list[str], file_path: Path) -> None:
    """pandas renames a repeated column 'x' to 'x.1': harmless unless the spec uses 'x' and the copies differ."""
    counts = pd.Series(header).value_counts()
    for name, times in counts[counts > 1].items():
        if name not in wanted:
            continue
        copies = [name, *(f"{name}.{k}" for k in range(1, times))]
        if not all(c in frame.columns for c in copies):
            continue
        differing = int(sum((frame[c] != frame[name]) & ~(frame[c].isna() & frame[name].isna()) for c in copies[1:]).astype(bool).sum())
        if differing:
            raise BadInputError(
                f"column '{name}' appears {times} times in the header, the spec uses it, and the copies differ in "
                f"{differing} row(s): rename one of them so the spec can say which it means",
                source=str(file_path),
            )


def _require_columns(frame: pd.DataFrame, wanted: dict[str, list[str]], file_path: Path) -> None:
    present = set(frame.columns)
    for spec_field, columns in wanted.items():
        missing = [c for c in columns if c not in present]
        if missing:
            raise BadInputError(
                f"column(s) {missing} named in spec field '{spec_field}' are not in the file "
                f"(its columns: {list(frame.columns)[:20]}{'...' if len(frame.columns) > 20 else ''})",
                source=str(file_path),
            )


def label_vector(label: LabelSpec, values: pd.Series, file_path: Path) -> pd.Series:
    """The 0/1 label of the raw values of ``label.column`` (by its raw values, or its ``positive_if``)."""
    nulls = int(values.isna().sum())
    if nulls:
        raise BadInputError(f"label column '{label.column}' has {nulls} empty value(s)", source=str(file_path))
    if label.threshold is not None:
        return _thresholded_label(label, values, file_path)
    texts = canonical_series(values)
    positive = texts.isin([canonical(v) for v in label.positive])
    read = f"the file's values read as {read_as(values)}"
    if label.negative is not None:
        known = positive | texts.isin([canonical(v) for v in label.negative])
        if not known.all():
            unknown = sorted(map(str, values[~known].unique()))[:5]
            raise BadInputError(
                f"label column '{label.column}' has value(s) {unknown} that are in neither "
                f"label.positive {label.positive} nor label.negative {label.negative} ({read}, the spec's "
                f"written as {written_as([*label.positive, *label.negative])}; values are compared by value, so "
                "1, 1.0 and '1' are the same)",
                source=str(file_path),
            )
    else:
        others = sorted(map(str, values[~positive].unique()))
        if len(others) > 1:
            raise BadInputError(
                f"label column '{label.column}' has more than two values ({others[:5]} besides "
                f"{label.positive}; {read}); list the negative ones in label.negative",
                source=str(file_path),
            )
    return positive.astype(int).rename("label")


def _thresholded_label(label: LabelSpec, values: pd.Series, file_path: Path) -> pd.Series:
    """1 where the numeric label column satisfies ``label.positive_if``, else 0."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy() | np.isinf(numbers.to_numpy(dtype=float))
    if bad.any():
        raise BadInputError(
            f"label column '{label.column}' has value {str(values[bad].iloc[0])!r} ({int(bad.sum())} row(s), first at "
            f"data row {int(bad.argmax()) + 1}), but label.positive_if {label.positive_if!r} compares numbers: if it "
            "means 'no value', add it to format.na_values and keep such rows out with a filter "
            f"({{column: {label.column}, between: [low, high]}})",
            source=str(file_path),
        )
    operator_text, number = label.threshold
    return COMPARISONS[operator_text](numbers, number).astype(int).rename("label")


def group_columns(spec: DatasetSpec, raw: pd.DataFrame, file_path: Path) -> pd.DataFrame:
    """One group column per sensitive feature, then one per declared intersection (its cells)."""
    groups = pd.concat([_group_column(s, raw[s.column], file_path) for s in spec.sensitive], axis=1)
    return with_intersections(spec, groups)


def with_intersections(spec: DatasetSpec, groups: pd.DataFrame) -> pd.DataFrame:
    """``groups`` (a column per sensitive feature) with a cell column per declared intersection."""
    if not spec.intersections:
        return groups
    return pd.concat([groups, *(cell_labels(groups, parts) for parts in spec.intersections)], axis=1)


def _group_column(sensitive: SensitiveSpec, values: pd.Series, file_path: Path) -> pd.Series:
    if sensitive.values is not None:
        mapped = canonical_series(values).map(sensitive.values)
        unmapped = values.notna() & mapped.isna()
        if unmapped.any():
            raise BadInputError(
                f"sensitive '{sensitive.name}': value(s) {sorted(map(str, values[unmapped].unique()))[:5]} of "
                f"column '{sensitive.column}' have no entry in sensitive.values (the file's values read as "
                f"{read_as(values)}, the keys {sorted(sensitive.values)[:5]} compared by value)",
                source=str(file_path),
            )
        groups = mapped
    else:
        groups = _as_text(values)
    missing = groups.isna()
    if missing.any():
        if sensitive.missing == "fail":
            raise BadInputError(
                f"sensitive column '{sensitive.column}' has {int(missing.sum())} empty value(s); set "
                f"sensitive.missing: group to keep them as an explicit '{MISSING_GROUP}' group",
                source=str(file_path),
            )
        groups = groups.fillna(MISSING_GROUP)
    return groups.astype(str).rename(sensitive.name)


def _typed_features(spec: DatasetSpec, frame: pd.DataFrame, file_path: Path) -> pd.DataFrame:
    features = frame[spec.features.columns].copy()
    for column in spec.features.numeric:
        numbers = pd.to_numeric(features[column], errors="coerce")
        bad = numbers.isna() & features[column].notna()
        if bad.any():
            first = features[column][bad].iloc[0]
            raise BadInputError(
                f"numeric feature '{column}' has non-numeric value {first!r} ({int(bad.sum())} row(s), first at data "
                f"row {int(bad.to_numpy().argmax()) + 1}); if {first!r} means 'no value', add it to format.na_values, "
                "else declare the column under features.categorical",
                source=str(file_path),
            )
        infinite = np.isinf(numbers.to_numpy(dtype=float))
        if infinite.any():
            raise BadInputError(
                f"numeric feature '{column}' has infinite value {str(features[column][infinite].iloc[0])!r} "
                f"({int(infinite.sum())} row(s), first at data row {int(infinite.argmax()) + 1}): no model can use it; "
                "fix the data or add the text to format.na_values",
                source=str(file_path),
            )
        features[column] = numbers.astype(float)
    for column in spec.features.categorical:
        features[column] = _as_text(features[column]).astype("str")
    return features


def _as_text(values: pd.Series) -> pd.Series:
    """Category values as text: a numeric-coded column gives '1', not '1.0' (empty stays empty)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return canonical_series(values)
    return values.where(values.isna(), values.astype(str))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def load_dataset(spec_path: str | Path) -> LoadedDataset:
    """Read every file of the spec at ``spec_path`` into labelled splits by file role."""
    spec_path = Path(spec_path)
    return read_dataset(load_dataset_spec(spec_path), spec_path)


def read_dataset(spec: DatasetSpec, spec_path: Path) -> LoadedDataset:
    """Read the files of ``spec`` (a spec that is, or will be, written at ``spec_path``)."""
    for source in spec.files:
        check_allowed_path(spec_path.parent / source.path, spec_path, "files.path")
    try:
        frames, hashes = _read_labelled_files(spec, spec_path)
    except BadInputError as exc:
        raise BadInputError(f"{exc} [dataset spec {spec_path}]") from None
    return LoadedDataset(spec=spec, spec_path=spec_path, frames=frames, files_sha256=hashes)


def load_data_file(spec_path: str | Path, data_path: str | Path) -> tuple[DatasetSpec, Split]:
    """Read ``data_path`` (a new snapshot, a production window) with the parsing, label and
    sensitive rules of the spec at ``spec_path``; the spec itself is returned unchanged."""
    spec_path, data_path = Path(spec_path), Path(data_path).resolve()
    spec = load_dataset_spec(spec_path)
    one_file = spec.model_copy(update={"files": [SourceFile(path=str(data_path), role="all")]})
    try:
        frames, _ = _read_labelled_files(one_file, spec_path)
    except BadInputError as exc:
        raise BadInputError(f"{exc} [dataset spec {spec_path}]") from None
    return spec, frames["all"]


def _read_labelled_files(spec: DatasetSpec, spec_path: Path) -> tuple[dict[str, Split], dict[str, str]]:
    frames: dict[str, Split] = {}
    hashes: dict[str, str] = {}
    for source in spec.files:
        file_path = (spec_path.parent / source.path).resolve()
        raw = read_raw_file(spec, source, file_path)
        _require_columns(
            raw,
            {
                "label.column": [spec.label.column],
                "sensitive[].column": [s.column for s in spec.sensitive],
                "features": spec.features.columns,
                "filters[].column": [f.column for f in spec.filters],
            },
            file_path,
        )
        # Rows with no sensitive value are never dropped unseen: 'fail' counts them before any
        # filter could remove them, 'group' keeps them through filters on that column.
        kept_missing = {}
        for sensitive in spec.sensitive:
            empty = raw[sensitive.column].isna()
            if empty.any() and sensitive.missing == "fail":
                raise BadInputError(
                    f"sensitive column '{sensitive.column}' has {int(empty.sum())} empty value(s) (first at data row "
                    f"{int(empty.to_numpy().argmax()) + 1}); set sensitive.missing: group to keep them as an explicit "
                    f"'{MISSING_GROUP}' group",
                    source=str(file_path),
                )
            kept_missing[sensitive.column] = empty
        for row_filter in spec.filters:
            keep = row_filter.mask(raw)
            if row_filter.column in kept_missing:
                keep = keep | kept_missing[row_filter.column].loc[raw.index]
            raw = raw[keep]
        if raw.empty:
            raise BadInputError("no rows left after the spec's filters", source=str(file_path))
        raw = raw.reset_index(drop=True)
        frames[source.role] = Split(
            X=_typed_features(spec, raw, file_path),
            y=label_vector(spec.label, raw[spec.label.column], file_path),
            groups=group_columns(spec, raw, file_path),
        )
        hashes[source.role] = file_sha256(file_path)
    return frames, hashes


def stratified_split(split: Split, size: float, seed: int, sensitive: str) -> tuple[Split, Split]:
    """Split rows in two (``size``: the second part's share), stratified by sensitive group x label
    where every cell allows it (the test split, the training cap, a sweep's reduction subsample)."""
    strata = split.groups[sensitive].astype(str) + "|" + split.y.astype(str)
    counts = strata.value_counts()
    stratify = strata if counts.min() >= 2 else None
    positions = np.arange(len(split))
    keep, held = train_test_split(positions, test_size=size, random_state=seed, stratify=stratify)
    return split.take(np.sort(keep)), split.take(np.sort(held))


@dataclass(frozen=True)
class ParsedRows:
    """Rows of a file in the dataset's raw format (e.g. a production window), parsed by the spec.

    ``y`` holds NaN where the label is empty (outcome not known yet); ``raw`` keeps the original
    columns of the kept rows (after the spec's filters), e.g. to write a window back out.
    """

    X: pd.DataFrame
    y: pd.Series | None
    groups: pd.DataFrame
    raw: pd.DataFrame
    skipped_filters: list[str]

    def labelled(self) -> Split:
        """The rows whose label is known, as a Split (raises when there are none)."""
        if self.y is None:
            raise BadInputError("no label column: these rows cannot be trained on")
        known = self.y.notna().to_numpy()
        if not known.any():
            raise BadInputError("no row has a label: these rows cannot be trained on")
        positions = np.flatnonzero(known)
        return Split(
            X=self.X.iloc[positions].reset_index(drop=True), y=self.y.iloc[positions].astype(int).reset_index(drop=True),
            groups=self.groups.iloc[positions].reset_index(drop=True),
        )


def parse_rows(spec: DatasetSpec, raw: pd.DataFrame, file_path: Path, *, extra_columns: list[str] = ()) -> ParsedRows:
    """Parse raw rows with the spec: features, sensitive groups and (optional, possibly empty) label.

    Unlike the spec's own files the label may be absent or partly empty; a row filter whose
    column is absent is skipped and reported. ``extra_columns`` must be present too.
    """
    _require_columns(
        raw,
        {"sensitive[].column": [s.column for s in spec.sensitive], "features": spec.features.columns,
         "(requested)": list(extra_columns)},
        file_path,
    )
    skipped = []
    for row_filter in spec.filters:
        if row_filter.column not in raw.columns:
            skipped.append(row_filter.column)
            continue
        keep = row_filter.mask(raw)
        if row_filter.column in {s.column for s in spec.sensitive if s.missing == "group"}:
            keep = keep | raw[row_filter.column].isna()
        raw = raw[keep]
    if raw.empty:
        raise BadInputError("no rows left after the spec's filters", source=str(file_path))
    raw = raw.reset_index(drop=True)
    y = None
    if spec.label.column in raw.columns:
        values = raw[spec.label.column]
        known = values.notna()
        y = pd.Series(np.nan, index=raw.index, name="label")
        if known.any():
            y[known] = label_vector(spec.label, values[known], file_path).astype(float)
    return ParsedRows(
        X=_typed_features(spec, raw, file_path), y=y,
        groups=group_columns(spec, raw, file_path),
        raw=raw, skipped_filters=skipped,
    )


def read_extra_training_rows(spec: DatasetSpec, path: str | Path) -> Split:
    """The labelled rows of an extra file in the dataset's raw format (rows with no label are left out)."""
    file_path = Path(path)
    raw = read_raw_file(spec, SourceFile(path=str(path)), file_path)
    try:
        return parse_rows(spec, raw, file_path).labelled()
    except BadInputError as exc:
        raise BadInputError(f"{exc} (extra training data {file_path})") from None


def make_splits(
    dataset: LoadedDataset, *, sensitive: str | None = None, train_rows: int | None = None, seed: int | None = None,
) -> Splits:
    """Form train / validation / test as the spec says.

    ``train_rows`` caps the training pool by a stratified subsample (for quick runs); the
    test split is never subsampled, so figures stay comparable. (Extra training rows, e.g. a
    drifted window's, join the training split only: ``fairloop.pipeline.prepare``.)
    """
    spec = dataset.spec
    sensitive = sensitive or spec.primary_sensitive
    spec.grouping(sensitive)
    seed = spec.split.seed if seed is None else seed
    if "test" in dataset.frames:
        pool, test = dataset.frames["train"], dataset.frames["test"]
    else:
        pool, test = stratified_split(dataset.frames["all"], spec.split.test_size, seed, sensitive)
    if train_rows is not None and train_rows < len(pool):
        pool, _ = stratified_split(pool, 1 - train_rows / len(pool), seed, sensitive)
    train, validation = stratified_split(pool, spec.split.validation_size, seed, sensitive)
    return Splits(train=train, validation=validation, test=test)
