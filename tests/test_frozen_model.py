"""A fitted model you cannot retrain (remediate --model): the counterfactual guardrail and prefit
ThresholdOptimizer on a frozen "vendor" model, through the real flow (Prefect test server, git +
DVC registry), and bad --model input refused before anything runs.

The vendor model is fitted once on generated rows the audit data does not contain (another seed
of the same world), where group b has the higher base rate and feature x3 reveals the group: the
model leans on x3, so its decisions differ by group more than the features it should use explain."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from fairlearn.metrics import demographic_parity_difference
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from conftest import PROJECT, BackgroundRun, write_policy
from fairloop import pipeline
from fairloop.cli import app
from fairloop.remedy.constraints import load_constraint_template
from fairloop.remedy.frozen import FROZEN_LEARNER
from fairloop.serving.outcomes import ExitCode, Outcome
from fairloop.gates.policy import load_policy
from fairloop.registry.store import Registry, file_sha256
from fairloop.serving.reruns import plan_rerun
from fairloop.review.packet import load_packet
from fairloop.serving.runs import submit_review
from synthetic import write_dataset

WORLD = {"a": (1000, 0.2), "b": (1000, 0.6)}
GUARDRAIL = "constraints/counterfactual-guardrail.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("frozen")
    spec = write_dataset(base / "audit", "biased", WORLD, proxy=2.5, seed=1)
    vendor_rows = pd.read_csv(write_dataset(base / "vendor", "vendor", WORLD, proxy=2.5, seed=7).with_suffix(".csv"))
    features = ["x1", "x2", "x3", "colour"]
    vendor = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["colour"]), remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=50, random_state=0),
    )
    with threadpool_limits(limits=1):  # OpenMP threads spin for long on a busy machine; one is plenty here
        vendor.fit(vendor_rows[features], vendor_rows["label"])
    sio.dump(vendor, base / "vendor.skops")
    joblib.dump(vendor, base / "vendor.joblib")
    return {"base": base, "spec": spec, "skops": base / "vendor.skops", "joblib": base / "vendor.joblib"}


def frozen_run(world, base_model: str):
    """The audit data's splits and the frozen model with what its guardrail varies (as a run has them)."""
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(world["spec"]), base_model=base_model))
    splits = pipeline.prepare(inputs)
    return splits, pipeline.frozen_base(inputs, pipeline.audit(inputs, splits))


def fit(template: str, splits, frozen, seed: int = 0):
    return pipeline.fit_model(splits.train, load_constraint_template(template), "group", seed, frozen=frozen)[0]


def test_guardrail_reduces_the_frozen_models_disparity_deterministically(world):
    splits, frozen = frozen_run(world, str(world["skops"]))
    assert frozen.varied == ("x3",)  # the audit's flagged proxy; the group is not a model input here
    guarded, original = fit(GUARDRAIL, splits, frozen), fit("constraints/unconstrained.yaml", splits, frozen)
    test, groups = splits.test.X, splits.test.groups["group"]
    whole = guarded.predictions(test)  # no sensitive feature at prediction time
    before = demographic_parity_difference(splits.test.y, original.predict(test), sensitive_features=groups)
    after = demographic_parity_difference(splits.test.y, whole.decisions, sensitive_features=groups)
    assert before > 0.2 and after < before / 2
    assert (whole.decisions == splits.test.y.to_numpy()).mean() > 0.6
    # a row's decision does not depend on its batch
    alone = guarded.predictions(test.iloc[[7]])
    assert alone.scores[0] == whole.scores[7] and alone.decisions[0] == whole.decisions[7]
    # the same seed gives the same decisions; another seed draws other counterfactual values
    again = fit(GUARDRAIL, splits, frozen)
    np.testing.assert_array_equal(again.predictions(test).scores, whole.scores)
    np.testing.assert_array_equal(again.predict(test), whole.decisions)
    assert not np.array_equal(fit(GUARDRAIL, splits, frozen, seed=1).predictions(test).scores, whole.scores)
    # deployable as one object: pickled as the registry stores it, it predicts the same
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(guarded)).predict(test), whole.decisions)


def test_a_scoring_callable_is_guarded_and_pickled_by_import_path(world):
    splits, frozen = frozen_run(world, "scoring_clients:proxy_rule")
    guarded = fit(GUARDRAIL, splits, frozen)
    stored = pickle.dumps(guarded)
    assert b"proxy_rule" in stored and b"scipy" not in stored  # the path, not the function's code
    restored = pickle.loads(stored)
    np.testing.assert_array_equal(restored.predict(splits.test.X), guarded.predict(splits.test.X))


@pytest.mark.usefixtures("prefect_server")
def test_frozen_model_guarded_and_thresholded_promoted_rolled_back_and_reproduced(
        world, remediation_flow, registry_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRLOOP_STATE_DIR", str(tmp_path / "state"))
    common = {"dataset": str(world["spec"]), "requested_by": "pytest", "review_poll_seconds": 1}
    # v1: the frozen-model sweep; a policy that forbids the sensitive feature at prediction time
    blind = write_policy(tmp_path, "blind", max_demographic_parity_difference=0.15, max_accuracy_drop_vs_baseline=0.2,
                         allow_sensitive_at_predict=False)
    run = BackgroundRun(remediation_flow, **common, policy=str(blind), sweep_file="constraints/sweeps/frozen-model.yaml",
                        base_model=str(world["skops"]))
    paused = run.wait_paused()
    packet = load_packet(tmp_path / "state" / "runs" / str(paused.id))
    kinds = {c.method: c for c in packet.sweep.candidates}
    assert set(kinds) == {"counterfactual_guardrail", "threshold_optimizer"}
    assert not kinds["counterfactual_guardrail"].needs_sensitive_at_predict
    assert all(c.learner == FROZEN_LEARNER for c in packet.sweep.candidates)
    assert packet.sweep.chosen == "none+counterfactual-guardrail" and packet.base_model.kind == "skops"
    submit_review(paused.id, {"approve": True, "reviewer": "alice", "comment": "guarded"})
    assert run.finish().name == Outcome.PROMOTED.value

    registry = Registry(registry_dir)
    v1, champion = registry.load_champion("biased")
    assert v1.lineage.base_model.sha256 == file_sha256(world["skops"]) and not v1.lineage.base_model.retrained
    assert champion.method == "counterfactual_guardrail" and not champion.needs_sensitive_at_predict
    assert v1.baseline_metrics["demographic_parity_difference"] > 0.2 > v1.metrics["demographic_parity_difference"]
    card = (registry_dir / "biased" / "model_card.md").read_text()
    assert "**not retrained**" in card and file_sha256(world["skops"]) in card
    assert "Base model not retrained" in (registry_dir / "biased" / "report.md").read_text()

    # v2: prefit ThresholdOptimizer on the same model given as a trusted pickle
    aware = write_policy(tmp_path, "aware", max_demographic_parity_difference=0.2, max_accuracy_drop_vs_baseline=0.2)
    run = BackgroundRun(remediation_flow, **common, policy=str(aware), constraint="constraints/threshold-dp.yaml",
                        base_model=str(world["joblib"]), trust_base_model=True)
    submit_review(run.wait_paused().id, {"approve": True, "reviewer": "alice", "comment": "thresholds"})
    assert run.finish().name == Outcome.PROMOTED.value
    v2 = registry.champion("biased")
    assert v2.version == "v2" and v2.lineage.base_model.kind == "pickle"

    registry.rollback("biased", "v1", reviewer="dana", reason="the guardrail needs no group at prediction time")
    assert file_sha256(registry.model_path("biased")) == v1.model_sha256
    assert registry.verify("biased") == []
    # a drift rerun of the champion post-processes the same base model again, never retrains it
    plan = plan_rerun("biased", load_policy(blind).monitoring_settings, registry, tmp_path / "rerun",
                      recipe="recipes/none.yaml", constraint="constraints/gs-dp.yaml", sweep_file=None)
    assert file_sha256(Path(plan.base_model)) == plan.base_model_sha256 == v1.lineage.base_model.sha256
    assert "not retrained" in plan.source
    for version in ("v1", "v2"):
        result = CliRunner().invoke(app, ["reproduce", "biased", version])
        assert result.exit_code == 0, result.output
        assert "reproduced" in result.output


REMEDIATE = ["remediate", "--policy", "policies/default.yaml"]


def snapshot(*folders):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if folder.is_dir() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", [
    "missing file", "directory", "unknown format", "not a skops file", "untrusted pickle", "not a model",
    "no module", "no attribute", "not callable", "wrong length", "not probabilities", "retraining template",
    "retraining sweep",
])
def test_bad_base_model_is_refused_before_anything_runs(world, tmp_path, monkeypatch, case):
    base = world["base"]
    (base / "notes.txt").write_text("hello\n")
    (base / "garbage.skops").write_bytes(b"not a zip")
    joblib.dump({"weights": [1, 2]}, base / "dict.joblib")
    cases = {
        "missing file": (["--model", str(base / "nope.skops")], "model file not found", "nope.skops"),
        "directory": (["--model", str(base)], "is a directory"),
        "unknown format": (["--model", str(base / "notes.txt")], "unknown model file format '.txt'"),
        "not a skops file": (["--model", str(base / "garbage.skops")], "not a readable skops file", "garbage.skops"),
        "untrusted pickle": (["--model", str(world["joblib"])], "Pass --trust", "vendor.joblib"),
        "not a model": (["--model", str(base / "dict.joblib"), "--trust"], "holds a dict", "no predict_proba"),
        "no module": (["--model", "no_such_module:score"], "cannot import module 'no_such_module'"),
        "no attribute": (["--model", "scoring_clients:nothing"], "has no attribute 'nothing'"),
        "not callable": (["--model", "scoring_clients:NOT_CALLABLE"], "is a int, not a callable"),
        "wrong length": (["--model", "scoring_clients:one_score_too_many"], "shape (51,) for 50 rows"),
        "not probabilities": (["--model", "scoring_clients:log_odds"], "not probabilities in [0, 1]"),
        "retraining template": (["--model", str(world["skops"]), "--constraint", "constraints/gs-dp.yaml"],
                                "template 'gs-dp' (grid_search) retrains the model"),
        "retraining sweep": (["--model", str(world["skops"]), "--sweep", "constraints/sweeps/default.yaml"],
                             "retrains the model", "recipe 'reweigh' changes the training rows"),
    }
    args, *words = cases[case]
    for name, value in (("FAIRLOOP_REGISTRY_DIR", tmp_path / "registry"), ("FAIRLOOP_STATE_DIR", tmp_path / "state"),
                        ("FAIRLOOP_PROJECT_DIR", PROJECT), ("PREFECT_API_URL", "http://127.0.0.1:9/api"),
                        ("COLUMNS", "250")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(PROJECT)
    before = snapshot(tmp_path, base)
    result = CliRunner().invoke(app, [*REMEDIATE, "--dataset", str(world["spec"]), *args])
    text = " ".join((result.output + (result.stderr if result.stderr_bytes is not None else "")).split())
    assert result.exit_code == ExitCode.BAD_INPUT, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text
    for word in words:
        assert word in text, f"{word!r} not in: {text}"
    assert snapshot(tmp_path, base) == before, "stray writes"
