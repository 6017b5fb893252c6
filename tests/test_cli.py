"""The installed ``fairloop`` command: help everywhere, bad input -> exit 2 with a message naming
file and field, and nothing written to the registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT
from fairloop.serving.outcomes import ExitCode

COMMANDS = ["remediate", "approve", "reject", "models", "rollback", "audit", "server", "gate", "lineage", "reproduce",
            "stage", "monitor", "serve", "verify"]


def fairloop(*args: str, env: dict | None = None, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fairloop", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def isolated(tmp_path) -> dict:
    # An unreachable PREFECT_API_URL proves bad input is refused before any server is contacted.
    return {
        "FAIRLOOP_REGISTRY_DIR": str(tmp_path / "registry"),
        "FAIRLOOP_PROJECT_DIR": str(PROJECT),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
    }


def test_the_console_script_runs():
    result = fairloop("--help")
    assert result.returncode == 0, result.stderr
    assert all(command in result.stdout for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    from typer.testing import CliRunner

    from fairloop.cli import app

    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def broken_spec(tmp_path: Path, mutate) -> Path:
    spec = yaml.safe_load((PROJECT / "datasets" / "german.yaml").read_text())
    spec["files"][0]["path"] = str(PROJECT / "datasets" / spec["files"][0]["path"])
    mutate(spec)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["label"].update(column="no_such_column"), ["broken.yaml", "german.data.gz", "'no_such_column'", "label.column"]),
        (lambda s: s["files"][0].update(path="missing/nowhere.csv"), ["nowhere.csv", "data file not found", "files.path"]),
        (lambda s: s.pop("label"), ["broken.yaml", "field 'label'", "Field required"]),
        (lambda s: s["label"].update(positive=[]), ["broken.yaml", "field 'label.positive'"]),
        (lambda s: s["features"].update(numeric=["duration", "checking_status"], categorical=["purpose"]),
         ["non-numeric value", "checking_status", "'A11'"]),
        (lambda s: s["sensitive"][0]["values"].pop("A92"), ["'A92'", "sensitive.values", "personal_status"]),
    ],
    ids=["missing-label-column", "unknown-file", "no-label-field", "empty-positive", "text-in-numeric", "unmapped-sensitive"],
)
def test_broken_spec_is_bad_input_and_writes_nothing(tmp_path, isolated, mutate, expected):
    spec = broken_spec(tmp_path, mutate)
    result = fairloop("remediate", "--dataset", str(spec), env=isolated)
    assert result.returncode == ExitCode.BAD_INPUT, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    for fragment in expected:
        assert fragment in message, message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "registry").exists()


def test_unknown_recipe_file_is_bad_input(isolated, tmp_path):
    result = fairloop("remediate", "--dataset", "datasets/german.yaml", "--recipe", "recipes/nope.yaml", env=isolated)
    assert result.returncode == ExitCode.BAD_INPUT
    assert "recipes/nope.yaml" in result.stderr and "Recipe file not found" in result.stderr
    assert not (tmp_path / "registry").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--sweep", "constraints/sweeps/nope.yaml"], "constraints/sweeps/nope.yaml: SweepSpec file not found"),
    (["--sweep", "constraints/sweeps/default.yaml", "--constraint", "constraints/eg-dp.yaml"],
     "give either --sweep or --recipe/--constraint"),
])
def test_bad_sweep_options_are_bad_input(isolated, tmp_path, extra, expected):
    result = fairloop("remediate", "--dataset", "datasets/german.yaml", *extra, env=isolated)
    assert result.returncode == ExitCode.BAD_INPUT
    assert expected in " ".join(result.stderr.split())
    assert not (tmp_path / "registry").exists()


def test_models_on_an_empty_registry_says_so(isolated):
    result = fairloop("models", env=isolated)
    assert result.returncode == 0 and "No models" in result.stdout


def test_rollback_to_an_unknown_version_is_bad_input(isolated):
    result = fairloop("rollback", "adult", "--to", "v9", "--reviewer", "dana", "--reason", "test", env=isolated)
    assert result.returncode == ExitCode.BAD_INPUT and "no dataset 'adult'" in result.stderr


def test_audit_command_passes_on_german(isolated):
    result = fairloop("audit", "--dataset", "datasets/german.yaml", env=isolated)
    assert result.returncode == 0, result.stderr
    assert '"verdict"' in result.stdout


@pytest.fixture(scope="module")
def adult_models(tmp_path_factory):
    """A real unconstrained and a real DP-constrained model on an Adult subsample, as files."""
    import joblib

    from fairloop import pipeline

    inputs = pipeline.load_inputs(pipeline.RunParams(
        dataset=str(PROJECT / "datasets/adult.yaml"), constraint=str(PROJECT / "constraints/threshold-dp.yaml"),
        recipe=str(PROJECT / "recipes/none.yaml"), policy=str(PROJECT / "policies/default.yaml"), train_rows=3000))
    splits = pipeline.prepare(inputs)
    fitted = pipeline.train(inputs, splits, pipeline.decide_mode(inputs, splits))
    folder = tmp_path_factory.mktemp("models")
    for name, (model, _) in fitted.items():
        joblib.dump(model, folder / f"{name}.joblib")
    return folder


GATE_DATA = ["--data", str(PROJECT / "datasets/data/adult/adult.data.gz"), "--dataset", "datasets/adult.yaml"]


def test_gate_command_passes_a_fair_model_and_blocks_an_unfair_one(adult_models, tmp_path):
    from conftest import write_policy

    policy = write_policy(tmp_path, max_demographic_parity_difference=0.08, max_accuracy_drop_vs_baseline=0.05)
    fair = fairloop("gate", "--model", str(adult_models / "candidate.joblib"), "--baseline",
                    str(adult_models / "baseline.joblib"), "--policy", str(policy), "--trust", *GATE_DATA)
    assert fair.returncode == 0, fair.stdout + fair.stderr
    assert fair.stdout.count("│ pass ") == 2 and fair.stdout.rstrip().endswith("pass")  # both gates
    unfair = fairloop("gate", "--model", str(adult_models / "baseline.joblib"), "--policy", str(policy), "--trust",
                      *GATE_DATA)
    assert unfair.returncode == ExitCode.GATE_FAILED
    assert "blocked: demographic_parity_difference" in " ".join(unfair.stderr.split())


def test_gate_command_bad_inputs(adult_models, tmp_path):
    not_a_model = tmp_path / "model.joblib"
    not_a_model.write_text("hello")
    for model, expected in ((tmp_path / "missing.joblib", "model file not found"),
                            (not_a_model, "not a readable model file")):
        result = fairloop("gate", "--model", str(model), "--policy", "policies/default.yaml", "--trust", *GATE_DATA)
        assert result.returncode == ExitCode.BAD_INPUT and expected in result.stderr and str(model.name) in result.stderr
