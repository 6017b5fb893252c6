"""A fitted model you cannot retrain (``fairloop remediate --model``): load it, score with it, and
say which candidates a frozen model can take (:mod:`fairloop.remedy.post_processing` fits them).

The base model comes as

- a skops file: read without pickle; types outside skops' own trusted set must be on
  :data:`TRUSTED_SKOPS_TYPES` (or the caller passes ``trust``);
- a joblib/pickle file: unpickling runs code, so only with ``trust`` or the sha256 the registry
  recorded (:func:`fairloop.remedy.model.load_pickle`, the one place that unpickles);
- an import path ``module:function``: a callable mapping a DataFrame of features to
  positive-class scores (e.g. the client of a scoring endpoint). The registry records the path,
  not the code.

Only post-processing applies (:data:`fairloop.remedy.constraints.POST_PROCESSING`): ThresholdOptimizer on
the base model's scores, prefit, its thresholds fitted on the run's fit rows (never on the rows
that evaluate it), and the counterfactual guardrail (:mod:`fairloop.remedy.guardrail`). Templates that
retrain are refused. The baseline of such a run is the base model itself, deciding at 0.5.

skops is imported only to read a skops model file.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from fairloop.errors import BadInputError, IntegrityError
from fairloop.remedy.constraints import (
    POST_PROCESSING,
    ConstraintTemplate,
)
from fairloop.remedy.model import load_pickle
from fairloop.remedy.recipes import Recipe

# Types a skops file may hold beyond skops' default trusted set (which covers most of
# scikit-learn): the fitted trees of HistGradientBoosting. Anything else needs --trust.
TRUSTED_SKOPS_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
FROZEN_LEARNER = "frozen base model (not retrained)"


class BaseModelSource(BaseModel):
    """The fitted model a run post-processed without retraining it (``remediate --model``): part of
    the run's lineage (:class:`fairloop.registry.lineage.Lineage`)."""

    model_config = ConfigDict(extra="forbid")  # as every lineage record: a misspelt field is an error

    kind: Literal["skops", "pickle", "callable"]
    location: str  # the file as given, or the import path module:function
    sha256: str | None  # of the file's bytes; None for an import path (its code is not in the registry)
    retrained: Literal[False] = False  # stated in every record: the base model's parameters are untouched


class FrozenScorer:
    """The base model behind one call: positive-class scores of a DataFrame of raw features.

    Pickled with the registry's model file: a model object goes in whole; an import path goes
    in as the path and is imported again where the file is loaded.
    """

    def __init__(self, source: BaseModelSource, features: list[str], model=None, function=None):
        self.source = source
        self.features = features
        self.model = model
        self._function = function

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_function": None}

    @property
    def function(self):
        if self._function is None:
            self._function = import_callable(self.source.location)
        return self._function

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in X.columns]
        if missing:
            raise BadInputError(f"input lacks the base model's feature column(s) {missing}", source=self.source.location)
        frame = X[self.features]
        try:
            raw = self.function(frame) if self.source.kind == "callable" else self.model.predict_proba(frame)
        except Exception as exc:  # noqa: BLE001 - whatever the foreign model raises, the cause is named
            raise BadInputError(f"the base model failed to score {len(frame)} rows ({type(exc).__name__}: {exc})",
                                source=self.source.location) from None
        return checked_scores(raw, len(frame), self.source.location)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        scores = self.scores(X)
        return np.column_stack([1 - scores, scores])


def checked_scores(raw, rows: int, source: str) -> np.ndarray:
    """``raw`` as one positive-class score per row (predict_proba's two columns accepted), or a
    bad-input error saying what the base model returned instead."""
    try:
        values = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise BadInputError(f"the base model returned {type(raw).__name__}, not numeric scores", source=source) from None
    if values.ndim == 2 and values.shape[1] in (1, 2):
        values = values[:, -1]
    if values.shape != (rows,):
        raise BadInputError(f"the base model returned shape {values.shape} for {rows} rows: expected one "
                            "positive-class score per row (or predict_proba's two columns)", source=source)
    if not np.isfinite(values).all() or (rows and (values.min() < 0 or values.max() > 1)):
        low, high = np.nanmin(values), np.nanmax(values)
        raise BadInputError(f"the base model's output is not probabilities in [0, 1] (range {low:g} .. {high:g}, "
                            f"{int((~np.isfinite(values)).sum())} non-finite)", source=source)
    return values


def import_callable(location: str):
    module_name, _, attribute = location.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInputError(f"cannot import module '{module_name}' ({exc})", source=location, field="--model") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise BadInputError(f"module '{module_name}' has no attribute '{attribute}'", source=location, field="--model")
    if not callable(function):
        raise BadInputError(f"'{location}' is a {type(function).__name__}, not a callable", source=location, field="--model")
    return function


def _load_skops(path: Path, data: bytes, trusted_file: bool):
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise BadInputError(f"not a readable skops file ({type(exc).__name__}: {exc})", source=str(path)) from None
    unknown = [t for t in untrusted if t not in TRUSTED_SKOPS_TYPES]
    if unknown and not trusted_file:
        raise BadInputError(f"the skops file holds types outside skops' and fairloop's trusted lists: {unknown}. "
                            "Pass --trust only if you trust where the file came from", source=str(path))
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"not a readable skops file ({type(exc).__name__}: {exc})", source=str(path)) from None


def load_base_model(location: str, features: list[str], *, trust: bool = False,
                    expected_sha256: str | None = None) -> FrozenScorer:
    """The base model at ``location`` (a model file or ``module:function``), scoring ``features``
    (the dataset's; a model that names its input columns reads those). ``expected_sha256`` (the
    registry's record) stands for ``trust`` and must match the file's bytes."""
    path = Path(location)
    if not path.is_file():
        if IMPORT_PATH.fullmatch(location):
            source = BaseModelSource(kind="callable", location=location, sha256=None)
            return FrozenScorer(source, features, function=import_callable(location))
        if path.exists():
            raise BadInputError("is a directory, not a model file", source=location, field="--model")
        raise BadInputError("model file not found (nor an import path module:function)", source=location, field="--model")
    suffix = path.suffix.lower()
    if suffix != ".skops" and suffix not in PICKLE_SUFFIXES:
        raise BadInputError(f"unknown model file format '{suffix}': give a .skops file, a {'/'.join(PICKLE_SUFFIXES)} "
                            "file with --trust, or an import path module:function", source=location, field="--model")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise IntegrityError(f"{location} has sha256 {sha256}, but the registry recorded {expected_sha256}")
    if suffix == ".skops":
        model, kind = _load_skops(path, data, trust or expected_sha256 is not None), "skops"
    else:
        model, kind = load_pickle(path, expected_sha256=expected_sha256, trust=trust), "pickle"
    if not callable(getattr(model, "predict_proba", None)):
        raise BadInputError(f"holds a {type(model).__name__}, which has no predict_proba: a frozen model must give "
                            "positive-class probabilities", source=location, field="--model")
    named = getattr(model, "feature_names_in_", None)
    if named is not None:
        missing = [str(c) for c in named if c not in features]
        if missing:
            raise BadInputError(f"the model reads column(s) {missing} that the dataset spec does not list as features",
                                source=location, field="--model")
        features = [str(c) for c in named]
    return FrozenScorer(BaseModelSource(kind=kind, location=location, sha256=sha256), features, model=model)


@dataclass(frozen=True)
class FrozenModel:
    """A run's base model and the columns its guardrail varies: the sensitive column when the
    model reads it, and the audit's flagged proxies of the sensitive feature that it reads."""

    scorer: FrozenScorer
    varied: tuple[str, ...]

    @staticmethod
    def of(scorer: FrozenScorer, sensitive_column: str, proxies: list[str]) -> FrozenModel:
        return FrozenModel(scorer, tuple(c for c in [sensitive_column, *proxies] if c in scorer.features))


def refusal(template: ConstraintTemplate, recipe: Recipe) -> str | None:
    """Why ``template`` with ``recipe`` cannot remediate a frozen model (None: it can)."""
    if template.method not in (*POST_PROCESSING, "none"):
        return (f"template '{template.name}' ({template.method}) retrains the model, and a model given with --model is "
                f"frozen: only post-processing applies ({', '.join(POST_PROCESSING)})")
    if recipe.params.kind != "none":
        return (f"recipe '{recipe.name}' changes the training rows, and a model given with --model is not retrained: "
                "use recipes/none.yaml")
    return None
