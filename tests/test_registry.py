"""Promotion is atomic: a failure injected at any step leaves the previous champion intact."""

from __future__ import annotations

import subprocess

import pytest

from conftest import PROJECT
from fairloop import pipeline
from fairloop.errors import RegistryError
from fairloop.registry import Registry, file_sha256


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    """A real fitted candidate on an Adult subsample, with its input snapshot."""
    params = pipeline.RunParams(dataset=str(PROJECT / "datasets/adult.yaml"), recipe=str(PROJECT / "recipes/none.yaml"),
                                constraint=str(PROJECT / "constraints/threshold-dp.yaml"),
                                policy=str(PROJECT / "policies/default.yaml"), train_rows=2000)
    inputs = pipeline.load_inputs(params)
    splits = pipeline.prepare(inputs)
    augmented, _ = pipeline.augment(inputs, splits)
    fitted = pipeline.train(inputs, splits, augmented)
    evaluations = pipeline.evaluate_models({k: m for k, (m, _) in fitted.items()}, splits.test, inputs.sensitive)
    snapshot = tmp_path_factory.mktemp("inputs")
    copies = pipeline.snapshot_inputs(inputs, snapshot)
    return {
        "model": fitted["candidate"][0], "train": augmented.to_frame("income"),
        "metrics": evaluations["candidate"].metrics, "baseline_metrics": evaluations["baseline"].metrics,
        "gates": [], "lineage": {"dataset": {"files": inputs.loaded.files_sha256}, "inputs_spec_files": copies,
                                 "sensitive": "sex", "seed": 0, "train_rows": 2000},
        "documents": lambda version: {"report.md": f"report {version}"}, "inputs_dir": snapshot,
    }


def promote(registry: Registry, candidate: dict, reviewer: str):
    return registry.promote("adult", **candidate, approval={"reviewer": reviewer, "comment": "", "approved": True})


def state_of(registry: Registry) -> dict:
    git = lambda *a: subprocess.run(["git", *a], cwd=registry.root, capture_output=True, text=True).stdout  # noqa: E731
    from dvc.repo import Repo

    return {
        "head": git("rev-parse", "HEAD"), "tags": git("tag").split(), "dirty": git("status", "--porcelain"),
        "dvc_status": Repo(str(registry.root)).status(), "champion": registry.champion("adult").version,
        "model": file_sha256(registry.model_path("adult")), "log": len(registry.audit_log()),
    }


@pytest.mark.parametrize("failing_step", ["dvc-add", "dvc-push", "git-commit", "git-tag"])
def test_a_crash_mid_promotion_leaves_the_old_champion(tmp_path, candidate, monkeypatch, failing_step):
    registry = Registry(tmp_path / "registry", tmp_path / "remote")
    promote(registry, candidate, "ann")
    before = state_of(registry)
    assert before["champion"] == "v1" and before["dirty"] == "" and before["dvc_status"] == {}

    from dvc.repo import Repo

    original_git = Registry._git

    def crash(*args, **kwargs):
        raise OSError(f"injected failure at {failing_step}")

    if failing_step == "dvc-add":
        monkeypatch.setattr(Repo, "add", crash)
    elif failing_step == "dvc-push":
        monkeypatch.setattr(Repo, "push", crash)
    else:
        verb = failing_step.removeprefix("git-")

        def git(self, *args, check=True):
            if args and args[0] == verb:
                crash()
            return original_git(self, *args, check=check)

        monkeypatch.setattr(Registry, "_git", git)
    with pytest.raises(OSError, match="injected failure"):
        promote(registry, candidate, "ben")
    monkeypatch.undo()
    assert state_of(registry) == before
    # and the registry still works: the next promotion becomes v2
    assert promote(registry, candidate, "cat").version == "v2"
    assert state_of(registry)["tags"] == ["adult@v1", "adult@v2"]


def test_rollback_to_an_unknown_version_names_the_known_ones(tmp_path, candidate):
    registry = Registry(tmp_path / "registry")
    promote(registry, candidate, "ann")
    with pytest.raises(RegistryError, match=r"no version 'v7' \(versions: v1\)"):
        registry.rollback("adult", "v7", reviewer="x", reason="")


def test_a_git_repository_fairloop_did_not_create_is_refused(tmp_path, candidate):
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    (project / "work-in-progress.py").write_text("uncommitted work")
    with pytest.raises(RegistryError, match="did not create"):
        promote(Registry(project), candidate, "ann")
    assert (project / "work-in-progress.py").read_text() == "uncommitted work"
    assert subprocess.run(["git", "log"], cwd=project, capture_output=True).returncode != 0  # no commit made
