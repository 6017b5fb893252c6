"""Production windows: the rows a check compares (reference and window), read and split by time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairloop.datasets import DatasetSpec, SourceFile, parse_rows, read_raw_file
from fairloop.errors import BadInputError


@dataclass(frozen=True)
class Rows:
    """Rows to compare: typed features, group names, optional 0/1 labels (NaN = unknown), predictions."""

    X: pd.DataFrame
    groups: pd.DataFrame
    y: pd.Series | None = None
    predictions: np.ndarray | None = None
    times: pd.Series | None = None
    raw: pd.DataFrame | None = None
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # reference-side figures, computed once

    def __len__(self) -> int:
        return len(self.X)

    def take(self, mask: np.ndarray) -> Rows:
        pick = lambda part: None if part is None else part.iloc[mask].reset_index(drop=True)  # noqa: E731
        return Rows(
            X=pick(self.X), groups=pick(self.groups), y=pick(self.y),
            predictions=None if self.predictions is None else self.predictions[mask],
            times=pick(self.times), raw=pick(self.raw),
        )


def reference_rows(spec: DatasetSpec, snapshot: Path) -> Rows:
    """The real rows of a champion's training snapshot (``registry/<dataset>/train.csv``)."""
    if not snapshot.is_file():
        raise BadInputError("the champion has no training snapshot", source=str(snapshot))
    frame = pd.read_csv(snapshot, low_memory=False)
    wanted = [*spec.features.columns, spec.label.column, *(f"sensitive.{s.name}" for s in spec.sensitive)]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise BadInputError(f"training snapshot lacks column(s) {missing}", source=str(snapshot))
    if "synthetic" in frame.columns:
        frame = frame[~frame["synthetic"].astype(str).str.lower().isin(["true", "1"])].reset_index(drop=True)
    X = frame[spec.features.columns].copy()
    for column in spec.features.numeric:
        X[column] = pd.to_numeric(X[column], errors="coerce").astype(float)
    for column in spec.features.categorical:
        X[column] = X[column].where(X[column].isna(), X[column].astype(str)).astype("str")
    groups = frame[[f"sensitive.{s.name}" for s in spec.sensitive]].astype(str)
    groups.columns = [s.name for s in spec.sensitive]
    return Rows(X=X, groups=groups, y=frame[spec.label.column].astype(float))


def read_window(
    spec: DatasetSpec, path: str | Path, *, time_column: str | None = None, prediction_column: str | None = None
) -> Rows:
    """A production window file in the dataset's raw format, parsed by the spec.

    The label column is optional (and may be partly empty); ``time_column`` (default: the
    spec's) is required when the spec names one; ``prediction_column`` holds the 0/1 decisions
    production made (otherwise the champion's predictions are used).
    """
    file_path = Path(path)
    time_column = time_column or spec.time_column
    raw = read_raw_file(spec, SourceFile(path=str(path)), file_path)
    extra = [c for c in (time_column, prediction_column) if c]
    parsed = parse_rows(spec, raw, file_path, extra_columns=extra)
    times = None
    if time_column:
        times = pd.to_datetime(parsed.raw[time_column], errors="coerce")
        bad = times.isna()
        if bad.any():
            raise BadInputError(
                f"time column '{time_column}' has {int(bad.sum())} empty or unparseable value(s), first "
                f"{parsed.raw[time_column][bad].iloc[0]!r}",
                source=str(file_path),
            )
    predictions = None
    if prediction_column:
        values = pd.to_numeric(parsed.raw[prediction_column], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            raise BadInputError(
                f"prediction column '{prediction_column}' must hold 0 or 1; found {parsed.raw[prediction_column][bad].iloc[0]!r}",
                source=str(file_path),
            )
        predictions = values.to_numpy().astype(int)
    return Rows(X=parsed.X, groups=parsed.groups, y=parsed.y, predictions=predictions, times=times, raw=parsed.raw)


@dataclass(frozen=True)
class Window:
    rows: Rows
    start: str | None
    end: str | None

    @property
    def label(self) -> str:
        return f"{self.start} .. {self.end}" if self.start else "all rows"


def split_windows(rows: Rows, days: int, *, start: str | None = None) -> list[Window]:
    """Consecutive ``days``-long windows from ``start`` (default: the first timestamp); empty ones are skipped."""
    if rows.times is None:
        return [Window(rows, None, None)]
    times = rows.times
    origin = pd.Timestamp(start) if start else times.min().normalize()
    index = ((times - origin) // pd.Timedelta(days=days)).to_numpy()
    windows = []
    for k in np.unique(index[index >= 0]):
        begin = origin + pd.Timedelta(days=int(k) * days)
        end = begin + pd.Timedelta(days=days)
        windows.append(Window(rows.take(index == k), begin.date().isoformat(), end.date().isoformat()))
    return windows


def latest_window(rows: Rows, days: int, *, end: str | None = None) -> Window:
    """The ``days`` before ``end`` (default: just after the last timestamp); all rows when untimed."""
    if rows.times is None:
        return Window(rows, None, None)
    stop = pd.Timestamp(end) if end else rows.times.max().normalize() + pd.Timedelta(days=1)
    begin = stop - pd.Timedelta(days=days)
    mask = ((rows.times >= begin) & (rows.times < stop)).to_numpy()
    return Window(rows.take(mask), begin.date().isoformat(), stop.date().isoformat())

