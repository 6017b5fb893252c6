"""Parsing raw rows by the spec: typed features, the 0/1 label and a group column per sensitive feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairloop.data.dataset_spec import (
    COMPARISONS,
    DatasetSpec,
    LabelSpec,
    SensitiveSpec,
)
from fairloop.data.groups import cell_labels
from fairloop.data.rows import Rows
from fairloop.data.values import canonical, canonical_series, read_as, written_as
from fairloop.errors import BadInputError

MISSING_GROUP = "missing"


def require_columns(frame: pd.DataFrame, wanted: dict[str, list[str]], file_path: Path) -> None:
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


def typed_features(spec: DatasetSpec, frame: pd.DataFrame, file_path: Path) -> pd.DataFrame:
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


def filter_rows(spec: DatasetSpec, raw: pd.DataFrame, file_path: Path) -> pd.DataFrame:
    """``raw`` through the spec's row filters, renumbered from 0 (BadInputError if none is left).
    Rows with no sensitive value are never dropped unseen: a filter on a sensitive column kept
    as a group (``missing: group``) keeps them too. A filter whose column is absent is skipped
    (the spec's own files are checked to have every filter column before)."""
    kept_empty = {s.column for s in spec.sensitive if s.missing == "group"}
    for row_filter in spec.filters:
        if row_filter.column not in raw.columns:
            continue
        keep = row_filter.mask(raw)
        if row_filter.column in kept_empty:
            keep = keep | raw[row_filter.column].isna()
        raw = raw[keep]
    if raw.empty:
        raise BadInputError("no rows left after the spec's filters", source=str(file_path))
    return raw.reset_index(drop=True)


def parse_rows(spec: DatasetSpec, raw: pd.DataFrame, file_path: Path, *, extra_columns: list[str] = ()) -> Rows:
    """Parse raw rows with the spec: features, sensitive groups and (optional, possibly empty) label.

    Unlike the spec's own files the label may be absent or partly empty; a row filter whose
    column is absent is skipped. ``extra_columns`` must be present too.
    """
    require_columns(
        raw,
        {"sensitive[].column": [s.column for s in spec.sensitive], "features": spec.features.columns,
         "(requested)": list(extra_columns)},
        file_path,
    )
    raw = filter_rows(spec, raw, file_path)
    y = None
    if spec.label.column in raw.columns:
        values = raw[spec.label.column]
        known = values.notna()
        y = pd.Series(np.nan, index=raw.index, name="label")
        if known.any():
            y[known] = label_vector(spec.label, values[known], file_path).astype(float)
    return Rows(X=typed_features(spec, raw, file_path), groups=group_columns(spec, raw, file_path), y=y, raw=raw)
