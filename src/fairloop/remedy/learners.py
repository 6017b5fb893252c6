"""Base learners of constraint templates and the encoder each one is fed.

A template's ``learner`` is a built-in name (``hist_gradient_boosting``, ``logistic_regression``)
or the import path of any scikit-learn-compatible classifier: a class (``lightgbm.LGBMClassifier``,
``xgboost.XGBClassifier``, ``sklearn.svm.SVC``) or a factory that returns one (e.g. a function
building a ``sklearn.pipeline.Pipeline``), called with the template's ``learner_params``.

Categorical columns stay fairloop's job: learners that split on categorical codes natively get
ordinal codes and are told which columns hold them (:data:`NATIVE_CATEGORICAL`); every other
learner, and anything that needs numeric input, gets one-hot categoricals and imputed, scaled
numerics. This module is the one place that choice is made.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import has_fit_parameter

from fairloop.remedy.binning import QuantileBins

BUILT_IN = {
    "hist_gradient_boosting": "fairloop.remedy.learners.HistGradientBoosting",
    "logistic_regression": "sklearn.linear_model.LogisticRegression",
}
# Histogram gradient boosting stops boosting once a seeded, stratified tenth of its fit rows stops
# improving, at every size (:class:`HistGradientBoosting`): scikit-learn's 'auto' does so only above
# 10,000 rows, and below that its 100 rounds memorise a few hundred rows. Measured on German's
# 5-fold crossfit (700 pool rows): out-of-fold accuracy 0.741 -> 0.759 unconstrained, 0.739 -> 0.750
# for ExponentiatedGradient x DP (DPD 0.031 -> 0.024), whose ~100 oracle refits per fit became 10x
# cheaper (150 -> 16 CPU s).
BUILT_IN_DEFAULTS = {"logistic_regression": {"max_iter": 1000}, "hist_gradient_boosting": {"early_stopping": True}}

# Classes (by the module and name they are defined under, so subclasses match and nothing is
# imported to check) that split on categorical codes natively, and how to tell them which
# columns hold codes: the constructor keyword and whether it takes a boolean mask or indices.
# LightGBM's own keyword ``categorical_feature`` is a fit argument that reductions cannot pass;
# its alias ``categorical_column`` is a booster parameter the constructor forwards.
NATIVE_CATEGORICAL = {
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier":
        ("categorical_features", "mask"),
    "lightgbm.sklearn.LGBMClassifier": ("categorical_column", "indices"),
}

Encoding = Literal["native", "one_hot"]
IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class HistGradientBoosting(HistGradientBoostingClassifier):
    """scikit-learn's HistGradientBoostingClassifier, except that early stopping is skipped for a fit
    whose rows cannot spare the stratified hold-out it needs (a label with a single row, or a tenth
    too small to hold each label), where scikit-learn would raise: a reduction relabels the rows
    for every oracle fit, and a group x label cell of one row can become a label of one row."""

    def fit(self, X, y, sample_weight=None):
        requested = self.early_stopping
        if requested is True and not can_hold_out(np.asarray(y), self.validation_fraction):
            self.early_stopping = False  # for this fit only: the parameters stay as set
        try:
            return super().fit(X, y, sample_weight=sample_weight)
        finally:
            self.early_stopping = requested


def can_hold_out(y: np.ndarray, fraction: float | int | None) -> bool:
    """Whether a stratified hold-out of ``fraction`` (a share or a row count; None: no hold-out) of
    the rows with labels ``y`` keeps every label on both sides, as scikit-learn requires."""
    if fraction is None:
        return True
    _, counts = np.unique(y, return_counts=True)
    held = fraction if isinstance(fraction, int) else math.ceil(fraction * len(y))
    return counts.min() >= 2 and min(held, len(y) - held) >= len(counts)


@lru_cache(maxsize=None)
def resolve(learner: str) -> Callable[..., Any]:
    """The class or factory ``learner`` names; ValueError saying why it cannot be used."""
    path = BUILT_IN.get(learner, learner)
    if not IMPORT_PATH.fullmatch(path):
        raise ValueError(f"'{learner}' is neither a built-in learner ({', '.join(BUILT_IN)}) nor an import path "
                         "such as 'lightgbm.LGBMClassifier'")
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import '{module_name}' for learner '{learner}' ({exc}); is the package (or "
                         "fairloop's optional extra for it, e.g. fairloop[lightgbm]) installed?") from None
    target = getattr(module, attribute, None)
    if target is None:
        raise ValueError(f"module '{module_name}' has no '{attribute}' (learner '{learner}')")
    if not callable(target):
        raise ValueError(f"'{learner}' is a {type(target).__name__}, not a classifier class or a factory of one")
    # A factory is called at load with the template's parameters: never a standard-library or
    # builtin function (os.remove, subprocess.run...), whatever the template says.
    home = (getattr(target, "__module__", None) or "builtins").partition(".")[0]
    if not inspect.isclass(target) and (home in sys.stdlib_module_names or inspect.isbuiltin(target)):
        raise ValueError(f"'{learner}' is a function of Python's standard library, not a classifier factory")
    return target


def _signature(target: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have none
        return None


def accepts(target: Callable[..., Any], name: str) -> bool:
    """Whether ``target`` (a class or a factory) takes keyword ``name``."""
    signature = _signature(target)
    if signature is None:
        return False
    kinds = {p.kind for p in signature.parameters.values()}
    return name in signature.parameters or inspect.Parameter.VAR_KEYWORD in kinds


def check_params(learner: str, params: dict[str, Any]) -> None:
    """ValueError naming the parameters ``learner`` does not take (classes that forward any
    keyword to their library, like LightGBM's, take all)."""
    target = resolve(learner)
    signature = _signature(target)
    if signature is None or inspect.Parameter.VAR_KEYWORD in {p.kind for p in signature.parameters.values()}:
        return
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        known = ", ".join(name for name in signature.parameters if name != "self")
        raise ValueError(f"learner '{learner}' takes no parameter(s) {unknown}; it takes: {known}")


def instantiate(learner: str, params: dict[str, Any]) -> Any:
    """An unfitted estimator from ``learner`` and ``params`` (checked to be a probabilistic classifier)."""
    check_params(learner, params)
    try:
        estimator = resolve(learner)(**{**BUILT_IN_DEFAULTS.get(learner, {}), **params})
    except Exception as exc:  # noqa: BLE001 - whatever the library raises, the template is the cause
        raise ValueError(f"learner '{learner}' cannot be built with {params}: {type(exc).__name__}: {exc}") from None
    missing = [method for method in ("fit", "predict_proba") if not hasattr(estimator, method)]
    if missing:
        raise ValueError(f"learner '{learner}' builds a {type(estimator).__name__}, which has no {' or '.join(missing)}: "
                         "fairloop needs a classifier with fit and predict_proba")
    return estimator


def sample_weight_name(estimator: Any) -> str | None:
    """The ``fit`` keyword that carries sample weights to ``estimator`` (None: it takes none):
    ``sample_weight``, or for a Pipeline ``<last step>__sample_weight`` (Pipeline routes
    ``step__param``; Fairlearn's reductions take the name as ``sample_weight_name``)."""
    if has_fit_parameter(estimator, "sample_weight"):
        return "sample_weight"
    if isinstance(estimator, Pipeline):
        step, final = estimator.steps[-1]
        return f"{step}__sample_weight" if sample_weight_name(final) == "sample_weight" else None
    return None


def _native_keyword(estimator: Any) -> tuple[str, str] | None:
    for cls in type(estimator).__mro__:
        native = NATIVE_CATEGORICAL.get(f"{cls.__module__}.{cls.__qualname__}")
        if native is not None:
            return native
    return None


def encoding(learner: str | None, params: dict[str, Any]) -> Encoding:
    """How categoricals reach ``learner``: native codes or one-hot. ``None`` (a method that
    trains its own network) needs numeric input: one-hot."""
    if learner is None:
        return "one_hot"
    return "native" if _native_keyword(instantiate(learner, params)) else "one_hot"


def build(learner: str, params: dict[str, Any], n_categorical: int, n_numeric: int, seed: int) -> Any:
    """The learner for a matrix from :func:`make_preprocessor` (categorical columns first), seeded
    with ``seed`` unless the template sets ``random_state``, and told which columns are codes."""
    extra: dict[str, Any] = {}
    if "random_state" not in params and accepts(resolve(learner), "random_state"):
        extra["random_state"] = seed
    estimator = instantiate(learner, {**extra, **params})
    native = _native_keyword(estimator)
    if native is not None and n_categorical:
        keyword, form = native
        mask = np.array([True] * n_categorical + [False] * n_numeric)
        estimator.set_params(**{keyword: mask if form == "mask" else list(np.flatnonzero(mask))})
    return estimator


def make_preprocessor(encoder: Encoding, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Encoder fitted once, outside any mitigator, so mitigators see a plain numeric matrix.

    ``native``: ordinal codes (categorical columns first) and numerics as the indices of their
    quantile bins (:mod:`fairloop.remedy.binning`), missing values left to the learner. ``one_hot``: one-hot categoricals and imputed, scaled numerics.
    """
    if encoder == "native":
        ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
        return ColumnTransformer(
            # numerics in quantile bins, found once: weighted refits then skip the learner's own
            # per-fit weighted binning (fairloop.remedy.binning)
            [("categorical", ordinal, categorical), ("numeric", QuantileBins(), numeric)],
            verbose_feature_names_out=False,
        )
    one_hot = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"), OneHotEncoder(handle_unknown="ignore")
    )
    scaled = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    return ColumnTransformer(
        [("categorical", one_hot, categorical), ("numeric", scaled, numeric)],
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )
