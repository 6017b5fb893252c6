"""The row containers: a labelled split (training, validation, test) and observed rows (a production
window, a champion's reference rows); both are per-row parts that select rows the same way."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Self

import numpy as np
import pandas as pd

from fairloop.errors import BadInputError


class PerRowParts:
    """Rows held as parallel parts, each a frame, series or array with one entry per row, or None.

    Fields with ``compare=False`` are caches, not rows: a selection starts them afresh.
    """

    X: pd.DataFrame

    def __len__(self) -> int:
        return len(self.X)

    def take(self, positions: np.ndarray) -> Self:
        """The rows at ``positions`` (integer positions or a boolean mask), numbered from 0 again."""
        return type(self)(**{part.name: _pick(getattr(self, part.name), positions) for part in fields(self) if part.compare})


def _pick(part: pd.DataFrame | pd.Series | np.ndarray | None, positions: np.ndarray):
    if part is None:
        return None
    if isinstance(part, np.ndarray):
        return part[positions]
    return part.iloc[positions].reset_index(drop=True)


@dataclass(frozen=True)
class Split(PerRowParts):
    """One split: features, 0/1 label, sensitive groups, optional weights, synthetic-row flags."""

    X: pd.DataFrame
    y: pd.Series
    groups: pd.DataFrame
    sample_weight: pd.Series | None = None
    synthetic: pd.Series | None = None

    def __post_init__(self) -> None:
        if self.synthetic is None:
            object.__setattr__(self, "synthetic", pd.Series(False, index=self.X.index, name="synthetic"))

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


@dataclass(frozen=True)
class Rows(PerRowParts):
    """Observed rows: typed features, group names, optional 0/1 labels (NaN = unknown), predictions.

    ``raw`` keeps the original columns of rows read from a file (after the spec's filters), e.g. to
    write a window back out.
    """

    X: pd.DataFrame
    groups: pd.DataFrame
    y: pd.Series | None = None
    predictions: np.ndarray | None = None
    times: pd.Series | None = None
    raw: pd.DataFrame | None = None
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # reference-side figures, computed once

    def labelled(self) -> Split:
        """The rows whose label is known, as a Split (raises when there are none)."""
        if self.y is None:
            raise BadInputError("no label column: these rows cannot be trained on")
        known = self.y.notna().to_numpy()
        if not known.any():
            raise BadInputError("no row has a label: these rows cannot be trained on")
        picked = self.take(np.flatnonzero(known))
        return Split(X=picked.X, y=picked.y.astype(int), groups=picked.groups)
