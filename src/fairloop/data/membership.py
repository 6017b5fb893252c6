"""Group membership inferred for rows whose sensitive value is missing, for auditing only.

When some rows have no sensitive value (spec ``sensitive.missing: group`` keeps them as the
group ``'missing'``), a fairness figure over the known rows alone is biased as soon as the
value is missing more often in one group, or more often among rows the model treats
differently. Here a model of group membership, fitted on the rows whose value is known,
gives every missing row a probability per group, and the group rates are estimated with
those probabilities as weights (a missing row counts ``p_k`` towards group ``k``). The
inference model is **never a feature of a production model**: it lives only inside
evaluation and the audit, and is rebuilt from the evaluated rows each time.

What it reads: every feature of the evaluated rows (numeric ones median-imputed and
standardised, categorical ones one-hot) **and the label**. With the label as an input, the
weighted estimate of every rate the gates use (selection rate, TPR, FPR) is consistent
when the probabilities are right: a model's decision depends on the features only, so
``E[P(g | X, y) * decision * y] = E[1{g} * decision * y]``. A feature that is empty on every
missing row (the sensitive column itself, with ``use_as_feature``) tells nothing about
those rows and is left out.

How well it separates the groups is measured out of fold (``folds``-fold cross-fitting over
the known rows, stratified by group): ROC AUC (one-vs-rest, weighted by group size, for
more than two groups), Brier score and expected calibration error of the top group. Below
``min_auc`` it **refuses**: weights from a model that cannot tell the groups apart are
close to the group shares for every row, which pulls every group's rate towards the overall
rate and makes any gap look smaller than it is. The gates then judge the known rows only and
say how many rows they leave out.

Rows can be missing more often in one group (not at random). With ``adjust_prior`` the
group shares among the missing rows are re-estimated by EM (Saerens, Latinne & Decaestecker,
2002: "Adjusting the outputs of a classifier to new a priori probabilities") and the
probabilities of the missing rows re-weighted to those shares. This assumes what varies
between known and missing rows is the group mix only (features and label behave within a
group alike whether or not the value was recorded); it holds when values are missing
completely at random, where the EM leaves the shares where they are.

Interval uncertainty: ``fairloop.gates.intervals.bootstrap_intervals`` refits this model on every
row resample (the resample's known rows, as bootstrap counts), so the intervals hold the
uncertainty of the inference as well as of the rows.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from fairloop.data.datasets import MISSING_GROUP
from fairloop.data.spec import SpecModel

ECE_BINS = 10
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-6


class MembershipSettings(SpecModel):
    """Policy ``missing_sensitive``: what the gates do with rows that have no sensitive value."""

    infer: bool = Field(
        True, description="estimate group metrics over all rows with inferred memberships; false: gate on the known rows only",
    )
    min_auc: float = Field(
        0.7, gt=0.5, le=1, description="refuse to infer when the inference model's held-out AUC is below this",
    )
    folds: int = Field(5, ge=2, le=20, description="cross-fitting folds for the inference model's held-out AUC and calibration")
    adjust_prior: bool = Field(
        True, description="re-estimate the group shares among missing rows by EM (values missing more often in one group)",
    )


class MembershipReport(BaseModel):
    """What was done about the rows with no sensitive value, and how well it could be done."""

    sensitive: str
    rows: int
    missing_rows: int
    status: Literal["inferred", "refused", "excluded"]
    reason: str
    method: str
    auc: float | None = None  # held-out (cross-fitted) ROC AUC of the inference model
    brier: float | None = None  # held-out Brier score (binary: of the second group; else the multi-class sum)
    ece: float | None = None  # held-out expected calibration error of the top group (10 bins)
    min_auc: float | None = None
    features: list[str] = []
    known_shares: dict[str, float] = {}
    missing_shares: dict[str, float] = {}  # group shares among the missing rows (mean inferred probability)

    @property
    def inferred(self) -> bool:
        return self.status == "inferred"

    def statement(self) -> str:
        """One line for gate reasons, reports and the model card."""
        if self.inferred:
            return (f"{self.missing_rows:,} of {self.rows:,} rows with no '{self.sensitive}' value counted with inferred "
                    f"memberships (held-out AUC {self.auc:.3f})")
        return (f"{self.missing_rows:,} of {self.rows:,} rows with no '{self.sensitive}' value are excluded: "
                f"judged on the {self.rows - self.missing_rows:,} known rows only ({self.reason})")


METHOD = (
    "logistic regression of the group on every feature and the label (one-hot categoricals, standardised numerics), "
    "fitted on the rows whose value is known; {folds}-fold cross-fitted AUC/Brier/ECE; missing rows weighted by their "
    "group probabilities{prior}; refitted on every bootstrap resample"
)


@dataclass(frozen=True)
class InferredMembership:
    """Group probabilities for the missing rows of one evaluated split, and the means to refit them."""

    report: MembershipReport
    names: np.ndarray  # group names, sorted (the columns of the probabilities)
    missing: np.ndarray  # boolean over rows: no sensitive value
    codes: np.ndarray  # group code of every row (in ``names``), -1 on missing rows
    probabilities: np.ndarray  # (missing rows, groups)
    design: np.ndarray  # every row's inference inputs
    fitted: object  # the inference model fitted on every known row
    adjust_prior: bool

    def expanded(self, groups: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Each missing row repeated once per group: (group names, weights, ``arrays`` repeated).

        Known rows keep their group and weight 1; a missing row's copy in group ``k`` weighs
        its probability of ``k``. Weighted rates over the expanded rows are the estimates."""
        k = len(self.names)
        known = ~self.missing
        names = np.concatenate([np.asarray(groups).astype(str)[known], np.tile(self.names, int(self.missing.sum()))])
        weights = np.concatenate([np.ones(int(known.sum())), self.probabilities.ravel()])
        repeated = [np.concatenate([np.asarray(a)[known], np.repeat(np.asarray(a)[self.missing], k)]) for a in arrays]
        return names, weights, repeated

    def resampled(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of every drawn missing row, refitted per resample: (resamples, missing rows, groups).

        ``samples`` are stratified index vectors (group strata, so column ``j`` draws a
        missing row exactly when row ``j`` is missing). Resample ``b`` refits the inference model
        on its known rows (bootstrap counts as sample weights, starting from the full fit) and,
        with ``adjust_prior``, re-estimates the missing rows' group shares on its missing rows."""
        n = len(self.missing)
        known_rows = np.flatnonzero(~self.missing)
        missing_rows = np.flatnonzero(self.missing)
        local = np.full(n, -1)
        local[missing_rows] = np.arange(len(missing_rows))
        columns = np.flatnonzero(self.missing)  # columns of ``samples`` that draw missing rows
        result = np.empty((samples.shape[0], len(columns), len(self.names)))
        with threadpool_limits(1):  # many small fits: threads cost more than they save (measured 3x)
            for b, draw in enumerate(samples):
                result[b] = self._refit(draw, known_rows, missing_rows, local, columns)
        return result

    def _refit(self, draw: np.ndarray, known_rows: np.ndarray, missing_rows: np.ndarray, local: np.ndarray,
               columns: np.ndarray) -> np.ndarray:
        """One resample's probabilities for the missing rows it draws (in ``columns`` order)."""
        counts = np.bincount(draw, minlength=len(self.missing))
        weights = counts[known_rows].astype(float)
        used = weights > 0
        model = copy.deepcopy(self.fitted)
        model.set_params(warm_start=True)  # starts from the full fit: a few iterations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample may leave a rare category out entirely
            model.fit(self.design[known_rows[used]], self.codes[known_rows[used]], sample_weight=weights[used])
        probabilities = _aligned(model, self.design[missing_rows], len(self.names))
        if self.adjust_prior:
            trained = np.bincount(self.codes[known_rows], weights=weights, minlength=len(self.names))
            probabilities = adjust_to_new_prior(probabilities, trained / trained.sum(), counts[missing_rows])
        return probabilities[local[draw[columns]]]


def _aligned(model, design: np.ndarray, groups: int) -> np.ndarray:
    """predict_proba with a column for every group (a group absent from a resample's fit gets 0)."""
    probabilities = np.zeros((len(design), groups))
    probabilities[:, model.classes_] = model.predict_proba(design)
    return probabilities


def adjust_to_new_prior(probabilities: np.ndarray, trained_prior: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Posteriors re-weighted to the group shares that fit the rows they score (EM of Saerens et al., 2002).

    Each step sets the shares to the (weighted) mean adjusted posterior and re-weights every
    posterior by new share / trained share; it stops when the shares move less than 1e-6."""
    weights = np.ones(len(probabilities)) if weights is None else np.asarray(weights, dtype=float)
    if len(probabilities) == 0 or weights.sum() == 0:
        return probabilities
    trained = np.clip(trained_prior, 1e-12, None)
    prior = trained.copy()
    adjusted = probabilities
    for _ in range(EM_ITERATIONS):
        scaled = probabilities * (prior / trained)
        adjusted = scaled / np.clip(scaled.sum(axis=1, keepdims=True), 1e-300, None)
        new = np.average(adjusted, axis=0, weights=weights)
        if np.abs(new - prior).max() < EM_TOLERANCE:
            break
        prior = new
    return adjusted


def _design(X: pd.DataFrame, y: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Inference inputs of every row: features (those with a value on some missing row) and the label."""

    usable = [c for c in X.columns if X.loc[missing, c].notna().any()] if missing.any() else list(X.columns)
    numeric = [c for c in usable if X[c].dtype.kind in "fiub"]
    categorical = [c for c in usable if c not in numeric]
    frame = X[usable].copy()
    for column in categorical:  # one type per column for the encoder; an empty value is a category of its own
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "<empty>").astype(str)
    transformer = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, sparse_output=False),
         categorical),
    ])
    encoded = transformer.fit_transform(frame)  # unsupervised: no group information enters the encoding
    return np.column_stack([encoded, np.asarray(y, dtype=float) * 2 - 1]), usable


def _model():

    return LogisticRegression(C=1.0, max_iter=2000)


def _held_out_quality(target: np.ndarray, probabilities: np.ndarray) -> tuple[float, float, float]:
    """ROC AUC, Brier score and top-group expected calibration error of out-of-fold probabilities."""

    groups = probabilities.shape[1]
    if groups == 2:
        auc = float(roc_auc_score(target, probabilities[:, 1]))
        brier = float(brier_score_loss(target, probabilities[:, 1]))
    else:
        auc = float(roc_auc_score(target, probabilities, multi_class="ovr", average="weighted", labels=np.arange(groups)))
        brier = float(((probabilities - np.eye(groups)[target]) ** 2).sum(axis=1).mean())
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    correct = (predicted == target).astype(float)
    ece = 0.0
    for b in np.unique(bins):
        inside = bins == b
        ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return auc, brier, float(ece)


def infer_membership(
    X: pd.DataFrame, groups: pd.Series, y: pd.Series | np.ndarray, settings: MembershipSettings, seed: int,
) -> tuple[MembershipReport, InferredMembership | None]:
    """Fit the inference model on the rows of ``groups`` that are not ``'missing'`` and score it.

    Returns the report and, when the policy lets it infer and the model separates the groups
    (held-out AUC >= ``settings.min_auc``), the inferred memberships; otherwise None, with the
    reason in the report."""

    sensitive = str(groups.name)
    names_all = groups.astype(str).to_numpy()
    missing = names_all == MISSING_GROUP
    y = np.asarray(y).astype(int)
    names, known_codes = np.unique(names_all[~missing], return_inverse=True)
    codes = np.full(len(names_all), -1)
    codes[~missing] = known_codes
    counts = np.bincount(known_codes, minlength=len(names))
    base = dict(sensitive=sensitive, rows=len(names_all), missing_rows=int(missing.sum()), min_auc=settings.min_auc,
                known_shares={str(g): float(c / max(1, counts.sum())) for g, c in zip(names, counts, strict=True)},
                method=METHOD.format(folds=settings.folds, prior=(
                    ", group shares among them re-estimated by EM (Saerens et al. 2002)" if settings.adjust_prior else "")))
    if not settings.infer:
        return MembershipReport(**base, status="excluded", reason="policy missing_sensitive.infer: false"), None
    smallest = int(counts.min()) if len(counts) else 0
    if len(names) < 2 or smallest < 2:
        why = (f"the known rows hold {len(names)} group(s)" if len(names) < 2
               else f"group '{names[counts.argmin()]}' has {smallest} known row(s)")
        return MembershipReport(**base, status="refused", reason=f"cannot fit an inference model: {why}"), None
    design, features = _design(X, y, missing)
    known = np.flatnonzero(~missing)
    folds = StratifiedKFold(n_splits=min(settings.folds, smallest), shuffle=True, random_state=seed)
    out_of_fold = np.zeros((len(known), len(names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes on tiny folds; the held-out figures judge the result
        for fit_rows, held in folds.split(design[known], known_codes):
            model = _model().fit(design[known][fit_rows], known_codes[fit_rows])
            out_of_fold[held] = _aligned(model, design[known][held], len(names))
        fitted = _model().fit(design[known], known_codes)
    auc, brier, ece = _held_out_quality(known_codes, out_of_fold)
    base |= dict(auc=round(auc, 4), brier=round(brier, 4), ece=round(ece, 4), features=features)
    if auc < settings.min_auc:
        return MembershipReport(**base, status="refused", reason=(
            f"inference refused: the proxies do not separate the groups (held-out AUC {auc:.3f} < missing_sensitive.min_auc "
            f"{settings.min_auc}); weights near the group shares would pull every group's rate towards the overall rate")), None
    probabilities = _aligned(fitted, design[missing], len(names))
    if settings.adjust_prior:
        probabilities = adjust_to_new_prior(probabilities, counts / counts.sum())
    shares = probabilities.mean(axis=0) if len(probabilities) else np.zeros(len(names))
    report = MembershipReport(
        **base, status="inferred", missing_shares={str(g): round(float(s), 4) for g, s in zip(names, shares, strict=True)},
        reason=f"held-out AUC {auc:.3f} >= missing_sensitive.min_auc {settings.min_auc}",
    )
    return report, InferredMembership(report=report, names=names.astype(str), missing=missing, codes=codes,
                                      probabilities=probabilities, design=design, fitted=fitted,
                                      adjust_prior=settings.adjust_prior)
