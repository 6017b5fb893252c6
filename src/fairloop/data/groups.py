"""Which sensitive groups count in a group rate, and why the others do not.

A rate is only as good as the rows it is measured on, and each rate is measured on different
rows: a selection rate on all of a group's rows, a true-positive rate on its positives, a
false-positive rate on its negatives. A group with 500 rows and 3 positives says something
about its selection rate and nothing about its TPR. So every rate kind has its own floor
(:class:`GroupFloors`, set by the policy), and a group below a floor is left out of that rate's
between-group metrics, *listed* with its counts and the reason (:class:`ExcludedGroup`), never
dropped silently. The point estimate (``fairloop.gates.evaluate``) and the bootstrap
(``fairloop.gates.intervals``) count the same groups through :func:`count_groups`.

**Intersections.** A dataset spec may declare intersections of its sensitive features
(``intersections: [[sex, race]]``). Each becomes one more sensitive feature, named
``sex:race`` (R's interaction notation; :func:`intersection_name`), whose groups are the cells
``sex=Female & race=Black`` (:func:`cell_labels`), added to every parsed table next to its parts.
A run selects it like any sensitive feature (``--sensitive sex:race``): the same floors
(rows for selection rate, positives for TPR, negatives for FPR) decide which *cells* count,
excluded cells are listed with their counts, reductions are fitted on the cells (what Fairlearn
does with a DataFrame of several sensitive columns: it joins them into one feature), and the
gates judge the worst cells, with simultaneous intervals (see ``fairloop.gates.intervals``). Gating
the cells covers the marginals: a marginal group's rate is a weighted mean of its cells'
rates, so every marginal max-min gap is at most the cells' gap (over counted cells).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fairloop.data.spec import SpecModel

INTERSECTION_SEPARATOR = ":"
SIMULTANEOUS_METHOD = ("simultaneous max-|t| bootstrap intervals over the cells (family-wise error rate at the "
                       "policy's confidence), resampled within cell x label")
CELL_JOINER = " & "

RateKind = Literal["selection_rate", "true_positive_rate", "false_positive_rate"]
RATE_LABELS: dict[str, str] = {
    "selection_rate": "selection rate", "true_positive_rate": "TPR", "false_positive_rate": "FPR",
}


class GroupFloors(SpecModel):
    """Rows a group needs, of the kind each rate is about, before it counts in that rate."""

    rows: int = Field(30, ge=1, description="all rows: selection rate (DPD, DI ratio)")
    positives: int = Field(10, ge=1, description="rows with a positive label: TPR (EOD, min group TPR)")
    negatives: int = Field(10, ge=1, description="rows with a negative label: FPR (EOD)")


class ExcludedGroup(BaseModel):
    """A group left out of one rate's between-group metrics, with its counts and why."""

    group: str
    rate: RateKind
    rows: int
    positives: int
    negatives: int
    needed: int
    reason: str


@dataclass(frozen=True)
class CountedGroups:
    """Group names (sorted) and, per rate kind, which of them count."""

    names: np.ndarray
    counted: dict[str, np.ndarray]  # rate kind -> boolean mask over names
    excluded: list[ExcludedGroup]
    sizes: dict[str, np.ndarray]  # rate kind -> each group's rows that rate is measured on

    def names_for(self, rate: RateKind) -> list[str]:
        return [str(name) for name in self.names[self.counted[rate]]]


def count_groups(groups: np.ndarray, y: np.ndarray, floors: GroupFloors, weights: np.ndarray | None = None) -> CountedGroups:
    """Apply ``floors`` to every group of ``groups`` (strings) with 0/1 labels ``y``; with ``weights``
    (inferred memberships, ``fairloop.data.membership``) a group's rows are its expected count, rounded."""
    names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    y = np.asarray(y).astype(int)
    weights = np.ones(len(codes)) if weights is None else np.asarray(weights, dtype=float)
    rows = np.rint(np.bincount(codes, weights=weights, minlength=len(names))).astype(int)
    positives = np.rint(np.bincount(codes, weights=weights * y, minlength=len(names))).astype(int)
    negatives = rows - positives
    counted: dict[str, np.ndarray] = {}
    sizes: dict[str, np.ndarray] = {}
    excluded: list[ExcludedGroup] = []
    for rate, have, needed, what in (
        ("selection_rate", rows, floors.rows, "rows"),
        ("true_positive_rate", positives, floors.positives, "positives"),
        ("false_positive_rate", negatives, floors.negatives, "negatives"),
    ):
        counted[rate], sizes[rate] = have >= needed, have
        for i in np.flatnonzero(~counted[rate]):
            excluded.append(ExcludedGroup(
                group=str(names[i]), rate=rate, rows=int(rows[i]), positives=int(positives[i]),
                negatives=int(negatives[i]), needed=needed,
                reason=f"{int(have[i])} {what} < floor {needed}: its {RATE_LABELS[rate]} does not count",
            ))
    return CountedGroups(names=names, counted=counted, excluded=excluded, sizes=sizes)


def intersection_name(features: list[str] | tuple[str, ...]) -> str:
    """``['sex', 'race']`` -> ``'sex:race'``: the name of the cells' sensitive feature."""
    return INTERSECTION_SEPARATOR.join(features)


def intersection_parts(name: str) -> list[str]:
    """The sensitive features a (possibly intersectional) sensitive feature is made of."""
    return name.split(INTERSECTION_SEPARATOR)


def is_intersection(name: str) -> bool:
    return INTERSECTION_SEPARATOR in name


def cell_labels(groups: pd.DataFrame, features: list[str] | tuple[str, ...]) -> pd.Series:
    """Each row's cell of ``features`` (columns of ``groups``): ``sex=Female & race=Black``."""
    parts = [f"{name}=" + groups[name].astype(str) for name in features]
    combined = parts[0]
    for part in parts[1:]:
        combined = combined + CELL_JOINER + part
    return combined.rename(intersection_name(features))
