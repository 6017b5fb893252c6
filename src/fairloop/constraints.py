"""Constraint templates (``constraints/*.yaml``) and fitting a candidate under one.

A template names a base learner and a Fairlearn mitigation: a reduction
(ExponentiatedGradient or GridSearch) with a parity constraint and its bound, the
ThresholdOptimizer post-processor, or none (the unconstrained baseline).

Bound semantics (Fairlearn): ``DemographicParity(difference_bound=b)`` bounds every group's
selection rate against the *overall* rate, so the max-min gap a gate measures can reach about
2b; gates are always checked on held-out data.
"""

from __future__ import annotations

import time

import numpy as np
from typing import Any, Literal

from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import (
    DemographicParity,
    EqualizedOdds,
    ErrorRateParity,
    ExponentiatedGradient,
    FalsePositiveRateParity,
    GridSearch,
    TruePositiveRateParity,
)
from pydantic import Field, model_validator
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from fairloop.datasets import Split
from fairloop.errors import BadInputError
from fairloop.crossfit import fold_positions
from fairloop.model import FairModel, ScorePassthrough, categorical_mask, make_preprocessor
from fairloop.recipes import NO_RECIPE, Recipe, apply_recipe
from fairloop.specfile import VersionedSpec, load_spec

REDUCTION_CONSTRAINTS = {
    "demographic_parity": DemographicParity,
    "equalized_odds": EqualizedOdds,
    "true_positive_rate_parity": TruePositiveRateParity,
    "false_positive_rate_parity": FalsePositiveRateParity,
    "error_rate_parity": ErrorRateParity,
}
# ThresholdOptimizer supports a subset, named differently for rate parities.
THRESHOLD_CONSTRAINTS = {
    "demographic_parity": "demographic_parity",
    "equalized_odds": "equalized_odds",
    "true_positive_rate_parity": "true_positive_rate_parity",
    "false_positive_rate_parity": "false_positive_rate_parity",
}

Learner = Literal["hist_gradient_boosting", "logistic_regression"]
Method = Literal["none", "exponentiated_gradient", "grid_search", "threshold_optimizer", "counterfactual_guardrail"]
# Kinds that post-process a fitted model's scores: the only ones a frozen model (remediate --model) can take.
POST_PROCESSING = ("threshold_optimizer", "counterfactual_guardrail")
Constraint = Literal[
    "demographic_parity", "equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity", "error_rate_parity"
]


class ConstraintTemplate(VersionedSpec):
    learner: Learner = "hist_gradient_boosting"
    learner_params: dict[str, Any] = {}
    method: Method
    constraint: Constraint | None = None
    bound: float | None = Field(None, gt=0, lt=1, description="difference_bound (reductions) or tol (threshold optimizer)")
    method_params: dict[str, Any] = Field({}, description="extra keyword arguments of the Fairlearn mitigator")
    calibration_folds: int = Field(
        5, ge=2, le=20, description="threshold_optimizer: folds whose held-out scores its thresholds are fitted on"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConstraintTemplate:
        if self.method in ("none", "counterfactual_guardrail"):
            if self.constraint is not None or self.bound is not None:
                raise ValueError(f"method '{self.method}' takes no constraint or bound")
            return self
        if self.constraint is None:
            raise ValueError(f"method '{self.method}' needs a 'constraint'")
        if self.method == "threshold_optimizer" and self.constraint not in THRESHOLD_CONSTRAINTS:
            raise ValueError(
                f"constraint '{self.constraint}' is not supported by threshold_optimizer "
                f"(choose one of {sorted(THRESHOLD_CONSTRAINTS)})"
            )
        return self

    @property
    def needs_sensitive_at_predict(self) -> bool:
        """ThresholdOptimizer uses the sensitive feature when predicting: disparate treatment
        in many jurisdictions, so every report shows it."""
        return self.method == "threshold_optimizer"

    def label(self) -> str:
        if self.method == "none":
            return f"{self.learner} (unconstrained)"
        if self.method == "counterfactual_guardrail":
            return "counterfactual guardrail [frozen base model]"
        bound = f" bound={self.bound}" if self.bound is not None else ""
        return f"{self.method} x {self.constraint}{bound} [{self.learner}]"


def load_constraint_template(path) -> ConstraintTemplate:
    return load_spec(path, ConstraintTemplate)


UNCONSTRAINED = ConstraintTemplate(name="unconstrained", version=1, method="none")


def _learner(template: ConstraintTemplate, mask, seed: int):
    if template.learner == "hist_gradient_boosting":
        params = {"random_state": seed, "categorical_features": mask, **template.learner_params}
        return HistGradientBoostingClassifier(**params)
    return LogisticRegression(**{"max_iter": 1000, **template.learner_params})


def _mitigator(template: ConstraintTemplate, learner, seed: int):
    if template.method == "none":
        return learner
    bound_kwargs = {"difference_bound": template.bound} if template.bound is not None else {}
    if template.method == "exponentiated_gradient":
        return ExponentiatedGradient(learner, REDUCTION_CONSTRAINTS[template.constraint](**bound_kwargs), **template.method_params)
    if template.method == "grid_search":
        return GridSearch(learner, REDUCTION_CONSTRAINTS[template.constraint](**bound_kwargs), **template.method_params)
    kwargs = {"predict_method": "predict_proba", "objective": "accuracy_score", "prefit": True, **template.method_params}
    if template.bound is not None:
        kwargs["tol"] = template.bound
    return ThresholdOptimizer(estimator=learner, constraints=THRESHOLD_CONSTRAINTS[template.constraint], **kwargs)


def _fit_estimator(train: Split, template: ConstraintTemplate, sensitive: str, seed: int) -> FairModel:
    """Preprocess ``train`` (already augmented) and fit ``template``'s learner with its reduction, if any."""
    numeric = [c for c in train.X.columns if train.X[c].dtype.kind in "fi"]
    categorical = [c for c in train.X.columns if c not in numeric]
    preprocessor = make_preprocessor(template.learner, numeric, categorical)
    matrix = preprocessor.fit_transform(train.X)
    estimator = _mitigator(template, _learner(template, categorical_mask(numeric, categorical), seed), seed)
    fit_kwargs: dict[str, Any] = {}
    if template.method != "none":
        fit_kwargs["sensitive_features"] = train.groups[sensitive].to_numpy()
    if train.sample_weight is not None:
        if template.method in ("exponentiated_gradient", "grid_search"):
            raise BadInputError(
                f"template '{template.name}' ({template.method}) cannot take the recipe's sample weights: "
                "Fairlearn reductions reweight the data themselves; pair a weighting recipe with "
                "method 'none' or 'threshold_optimizer'",
                field="method",
            )
        fit_kwargs["sample_weight"] = train.sample_weight.to_numpy()
    estimator.fit(matrix, train.y.to_numpy(), **fit_kwargs)
    return FairModel(
        features=list(train.X.columns), sensitive=sensitive, preprocessor=preprocessor, estimator=estimator,
        method=template.method, needs_sensitive_at_predict=template.needs_sensitive_at_predict, random_state=seed,
    )


def _fit_postprocessed(real: Split, recipe: Recipe, template: ConstraintTemplate, sensitive: str, seed: int) -> FairModel:
    """ThresholdOptimizer whose thresholds are fitted on held-out scores, never on the rows its
    estimator saw: the real rows are cut into ``calibration_folds`` folds (group x label
    stratified), the recipe and estimator are fitted without each fold and score it; the
    thresholds are chosen on these out-of-fold scores; the deployed estimator is refitted on
    all rows. (Fitting thresholds on training scores overfits them: parity met on training
    rows, missed on new ones, most visibly on small data.)"""
    unconstrained = template.model_copy(update={"method": "none", "constraint": None, "bound": None})
    held_out_scores = np.empty(len(real))
    for held in fold_positions(real, sensitive, template.calibration_folds, seed):
        kept = np.setdiff1d(np.arange(len(real)), held)
        augmented, _ = apply_recipe(real.take(kept), recipe, sensitive, seed)
        fold_model = _fit_estimator(augmented, unconstrained, sensitive, seed)
        held_out_scores[held] = fold_model.predictions(real.X.iloc[held]).scores
    augmented, _ = apply_recipe(real, recipe, sensitive, seed)
    scorer = _fit_estimator(augmented, unconstrained, sensitive, seed)
    thresholds = fit_thresholds(template, held_out_scores, real, sensitive, seed)
    return FairModel(
        features=scorer.features, sensitive=sensitive, preprocessor=scorer.preprocessor, estimator=thresholds,
        method=template.method, needs_sensitive_at_predict=True, random_state=seed, scorer=scorer.estimator,
    )


def fit_thresholds(template: ConstraintTemplate, held_out_scores: np.ndarray, rows: Split, sensitive: str, seed: int):
    """``template``'s ThresholdOptimizer, prefit, fitted on scores of ``rows`` no scorer was trained on."""
    thresholds = _mitigator(template, ScorePassthrough().fit(None, None), seed)
    thresholds.fit(held_out_scores[:, None], rows.y.to_numpy(), sensitive_features=rows.groups[sensitive].to_numpy())
    return thresholds


def fit_candidate(
    train: Split, template: ConstraintTemplate, sensitive: str, seed: int = 0, recipe: Recipe = NO_RECIPE,
) -> tuple[FairModel, float]:
    """Apply ``recipe`` to the real rows ``train`` and fit ``template``; return the model and the
    seconds it took. Post-processing (ThresholdOptimizer) is cross-fitted, see :func:`_fit_postprocessed`."""
    if template.method == "counterfactual_guardrail":
        raise BadInputError(f"template '{template.name}' (counterfactual_guardrail) post-processes a fitted model: "
                            "give it with `fairloop remediate --model FILE`", field="method")
    started = time.perf_counter()
    if template.method == "threshold_optimizer":
        model = _fit_postprocessed(train, recipe, template, sensitive, seed)
    else:
        augmented, _ = apply_recipe(train, recipe, sensitive, seed)
        model = _fit_estimator(augmented, template, sensitive, seed)
    return model, time.perf_counter() - started
