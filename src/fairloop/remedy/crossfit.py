"""Evaluation modes: where candidates are fitted, and which rows select and gate them.

*holdout*: candidates are fitted on the training split and selected on the validation split
carved from the training pool. Cheap, but on small data the validation split holds a few
hundred rows and every interval is too wide to decide a gate.

*crossfit*: the training pool (train + validation) is cut into K folds stratified by
group x label; each candidate is fitted K times, each time without one fold, and predicts that
fold. Selection and gating use these out-of-fold predictions over the whole pool, so they rest
on every pool row instead of a fifth of it; the model that is promoted is the candidate refitted
on the whole pool. It costs K + 1 fits per candidate. The test split still gives the final
verdict. (The out-of-fold intervals treat the K fold models as one model: the usual
cross-validation approximation, slightly narrower than a model-level interval would be.)

*auto* (the default) chooses crossfit when the validation split would give some group that
counts on the whole pool fewer rows than ``policy.crossfit.auto_below_group_rows``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from pydantic import BaseModel
from sklearn.model_selection import StratifiedKFold

from fairloop.data.groups import GroupFloors, count_groups
from fairloop.data.rows import Split
from fairloop.data.splits import Splits

EvaluationMode = Literal["holdout", "crossfit"]


class ModeDecision(BaseModel):
    """Which evaluation mode a run uses, and why (shown in reports, lineage and the model card)."""

    mode: EvaluationMode
    folds: int | None = None
    reason: str


def strata(split: Split, sensitive: str) -> np.ndarray:
    return (split.groups[sensitive].astype(str) + "|" + split.y.astype(str)).to_numpy()


def fold_positions(split: Split, sensitive: str, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out row positions of each of ``folds`` folds, stratified by group x label.

    A stratum with fewer rows than folds is spread over as many folds as it has rows
    (scikit-learn warns about it; that is expected on small groups)."""
    folds = min(folds, len(split))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [held for _, held in splitter.split(np.zeros(len(split)), strata(split, sensitive))]


def choose_mode(requested: str, splits: Splits, sensitive: str, floors: GroupFloors, folds: int,
                auto_below_group_rows: int) -> ModeDecision:
    """The evaluation mode for ``requested`` ('holdout', 'crossfit' or 'auto') on these splits."""
    if requested == "holdout":
        return ModeDecision(mode="holdout", reason="the policy asks for a holdout validation split")
    if requested == "crossfit":
        return ModeDecision(mode="crossfit", folds=folds, reason=f"the policy asks for {folds}-fold cross-fitting")
    pool = Split.concat([splits.train, splits.validation])
    counted = count_groups(pool.groups[sensitive].astype(str).to_numpy(), pool.y.to_numpy(), floors)
    validation_rows = splits.validation.groups[sensitive].astype(str).value_counts()
    sizes = {name: int(validation_rows.get(name, 0)) for name in counted.names_for("selection_rate")}
    if not sizes:
        return ModeDecision(mode="crossfit", folds=folds,
                            reason="no group reaches the row floor even on the whole training pool")
    smallest = min(sizes, key=sizes.get)
    if sizes[smallest] < auto_below_group_rows:
        return ModeDecision(
            mode="crossfit", folds=folds,
            reason=(f"auto: the validation split would hold {sizes[smallest]} rows of group '{smallest}' "
                    f"(< {auto_below_group_rows}), too few to decide gates; {folds}-fold cross-fitting uses all "
                    f"{len(pool)} pool rows"),
        )
    return ModeDecision(
        mode="holdout",
        reason=f"auto: every counted group has at least {auto_below_group_rows} validation rows (smallest: "
               f"'{smallest}', {sizes[smallest]})",
    )


def fit_rows(splits: Splits, mode: ModeDecision) -> Split:
    """The rows the model that may be promoted is fitted on."""
    return splits.train if mode.mode == "holdout" else Split.concat([splits.train, splits.validation])
