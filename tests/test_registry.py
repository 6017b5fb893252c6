"""Promotion is atomic: a failure injected at any step leaves the previous champion intact; a
champion whose bytes differ from its record is refused, never unpickled."""

from __future__ import annotations

import pickle
import subprocess

import joblib
import numpy as np
import pytest

from fairloop.errors import BadInputError, IntegrityError, RegistryError
from fairloop.registry.store import ChampionChanged, Registry, file_sha256
from tiny_world import NAME, make_candidate, promote


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    """A real fitted candidate on a few hundred generated rows, with its input snapshot."""
    return make_candidate(tmp_path_factory.mktemp("tiny"))


def state_of(registry: Registry) -> dict:
    git = lambda *a: subprocess.run(["git", *a], cwd=registry.root, capture_output=True, text=True).stdout  # noqa: E731
    from dvc.repo import Repo

    return {
        "head": git("rev-parse", "HEAD"), "tags": git("tag").split(), "dirty": git("status", "--porcelain"),
        "dvc_status": Repo(str(registry.root)).status(), "champion": registry.champion(NAME).version,
        "model": file_sha256(registry.model_path(NAME)), "log": len(registry.audit_log()),
    }


@pytest.mark.parametrize("failing_step", ["dvc-add", "dvc-push", "git-add", "git-mktag", "git-update-ref"])
def test_a_failure_mid_promotion_leaves_the_old_champion(tmp_path, candidate, monkeypatch, failing_step):
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

        def git(self, *args, **kwargs):
            if args and args[0] == verb:
                crash()
            return original_git(self, *args, **kwargs)

        monkeypatch.setattr(Registry, "_git", git)
    with pytest.raises(OSError, match="injected failure"):
        promote(registry, candidate, "ben")
    monkeypatch.undo()
    if failing_step == "git-update-ref":  # sealed before publishing: the next operation finishes it
        assert registry.recover()[0]["detail"] == "finished an interrupted promote"
        assert [e.version for e in registry.history(NAME)] == ["v1", "v2"]
        assert registry.verify() == []
        return
    assert state_of(registry) == before
    # and the registry still works: the next promotion becomes v2
    assert promote(registry, candidate, "cat").version == "v2"
    assert state_of(registry)["tags"] == [f"{NAME}@v1", f"{NAME}@v2"]
    assert registry.verify() == []


def test_rollback_to_an_unknown_version_names_the_known_ones(tmp_path, candidate):
    registry = Registry(tmp_path / "registry")
    promote(registry, candidate, "ann")
    with pytest.raises(BadInputError, match=r"no version 'v7' \(versions: v1\)"):
        registry.rollback(NAME, "v7", reviewer="x", reason="test")
    with pytest.raises(BadInputError, match="already is the champion"):
        registry.rollback(NAME, "v1", reviewer="x", reason="test")
    with pytest.raises(BadInputError, match="no leading zero"):
        registry.rollback(NAME, "v01", reviewer="x", reason="test")
    with pytest.raises(BadInputError, match="not allowed"):
        registry.rollback("-german", "v1", reviewer="x", reason="test")


def test_a_git_repository_fairloop_did_not_create_is_refused(tmp_path, candidate):
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    (project / "work-in-progress.py").write_text("uncommitted work")
    with pytest.raises(RegistryError, match="did not create"):
        promote(Registry(project), candidate, "ann")
    assert (project / "work-in-progress.py").read_text() == "uncommitted work"
    assert subprocess.run(["git", "log"], cwd=project, capture_output=True).returncode != 0  # no commit made


class AlwaysPositive:
    """What a tamperer plants: predicts 1 for everyone."""

    def predict(self, matrix, **kwargs):
        return np.ones(len(matrix), dtype=int)

    def predict_proba(self, matrix, **kwargs):
        return np.column_stack([np.zeros(len(matrix)), np.ones(len(matrix))])


def test_a_tampered_champion_is_refused_and_reported(tmp_path, candidate):
    registry = Registry(tmp_path / "registry", tmp_path / "remote")
    promote(registry, candidate, "ann")
    promote(registry, candidate, "ben")
    model = registry.load_champion(NAME)[1]
    tampered = joblib.load(registry.model_path(NAME))
    tampered.estimator = AlwaysPositive()
    joblib.dump(tampered, registry.model_path(NAME))
    assert (tampered.predict(candidate["train"].drop(columns="label")) == 1).all()
    recorded = registry.champion(NAME).model_sha256
    with pytest.raises(IntegrityError, match=f"recorded {recorded}") as refused:
        registry.load_champion(NAME)
    assert str(registry.model_path(NAME)) in str(refused.value) and file_sha256(registry.model_path(NAME)) in str(refused.value)
    problems = registry.verify(NAME)
    assert [(p.version, p.path) for p in problems] == [("v2", str(registry.model_path(NAME)))]
    # a rollback restores recorded bytes (from the cache) and everything matches again
    registry.rollback(NAME, "v1", reviewer="dana", reason="v2 tampered")
    assert registry.verify() == [] and type(registry.load_champion(NAME)[1].estimator) is type(model.estimator)


def test_a_tampered_cache_object_is_restored_from_the_remote_on_rollback(tmp_path, candidate):
    registry = Registry(tmp_path / "registry", tmp_path / "remote")
    promote(registry, candidate, "ann")
    promote(registry, {**candidate, "train": candidate["train"].iloc[:-1]}, "ben")  # v2's snapshot differs
    v1 = registry.entry(NAME, "v1")
    train_cache = registry._cache_paths(f"refs/tags/{NAME}@v1", f"{NAME}/train.csv")[0]
    train_cache.chmod(0o644)
    train_cache.write_bytes(b"not the training set")
    assert [p.version for p in registry.verify(NAME)] == ["v1"]
    registry.rollback(NAME, "v1", reviewer="dana", reason="back to v1")  # the remote still has the right bytes
    assert file_sha256(registry.root / NAME / "train.csv") == v1.train_sha256
    assert registry.verify() == []  # and the cache holds the right bytes again
    assert registry.audit_log()[-1]["repaired_from_remote"] == [f"{NAME}/train.csv"]


def test_a_pickle_that_runs_code_is_never_loaded_from_the_registry(tmp_path, candidate):
    registry = Registry(tmp_path / "registry")
    promote(registry, candidate, "ann")
    witness = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(witness)],))

    registry.model_path(NAME).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(IntegrityError, match="refusing to use it"):
        registry.load_champion(NAME)
    assert not witness.exists()


def test_a_promotion_gated_against_a_replaced_champion_is_refused_and_logged(tmp_path, candidate):
    registry = Registry(tmp_path / "registry")
    assert promote(registry, candidate, "ann").version == "v1"
    approval = {"reviewer": "ben", "comment": "", "approved": True}
    with pytest.raises(ChampionChanged, match="changed from none to v1 while this run awaited review"):
        registry.promote(NAME, **candidate, approval=approval, gated_against=None)
    assert [e.version for e in registry.history(NAME)] == ["v1"]
    assert registry.audit_log()[-1]["action"] == "refused" and registry.audit_log()[-1]["reviewer"] == "ben"
    assert registry.promote(NAME, **candidate, approval=approval, gated_against="v1").lineage.parent == "v1"
