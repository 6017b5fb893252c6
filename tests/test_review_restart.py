"""A review outlives its machine (issue 28): runs started by `fairloop remediate` run on a worker of
the project's work pool; awaiting review they are suspended (no process of theirs is alive); a
kill -9 of the worker and the server loses nothing; the approval resumes the run on the next
worker, which promotes the very candidate reviewed (sha256) without fitting again. Real
`fairloop` commands, a real `prefect server start` and `prefect worker start`, generated data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import API_TIMEOUT, PROJECT, isolated_env, write_policy
from synthetic import write_dataset

from fairloop.serving.progress import AWAIT_REVIEW, PROGRESS_KEY, stage_percent

COMMAND_TIMEOUT = 600  # generous: a busy machine
STARTED = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("restart")
    env = isolated_env(base)
    # the server's expiry service looks every second (default 5 s): the expiry test waits less
    env["PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS"] = "1"
    spec = write_dataset(base / "data", "restart", {"a": (300, 0.4), "b": (300, 0.25)}, seed=3)
    policy = write_policy(base, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.5,
                          approval={"timeout_seconds": 3600, "reviewers": []})
    world = {"base": base, "env": env, "spec": spec, "policy": policy}
    try:
        yield world
    finally:
        fairloop(world, "server", "--stop")


def fairloop(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairloop", *args], env=world["env"], cwd=PROJECT,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def flat(result) -> str:
    return " ".join((result.stdout + result.stderr).split())


def api(world) -> str:
    return f"http://127.0.0.1:{world['env']['FAIRLOOP_SERVER_PORT']}/api"


def run_state(world, run_id: str) -> tuple[str, str]:
    state = httpx.get(f"{api(world)}/flow_runs/{run_id}", timeout=API_TIMEOUT).raise_for_status().json()["state"]
    return state["name"], state["message"] or ""


def is_ended(world, run_id: str) -> bool:
    state = httpx.get(f"{api(world)}/flow_runs/{run_id}", timeout=API_TIMEOUT).raise_for_status().json()["state"]
    return state["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


def wait_for(predicate, what: str, timeout: float = COMMAND_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def start_run(world, *args: str, policy: Path | None = None) -> str:
    """`fairloop remediate --no-wait` returns once the run exists; the worker takes it on (runs
    started one after another execute at the same time)."""
    started = fairloop(world, "remediate", "--dataset", str(world["spec"]), "--constraint",
                       "constraints/threshold-dp.yaml", "--policy", str(policy or world["policy"]), "--no-wait", *args)
    assert started.returncode == 0, flat(started)
    return STARTED.search(started.stdout).group(1)


def await_review(world, *run_ids: str) -> None:
    wait_for(lambda: all(run_state(world, run_id)[0] == "Suspended" for run_id in run_ids),
             f"runs {', '.join(run_ids)} to await review")


def start_suspended_run(world, *args: str) -> str:
    run_id = start_run(world, *args)
    await_review(world, run_id)
    return run_id


def audit(world) -> list[dict]:
    from fairloop.registry.store import Registry

    return Registry(world["base"] / "registry").audit_log()


def flow_processes(run_ids: set[str]) -> list[psutil.Process]:
    """Processes executing one of these flow runs (a worker's flow process carries its run id in its
    environment)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("PREFECT__FLOW_RUN_ID") in run_ids:
                found.append(process)
        except psutil.Error:
            continue
    return found


def recorded_pid(world, name: str) -> int:
    return int((world["base"] / "state" / name).read_text().split()[0])


def task_runs(world, run_id: str) -> list[dict]:
    body = {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200}
    return httpx.post(f"{api(world)}/task_runs/filter", json=body, timeout=API_TIMEOUT).raise_for_status().json()


def progress_bars(world, run_id: str) -> list[tuple[float, str]]:
    """(percent, description) of each progress artifact of the run: one, resumed or not."""
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": [PROGRESS_KEY]}}}
    found = httpx.post(f"{api(world)}/artifacts/filter", json=body, timeout=API_TIMEOUT).raise_for_status().json()
    return [(artifact["data"], artifact["description"]) for artifact in found]


def assert_bar_ended(world, run_id: str) -> None:
    """The run's one bar reads its final state, as the run page does: not "awaiting review"."""
    name, message = run_state(world, run_id)
    assert progress_bars(world, run_id) == [(100.0, f"{name}: {message}"[:200])]


def test_a_suspended_review_survives_kill_9_of_worker_and_server_and_promotes_the_reviewed_candidate(world):
    assert fairloop(world, "server").returncode == 0
    run_id = start_suspended_run(world)
    wait_for(lambda: not flow_processes({run_id}), "the suspended run's flow process to exit", timeout=120)
    packet = json.loads((world["base"] / "state" / "runs" / run_id / "review.json").read_text())
    assert len(packet["candidate_sha256"]) == 64
    assert progress_bars(world, run_id) == [(stage_percent(AWAIT_REVIEW), "gates passed: awaiting review")]

    for pid_file in ("prefect-worker.pid", "prefect-server.pid"):  # every process fairloop started: kill -9
        os.killpg(recorded_pid(world, pid_file), signal.SIGKILL)
    wait_for(lambda: not _answers(world), "the server to die")
    stopped = fairloop(world, "server", "--stop")  # nothing left to stop: says so, cleanly
    assert stopped.returncode == 0 and "Traceback" not in flat(stopped), flat(stopped)

    assert fairloop(world, "server").returncode == 0  # same database: the run is still suspended
    assert run_state(world, run_id)[0] == "Suspended"
    approved = fairloop(world, "approve", run_id, "--reviewer", "alice", "--comment", "after kill -9")
    assert approved.returncode == 0 and "Promoted" in approved.stdout, flat(approved)
    assert "Traceback" not in flat(approved)

    from fairloop.registry.store import Registry

    entry = Registry(world["base"] / "registry").champion("restart")
    assert entry.model_sha256 == packet["candidate_sha256"]  # what the reviewer saw is what was promoted
    promoted = [r for r in audit(world) if r["action"] == "promote" and r["run_id"] == run_id]
    assert len(promoted) == 1 and promoted[0]["reviewer"] == "alice"
    assert_bar_ended(world, run_id)  # the resumed process carried on with the bar the first one made
    # no refit: the fitting step ran once; the resumed execution read its stored result
    retrain = [t for t in task_runs(world, run_id) if t["name"].startswith("retrain")]
    executed = [t for t in retrain if t["state"]["name"] == "Completed"]
    assert len(executed) == 1 and any(t["state"]["name"] == "Cached" for t in retrain), [t["state"] for t in retrain]


def _answers(world) -> bool:
    try:
        httpx.get(f"{api(world)}/health", timeout=5)
        return True
    except httpx.HTTPError:
        return False


def test_three_suspended_reviews_hold_no_process_and_end_promoted_rejected_expired(world, tmp_path):
    assert fairloop(world, "server").returncode == 0
    approving, rejecting = start_run(world), start_run(world)
    expiring = start_run(world, "--approval-timeout", "45")  # its audit line below shows it paused for 45 s
    await_review(world, approving, rejecting)
    runs = {approving, rejecting, expiring}
    wait_for(lambda: not flow_processes(runs), "every suspended run's process to exit", timeout=120)

    approved = fairloop(world, "approve", approving, "--reviewer", "alice")
    assert approved.returncode == 0, flat(approved)
    rejected = fairloop(world, "reject", rejecting, "--reviewer", "bob", "--comment", "not this one")
    assert rejected.returncode == 4, flat(rejected)
    wait_for(lambda: is_ended(world, expiring), "the review to expire", timeout=COMMAND_TIMEOUT)
    listed = fairloop(world, "models")
    assert listed.returncode == 0, flat(listed)
    # any command that lists runs writes the expiry down: the first one after it (on a busy machine
    # the expiry may come while approve or reject runs), and that one only
    told = [result for result in (approved, rejected, listed) if f"Run {expiring} expired" in flat(result)]
    assert len(told) == 1, [flat(result) for result in (approved, rejected, listed)]
    again = fairloop(world, "models")  # once
    assert again.returncode == 0 and f"Run {expiring} expired" not in flat(again), flat(again)

    assert run_state(world, approving)[0] == "Promoted"
    assert run_state(world, rejecting)[0] == "Rejected"
    assert run_state(world, expiring)[0] == "Expired"
    for run_id in runs:  # the expired one's by the command that recorded its expiry
        assert_bar_ended(world, run_id)
    outcomes = {(r["run_id"], r["action"]) for r in audit(world) if r["run_id"] in runs}
    assert outcomes == {(approving, "promote"), (rejecting, "reject"), (expiring, "expired")}
    assert [r["timeout_seconds"] for r in audit(world) if r["action"] == "expired"] == [45]
