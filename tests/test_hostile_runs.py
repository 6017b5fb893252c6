"""Hostile decisions on real runs (issue 29): a decision for a run that already ended changes
nothing, a requester cannot approve their own run under a look-alike name, a run whose flow
process died is ended by the next command that lists runs, and a promotion whose champion was
replaced while it awaited review ends in a named outcome. Real `fairloop` commands against a
real `prefect server start`, as in test_review_restart."""

from __future__ import annotations

import getpass
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT, isolated_env, write_policy
from fairloop.serving.flow_process import read_flow_process
from synthetic import write_dataset
from test_hostile_inputs import snapshot
from test_review_restart import (
    audit,
    await_review,
    fairloop,
    flat,
    is_ended,
    run_state,
    start_run,
    start_suspended_run,
    wait_for,
)

STARTED = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-runs")
    env = isolated_env(base)
    spec = write_dataset(base / "data", "hostile", {"a": (300, 0.4), "b": (300, 0.25)}, seed=5)
    policy = write_policy(base, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.5,
                          approval={"timeout_seconds": 3600, "reviewers": []})
    world = {"base": base, "env": env, "spec": spec, "policy": policy}
    assert fairloop(world, "server").returncode == 0
    try:
        yield world
    finally:
        fairloop(world, "server", "--stop")


def killed_while_running(world) -> tuple[str, int]:
    """A run whose worker and flow process are killed (kill -9, as a reboot would) while it fits: the
    server keeps showing it Running, and nothing else would ever end it. Returns its id and pid."""
    started = fairloop(world, "remediate", "--dataset", str(world["spec"]), "--sweep", "constraints/sweeps/default.yaml",
                       "--policy", str(world["policy"]), "--no-wait")
    run_id = STARTED.search(started.stdout).group(1)
    runs = world["base"] / "state" / "runs" / run_id
    # once the run has read its spec (its process record names the dataset), before it awaits review
    wait_for(lambda: getattr(read_flow_process(runs), "dataset", None) is not None, "the run to read its spec", timeout=300)
    pid = read_flow_process(runs).pid
    worker = int((world["base"] / "state" / "prefect-worker.pid").read_text().split()[0])
    os.killpg(worker, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)  # in the worker's process group, too; explicit in case Prefect changes that
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
             "the flow process to die")
    assert run_state(world, run_id)[0] == "Running"
    return run_id, pid


def test_self_approval_under_a_look_alike_name_is_refused(world):
    """The requester is the OS user: the same name with a zero-width space, in full-width letters or
    in capitals is still them; with a Cyrillic 'o' it is refused before anything is sent."""
    requester = getpass.getuser()
    run_id = start_suspended_run(world)
    full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in requester)
    for name in (requester + "\u200b", full_width, f"  {requester.upper()} ", "\u2067" + requester):
        approved = fairloop(world, "approve", run_id, "--reviewer", name, "--wait-seconds", "300")
        text = flat(approved)
        assert approved.returncode == 1 and "separation of duties" in text and "still awaiting review" in text, text
        assert "Traceback" not in text
        assert run_state(world, run_id)[0] == "Suspended"
    look_alike = requester.replace("o", "\u043e") if "o" in requester else "r\u043e\u043et"
    before = snapshot(world["base"] / "registry")
    refused = fairloop(world, "approve", run_id, "--reviewer", look_alike)
    text = flat(refused)
    assert refused.returncode == 2 and "mixes Cyrillic and Latin letters" in text and "Traceback" not in text, text
    assert snapshot(world["base"] / "registry") == before and run_state(world, run_id)[0] == "Suspended"
    assert not [r for r in audit(world) if r["run_id"] == run_id and r["action"] == "promote"]
    world["suspended"] = run_id  # left awaiting review: the next test checks it is left alone


def test_a_run_whose_flow_process_died_is_ended_by_models_show_and_serve(world):
    waiting = world.pop("suspended", None) or start_suspended_run(world)
    first, pid = killed_while_running(world)
    listed = fairloop(world, "models")
    text = flat(listed)
    assert listed.returncode == 0 and f"run {first} crashed" in text and f"pid {pid}" in text, text
    assert "Traceback" not in text and waiting not in text  # suspended: it holds no process, and is left alone
    name, message = run_state(world, first)
    assert name == "Crashed" and "ended while the run was Running" in message and "nothing was promoted" in message
    assert run_state(world, waiting)[0] == "Suspended"
    died = [r for r in audit(world) if r["action"] == "flow_process_died" and r["run_id"] == first]
    assert len(died) == 1 and died[0]["found_by"] == "fairloop models"

    assert fairloop(world, "server").returncode == 0  # a worker again
    second, _ = killed_while_running(world)
    shown = fairloop(world, "show", second)
    text = flat(shown)
    # ended first; then there is nothing to show: it died before its gates
    assert shown.returncode == 2 and f"run {second} crashed" in text and "has no review report" in text, text
    assert "Traceback" not in text
    assert run_state(world, second)[0] == "Crashed"
    again = fairloop(world, "models")  # each dead run is ended once, and once only
    assert again.returncode == 0 and "crashed" not in flat(again), flat(again)
    assert len([r for r in audit(world) if r["action"] == "flow_process_died"]) == 2

    assert fairloop(world, "server").returncode == 0
    third, _ = killed_while_running(world)

    def died_third():
        return [r for r in audit(world) if r["action"] == "flow_process_died" and r["run_id"] == third]

    serving = subprocess.Popen([sys.executable, "-m", "fairloop", "serve", "--dataset", str(world["spec"]), "--feed",
                                str(world["spec"].with_suffix(".csv")), "--policy", str(world["policy"])],
                               env=world["env"], cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        # the audit line is written after the Crashed state (ending the run first keeps it ended once only)
        wait_for(lambda: died_third(), "serve to end the dead run and audit it", timeout=300)
    finally:
        os.killpg(serving.pid, signal.SIGTERM)
        serving.wait(60)
    assert run_state(world, third)[0] == "Crashed"
    died = died_third()
    assert len(died) == 1 and died[0]["found_by"] == "fairloop serve"


def test_a_promotion_whose_champion_changed_while_it_awaited_review_ends_champion_changed(world):
    assert fairloop(world, "server").returncode == 0
    first, second = start_run(world), start_run(world)
    await_review(world, first, second)
    assert fairloop(world, "approve", first, "--reviewer", "alice").returncode == 0
    approved = fairloop(world, "approve", second, "--reviewer", "alice")
    text = flat(approved)
    assert approved.returncode == 9 and "ChampionChanged" in text and "while this run awaited review" in text, text
    assert "Traceback" not in text and "Failed" not in text
    assert run_state(world, second)[0] == "ChampionChanged"
    world["ended"] = {"Promoted": first, "ChampionChanged": second}





def test_approve_or_reject_of_a_run_that_is_not_awaiting_review_changes_nothing(world, tmp_path):
    """Issue 29 item 1 (issue 25 item 5): the decision is refused naming the run's state; the
    state, the registry and the audit log stay as they were; no process check rewrites the run."""
    ended = dict(world.get("ended", {}))
    blocking = write_policy(tmp_path, "blocking", min_accuracy_lift_over_majority=0.99)
    rejected = start_run(world)
    ended["GateFailed"] = start_run(world, policy=blocking)
    ended["Expired"] = expiring = start_run(world, "--approval-timeout", "1")
    await_review(world, rejected)
    assert fairloop(world, "reject", rejected, "--reviewer", "bob", "--comment", "no").returncode == 4
    ended["Rejected"] = rejected
    for run_id in (ended["GateFailed"], expiring):
        wait_for(lambda: is_ended(world, run_id), f"run {run_id} to end")
    assert fairloop(world, "models").returncode == 0  # writes the expiry down (its audit line, the state's name)
    assert run_state(world, expiring)[0] == "Expired"
    for run_id in ended.values():  # each flow process has exited: the case that used to rewrite the run
        process = read_flow_process(world["base"] / "state" / "runs" / run_id)
        wait_for(lambda: process is None or process.alive() is False, "the flow process to exit")

    for outcome, run_id in ended.items():
        state = run_state(world, run_id)
        before = snapshot(world["base"] / "registry", world["base"] / "remote")
        for args in (["approve", run_id, "--reviewer", "carol"],
                     ["reject", run_id, "--reviewer", "carol", "--comment", "too late"]):
            result = fairloop(world, *args)
            text = flat(result)
            assert result.returncode == 2, (outcome, text)
            assert "not awaiting review" in text and f"it ended {state[0]}" in text and "nothing was changed" in text, text
            assert "Traceback" not in text
            assert run_state(world, run_id) == state, outcome
            assert snapshot(world["base"] / "registry", world["base"] / "remote") == before, outcome
