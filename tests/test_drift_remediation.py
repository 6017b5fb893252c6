"""The loop remediates what it detects, on generated data whose drift the test controls (tests/drift_world.py):

champion v1 -> stable windows (one unlabelled), no alert -> a drifted window (a new intake channel that
under-measures one group's x1: correctable), one alert opening an incident -> a rerun that pins the
window, trains on part of it and is gated on the held-out rest -> window retention deletes the
monitor's copy while the rerun awaits review -> approved -> v2 -> the next drifted window does not
alert, and the incident reads cleared with its timings. Real Fairlearn fits, a real git + DVC
registry, the real remediation flow on a Prefect test server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import drift_world as world_gen
from conftest import PROJECT, BackgroundRun
from fairloop import monitor as core
from fairloop.registry.store import Registry
from fairloop.review.packet import ReviewPacket, render_summary
from fairloop.review.terminal import print_packet

TEMPLATE = str(PROJECT / "constraints" / "lr-eg-dp.yaml")


def write_policy(folder: Path, **rerun) -> Path:
    path = folder / "drift-policy.yaml"
    path.write_text(yaml.safe_dump({
        "name": "drift-test", "version": 1,
        "thresholds": {"max_demographic_parity_difference": 0.1, "max_accuracy_drop_vs_baseline": 0.05},
        "bootstrap": {"n_boot": 200, "confidence": 0.95, "seed": 0},
        "monitoring": {"max_prediction_rate_gap": 0.08, "window_days": 28, "window_origin": world_gen.month(0), "alert_on": ["interval"],
                       "keep_window_rows": 5, "rerun": {"held_out_share": 0.5, **rerun}},
    }))
    return path


@pytest.fixture
def drift_setup(tmp_path, registry_dir, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("FAIRLOOP_STATE_DIR", str(state))
    spec = world_gen.write_spec(tmp_path / "data", "gen", world_gen.draw(6000, 0))
    policy = write_policy(tmp_path)
    registry = Registry(registry_dir, tmp_path / "dvc-remote")
    world_gen.promote_champion(spec, policy, registry, TEMPLATE)
    return {"spec": spec, "policy": policy, "registry": registry, "state": state, "folder": tmp_path}


def test_a_drift_alert_ends_with_a_champion_that_clears_it(drift_setup, prefect_server, remediation_flow):
    spec, policy, registry, state, folder = (drift_setup[k] for k in ("spec", "policy", "registry", "state", "folder"))
    channel = dict(kind="new_channel", shift=-1.5)
    windows = [world_gen.draw(600, 1), world_gen.draw(600, 2), world_gen.draw(3000, 3, **channel)]
    feed = world_gen.feed(windows, folder / "feed.csv", unlabelled=(1,))
    reports = core.run_monitor(spec, feed, policy, registry, state, every_window=True)
    assert [r.alert for r in reports] == [False, False, True], [r.table()[:2] for r in reports]
    assert reports[1].labelled_rows == 0  # the unlabelled window is checked on its predictions alone
    alert = reports[2]
    assert alert.incident and alert.metric("prediction_rate_gap:sex").low > 0.08

    run = BackgroundRun(remediation_flow, dataset=str(spec), policy=str(policy), rerun=True, requested_by="drift-trigger",
                        extra_training_data=alert.window_file, review_poll_seconds=1)
    paused = run.wait_paused(timeout=600)
    run_dir = state / "runs" / str(paused.id)
    packet = json.loads((run_dir / "review.json").read_text())
    drift = packet["drift"]
    assert drift["clears"] == "yes", drift["why"]
    assert drift["alert"]["incident"] == alert.incident and drift["held_out_rows"] == 1500
    (figure,) = [f for f in drift["figures"] if f["key"] == "prediction_rate_gap:sex"]
    assert figure["champion"]["low"] > 0.08 and figure["candidate"]["high"] <= 0.08  # both on the held-out drifted rows
    assert drift["accuracy"]["candidate"] > drift["accuracy"]["champion"]  # the drifted rows are predicted better too
    shown = io.StringIO()
    print_packet(Console(file=shown, width=100), ReviewPacket.model_validate(packet), "Paused")
    assert "Approving clears the alert: yes" in shown.getvalue() and f"incident {alert.incident}" in shown.getvalue()
    # the gate line keeps its place on the first screen; the alert's figures follow it
    assert shown.getvalue().index("Gates: all") < shown.getvalue().index("Answers the alert")
    first_screen, details = render_summary(ReviewPacket.model_validate(packet), "").split("\n---\n", 1)
    assert "Gates: all 3 pass" in first_screen and "**Approving clears the alert: yes**" in first_screen
    assert "The alert this rerun answers" in details and "held-out rows of the alerting window" in details
    gates = {g["gate"]: g["verdict"] for g in packet["gates"]["results"]}
    assert gates["on drifted rows: prediction_rate_gap:sex"] == "pass" and gates["max_demographic_parity_difference"] == "pass"

    # retention deletes the monitor's copy of the window while the rerun awaits review: it pinned its own
    assert core.enforce_retention(state, "gen", 0) and not Path(alert.window_file).exists()
    run.approve_and_finish("clears the drifted gap", reviewer="alice")
    champion = registry.champion("gen")
    assert champion.version == "v2" and champion.lineage.drift.incident == alert.incident
    assert champion.lineage.drift.weighting.method == "density_ratio" and champion.lineage.drift.clears == "yes"
    pinned = champion.lineage.drift.rows.windows[0]
    assert pinned.sha256 == alert.window_file_sha256 and Path(pinned.path).is_file()

    # the next drifted window, checked against v2: no alert, and it closes the incident as cleared
    later = world_gen.feed([*windows, world_gen.draw(3000, 4, **channel)], folder / "feed-later.csv", unlabelled=(1,))
    (next_window,) = core.run_monitor(spec, later, policy, registry, state)
    assert next_window.champion_version == "v2" and not next_window.alert, next_window.table()[:3]
    assert next_window.clears_incident == alert.incident

    from fairloop.monitor.dashboard import incidents

    (incident,) = incidents(core.history(state, "gen"), registry.decisions())
    assert incident.status == "cleared" and incident.promoted == ["v2"], incident
    assert incident.time_to_promotion_hours is not None and incident.time_to_clearance_hours >= incident.time_to_promotion_hours
    assert [e.what for e in incident.timeline] == ["detected", "rerun started", "review requested", "promoted", "cleared"]

    env = {**os.environ, "COLUMNS": "250"}
    shown = subprocess.run([sys.executable, "-m", "fairloop", "history", "gen"], capture_output=True, text=True, env=env,
                           cwd=PROJECT, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "cleared on window" in shown.stdout and "not cleared" not in shown.stdout


def test_a_rerun_whose_window_cannot_be_pinned_ends_refused_with_an_audit_entry(drift_setup, prefect_server,
                                                                                remediation_flow):
    spec, policy, registry, state, folder = (drift_setup[k] for k in ("spec", "policy", "registry", "state", "folder"))
    windows = [world_gen.draw(600, 1), world_gen.draw(1200, 3, kind="new_channel", shift=-1.5)]
    reports = core.run_monitor(spec, world_gen.feed(windows, folder / "feed.csv"), policy, registry, state, every_window=True)
    assert reports[-1].alert
    Path(reports[-1].window_file).unlink()  # retention (or an operator) took it before the rerun started
    state_after = remediation_flow(dataset=str(spec), policy=str(policy), rerun=True, requested_by="drift-trigger",
                                   extra_training_data=reports[-1].window_file, return_state=True)
    assert state_after.name == "Refused" and "no longer kept" in state_after.message, state_after.message
    (refused,) = [d for d in registry.decisions() if d.action == "refused_input"]
    assert refused.incident == reports[-1].incident and "no longer kept" in refused.reason
    assert registry.champion("gen").version == "v1"


@pytest.mark.parametrize("undecided", ["wait", "block", "review_with_acceptance"])
def test_too_few_drifted_rows_answer_cannot_tell_yet_with_a_direction_and_the_policy_decides(tmp_path, undecided):
    """A few held-out drifted rows cannot tell whether approving clears the alert: the answer says how many more
    rows would, towards which side, and the policy's ``undecided`` rule decides what the gate does."""
    from fairloop import pipeline
    from fairloop.remedy.constraints import fit_candidate
    from fairloop.monitor.drifted import judge_on_drifted
    from fairloop.monitor.windows import read_window
    from fairloop.gates.policy import GateReport, RerunSettings, load_policy

    spec = world_gen.write_spec(tmp_path / "data", "gen", world_gen.draw(2000, 0))
    policy_path = write_policy(tmp_path)
    inputs = pipeline.load_inputs(pipeline.RunParams(str(spec), constraint=str(PROJECT / "constraints/unconstrained.yaml"),
                                                     policy=str(policy_path)))
    model, _ = fit_candidate(pipeline.prepare(inputs).train, inputs.template, "sex", 0)
    few = tmp_path / "few.csv"
    world_gen.draw(140, 9, kind="new_channel", shift=-0.6).to_csv(few, index=False)
    rows = read_window(inputs.loaded.spec, few)
    judged = judge_on_drifted({"champion": model, "candidate": model}, rows, None, "sex", load_policy(policy_path),
                              RerunSettings(undecided=undecided), seed=0)
    (gate,) = judged.gates
    assert judged.clears == "cannot tell yet" and gate.verdict == "inconclusive", judged
    assert "held-out rows (labels not needed) (140 ->" in gate.advice and "would most likely" in gate.advice
    side = "pass" if gate.value <= gate.threshold else "fail"
    assert f"most likely {side}" in gate.advice
    report = GateReport(policy="p", results=[gate])
    assert report.only_awaiting_data is (undecided == "wait")
    assert report.passed is (undecided == "review_with_acceptance")
    assert bool(report.needs_acceptance) is (undecided == "review_with_acceptance")
    assert set(judged.accuracy) == {"champion", "candidate"}
