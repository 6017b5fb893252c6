"""Dataset specs (``datasets/*.yaml``) and loading them into train / validation / test splits.

A spec says where the raw files are, how to parse them, which column is the label and which
value is positive, which columns are sensitive (with an optional value mapping), which are
features, which rows to keep and how to split. Everything dataset-specific lives in the
spec, so a new dataset needs a new YAML file and no code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator
from sklearn.model_selection import train_test_split

from fairloop.errors import BadInputError
from fairloop.specfile import SpecModel, VersionedSpec, load_spec

Scalar = str | int | float | bool
MISSING_GROUP = "missing"


class CsvFormat(SpecModel):
    separator: str = ","
    header: bool = True
    columns: list[str] | None = Field(None, description="column names, required when header is false")
    na_values: list[str] = []
    skip_initial_space: bool = False
    encoding: str = "utf-8"

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


class LabelSpec(SpecModel):
    column: str
    positive: list[Scalar] = Field(min_length=1, description="raw values meaning the positive class")
    negative: list[Scalar] | None = Field(
        None, description="raw values meaning the negative class; omitted: the one other value"
    )


class SensitiveSpec(SpecModel):
    name: str
    column: str
    values: dict[str, str] | None = Field(None, description="raw value -> group name")
    missing: Literal["fail", "group"] = Field(
        "fail", description="rows with no value: fail the run, or form an explicit 'missing' group"
    )


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
            return values.isin(self.keep_in)
        if self.not_in is not None:
            return ~values.isin(self.not_in) & values.notna()
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


class DatasetSpec(VersionedSpec):
    provenance: str = ""
    format: CsvFormat = CsvFormat()
    files: list[SourceFile] = Field(min_length=1)
    label: LabelSpec
    sensitive: list[SensitiveSpec] = Field(min_length=1)
    features: FeatureSpec
    filters: list[RowFilter] = []
    split: SplitSpec = SplitSpec()

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise ValueError("use letters, digits, '-' or '_' only (it names registry paths)")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        roles = sorted(f.role for f in self.files)
        if roles not in (["all"], ["test", "train"]):
            raise ValueError("files: give one file with role 'all', or one 'train' and one 'test'")
        names = [s.name for s in self.sensitive]
        if len(set(names)) != len(names):
            raise ValueError(f"sensitive: duplicated names {names}")
        if self.label.column in self.features.columns:
            raise ValueError(f"features: the label column '{self.label.column}' cannot be a feature")
        sensitive_features = sorted({s.column for s in self.sensitive} & set(self.features.columns))
        if sensitive_features:
            raise ValueError(f"features: sensitive columns {sensitive_features} cannot be features")
        return self

    @property
    def primary_sensitive(self) -> str:
        return self.sensitive[0].name

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


@dataclass(frozen=True)
class Splits:
    train: Split
    validation: Split
    test: Split


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
    return load_spec(path, DatasetSpec)


def read_raw_file(spec: DatasetSpec, source: SourceFile, file_path: Path) -> pd.DataFrame:
    """Parse one raw file as the spec's format says; raise BadInputError naming the file."""
    if not file_path.is_file():
        raise BadInputError(f"data file not found (spec field files.path = '{source.path}')", source=str(file_path))
    fmt = spec.format
    try:
        frame = pd.read_csv(
            file_path,
            sep=fmt.separator,
            header=0 if fmt.header else None,
            names=fmt.columns if not fmt.header else None,
            na_values=fmt.na_values or None,
            skipinitialspace=fmt.skip_initial_space,
            skiprows=source.skip_rows or None,
            encoding=fmt.encoding,
            low_memory=False,
        )
    except pd.errors.EmptyDataError:
        raise BadInputError("file is empty", source=str(file_path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(f"cannot parse as {fmt.separator!r}-separated text: {exc}", source=str(file_path)) from None
    if frame.empty:
        raise BadInputError("file has a header but no data rows", source=str(file_path))
    return frame


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


def _label_vector(spec: DatasetSpec, values: pd.Series, file_path: Path) -> pd.Series:
    label = spec.label
    nulls = int(values.isna().sum())
    if nulls:
        raise BadInputError(f"label column '{label.column}' has {nulls} empty value(s)", source=str(file_path))
    positive = values.isin(label.positive)
    if label.negative is not None:
        known = positive | values.isin(label.negative)
        if not known.all():
            unknown = sorted(map(str, values[~known].unique()))[:5]
            raise BadInputError(
                f"label column '{label.column}' has value(s) {unknown} that are in neither "
                f"label.positive {label.positive} nor label.negative {label.negative}",
                source=str(file_path),
            )
    else:
        others = sorted(map(str, values[~positive].unique()))
        if len(others) > 1:
            raise BadInputError(
                f"label column '{label.column}' has more than two values ({others[:5]} besides "
                f"{label.positive}); list the negative ones in label.negative",
                source=str(file_path),
            )
    return positive.astype(int).rename("label")


def _group_column(sensitive: SensitiveSpec, values: pd.Series, file_path: Path) -> pd.Series:
    if sensitive.values is not None:
        mapped = values.map(lambda v: sensitive.values.get(str(v)) if pd.notna(v) else None)
        unmapped = values.notna() & mapped.isna()
        if unmapped.any():
            raise BadInputError(
                f"sensitive '{sensitive.name}': value(s) {sorted(map(str, values[unmapped].unique()))[:5]} of "
                f"column '{sensitive.column}' have no entry in sensitive.values",
                source=str(file_path),
            )
        groups = mapped
    else:
        groups = values.where(values.isna(), values.astype(str))
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
            raise BadInputError(
                f"numeric feature '{column}' has non-numeric value {features[column][bad].iloc[0]!r} "
                f"({int(bad.sum())} row(s))",
                source=str(file_path),
            )
        features[column] = numbers.astype(float)
    for column in spec.features.categorical:
        values = features[column]
        features[column] = values.where(values.isna(), values.astype(str)).astype("str")
    return features


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_dataset(spec_path: str | Path) -> LoadedDataset:
    """Read every file of the spec at ``spec_path`` into labelled splits by file role."""
    spec_path = Path(spec_path)
    spec = load_dataset_spec(spec_path)
    try:
        frames, hashes = _read_labelled_files(spec, spec_path)
    except BadInputError as exc:
        raise BadInputError(f"{exc} [dataset spec {spec_path}]") from None
    return LoadedDataset(spec=spec, spec_path=spec_path, frames=frames, files_sha256=hashes)


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
        for row_filter in spec.filters:
            raw = raw[row_filter.mask(raw)]
        if raw.empty:
            raise BadInputError("no rows left after the spec's filters", source=str(file_path))
        raw = raw.reset_index(drop=True)
        frames[source.role] = Split(
            X=_typed_features(spec, raw, file_path),
            y=_label_vector(spec, raw[spec.label.column], file_path),
            groups=pd.concat([_group_column(s, raw[s.column], file_path) for s in spec.sensitive], axis=1),
        )
        hashes[source.role] = _sha256(file_path)
    return frames, hashes


def _stratified_split(split: Split, size: float, seed: int, sensitive: str) -> tuple[Split, Split]:
    """Split rows in two, stratified by sensitive group x label where every cell allows it."""
    strata = split.groups[sensitive].astype(str) + "|" + split.y.astype(str)
    counts = strata.value_counts()
    stratify = strata if counts.min() >= 2 else None
    positions = np.arange(len(split))
    keep, held = train_test_split(positions, test_size=size, random_state=seed, stratify=stratify)
    return split.take(np.sort(keep)), split.take(np.sort(held))


def make_splits(
    dataset: LoadedDataset, *, sensitive: str | None = None, train_rows: int | None = None, seed: int | None = None
) -> Splits:
    """Form train / validation / test as the spec says.

    ``train_rows`` caps the training pool by a stratified subsample (for quick runs); the
    test split is never subsampled, so figures stay comparable.
    """
    spec = dataset.spec
    sensitive = sensitive or spec.primary_sensitive
    spec.sensitive_named(sensitive)
    seed = spec.split.seed if seed is None else seed
    if "test" in dataset.frames:
        pool, test = dataset.frames["train"], dataset.frames["test"]
    else:
        pool, test = _stratified_split(dataset.frames["all"], spec.split.test_size, seed, sensitive)
    if train_rows is not None and train_rows < len(pool):
        pool, _ = _stratified_split(pool, 1 - train_rows / len(pool), seed, sensitive)
    train, validation = _stratified_split(pool, spec.split.validation_size, seed, sensitive)
    return Splits(train=train, validation=validation, test=test)
