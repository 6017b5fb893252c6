"""Forming train / validation / test from a loaded dataset, stratified by group x label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from sklearn.model_selection import train_test_split

from fairloop.data.datasets import LoadedDataset
from fairloop.data.rows import Split


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


def stratified_split(split: Split, size: float, seed: int, sensitive: str) -> tuple[Split, Split]:
    """Split rows in two (``size``: the second part's share), stratified by sensitive group x label
    where every cell allows it (the test split, the training cap, a sweep's reduction subsample)."""
    strata = split.groups[sensitive].astype(str) + "|" + split.y.astype(str)
    counts = strata.value_counts()
    stratify = strata if counts.min() >= 2 else None
    positions = np.arange(len(split))
    keep, held = train_test_split(positions, test_size=size, random_state=seed, stratify=stratify)
    return split.take(np.sort(keep)), split.take(np.sort(held))


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
