"""Fitting the candidates a frozen model can take (:func:`fairloop.remedy.frozen.refusal` says
which): the base model alone, ThresholdOptimizer on its scores, or the counterfactual guardrail
(:mod:`fairloop.remedy.guardrail`)."""

from __future__ import annotations

import time

from sklearn.preprocessing import FunctionTransformer

from fairloop.data.datasets import Split
from fairloop.errors import BadInputError
from fairloop.remedy.constraints import ConstraintTemplate, fit_thresholds
from fairloop.remedy.frozen import FrozenModel, refusal
from fairloop.remedy.guardrail import fit_guardrail
from fairloop.remedy.model import FairModel, ScorePassthrough
from fairloop.remedy.recipes import Recipe


def fit_on_frozen(frozen: FrozenModel, rows: Split, template: ConstraintTemplate, sensitive: str, seed: int,
                  recipe: Recipe) -> tuple[FairModel, float]:
    """``template`` on the frozen model, fitted on ``rows`` (which must not be the rows that
    evaluate it): the base model alone (method 'none'), ThresholdOptimizer on its scores, or the
    counterfactual guardrail. Returns the deployable model and the seconds it took."""
    reason = refusal(template, recipe)
    if reason:
        raise BadInputError(reason, field="method")
    started = time.perf_counter()
    scorer, estimator = frozen.scorer, ScorePassthrough()
    if template.method == "threshold_optimizer":
        estimator = fit_thresholds(template, frozen.scorer.scores(rows.X), rows, sensitive, seed)
    elif template.method == "counterfactual_guardrail":
        scorer = fit_guardrail(frozen.scorer, rows, sensitive, list(frozen.varied), seed, **template.method_params)
        estimator = ScorePassthrough(threshold=scorer.threshold)
    model = FairModel(
        features=frozen.scorer.features, sensitive=sensitive, preprocessor=FunctionTransformer().fit(rows.X[frozen.scorer.features]),
        estimator=estimator, method=template.method, needs_sensitive_at_predict=template.needs_sensitive_at_predict,
        random_state=seed, scorer=scorer,
    )
    return model, time.perf_counter() - started
