"""Lineage and rollback across several champions, reproduction, and `dvc repro` parity, in a
real temp git + DVC registry fed by real flow runs on the Prefect test server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, BackgroundRun, write_policy
from fairloop.serving.outcomes import Outcome
from fairloop.registry.store import Registry, file_sha256
from fairloop.registry.reproduce import reproduce
from fairloop.serving.runs import submit_review

pytestmark = pytest.mark.usefixtures("prefect_server")
VERSIONS = {  # three champions that differ in recipe and seed
    "v1": {"recipe": "recipes/none.yaml", "seed": 0},
    "v2": {"recipe": "recipes/oversample-base-rates.yaml", "seed": 1},
    "v3": {"recipe": "recipes/reweigh.yaml", "seed": 2},
}
COMMON = {"dataset": "datasets/adult.yaml", "constraint": "constraints/threshold-dp.yaml", "train_rows": 3000}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, remediation_flow, prefect_server):
    base = tmp_path_factory.mktemp("lineage")
    policy = write_policy(base, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_champion=0.2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRLOOP_PROJECT_DIR", str(PROJECT))
        patch.setenv("FAIRLOOP_REGISTRY_DIR", str(base / "registry"))
        patch.setenv("FAIRLOOP_REGISTRY_REMOTE", str(base / "remote"))
        patch.chdir(PROJECT)
        for version, knobs in VERSIONS.items():
            run = BackgroundRun(remediation_flow, **COMMON, **knobs, policy=str(policy), requested_by="ci",
                                review_poll_seconds=1)
            paused = run.wait_paused()
            submit_review(paused.id, {"approve": True, "reviewer": f"reviewer-{version}", "comment": ""})
            assert run.finish().name == Outcome.PROMOTED.value
        yield Registry(base / "registry", base / "remote")


def test_three_promotions_form_a_lineage(registry):
    history = registry.history("adult")
    assert [e.version for e in history] == ["v1", "v2", "v3"]
    assert [e.lineage.parent for e in history] == [None, "v1", "v2"]
    assert [e.lineage.seed for e in history] == [0, 1, 2]
    assert [e.lineage.recipe.name for e in history] == ["none", "oversample-base-rates", "reweigh"]
    assert len({e.model_sha256 for e in history}) == 3
    for entry in history:
        assert entry.lineage.packages["fairlearn"].startswith("0.15")
        assert entry.lineage.code.git_commit
        assert entry.approval["reviewer"] == f"reviewer-{entry.version}"
    from dvc.repo import Repo

    assert Repo(str(registry.root)).status() == {}


def test_rollback_to_v1_restores_model_and_data_byte_identical(registry):
    v1 = registry.entry("adult", "v1")
    registry.rollback("adult", "v1", reviewer="dana", reason="v3 regressed")
    assert registry.champion("adult").version == "v1"
    recorded = Registry.recorded_hashes(v1)
    assert set(recorded) == {"adult/model.joblib", "adult/train.csv", "adult/inputs/data/train-adult.data.gz",
                             "adult/inputs/data/test-adult.test.gz"}
    for path, sha in recorded.items():
        assert file_sha256(registry.root / path) == sha, path
    # the raw data restored is the bundled data, byte for byte
    assert file_sha256(registry.root / "adult/inputs/data/train-adult.data.gz") == file_sha256(
        PROJECT / "datasets/data/adult/adult.data.gz")
    from dvc.repo import Repo

    assert Repo(str(registry.root)).status() == {}
    assert registry.audit_log()[-1]["action"] == "rollback"
    # and forward again to v3
    registry.rollback("adult", "v3", reviewer="dana", reason="v1 was a test")
    assert file_sha256(registry.model_path("adult")) == registry.entry("adult", "v3").model_sha256


def test_reproduce_v2_gives_identical_metrics_and_training_set(registry):
    result = reproduce(registry, "adult", "v2")
    assert result.training_set_identical
    assert result.reproduced == result.recorded
    assert result.matches


def test_lineage_command_prints_the_record(registry):
    env = {**os.environ, "FAIRLOOP_REGISTRY_DIR": str(registry.root)}
    out = subprocess.run([sys.executable, "-m", "fairloop", "lineage", "adult", "v2"], capture_output=True,
                         text=True, env=env, cwd=PROJECT, timeout=120)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["version"] == "v2" and record["lineage"]["parent"] == "v1"
    assert record["lineage"]["recipe"]["sha256"] and record["lineage"]["dataset"]["data_sha256"]


def test_dvc_repro_reaches_the_flows_metrics(registry, tmp_path):
    """Same params through `dvc repro` (separate processes, files between stages) as v3 through the flow."""
    v3 = registry.entry("adult", "v3")
    work = tmp_path / "project"
    work.mkdir()
    for name in ("dvc.yaml", "datasets", "recipes", "constraints", "policies", "src", ".dvc", ".gitignore"):
        source = PROJECT / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, work / name)
    params = {"remediation": {**COMMON, **VERSIONS["v3"], "policy": "policies/default.yaml", "sensitive": None}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for command in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "project"]):
        subprocess.run(command, cwd=work, check=True, env=env)
    dvc = [sys.executable, "-m", "dvc"]
    repro = subprocess.run([*dvc, "repro"], cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    metrics = json.loads((work / "pipeline" / "metrics.json").read_text())
    assert metrics["candidate"] == v3.metrics
    assert metrics["baseline"] == v3.baseline_metrics
    status = subprocess.run([*dvc, "status"], cwd=work, capture_output=True, text=True, env=env)
    assert "up to date" in status.stdout

    # an experiment with another recipe reruns from augment on and changes the candidate
    exp = subprocess.run([*dvc, "exp", "run", "-S", "remediation.recipe=recipes/none.yaml"], cwd=work,
                         capture_output=True, text=True, env=env, timeout=600)
    assert exp.returncode == 0, exp.stdout + exp.stderr
    assert "Running stage 'prepare'" not in exp.stdout and "Running stage 'augment'" in exp.stdout
    assert json.loads((work / "pipeline" / "metrics.json").read_text())["candidate"] != v3.metrics


def test_concurrent_promotions_both_complete_consistently(registry, tmp_path):
    v1 = registry.entry("adult", "v1")
    inputs = registry.materialize_inputs("adult", "v1", tmp_path / "inputs")
    model = registry.load_champion("adult")[1]
    train = __import__("pandas").read_csv(registry.root / "adult" / "train.csv")
    errors = []

    def promote(reviewer):
        try:
            registry.promote(
                "adult", model, train, metrics=v1.metrics, baseline_metrics=v1.baseline_metrics, gates=v1.gates,
                lineage=v1.lineage, approval={"reviewer": reviewer, "comment": "", "approved": True},
                documents=lambda version: {"report.md": "concurrent"}, inputs_dir=inputs,
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(name,)) for name in ("ann", "ben")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    history = registry.history("adult")
    assert [e.version for e in history] == ["v1", "v2", "v3", "v4", "v5"]
    assert {history[3].approval["reviewer"], history[4].approval["reviewer"]} == {"ann", "ben"}
    assert registry.champion("adult").version == "v5"
    assert subprocess.run(["git", "status", "--porcelain"], cwd=registry.root, capture_output=True, text=True).stdout == ""
    from dvc.repo import Repo

    assert Repo(str(registry.root)).status() == {}
