"""Any scikit-learn-compatible learner by import path: checked when its template (or sweep) is
loaded, fitted with fairloop's encoder for it, and a LightGBM template through the whole
remediation flow on generated data (real Prefect server, real git + DVC registry)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import PROJECT, BackgroundRun, write_policy
from synthetic import write_dataset

from fairloop import pipeline
from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.errors import BadInputError
from fairloop.registry.reproduce import reproduce
from fairloop.registry.store import Registry
from fairloop.remedy.constraints import fit_candidate, load_constraint_template
from fairloop.remedy.recipes import load_recipe
from fairloop.remedy.sweep.run import run_sweep
from fairloop.remedy.sweep.spec import expand_candidates, load_sweep
from fairloop.review.frontier import (
    candidates_markdown,
    candidates_table,
    frontier_report,
)


def template_file(tmp_path, **fields):
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "version": 1, "method": "none", **fields}))
    return path


@pytest.mark.parametrize(("fields", "words"), [
    ({"learner": "nosuchpackage.Model"}, ["field 'learner'", "cannot import 'nosuchpackage'", "installed"]),
    ({"learner": "sklearn.linear_model.NoSuchModel"}, ["field 'learner'", "'sklearn.linear_model' has no 'NoSuchModel'"]),
    ({"learner": "gradient boosting"}, ["field 'learner'", "neither a built-in learner"]),
    ({"learner": "os.remove", "learner_params": {"path": "x"}}, ["field 'learner'", "standard library"]),
    ({"learner": "sklearn.svm.LinearSVC"}, ["field 'learner_params'", "LinearSVC", "has no predict_proba"]),
    ({"learner": "sklearn.linear_model.LogisticRegression", "learner_params": {"max_iterations": 5}},
     ["field 'learner_params'", "takes no parameter(s) ['max_iterations']", "max_iter"]),
    ({"learner": "sklearn.neighbors.KNeighborsClassifier", "method": "exponentiated_gradient",
      "constraint": "demographic_parity"}, ["field 'method'", "KNeighborsClassifier' takes none in fit"]),
    ({"method": "exponentiated_gradient", "constraint": "demographic_parity", "method_params": {"epsilon": 0.1}},
     ["field 'method_params'", "['epsilon']", "eps"]),
    ({"method": "adversarial", "constraint": "demographic_parity", "method_params": {"alpha": -1}},
     ["field 'method_params'", "'alpha'", "greater than or equal to 0"]),
    ({"method": "adversarial", "constraint": "demographic_parity", "method_params": {"layers": [8]}},
     ["field 'method_params'", "'layers'", "Extra inputs"]),
    ({"method": "adversarial", "constraint": "true_positive_rate_parity"}, ["not supported by adversarial"]),
    ({"method": "adversarial", "constraint": "demographic_parity", "bound": 0.02}, ["takes no bound", "alpha"]),
    ({"method_params": {"eps": 0.1}}, ["field 'method_params'", "method 'none' takes no method_params"]),
])
def test_a_template_naming_an_unusable_learner_or_parameter_names_file_and_field(tmp_path, fields, words):
    path = template_file(tmp_path, **fields)
    with pytest.raises(BadInputError) as error:
        load_constraint_template(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "Traceback" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message}"


def write_sweep(directory, template: dict, recipes=("recipes/none.yaml", "recipes/reweigh.yaml")):
    template_path = template_file(directory, **template)
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "version": 1, "recipes": [str(PROJECT / r) for r in recipes],
                                    "constraints": [str(template_path)]}))
    return path, template_path


def test_a_weighting_recipe_with_a_learner_that_takes_no_weights_is_refused_at_sweep_load(tmp_path):
    path, template_path = write_sweep(tmp_path, {"learner": "sklearn.neighbors.KNeighborsClassifier"})
    with pytest.raises(BadInputError) as error:
        load_sweep(path)
    message = str(error.value)
    assert message.startswith(str(path)) and str(template_path) in message and "field 'learner'" in message
    assert "takes no sample_weight" in message and "reweigh.yaml" in message
    # alone, the same template is fine; and adversarial debiasing is skipped with a reason, not refused
    load_sweep(write_sweep(tmp_path, {"learner": "sklearn.neighbors.KNeighborsClassifier"},
                                 recipes=("recipes/none.yaml",))[0])
    candidates, skipped = expand_candidates(load_sweep(write_sweep(
        tmp_path, {"method": "adversarial", "constraint": "demographic_parity"})[0]))
    assert [c.name for c in candidates] == ["none+t"]
    assert skipped[0].name == "reweigh+t" and "fits without sample weights" in skipped[0].reason


def test_a_single_run_refuses_the_same_pairing_before_reading_data(tmp_path):
    template_path = template_file(tmp_path, learner="sklearn.neighbors.KNeighborsClassifier")
    params = pipeline.RunParams(dataset="datasets/missing.yaml", recipe=str(PROJECT / "recipes/reweigh.yaml"),
                                constraint=str(template_path))
    with pytest.raises(BadInputError, match=r"template.yaml: learner: .*takes no sample_weight in fit.*choose a learner"):
        pipeline.load_inputs(params)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    spec = write_dataset(tmp_path_factory.mktemp("learners"), "learners", {"a": (500, 0.45), "b": (300, 0.2)},
                         proxy=1.0, seed=4)
    return make_splits(load_dataset(spec))


@pytest.fixture(autouse=True)
def one_thread():
    """One thread per fit, as in a sweep's workers (fits this small lose to OpenMP spinning)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def test_a_pipeline_factory_gets_one_hot_input_and_its_weights_routed_to_its_last_step(generated, tmp_path):
    factory = {"learner": "learner_factories.interactions_logistic", "learner_params": {"C": 0.5}}
    plain = load_constraint_template(template_file(tmp_path, **factory))
    assert plain.encoding == "one_hot"
    unweighted, _ = fit_candidate(generated.train, plain, "group")
    weighted, _ = fit_candidate(generated.train, plain, "group", recipe=load_recipe(PROJECT / "recipes/reweigh.yaml"))
    assert unweighted.preprocessor.transform(generated.test.X).shape[1] == 3 + 3  # colour one-hot, x1..x3
    # the recipe's weights reached the pipeline's logistic regression
    assert not np.allclose(weighted.estimator.named_steps["model"].coef_, unweighted.estimator.named_steps["model"].coef_)
    reduction = load_constraint_template(template_file(
        tmp_path, **factory, method="exponentiated_gradient", constraint="demographic_parity", bound=0.02,
        method_params={"max_iter": 10}))
    model, _ = fit_candidate(generated.train, reduction, "group")
    assert model.estimator.sample_weight_name == "model__sample_weight"
    assert model.predict(generated.test.X).shape == (len(generated.test),)


def test_lightgbm_splits_on_categorical_codes_natively(generated):
    template = load_constraint_template(PROJECT / "constraints/lgbm-unconstrained.yaml")
    assert template.encoding == "native"
    model, _ = fit_candidate(generated.train, template, "group")
    assert model.estimator.get_params()["categorical_column"] == [0]  # colour: the first column of the codes
    infos = model.estimator.booster_.dump_model()["feature_infos"]
    assert infos["Column_0"]["values"] and not infos["Column_1"]["values"]  # categorical vs numeric


def test_a_sweep_of_every_candidate_kind_shows_each_kind_and_what_it_needs_at_prediction(tmp_path):
    """LightGBM (unconstrained, reduction, post-processing) and adversarial debiasing in one sweep
    on generated data: the candidates tables and the frontier name each kind and its inputs."""
    spec = write_dataset(tmp_path, "kinds", {"a": (700, 0.45), "b": (400, 0.2)}, proxy=1.0, seed=2)
    templates = []
    for name, fewer in (("lgbm-unconstrained", {}), ("lgbm-gs-dp", {"grid_size": 5}), ("lgbm-threshold-dp", {}),
                        ("adversarial-dp", {"epochs": 3})):  # the shipped templates, cheaper (wiring)
        shipped = yaml.safe_load((PROJECT / f"constraints/{name}.yaml").read_text())
        if "learner_params" in shipped:
            shipped["learner_params"]["n_estimators"] = 20
        shipped["method_params"] = {**shipped.get("method_params", {}), **fewer}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(shipped))
        templates.append(str(tmp_path / f"{name}.yaml"))
    sweep_path = tmp_path / "sweep.yaml"
    sweep_path.write_text(yaml.safe_dump({"name": "kinds", "version": 1, "recipes": [str(PROJECT / "recipes/none.yaml")],
                                          "constraints": templates, "baseline": templates[0]}))
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, evaluation="holdout")
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(spec), policy=str(policy)))
    splits = pipeline.prepare(inputs)
    outcome = run_sweep(load_sweep(sweep_path), splits, "group", 0, inputs.policy,
                              pipeline.decide_mode(inputs, splits)).outcome
    assert not outcome.skipped, outcome.skipped
    rows = {row["template"]: row for row in candidates_table(outcome)}
    assert {t: (r["kind"], r["needs at predict"]) for t, r in rows.items()} == {
        "lgbm-unconstrained": ("unconstrained", "features"), "lgbm-gs-dp": ("reduction", "features"),
        "lgbm-threshold-dp": ("post-processing", "features + sensitive"),
        "adversarial-dp": ("in-processing (adversarial)", "features")}
    assert rows["adversarial-dp"]["learner"] == "torch MLP [50] vs adversary [3]"
    assert rows["lgbm-gs-dp"]["learner"] == "lightgbm.LGBMClassifier"
    table = candidates_markdown(outcome)
    assert "| kind | needs at predict |" in table and "| in-processing (adversarial) | features |" in table
    assert "| post-processing | features + sensitive |" in table
    png, section = frontier_report(inputs.policy, "kinds", {}, outcome=outcome)
    assert png.startswith(b"\x89PNG") and "in-processing (adversarial)" in section


def test_lightgbm_template_through_the_remediation_flow(remediation_flow, registry_dir, tmp_path, prefect_server):
    """Generated data, LightGBM scores post-processed by ThresholdOptimizer: gated, reviewed,
    promoted, loaded back, and reproduced bit for bit from the registry's recorded inputs."""
    spec = write_dataset(tmp_path, "lgbm", {"a": (900, 0.45), "b": (500, 0.2)}, proxy=1.0, seed=5)
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)
    run = BackgroundRun(remediation_flow, dataset=str(spec), recipe="recipes/none.yaml",
                        constraint="constraints/lgbm-threshold-dp.yaml", policy=str(policy), requested_by="pytest",
                        review_poll_seconds=1)
    run.approve_and_finish("lightgbm checked")

    registry = Registry(registry_dir)
    entry, model = registry.load_champion("lgbm")
    assert entry.lineage.constraint.name == "lgbm-threshold-dp"
    assert type(model.scorer).__name__ == "LGBMClassifier" and model.needs_sensitive_at_predict
    test = make_splits(load_dataset(spec)).test
    decisions = model.predict(test.X, test.groups)
    assert set(np.unique(decisions)) <= {0, 1} and (decisions == test.y.to_numpy()).mean() > 0.6
    assert "lightgbm.LGBMClassifier" in (registry_dir / "lgbm" / "report.md").read_text()
    assert reproduce(registry, "lgbm", entry.version).matches


def test_the_built_in_gradient_boosting_stops_early_at_every_size_and_boosts_on_where_it_cannot_hold_out():
    """700 rows (below scikit-learn's 10,000 for 'auto'): early stopping, the same model as
    scikit-learn's own with it; a label of one row or 8 rows, where scikit-learn's raises: every
    round, the parameters as set."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from fairloop.remedy.learners import instantiate

    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 3))
    y = (X[:, 0] + rng.normal(size=700) > 0.5).astype(int)
    fitted = instantiate("hist_gradient_boosting", {"random_state": 0}).fit(X, y)
    plain = HistGradientBoostingClassifier(early_stopping=True, random_state=0).fit(X, y)
    assert fitted.do_early_stopping_ and fitted.n_iter_ == plain.n_iter_ < 100
    assert np.array_equal(fitted.predict_proba(X), plain.predict_proba(X))
    for rows, positives in ((700, 1), (8, 4)):
        labels = np.zeros(rows, dtype=int)
        labels[:positives] = 1
        with pytest.raises(ValueError):
            HistGradientBoostingClassifier(early_stopping=True, random_state=0).fit(X[:rows], labels)
        model = instantiate("hist_gradient_boosting", {"random_state": 0}).fit(X[:rows], labels, sample_weight=np.ones(rows))
        assert not model.do_early_stopping_ and model.n_iter_ == 100 and model.get_params()["early_stopping"] is True
