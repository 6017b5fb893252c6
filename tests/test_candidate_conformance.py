"""Every kind of candidate the shipped templates make keeps one contract (like Fairlearn's
test/_sklearn_compat.py for its estimators): fitted on a small generated dataset, its decisions are
binary integers and its probabilities lie in [0, 1]; the same seed gives the same model; it
survives the registry's file round trip; it asks for the sensitive feature at prediction time
exactly when its template says so.

One case per (method, learner) among constraints/*.yaml, so a new learner or method shipped
there is covered without editing this file. Iteration counts are cut (trees, reduction rounds,
epochs): the contract does not depend on them, and the suite must stay quick."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from conftest import PROJECT
from synthetic import write_dataset

from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.errors import BadInputError
from fairloop.pipeline import fit_model
from fairloop.registry.store import file_sha256
from fairloop.remedy.constraints import ConstraintTemplate, load_constraint_template
from fairloop.remedy.frozen import FrozenModel, load_base_model
from fairloop.remedy.fairlearn_adapter import adversarial_scores
from fairloop.remedy.model import load_model, one_torch_thread


def _kinds() -> dict[str, ConstraintTemplate]:
    """The first shipped template of each (method, learner), by a readable id."""
    kinds: dict[str, ConstraintTemplate] = {}
    for path in sorted((PROJECT / "constraints").glob("*.yaml")):
        template = load_constraint_template(path)
        learner = "torch" if template.method == "adversarial" else template.learner.rpartition(".")[2]
        kinds.setdefault(f"{template.method}-{learner}", template)
    return kinds


KINDS = _kinds()
# Cheaper settings of the same learners and mitigators.
CHEAP_LEARNER = {"hist_gradient_boosting": {"max_iter": 15}, "lightgbm.LGBMClassifier": {"n_estimators": 15}}
CHEAP_METHOD = {"exponentiated_gradient": {"max_iter": 5}, "grid_search": {"grid_size": 5},
                "adversarial": {"epochs": 3}}


def cheap(template: ConstraintTemplate) -> ConstraintTemplate:
    return ConstraintTemplate.model_validate({
        **template.model_dump(),
        "learner_params": {**template.learner_params, **CHEAP_LEARNER.get(template.learner, {})},
        "method_params": {**template.method_params, **CHEAP_METHOD.get(template.method, {})},
    })


# the methods that only post-process a fitted model: conformance fits them on a frozen scoring function
FROZEN_ONLY = {"counterfactual_guardrail"}


def fit_candidate(rows, template: ConstraintTemplate, sensitive: str, seed: int):
    """Fit as a run does: retrained, or for a frozen-only method on a vendor-like rule that reads
    the generated proxy ``x3``."""
    if template.method not in FROZEN_ONLY:
        return fit_model(rows, template, sensitive, seed)
    scorer = load_base_model("scoring_clients:proxy_rule", list(rows.X.columns))
    return fit_model(rows, template, sensitive, seed, frozen=FrozenModel.of(scorer, sensitive, ["x3"]))


@pytest.fixture(autouse=True)
def one_thread():
    """One thread per fit, as in a sweep's workers: OpenMP threads spinning over fits this small
    cost far more than they give on a busy machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """Two groups of different size and base rate, a proxy column and a categorical one."""
    spec = write_dataset(tmp_path_factory.mktemp("conformance"), "conformance",
                         {"a": (420, 0.45), "b": (240, 0.2)}, proxy=1.0, label_noise=0.05, seed=3)
    return make_splits(load_dataset(spec))


def test_every_method_and_learner_of_the_shipped_templates_is_covered():
    assert {"none-hist_gradient_boosting", "none-LGBMClassifier", "exponentiated_gradient-LGBMClassifier",
            "threshold_optimizer-LGBMClassifier", "exponentiated_gradient-logistic_regression",
            "grid_search-hist_gradient_boosting", "threshold_optimizer-hist_gradient_boosting",
            "adversarial-torch", "counterfactual_guardrail-hist_gradient_boosting"} <= set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_candidate_contract(kind, splits, tmp_path):
    template = cheap(KINDS[kind])
    model, seconds = fit_candidate(splits.train, template, "group", seed=5)
    test = splits.test
    X, groups, n = test.X, test.groups, len(test)
    first = model.predictions(X, groups)

    # shape, dtype, binary decisions; probabilities and scores in [0, 1]
    assert first.decisions.shape == (n,) and first.decisions.dtype.kind == "i"
    assert set(np.unique(first.decisions)) <= {0, 1}
    for values in (first.probabilities, first.scores):
        assert values.shape == (n,) and np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert 0.0 < first.decisions.mean() < 1.0, "a constant classifier on data with signal: something is unwired"
    assert seconds > 0

    # deterministic under the seed
    again = fit_candidate(splits.train, template, "group", seed=5)[0].predictions(X, groups)
    np.testing.assert_array_equal(first.decisions, again.decisions)
    np.testing.assert_array_equal(first.probabilities, again.probabilities)

    # the registry's file round trip (Registry.promote writes joblib; load_model checks the sha256)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    loaded = load_model(path, expected_sha256=file_sha256(path))
    restored = loaded.predictions(X, groups)
    np.testing.assert_array_equal(first.decisions, restored.decisions)
    np.testing.assert_array_equal(first.probabilities, restored.probabilities)

    # the sensitive feature at prediction time: asked for exactly when the template says so
    assert loaded.needs_sensitive_at_predict is template.needs_sensitive_at_predict
    if template.needs_sensitive_at_predict:
        with pytest.raises(BadInputError, match="needs the sensitive feature 'group'"):
            loaded.predict(X)
    else:
        np.testing.assert_array_equal(loaded.predict(X), first.decisions)


def test_adversarial_scores_are_what_its_decisions_threshold(splits):
    """``adversarial_scores`` reads Fairlearn's private ``_raw_predict``: if an upgrade changes
    it, its scores stop matching the classifier's own decisions here."""
    model, _ = fit_candidate(splits.train, cheap(KINDS["adversarial-torch"]), "group", seed=1)
    matrix = model.preprocessor.transform(splits.test.X)
    with one_torch_thread():
        scores = adversarial_scores(model.estimator, matrix)
        decisions = model.estimator.predict(matrix)
    assert scores.shape == (len(matrix),)
    np.testing.assert_array_equal((scores >= 0.5).astype(int), np.asarray(decisions).astype(int))


def test_the_seed_reaches_adversarial_debiasing(splits):
    """Different seeds, different networks (Fairlearn 0.15 alone seeds torch with 0 whatever the seed)."""
    template = cheap(KINDS["adversarial-torch"])
    scores = [fit_candidate(splits.train, template, "group", seed=seed)[0].predictions(splits.test.X).scores
              for seed in (1, 2)]
    assert not np.array_equal(scores[0], scores[1])
