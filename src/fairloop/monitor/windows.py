"""Production windows: the rows a check compares (reference and window), read and split by time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import binom

from fairloop.data.dataset_spec import DatasetSpec, SourceFile
from fairloop.data.parsing import parse_rows, with_intersections
from fairloop.data.reading import read_raw_file
from fairloop.data.rows import Rows, Split
from fairloop.data.splits import Splits
from fairloop.errors import BadInputError


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
    return Rows(X=X, groups=with_intersections(spec, groups), y=frame[spec.label.column].astype(float))


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
        # production rows cannot come from a day that has not begun anywhere yet (a typo'd year would
        # open a window of its own and push every later check out of order)
        latest = pd.Timestamp.now(tz=times.dt.tz).normalize() + pd.Timedelta(days=2)
        future = times >= latest
        if future.any():
            raise BadInputError(
                f"time column '{time_column}' has {int(future.sum())} value(s) dated after tomorrow, first "
                f"{parsed.raw[time_column][future].iloc[0]!r}: production rows cannot come from the future",
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
    return replace(parsed, predictions=predictions, times=times)


def content_hash(rows: Rows) -> str:
    """SHA-256 over the window's rows, independent of their order: the same rows are the same window.

    Hashes the raw rows when there are any (what is written to disk and trained on), otherwise
    the parsed features, groups and labels.
    """
    frame = rows.raw if rows.raw is not None else pd.concat(
        [rows.X, rows.groups.add_prefix("sensitive."), *([] if rows.y is None else [rows.y.rename("label")])], axis=1)
    per_row = np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy())
    digest = hashlib.sha256(per_row.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Window:
    """Rows of one time range ``[start, end)`` (ISO dates; both None for an untimed file).

    A window's identity is its range and its content hash: re-checking the same identity
    changes nothing, and only a later, non-overlapping range continues a streak
    (``fairloop.monitor.alerting``).
    """

    rows: Rows
    start: str | None
    end: str | None

    @property
    def label(self) -> str:
        return f"{self.start} .. {self.end}" if self.start else "all rows"

    @cached_property
    def content_hash(self) -> str:
        return content_hash(self.rows)


Calendar = Literal["month", "week"]
#: how a feed is cut into tumbling windows: every N days (from an origin), or calendar months / ISO weeks
Period = int | Calendar
# pandas period frequencies; weeks ending on Sunday run Monday to Sunday, the ISO week
CALENDAR_FREQ: dict[str, str] = {"month": "M", "week": "W-SUN"}


def describe_period(period: Period) -> str:
    return f"calendar {period}s" if isinstance(period, str) else f"{period}-day windows"


def grid_origin(rows: Rows, origin: str | date | None) -> pd.Timestamp:
    """Where N-day windows start: ``origin`` (the policy's ``window_origin``) or the first day of the rows."""
    return pd.Timestamp(origin) if origin else rows.times.min().normalize()


def window_end(begin: pd.Timestamp, period: Period) -> pd.Timestamp:
    """The exclusive end of the window that starts at ``begin``."""
    if isinstance(period, str):
        return (begin.to_period(CALENDAR_FREQ[period]) + 1).start_time
    return begin + pd.Timedelta(days=period)


def window_starts(rows: Rows, period: Period, origin: str | date | None = None) -> pd.Series:
    """The start of the window each row falls in; NaT for rows before the origin of N-day windows.

    Calendar windows ignore ``origin``: a month starts on its 1st and an ISO week on its Monday,
    whatever day the feed starts, so monthly batches fill whole windows."""
    if isinstance(period, str):
        return rows.times.dt.to_period(CALENDAR_FREQ[period]).dt.start_time
    first = grid_origin(rows, origin)
    step = pd.Timedelta(days=period)
    starts = first + (rows.times - first) // step * step
    return starts.where(rows.times >= first)


def split_windows(rows: Rows, period: Period, *, start: str | date | None = None) -> list[Window]:
    """Tumbling windows in order: ``period``-day windows from ``start`` (default: the first timestamp;
    rows before it belong to no window), or calendar months / ISO weeks; empty ones are skipped."""
    if rows.times is None:
        return [Window(rows, None, None)]
    starts = window_starts(rows, period, start)
    windows = []
    for begin in sorted(starts.dropna().unique()):
        begin = pd.Timestamp(begin)
        windows.append(Window(rows.take((starts == begin).to_numpy()), begin.date().isoformat(),
                              window_end(begin, period).date().isoformat()))
    return windows


def latest_window(rows: Rows, period: Period, *, end: str | None = None, origin: str | date | None = None) -> Window:
    """The window a scheduled check looks at; all rows when untimed.

    By default the latest **tumbling** window (the grid of ``split_windows``) that holds rows,
    so a daily schedule sees the same range until the next one starts: while that window fills
    up, each check is a revision of it, which does not advance a streak.
    With ``end``: for N-day windows the ``period`` days before it, an explicit rolling window,
    which overlaps the previous one unless ``end`` moves by ``period``; overlapping windows do
    not advance a streak either. For calendar windows ``end`` must be the first day of a month
    (a Monday), and the window is the month (week) before it.
    """
    if rows.times is None:
        return Window(rows, None, None)
    if end is None:
        windows = split_windows(rows, period, start=origin)
        if not windows:
            raise BadInputError(f"no rows on or after the window origin {origin} (the last row is at {rows.times.max()})")
        return windows[-1]
    try:
        stop = pd.Timestamp(end)
    except ValueError as exc:
        raise BadInputError(f"window end {end!r} is not a date: {exc}", field="--window-end") from None
    if isinstance(period, str):
        boundary = stop.to_period(CALENDAR_FREQ[period]).start_time
        if stop != boundary:
            raise BadInputError(
                f"window end {end} is not where a calendar {period} starts (monitoring.window: {{calendar: {period}}}); "
                f"use {boundary.date()} or {window_end(boundary, period).date()}", field="--window-end",
            )
        begin = (stop.to_period(CALENDAR_FREQ[period]) - 1).start_time
    else:
        begin = stop - pd.Timedelta(days=period)
    mask = ((rows.times >= begin) & (rows.times < stop)).to_numpy()
    return Window(rows.take(mask), begin.date().isoformat(), stop.date().isoformat())


def _row_hashes(split: Split) -> np.ndarray:
    frame = pd.concat([split.X, split.groups.add_prefix("sensitive."), split.y.astype(int).rename("label")], axis=1)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def refuse_held_out_overlap(window: Split, splits: Splits, *, source: str = "the window", alpha: float = 1e-6) -> None:
    """Raise BadInputError when a window's labelled rows are copies of validation or test rows.

    ``splits`` are the dataset's splits *without* the window. Rows are compared exactly (parsed
    features, sensitive groups, label). Distinct people can share every parsed value when the
    features are coarse (COMPAS: 37 % of training rows equal some test row; Adult: 11 %;
    German: none), so an exact match alone proves nothing there: the window is refused when it
    matches a held-out split more often than the training split's own rows do by chance
    (one-sided binomial test at ``alpha``); with no chance matches (the training rows match
    none), one copied row is refused. A window built from held-out rows would contaminate the
    held-out figures of the rerun that trains on it.
    """

    mine, train = _row_hashes(window), _row_hashes(splits.train)
    for name in ("validation", "test"):
        held = _row_hashes(getattr(splits, name))
        repeated = np.isin(mine, held)
        copies = int(repeated.sum())
        if copies == 0:
            continue
        chance = float(np.isin(train, held).mean()) if len(train) else 0.0
        if chance == 0.0 or binom.sf(copies - 1, len(mine), chance) < alpha:
            first = int(np.flatnonzero(repeated)[0])
            expected = f"; by chance about {chance * len(mine):.0f} would be" if chance else ""
            raise BadInputError(
                f"{copies} of {len(mine)} labelled window row(s) are exact copies of rows of the {name} split{expected} "
                f"(first: window row {first + 1}, {window.X.iloc[first].to_dict()}); training on them would contaminate "
                "the held-out figures",
                source=source,
            )
