"""The deployable model: preprocessing plus a fitted (possibly fairness-constrained) estimator.

Fairlearn's mitigators differ at prediction time: ExponentiatedGradient is randomised (it needs
a ``random_state`` for reproducible predictions), ThresholdOptimizer needs the sensitive feature,
AdversarialFairnessClassifier (PyTorch) has no ``predict_proba``.
``FairModel`` hides that behind one ``predict`` / ``predict_proba`` on a DataFrame of raw
features, so the registry, the gate and the monitor treat every candidate the same way.

torch (the optional extra fairloop[adversarial]) is imported only for an adversarial model.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer

from fairloop.errors import BadInputError, IntegrityError
from fairloop.remedy.fairlearn_adapter import (
    adversarial_scores,
    randomized_positive_rate,
)


@dataclass(frozen=True)
class Predictions:
    """What a model says about some rows.

    ``decisions`` are the deployed 0/1 decisions; ``probabilities`` the probability that the
    decision is positive (for randomised mitigators, the probability their draw gives 1);
    ``scores`` the underlying scorer's positive-class probability (the learner's own for
    reductions, the estimator's for ThresholdOptimizer). For a deterministic unconstrained
    learner the last two are the same. AUC is reported for both: the decision AUC of a
    randomised classifier is far below its scorer's, which says nothing about the scorer.
    """

    decisions: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray

    def take(self, positions: np.ndarray) -> Predictions:
        return Predictions(self.decisions[positions], self.probabilities[positions], self.scores[positions])

    @staticmethod
    def concatenate(parts: list[tuple[np.ndarray, Predictions]], size: int) -> Predictions:
        """Reassemble predictions made on disjoint row positions (e.g. cross-fitting folds)."""
        decisions, probabilities, scores = np.zeros(size, dtype=int), np.zeros(size), np.zeros(size)
        for positions, part in parts:
            decisions[positions], probabilities[positions], scores[positions] = part.decisions, part.probabilities, part.scores
        return Predictions(decisions, probabilities, scores)


@contextmanager
def one_torch_thread(applies: bool = True) -> Iterator[None]:
    """PyTorch on one thread while fitting or scoring adversarial debiasing's small networks:
    the same results however many cores, no oversubscription in a sweep's worker processes
    (HistGradientBoosting gets ``threadpool_limits(1)`` there; torch keeps its own pool),
    and tiny batches gain nothing from more threads."""
    if not applies:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ScorePassthrough(ClassifierMixin, BaseEstimator):
    """A "classifier" whose input is already a positive-class score (one column).

    ThresholdOptimizer is fitted with ``prefit=True`` on this and the *held-out* scores of the
    real estimator (cross-fitted), so its thresholds are never chosen on scores of rows the
    estimator was trained on; at prediction time the fitted estimator's scores go through it.
    Alone it is the decision "score >= ``threshold``" (a frozen model's own, or a guardrail's).
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        score = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - score, score])

    def predict(self, X):
        return (np.asarray(X, dtype=float)[:, 0] >= self.threshold).astype(int)


@dataclass
class FairModel:
    """A fitted candidate: what it needs as input and how to ask it for predictions.

    With a ``scorer`` (post-processing), ``estimator`` reads the scorer's positive-class score
    as its single input column; otherwise it reads the preprocessed features.
    """

    features: list[str]
    sensitive: str
    preprocessor: ColumnTransformer
    estimator: object
    method: str
    needs_sensitive_at_predict: bool
    random_state: int
    scorer: object | None = None

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in X.columns]
        if missing:
            raise BadInputError(f"input lacks the model's feature column(s) {missing}")
        return self.preprocessor.transform(X[self.features])

    def _sensitive_kwargs(self, groups: pd.DataFrame | pd.Series | None) -> dict:
        if not self.needs_sensitive_at_predict:
            return {}
        if groups is None:
            raise BadInputError(
                f"this model ({self.method}) needs the sensitive feature '{self.sensitive}' at prediction time"
            )
        values = groups[self.sensitive] if isinstance(groups, pd.DataFrame) else groups
        return {"sensitive_features": values.to_numpy()}

    def _scores(self, matrix: np.ndarray) -> np.ndarray:
        """The underlying scorer's positive-class probability."""
        if self.scorer is not None:
            return np.asarray(self.scorer.predict_proba(matrix))[:, 1]
        if self.method == "adversarial":
            with one_torch_thread():
                return adversarial_scores(self.estimator, matrix)
        if self.method == "exponentiated_gradient":
            # the ensemble's weighted mean score (its public fitted predictors and weights)
            weights = np.asarray(self.estimator.weights_, dtype=float)
            return sum(w * np.asarray(p.predict_proba(matrix))[:, 1] for w, p in zip(weights, self.estimator.predictors_) if w > 0)
        return np.asarray(self.estimator.predict_proba(matrix))[:, 1]

    def _estimator_input(self, matrix: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return scores[:, None] if self.scorer is not None else matrix

    def predictions(self, X: pd.DataFrame, groups: pd.DataFrame | pd.Series | None = None) -> Predictions:
        """Decisions, the probability that each decision is positive, and the scorer's scores.

        For the randomised mitigators the decision probability is the probability that the
        randomised classifier predicts 1 (:func:`randomized_positive_rate`), the quantity their
        decisions are drawn from.
        """
        matrix = self._matrix(X)
        scores = self._scores(matrix)
        estimator_input = self._estimator_input(matrix, scores)
        sensitive = self._sensitive_kwargs(groups)
        if self.method in ("exponentiated_gradient", "threshold_optimizer"):
            decisions = self.estimator.predict(estimator_input, random_state=self.random_state, **sensitive)
            probabilities = randomized_positive_rate(self.estimator, estimator_input, **sensitive)
        else:
            with one_torch_thread(self.method == "adversarial"):
                decisions = self.estimator.predict(estimator_input)
            probabilities = scores
        return Predictions(np.asarray(decisions).astype(int), probabilities, scores)

    def predict(self, X: pd.DataFrame, groups: pd.DataFrame | pd.Series | None = None) -> np.ndarray:
        return self.predictions(X, groups).decisions

    def predict_proba(self, X: pd.DataFrame, groups: pd.DataFrame | pd.Series | None = None) -> np.ndarray:
        """Probability that the decision is positive (see :meth:`predictions`)."""
        return self.predictions(X, groups).probabilities


def load_model(path, *, expected_sha256: str | None = None, trust: bool = False) -> FairModel:
    """Load a model file written by fairloop (``registry/<dataset>/model.joblib``); see
    :func:`load_pickle` for when its bytes are unpickled."""
    model = load_pickle(path, expected_sha256=expected_sha256, trust=trust)
    if not isinstance(model, FairModel):
        raise BadInputError(f"holds a {type(model).__name__}, not a fairloop model", source=str(path))
    return model


def load_pickle(path, *, expected_sha256: str | None = None, trust: bool = False) -> object:
    """The object of a joblib/pickle file.

    joblib files are pickles: unpickling runs whatever code the file names. So a file is
    unpickled only if its bytes match ``expected_sha256`` (what the registry recorded at
    promotion) or the caller explicitly ``trust``s it; the bytes checked are the bytes loaded.
    """

    path = Path(path)
    if not path.is_file():
        raise BadInputError("model file not found", source=str(path))
    if expected_sha256 is None and not trust:
        raise BadInputError(
            "not a model of the registry, and model files are pickles: loading one runs any code it contains. "
            "Pass --trust only if you trust where the file came from",
            source=str(path),
        )
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise IntegrityError(
            f"{path} has sha256 {actual}, but the registry recorded {expected_sha256}: "
            "refusing to load a model changed since promotion (run `fairloop verify`)"
        )
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise BadInputError(f"not a readable model file ({type(exc).__name__}: {exc})", source=str(path)) from None
