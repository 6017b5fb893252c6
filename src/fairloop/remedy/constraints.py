"""Constraint templates (``constraints/*.yaml``) and fitting a candidate under one.

A template names a base learner (:mod:`fairloop.remedy.learners`: a built-in name or the import path of
any scikit-learn-compatible classifier) and a Fairlearn mitigation: a reduction
(ExponentiatedGradient or GridSearch) with a parity constraint and its bound, the
ThresholdOptimizer post-processor, adversarial debiasing (AdversarialFairnessClassifier on
PyTorch: a predictor network trained against an adversary that tries to recover the sensitive
feature from its output), or none (the unconstrained baseline).

Bound semantics (Fairlearn): ``DemographicParity(difference_bound=b)`` bounds every group's
selection rate against the *overall* rate, so the max-min gap a gate measures can reach about
2b; gates are always checked on held-out data.

fairlearn.adversarial (needs the optional extra fairloop[adversarial], torch) is imported only for an adversarial template.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import time
from collections import OrderedDict
from typing import Any, Literal

import numpy as np
import pandas as pd
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
from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fairloop.data.rows import Split
from fairloop.data.spec import SpecModel, VersionedSpec, load_spec
from fairloop.errors import BadInputError
from fairloop.remedy import learners
from fairloop.remedy.crossfit import fold_positions
from fairloop.remedy.fairlearn_adapter import PicklableTorchEngine
from fairloop.remedy.model import FairModel, ScorePassthrough, one_torch_thread
from fairloop.remedy.recipes import NO_RECIPE, Recipe, apply_recipe

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

# AdversarialFairnessClassifier's constraints.
ADVERSARIAL_CONSTRAINTS = ("demographic_parity", "equalized_odds")

Method = Literal["none", "exponentiated_gradient", "grid_search", "threshold_optimizer", "adversarial",
                 "counterfactual_guardrail"]
# Kinds that post-process a fitted model's scores: the only ones a frozen model (remediate --model) can take.
POST_PROCESSING = ("threshold_optimizer", "counterfactual_guardrail")
Constraint = Literal[
    "demographic_parity", "equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity", "error_rate_parity"
]
# What kind of candidate each method makes (frontier legend, candidates tables).
METHOD_KINDS = {
    "none": "unconstrained",
    "exponentiated_gradient": "reduction",
    "grid_search": "reduction",
    "threshold_optimizer": "post-processing",
    "counterfactual_guardrail": "post-processing",
    "adversarial": "in-processing (adversarial)",
}
# Fairlearn mitigator classes whose keywords a template's method_params may set; fairloop sets
# the estimator, the constraint and where sample weights go.
MITIGATORS = {"exponentiated_gradient": ExponentiatedGradient, "grid_search": GridSearch,
              "threshold_optimizer": ThresholdOptimizer}
SET_BY_FAIRLOOP = {"estimator", "constraints", "sample_weight_name", "prefit"}


class AdversarialParams(SpecModel):
    """``method_params`` of ``method: adversarial`` (Fairlearn's AdversarialFairnessClassifier,
    PyTorch backend; hidden layers use leaky ReLU)."""

    predictor_hidden: list[PositiveInt] = Field([50], description="hidden layer sizes of the predictor network")
    adversary_hidden: list[PositiveInt] = Field([3], description="hidden layer sizes of the adversary network")
    alpha: float = Field(1.0, ge=0, description=(
        "weight of the adversary's gradient in the predictor's update; the update is always also projected so "
        "it does not help the adversary (Zhang et al. 2018), so even 0 debiases"))
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(0.001, gt=0, lt=1)


class GuardrailParams(SpecModel):
    """``method_params`` of ``method: counterfactual_guardrail`` (``fairloop.remedy.guardrail``)."""

    draws_per_group: int = Field(10, ge=1, le=1000, description=(
        "counterfactual copies per group each row is scored on (cost: groups x draws base-model scores per row)"))


# typed method_params of the methods fairloop implements (Fairlearn's mitigators are checked by signature)
METHOD_PARAMS = {"adversarial": AdversarialParams, "counterfactual_guardrail": GuardrailParams}


def _network(hidden: list[int]) -> list:
    """Fairlearn's list form of a network: layer sizes, each followed by its activation."""
    return [item for size in hidden for item in (size, "leaky_relu")]


class ConstraintTemplate(VersionedSpec):
    learner: str = Field(
        "hist_gradient_boosting",
        description="built-in name or import path of a scikit-learn-compatible classifier (class or factory); "
        "for method 'adversarial' the learner of the unconstrained baseline",
    )
    learner_params: dict[str, Any] = Field({}, validate_default=True)  # checked even when left out
    method: Method
    constraint: Constraint | None = None
    bound: float | None = Field(None, gt=0, lt=1, description="difference_bound (reductions) or tol (threshold optimizer)")
    method_params: dict[str, Any] = Field({}, description="extra keyword arguments of the Fairlearn mitigator; "
                                          "adversarial: the fields of AdversarialParams")
    calibration_folds: int = Field(
        5, ge=2, le=20, description="threshold_optimizer: folds whose held-out scores its thresholds are fitted on"
    )

    @field_validator("learner")
    @classmethod
    def _importable(cls, learner: str) -> str:
        learners.resolve(learner)
        return learner

    @field_validator("learner_params")
    @classmethod
    def _accepted(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "learner" in info.data:
            learners.instantiate(info.data["learner"], params)
        return params

    @field_validator("method")
    @classmethod
    def _learner_takes_weights(cls, method: str, info: ValidationInfo) -> str:
        if METHOD_KINDS[method] == "reduction" and {"learner", "learner_params"} <= set(info.data):
            estimator = learners.instantiate(info.data["learner"], info.data["learner_params"])
            if learners.sample_weight_name(estimator) is None:
                raise ValueError(f"{method} fits its learner with sample weights, and learner '{info.data['learner']}' "
                                 "takes none in fit (choose a learner that does, or method none / threshold_optimizer)")
        if method == "adversarial" and importlib.util.find_spec("torch") is None:
            raise ValueError("method 'adversarial' needs PyTorch: install fairloop's optional extra "
                             "(pip install 'fairloop[adversarial]')")
        return method

    @field_validator("method_params")
    @classmethod
    def _mitigator_takes(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if method in METHOD_PARAMS:
            try:
                METHOD_PARAMS[method].model_validate(params)
            except ValidationError as exc:
                raise ValueError("; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())) from None
        elif method in MITIGATORS:
            accepted = set(inspect.signature(MITIGATORS[method]).parameters) - SET_BY_FAIRLOOP
            unknown = sorted(set(params) - accepted)
            if unknown:
                raise ValueError(f"{method} takes no parameter(s) {unknown}; it takes: {', '.join(sorted(accepted))}")
        elif params:
            raise ValueError(f"method '{method}' takes no method_params")
        return params

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
        if self.method == "adversarial":
            if self.constraint not in ADVERSARIAL_CONSTRAINTS:
                raise ValueError(f"constraint '{self.constraint}' is not supported by adversarial "
                                 f"(choose one of {list(ADVERSARIAL_CONSTRAINTS)})")
            if self.bound is not None:
                raise ValueError("method 'adversarial' takes no bound: method_params.alpha weighs fairness")
        return self

    @property
    def kind(self) -> str:
        return METHOD_KINDS[self.method]

    @property
    def takes_bound(self) -> bool:
        return self.method in MITIGATORS

    @property
    def needs_sensitive_at_predict(self) -> bool:
        """ThresholdOptimizer uses the sensitive feature when predicting: disparate treatment
        in many jurisdictions, so every report shows it."""
        return self.method == "threshold_optimizer"

    @property
    def adversarial_params(self) -> AdversarialParams:
        return AdversarialParams.model_validate(self.method_params)

    @property
    def learner_label(self) -> str:
        """What is fitted: the learner, or for adversarial debiasing its two networks."""
        if self.method == "adversarial":
            params = self.adversarial_params
            return f"torch MLP {params.predictor_hidden} vs adversary {params.adversary_hidden}"
        return self.learner

    @property
    def encoding(self) -> learners.Encoding:
        return learners.encoding(None if self.method == "adversarial" else self.learner, self.learner_params)

    def weighting_problem(self) -> tuple[str, str] | None:
        """(field, why) if this template cannot be fitted on a weighting recipe's rows: its method
        fits without them ('method'), or its learner's fit takes no sample weights ('learner')."""
        if self.kind == "reduction":
            return "method", "a weighting recipe cannot feed a reduction"
        if self.method == "adversarial":
            return "method", "a weighting recipe cannot feed adversarial debiasing (it fits without sample weights)"
        if learners.sample_weight_name(learners.instantiate(self.learner, self.learner_params)) is None:
            return "learner", f"learner '{self.learner}' takes no sample_weight in fit, which a weighting recipe needs"
        return None

    def label(self) -> str:
        if self.method == "none":
            return f"{self.learner} (unconstrained)"
        if self.method == "adversarial":
            return f"adversarial x {self.constraint} alpha={self.adversarial_params.alpha:g} [{self.learner_label}]"
        if self.method == "counterfactual_guardrail":
            return "counterfactual guardrail [frozen base model]"
        bound = f" bound={self.bound}" if self.bound is not None else ""
        return f"{self.method} x {self.constraint}{bound} [{self.learner}]"


def load_constraint_template(path) -> ConstraintTemplate:
    return load_spec(path, ConstraintTemplate)


UNCONSTRAINED = ConstraintTemplate(name="unconstrained", version=1, method="none")


def _adversarial(template: ConstraintTemplate, seed: int):
    from fairlearn.adversarial import AdversarialFairnessClassifier

    params = template.adversarial_params
    return AdversarialFairnessClassifier(
        backend=PicklableTorchEngine, predictor_model=_network(params.predictor_hidden),
        adversary_model=_network(params.adversary_hidden), constraints=template.constraint, alpha=params.alpha,
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate, shuffle=True,
        random_state=seed,
    )


def _mitigator(template: ConstraintTemplate, learner, seed: int):
    if template.method == "none":
        return learner
    bound_kwargs = {"difference_bound": template.bound} if template.bound is not None else {}
    if template.kind == "reduction":
        reduction = MITIGATORS[template.method]
        return reduction(learner, REDUCTION_CONSTRAINTS[template.constraint](**bound_kwargs),
                         sample_weight_name=learners.sample_weight_name(learner), **template.method_params)
    kwargs = {"predict_method": "predict_proba", "objective": "accuracy_score", "prefit": True, **template.method_params}
    if template.bound is not None:
        kwargs["tol"] = template.bound
    return ThresholdOptimizer(estimator=learner, constraints=THRESHOLD_CONSTRAINTS[template.constraint], **kwargs)


def check_weighting(template: ConstraintTemplate, path: str | None = None) -> None:
    """BadInputError (naming the template ``path`` and field) if ``template`` cannot be fitted on
    a weighting recipe's rows."""
    problem = template.weighting_problem()
    if problem is not None:
        field, why = problem
        advice = ("reductions reweight the data themselves and adversarial debiasing fits without weights: pair a "
                  "weighting recipe with method 'none' or 'threshold_optimizer'" if field == "method" else
                  "choose a learner whose fit takes sample_weight, or a recipe without weights")
        raise BadInputError(f"template '{template.name}' ({template.label()}): {why}; {advice}", source=path, field=field)


def _fit_estimator(train: Split, template: ConstraintTemplate, sensitive: str, seed: int) -> FairModel:
    """Preprocess ``train`` (already augmented) and fit ``template``'s learner with its reduction, if any."""
    numeric = [c for c in train.X.columns if train.X[c].dtype.kind in "fi"]
    categorical = [c for c in train.X.columns if c not in numeric]
    preprocessor = learners.make_preprocessor(template.encoding, numeric, categorical)
    matrix = preprocessor.fit_transform(train.X)
    if template.method == "adversarial":
        estimator = _adversarial(template, seed)
    else:
        learner = learners.build(template.learner, template.learner_params, len(categorical), len(numeric), seed)
        estimator = _mitigator(template, learner, seed)
    fit_kwargs: dict[str, Any] = {}
    if template.method != "none":
        fit_kwargs["sensitive_features"] = train.groups[sensitive].to_numpy()
    if train.sample_weight is not None:
        check_weighting(template)
        fit_kwargs[learners.sample_weight_name(estimator)] = train.sample_weight.to_numpy()
    with one_torch_thread(template.method == "adversarial"):
        estimator.fit(matrix, train.y.to_numpy(), **fit_kwargs)
    return FairModel(
        features=list(train.X.columns), sensitive=sensitive, preprocessor=preprocessor, estimator=estimator,
        method=template.method, needs_sensitive_at_predict=template.needs_sensitive_at_predict, random_state=seed,
    )


# ThresholdOptimizer candidates that differ only in their thresholds (constraint, tol) fit the
# same seeded scorers on the same rows: in German's default crossfit sweep, threshold-dp at two
# bounds and threshold-eo share every fold's scorers (per recipe), two thirds of their fits. Each
# process keeps the last few; the scores are the same whether fitted again or reused.
SCORERS_KEPT = 8
_scorers: OrderedDict[str, tuple[np.ndarray, FairModel]] = OrderedDict()


def _scorer_key(real: Split, recipe: Recipe, unconstrained: ConstraintTemplate, sensitive: str, seed: int) -> str:
    """What a post-processor's scorers depend on: the rows, the recipe, the learner and the folds."""
    digest = hashlib.sha256(json.dumps(
        [recipe.model_dump(mode="json"), unconstrained.learner, unconstrained.learner_params,
         unconstrained.calibration_folds, list(real.X.columns), sensitive, seed], sort_keys=True, default=str,
    ).encode())
    for part in (real.X, real.y, real.groups, real.sample_weight, real.synthetic):
        if part is not None:
            digest.update(pd.util.hash_pandas_object(part).to_numpy().tobytes())
    return digest.hexdigest()


def _fit_postprocessed(real: Split, recipe: Recipe, template: ConstraintTemplate, sensitive: str, seed: int) -> FairModel:
    """ThresholdOptimizer whose thresholds are fitted on held-out scores, never on the rows its
    estimator saw: the real rows are cut into ``calibration_folds`` folds (group x label
    stratified), the recipe and estimator are fitted without each fold and score it; the
    thresholds are chosen on these out-of-fold scores; the deployed estimator is refitted on
    all rows. (Fitting thresholds on training scores overfits them: parity met on training
    rows, missed on new ones, most visibly on small data.)"""
    unconstrained = template.model_copy(update={"method": "none", "constraint": None, "bound": None})
    key = _scorer_key(real, recipe, unconstrained, sensitive, seed)
    if key in _scorers:
        _scorers.move_to_end(key)
        held_out_scores, scorer = _scorers[key]
    else:
        held_out_scores = np.empty(len(real))
        for held in fold_positions(real, sensitive, template.calibration_folds, seed):
            kept = np.setdiff1d(np.arange(len(real)), held)
            augmented, _ = apply_recipe(real.take(kept), recipe, sensitive, seed)
            fold_model = _fit_estimator(augmented, unconstrained, sensitive, seed)
            held_out_scores[held] = fold_model.predictions(real.X.iloc[held]).scores
        augmented, _ = apply_recipe(real, recipe, sensitive, seed)
        scorer = _fit_estimator(augmented, unconstrained, sensitive, seed)
        _scorers[key] = held_out_scores, scorer
        while len(_scorers) > SCORERS_KEPT:
            _scorers.popitem(last=False)
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
