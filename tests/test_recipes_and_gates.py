"""Recipes change only training data, as described; gates compare as the policy says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT

from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.errors import BadInputError
from fairloop.gates.evaluate import evaluate
from fairloop.remedy.constraints import (
    UNCONSTRAINED,
    fit_candidate,
    load_constraint_template,
)
from fairloop.remedy.recipes import apply_recipe, kamiran_calders_weights, load_recipe


@pytest.fixture(scope="module")
def adult():
    return make_splits(load_dataset(PROJECT / "datasets" / "adult.yaml"), train_rows=4000)


def recipe(name):
    return load_recipe(PROJECT / "recipes" / f"{name}.yaml")


def test_reweighing_makes_group_and_label_independent(adult):
    weights = kamiran_calders_weights(adult.train.groups["sex"], adult.train.y)
    weighted = pd.DataFrame({"g": adult.train.groups["sex"], "y": adult.train.y, "w": weights})
    rates = weighted.groupby("g").apply(lambda f: np.average(f.y, weights=f.w), include_groups=False)
    assert rates.max() - rates.min() < 1e-9
    assert abs(rates.iloc[0] - adult.train.y.mean()) < 1e-9


@pytest.mark.parametrize("name", ["oversample-base-rates", "smotenc-base-rates"])
def test_oversampling_equalises_base_rates_with_flagged_synthetic_rows(adult, name):
    augmented, report = apply_recipe(adult.train, recipe(name), "sex", seed=0)
    rates = augmented.y.groupby(augmented.groups["sex"]).mean()
    assert rates.max() - rates.min() < 0.01
    assert report.synthetic_rows == int(augmented.synthetic.sum()) == len(augmented) - len(adult.train)
    assert report.cells_after["Female|1"] > report.cells_before["Female|1"]
    assert report.cells_after["Male|0"] == report.cells_before["Male|0"]
    # the real rows come first, untouched
    pd.testing.assert_frame_equal(augmented.X.iloc[: len(adult.train)], adult.train.X)
    if name.startswith("oversample"):
        assert report.duplicate_rate == 1.0  # plain random oversampling copies rows
    else:
        assert report.duplicate_rate < 0.05  # SMOTENC interpolates new ones


def test_counterfactual_rows_swap_group_and_proxies(adult):
    augmented, report = apply_recipe(adult.train, recipe("counterfactual-adult-sex"), "sex")
    assert len(augmented) == 2 * len(adult.train) and report.synthetic_rows == len(adult.train)
    copies = augmented.X[augmented.synthetic.to_numpy()].reset_index(drop=True)
    groups = augmented.groups["sex"][augmented.synthetic.to_numpy()].reset_index(drop=True)
    assert (groups.to_numpy() != adult.train.groups["sex"].to_numpy()).all()
    husbands = adult.train.X["relationship"] == "Husband"
    assert (copies["relationship"][husbands.to_numpy()] == "Wife").all()


def test_synthetic_rows_never_reach_evaluation(adult):
    augmented, _ = apply_recipe(adult.train, recipe("oversample-base-rates"), "sex")
    model, _ = fit_candidate(adult.train, UNCONSTRAINED, "sex")
    with pytest.raises(BadInputError, match="synthetic"):
        evaluate(model, augmented, "sex")
    with pytest.raises(BadInputError, match="already augmented"):
        apply_recipe(augmented, recipe("reweigh"), "sex")


def test_weights_with_a_reduction_are_refused_with_a_reason(adult):
    weighted, _ = apply_recipe(adult.train, recipe("reweigh"), "sex")
    with pytest.raises(BadInputError, match="reductions reweight the data themselves"):
        fit_candidate(weighted, load_constraint_template(PROJECT / "constraints" / "gs-dp.yaml"), "sex")


def test_same_seed_gives_the_same_metrics(adult):
    # ExponentiatedGradient predicts at random: the seed must pin its decisions (logistic
    # regression keeps the test quick; the sweep tests cover the HGB templates)
    template = load_constraint_template(PROJECT / "constraints" / "lr-eg-dp.yaml")
    first = evaluate(fit_candidate(adult.train, template, "sex", seed=3)[0], adult.validation, "sex").metrics
    again = evaluate(fit_candidate(adult.train, template, "sex", seed=3)[0], adult.validation, "sex").metrics
    assert first == again


def test_demographic_parity_constraint_narrows_the_gap(adult):
    baseline = evaluate(fit_candidate(adult.train, UNCONSTRAINED, "sex")[0], adult.test, "sex")
    template = load_constraint_template(PROJECT / "constraints" / "threshold-dp.yaml")
    model, _ = fit_candidate(adult.train, template, "sex")
    with pytest.raises(BadInputError, match="needs the sensitive feature"):
        model.predict(adult.test.X)
    constrained = evaluate(model, adult.test, "sex")
    assert baseline.metrics["demographic_parity_difference"] > 0.12
    assert constrained.metrics["demographic_parity_difference"] < 0.06
