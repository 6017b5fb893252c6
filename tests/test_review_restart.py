"""A review outlives a Prefect server restart, and a run whose flow process died ends in a named
state: real `fairloop` commands against a real `prefect server start` that the test stops and
starts again on the same database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import PROJECT, isolated_env, write_policy
from synthetic import write_dataset

COMMAND_TIMEOUT = 600  # generous: a busy machine
RUN_ID = re.compile(r"fairloop approve ([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("restart")
    env = isolated_env(base)
    spec = write_dataset(base / "data", "restart", {"a": (300, 0.4), "b": (300, 0.25)}, seed=3)
    policy = write_policy(base, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.5, approval={"timeout_seconds": 3600, "reviewers": []})
    world = {"base": base, "env": env, "spec": spec, "policy": policy}
    try:
        yield world
    finally:
        fairloop(world, "server", "--stop")


def fairloop(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairloop", *args], env=world["env"], cwd=PROJECT,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def start_paused_run(world) -> str:
    started = fairloop(world, "remediate", "--dataset", str(world["spec"]), "--constraint", "constraints/threshold-dp.yaml",
                       "--policy", str(world["policy"]), "--no-wait")
    assert started.returncode == 0 and "awaits review" in started.stdout, started.stdout + started.stderr
    return RUN_ID.search(started.stdout).group(1)


def run_state(world, run_id: str) -> tuple[str, str]:
    api = f"http://127.0.0.1:{world['env']['FAIRLOOP_SERVER_PORT']}/api"
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).raise_for_status().json()["state"]
    return state["name"], state["message"] or ""


def flow_pid(world, run_id: str) -> int:
    from fairloop.serving.flow_process import read_flow_process

    return read_flow_process(world["base"] / "state" / "runs" / run_id).pid


def wait_for(predicate, what: str, timeout: float = COMMAND_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def audit(world) -> list[dict]:
    from fairloop.registry.store import Registry

    return Registry(world["base"] / "registry").audit_log()


def test_a_run_awaiting_review_survives_a_server_restart_and_is_approved(world):
    assert fairloop(world, "server").returncode == 0
    run_id = start_paused_run(world)
    pid = flow_pid(world, run_id)
    launch_logs = list((world["base"] / "state").glob("launch-*.log"))

    stopped = fairloop(world, "server", "--stop")
    assert stopped.returncode == 0 and "Stopped the Prefect server" in stopped.stdout, stopped.stderr
    # the flow process notices the outage (its next poll) and keeps waiting instead of failing
    wait_for(lambda: any("stopped answering" in log.read_text() for log in launch_logs), "the flow to see the outage")
    assert os.path.exists(f"/proc/{pid}"), "the flow process died with the server"

    assert fairloop(world, "server").returncode == 0  # same database: the run is still Paused
    assert run_state(world, run_id)[0] == "Paused"
    approved = fairloop(world, "approve", run_id, "--reviewer", "alice", "--comment", "after the restart")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "Promoted" in approved.stdout and "Traceback" not in approved.stdout + approved.stderr
    assert run_state(world, run_id)[0] == "Promoted"
    promoted = [r for r in audit(world) if r["action"] == "promote" and r["run_id"] == run_id]
    assert promoted and promoted[0]["reviewer"] == "alice"


def test_an_approval_for_a_run_whose_flow_process_died_ends_it_crashed_and_audited(world):
    assert fairloop(world, "server").returncode == 0
    run_id = start_paused_run(world)
    pid = flow_pid(world, run_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
             "the flow process to die")

    approved = fairloop(world, "approve", run_id, "--reviewer", "alice")
    text = " ".join((approved.stdout + approved.stderr).split())
    assert approved.returncode == 1, text
    assert f"run {run_id} crashed" in text and f"pid {pid}" in text and "nothing was promoted" in text, text
    assert "Traceback" not in text
    name, message = run_state(world, run_id)
    assert name == "Crashed" and "ended while the run awaited review" in message
    died = [r for r in audit(world) if r["action"] == "flow_process_died" and r["run_id"] == run_id]
    assert died and died[0]["reviewer"] == "alice" and died[0]["decision_delivered"] is False
    assert not [r for r in audit(world) if r["action"] == "promote" and r["run_id"] == run_id]


def test_a_flow_process_killed_after_the_approval_reached_it_ends_crashed_and_the_registry_stays_whole(world):
    assert fairloop(world, "server").returncode == 0
    run_id = start_paused_run(world)
    pid = flow_pid(world, run_id)
    approving = subprocess.Popen([sys.executable, "-m", "fairloop", "approve", run_id, "--reviewer", "alice"],
                                 env=world["env"], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: run_state(world, run_id)[0] != "Paused", "the approval to reach the run")
        # the flow reads the answer at its next poll (every 5 s): the kill lands before or during the promotion
        os.kill(pid, signal.SIGKILL)
        output, _ = approving.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        approving.kill()
    text = " ".join(output.split())
    name, message = run_state(world, run_id)
    assert approving.returncode == 1 and f"run {run_id} crashed" in text and "Traceback" not in text, text
    assert name == "Crashed" and "ended after the decision was delivered" in message
    died = [r for r in audit(world) if r["action"] == "flow_process_died" and r["run_id"] == run_id]
    assert died and died[0]["decision_delivered"] is True
    verified = fairloop(world, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
