"""Augmentation recipes (``recipes/*.yaml``): how the training split is changed before fitting.

Kinds: ``none`` (baseline), ``reweigh`` (Kamiran & Calders weights as ``sample_weight``),
``oversample`` (imbalanced-learn on a combined group x label target, so each sensitive group
can be grown separately), ``counterfactual`` (copies of rows with the sensitive group, and
optionally its proxy columns, swapped). Recipes only ever touch the training split: new rows
are flagged ``synthetic`` and evaluation refuses splits that contain any.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTENC, RandomOverSampler
from pydantic import BaseModel, Field

from fairloop.data.rows import Split
from fairloop.data.spec import SpecModel, VersionedSpec, load_spec
from fairloop.errors import BadInputError


class NoneParams(SpecModel):
    kind: Literal["none"]


class ReweighParams(SpecModel):
    kind: Literal["reweigh"]


class OversampleParams(SpecModel):
    kind: Literal["oversample"]
    sampler: Literal["random", "smotenc"] = "random"
    target: Literal["equalize_base_rates", "largest_cell", "ratio"] = Field(
        "equalize_base_rates",
        description=(
            "equalize_base_rates: grow each group's minority-label cell until its positive rate reaches "
            "the highest group's; largest_cell: grow every cell to the largest; ratio: to ratio x largest"
        ),
    )
    ratio: float | None = Field(None, gt=0, le=1)
    shrinkage: float | None = Field(None, ge=0, description="random sampler: smoothed bootstrap on numeric columns")
    k_neighbors: int = Field(5, ge=1, description="smotenc")


class CounterfactualParams(SpecModel):
    kind: Literal["counterfactual"]
    swap: dict[str, str] = Field(min_length=1, description="sensitive group -> group of its counterfactual copy")
    proxy_swaps: dict[str, dict[str, str]] = Field({}, description="column -> {value: value in the copy}")
    only_label: int | None = Field(None, description="copy only rows with this label (a subgroup)")


class Recipe(VersionedSpec):
    params: Annotated[
        NoneParams | ReweighParams | OversampleParams | CounterfactualParams, Field(discriminator="kind")
    ]

    @property
    def kind(self) -> str:
        return self.params.kind

    @property
    def produces_weights(self) -> bool:
        return self.kind == "reweigh"


NO_RECIPE = Recipe(name="none", version=1, params=NoneParams(kind="none"))


def load_recipe(path) -> Recipe:
    return load_spec(path, Recipe)


class AugmentReport(BaseModel):
    recipe: str
    kind: str
    rows_before: int
    rows_after: int
    synthetic_rows: int
    cells_before: dict[str, int]
    cells_after: dict[str, int]
    cell_targets: dict[str, int] = {}
    duplicate_rate: float = Field(0.0, description="share of synthetic rows identical to a real row")


def _cells(split: Split, sensitive: str) -> pd.Series:
    return split.groups[sensitive].astype(str) + "|" + split.y.astype(str)


def kamiran_calders_weights(groups: pd.Series, y: pd.Series) -> pd.Series:
    """w(g, y) = P(g) P(y) / P(g, y): makes group and label independent in the weighted data."""
    n = len(y)
    p_group = groups.map(groups.value_counts() / n)
    p_label = y.map(y.value_counts() / n)
    joint = pd.Series(list(zip(groups, y)), index=y.index)
    p_joint = joint.map(joint.value_counts() / n)
    return (p_group * p_label / p_joint).astype(float)


def _oversample_targets(cells: pd.Series, train: Split, sensitive: str, params: OversampleParams) -> dict[str, int]:
    counts = cells.value_counts()
    if params.target == "largest_cell":
        return {cell: int(counts.max()) for cell in counts.index}
    if params.target == "ratio":
        if params.ratio is None:
            raise BadInputError("target 'ratio' needs params.ratio", field="params.ratio")
        floor = int(np.ceil(params.ratio * counts.max()))
        return {cell: max(int(n), floor) for cell, n in counts.items()}
    rates = train.y.groupby(train.groups[sensitive].astype(str)).mean()
    top = float(rates.max())
    targets = {cell: int(n) for cell, n in counts.items()}
    for group, rate in rates.items():
        positives, negatives = counts.get(f"{group}|1", 0), counts.get(f"{group}|0", 0)
        if rate < top and positives > 0 and top < 1:
            targets[f"{group}|1"] = int(np.ceil(top * negatives / (1 - top)))
    return targets


def _oversample(train: Split, sensitive: str, params: OversampleParams, seed: int) -> tuple[Split, dict[str, int]]:
    cells = _cells(train, sensitive)
    targets = _oversample_targets(cells, train, sensitive, params)
    counts = cells.value_counts()
    strategy = {cell: n for cell, n in targets.items() if n > counts.get(cell, 0)}
    if not strategy:
        return train, targets
    numeric = [c for c in train.X.columns if train.X[c].dtype.kind in "fi"]
    categorical = [c for c in train.X.columns if c not in numeric]
    if params.sampler == "smotenc":
        if not categorical or not numeric:
            raise BadInputError("sampler 'smotenc' needs both numeric and categorical features", field="params.sampler")
        too_small = [cell for cell in strategy if counts[cell] <= params.k_neighbors]
        if too_small:
            raise BadInputError(
                f"cells {too_small} have no more than k_neighbors={params.k_neighbors} rows for SMOTENC",
                field="params.k_neighbors",
            )
        filled = train.X[categorical].astype(object).fillna("missing")
        numbers = train.X[numeric].fillna(train.X[numeric].median())
        matrix = pd.concat([numbers, filled], axis=1)
        sampler = SMOTENC(
            categorical_features=list(range(len(numeric), len(numeric) + len(categorical))),
            sampling_strategy=strategy, k_neighbors=params.k_neighbors, random_state=seed,
        )
        resampled, new_cells = sampler.fit_resample(matrix, cells)
        # SMOTENC cannot take missing values: the real rows come back as they were, and a
        # synthetic row keeps a missing category missing.
        synthetic_rows = resampled.iloc[len(train):][train.X.columns].reset_index(drop=True)
        synthetic_rows[numeric] = synthetic_rows[numeric].astype(float)
        synthetic_rows[categorical] = synthetic_rows[categorical].replace("missing", np.nan).astype("str")
        X = pd.concat([train.X, synthetic_rows], ignore_index=True)
    else:
        sampler = RandomOverSampler(sampling_strategy=strategy, shrinkage=params.shrinkage, random_state=seed)
        if params.shrinkage is not None and numeric:
            resampled_numeric, new_cells = sampler.fit_resample(train.X[numeric], cells)
            X = train.X.iloc[sampler.sample_indices_].reset_index(drop=True)
            X[numeric] = np.asarray(resampled_numeric, dtype=float)
        else:
            # Resample row positions so mixed-type columns come through untouched.
            _, new_cells = sampler.fit_resample(np.arange(len(train)).reshape(-1, 1), cells)
            X = train.X.iloc[sampler.sample_indices_].reset_index(drop=True)
    new_cells = pd.Series(np.asarray(new_cells), name="cell")
    group_label = new_cells.str.rsplit("|", n=1, expand=True)
    groups = train.groups.iloc[np.zeros(len(new_cells), dtype=int)].reset_index(drop=True).copy()
    groups.iloc[: len(train)] = train.groups.to_numpy()
    groups[sensitive] = group_label[0].to_numpy()
    # imbalanced-learn appends new samples after the originals
    synthetic = pd.Series(np.arange(len(new_cells)) >= len(train), name="synthetic")
    augmented = Split(X=X, y=group_label[1].astype(int).rename("label"), groups=groups, synthetic=synthetic)
    return augmented, targets


def _counterfactual(train: Split, sensitive: str, params: CounterfactualParams) -> Split:
    selected = train.groups[sensitive].isin(params.swap)
    if params.only_label is not None:
        selected &= train.y == params.only_label
    if not selected.any():
        raise BadInputError(
            f"no training row is in the swapped groups {sorted(params.swap)}"
            + (f" with label {params.only_label}" if params.only_label is not None else ""),
            field="params.swap",
        )
    positions = np.flatnonzero(selected.to_numpy())
    copies = train.take(positions)
    X = copies.X.copy()
    for column, mapping in params.proxy_swaps.items():
        if column not in X.columns:
            raise BadInputError(f"proxy column '{column}' is not a feature", field="params.proxy_swaps")
        X[column] = X[column].map(lambda v, m=mapping: m.get(v, v)).astype(X[column].dtype)
    groups = copies.groups.copy()
    groups[sensitive] = groups[sensitive].map(params.swap)
    return Split(
        X=pd.concat([train.X, X], ignore_index=True),
        y=pd.concat([train.y, copies.y], ignore_index=True),
        groups=pd.concat([train.groups, groups], ignore_index=True),
        synthetic=pd.Series(np.arange(len(train) + len(X)) >= len(train), name="synthetic"),
    )


def _duplicate_rate(augmented: Split) -> float:
    if not augmented.synthetic.any():
        return 0.0
    rows = pd.concat([augmented.X, augmented.y], axis=1)
    real = set(pd.util.hash_pandas_object(rows[~augmented.synthetic.to_numpy()], index=False))
    fake = pd.util.hash_pandas_object(rows[augmented.synthetic.to_numpy()], index=False)
    return float(fake.isin(real).mean())


def apply_recipe(train: Split, recipe: Recipe, sensitive: str, seed: int = 0) -> tuple[Split, AugmentReport]:
    """Apply ``recipe`` to the training split; return the augmented split and what changed."""
    if train.synthetic.any():
        raise BadInputError("the training split is already augmented; recipes apply to real rows only")
    targets: dict[str, int] = {}
    params = recipe.params
    if params.kind == "none":
        augmented = train
    elif params.kind == "reweigh":
        augmented = train.with_weights(kamiran_calders_weights(train.groups[sensitive].astype(str), train.y))
    elif params.kind == "oversample":
        augmented, targets = _oversample(train, sensitive, params, seed)
    elif params.kind == "counterfactual":
        augmented = _counterfactual(train, sensitive, params)
    else:  # load_recipe refuses unknown kinds; a Recipe built in code without validation may not
        raise BadInputError(f"recipe '{recipe.name}' has unknown kind '{params.kind}'", field="params.kind")
    report = AugmentReport(
        recipe=recipe.name,
        kind=params.kind,
        rows_before=len(train),
        rows_after=len(augmented),
        synthetic_rows=int(augmented.synthetic.sum()),
        cells_before=_cells(train, sensitive).value_counts().sort_index().to_dict(),
        cells_after=_cells(augmented, sensitive).value_counts().sort_index().to_dict(),
        cell_targets=targets,
        duplicate_rate=_duplicate_rate(augmented),
    )
    return augmented, report
