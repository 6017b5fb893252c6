"""kill -9 of a real promotion (and rollback) process at every step of its transaction: the
next registry operation finishes or undoes it, and the registry is consistent afterwards.

Checked after each kill: the champion is the old or the new version, never a mix; every file
of every version (working copy, DVC cache, remote) has its recorded sha256; versions are
unique and contiguous with correct parents; the next promotion and rollback succeed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pytest

from fairloop.registry.store import Registry
from tiny_world import NAME, promote, registry_with_two_versions

HERE = Path(__file__).resolve().parent
PROMOTE_STEPS = ["recovered", "journal-written", "model-written", "files-written", "dvc-added", "dvc-pushed", "staged",
                 "objects-written", "sealed", "published", "done"]
ROLLBACK_STEPS = ["recovered", "journal-written", "files-written", "dvc-checked-out", "staged", "objects-written",
                  "sealed", "published", "done"]
CHILD_TIMEOUT = 300  # generous: a busy machine


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with v1 and v2 (champion v2), and a candidate on disk for the child process."""
    base = tmp_path_factory.mktemp("crash")
    candidate, registry = registry_with_two_versions(base)
    joblib.dump({k: candidate[k] for k in ("model", "train", "metrics", "baseline_metrics")},
                base / "candidate" / "candidate.joblib")
    (base / "candidate" / "lineage.json").write_text(candidate["lineage"].model_dump_json())
    return {"base": base, "candidate": candidate}


def fresh_registry(world, tmp_path) -> Registry:
    for name in ("registry", "remote"):
        shutil.copytree(world["base"] / name, tmp_path / name, symlinks=True)
    return Registry(tmp_path / "registry", tmp_path / "remote")


def kill_at(registry: Registry, world, operation: str, step: str, *extra: str, delay: float = 0.0) -> str:
    """Run the operation in a child process and SIGKILL it at ``step`` (plus ``delay`` seconds
    of running on). Returns how the child ended: 'killed' or 'finished'."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "crash_child.py"), str(registry.root), str(registry.remote),
         str(world["base"] / "candidate"), operation, "never" if delay else step, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        for line in child.stdout:
            if line.strip() in (f"AT {step}", f"step {step}" if delay else None):
                time.sleep(delay)
                break
            if line.startswith("FINISHED") or time.monotonic() > deadline:
                break
        ended = "finished" if child.poll() == 0 else "killed"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        return ended
    finally:
        if child.poll() is None:
            child.kill()


def tags(registry: Registry) -> list[str]:
    return subprocess.run(["git", "tag"], cwd=registry.root, capture_output=True, text=True).stdout.split()


def check_consistent(registry: Registry, expected_versions: set[str], champions: set[str]) -> str:
    """The invariants after a crash (and recovery); returns the champion."""
    registry.recover()  # the next registry operation
    champion = registry.champion(NAME).version
    assert champion in champions
    versions = [e.version for e in registry.history(NAME)]
    assert versions == [f"v{n}" for n in range(1, len(versions) + 1)] and set(versions) <= expected_versions
    assert len(tags(registry)) == len(set(tags(registry))) == len(versions)
    assert registry.verify() == []  # every recorded sha256 matches; parents are the champions replaced
    status = subprocess.run(["git", "status", "--porcelain"], cwd=registry.root, capture_output=True, text=True)
    assert status.stdout == ""
    return champion


def check_still_works(registry: Registry, world) -> None:
    before = [e.version for e in registry.history(NAME)]
    entry = promote(registry, world["candidate"], "next")
    assert entry.version == f"v{len(before) + 1}"
    registry.rollback(NAME, "v1", reviewer="dana", reason="after the crash")
    assert registry.champion(NAME).version == "v1"
    assert registry.verify() == []


@pytest.mark.parametrize("step", PROMOTE_STEPS)
def test_kill_9_during_promotion(world, tmp_path, step):
    registry = fresh_registry(world, tmp_path)
    assert kill_at(registry, world, "promote", step) == "killed"
    champion = check_consistent(registry, {"v1", "v2", "v3"}, {"v2", "v3"})
    # before sealing the transaction is undone, after it is finished
    sealed = PROMOTE_STEPS.index(step) >= PROMOTE_STEPS.index("sealed")
    assert champion == ("v3" if sealed else "v2")
    if champion == "v3":
        assert registry.entry(NAME, "v3").lineage.parent == "v2"
    journaled = "journal-written" in PROMOTE_STEPS[:PROMOTE_STEPS.index(step) + 1] and step != "done"
    assert any(r["action"] == "recover" for r in registry.audit_log()) == journaled
    check_still_works(registry, world)


@pytest.mark.parametrize("step", ROLLBACK_STEPS)
def test_kill_9_during_rollback(world, tmp_path, step):
    registry = fresh_registry(world, tmp_path)
    assert kill_at(registry, world, "rollback", step, "v1") == "killed"
    champion = check_consistent(registry, {"v1", "v2"}, {"v1", "v2"})
    sealed = ROLLBACK_STEPS.index(step) >= ROLLBACK_STEPS.index("sealed")
    assert champion == ("v1" if sealed else "v2")
    promote(registry, world["candidate"], "next")
    assert registry.champion(NAME).lineage.parent == champion
    assert registry.verify() == []


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_kill_9_at_an_arbitrary_moment_of_promotion(world, tmp_path, delay):
    """Killed while DVC or git is mid-operation (not at a step boundary)."""
    registry = fresh_registry(world, tmp_path)
    kill_at(registry, world, "promote", "files-written", delay=delay)
    check_consistent(registry, {"v1", "v2", "v3"}, {"v2", "v3"})
    check_still_works(registry, world)


def test_stale_git_and_dvc_locks_are_cleared_and_logged(world, tmp_path):
    registry = fresh_registry(world, tmp_path)
    (registry.root / ".git" / "index.lock").write_text("")
    (registry.root / ".dvc" / "tmp").mkdir(exist_ok=True)
    (registry.root / ".dvc" / "tmp" / "rwlock").write_text("")
    assert promote(registry, world["candidate"], "cat").version == "v3"
    registry.rollback(NAME, "v2", reviewer="dana", reason="locks test")
    (note,) = [r for r in registry.audit_log() if r["action"] == "recover"]
    assert set(note["paths"]) == {".git/index.lock", ".dvc/tmp/rwlock"}
    assert registry.verify() == []
