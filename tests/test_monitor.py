"""Production monitoring on real COMPAS rows: a real champion (ThresholdOptimizer, promoted into a
real git + DVC registry), windows cut from rows it never saw, SciPy / Fairlearn statistics, and a
served remediation deployment started by a real drift event on the Prefect test server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT, Webhook

from fairloop import monitor as core
from fairloop import pipeline
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import load_dataset, read_extra_training_rows
from fairloop.data.rows import Split
from fairloop.data.spec import SpecModel
from fairloop.data.splits import Splits, make_splits
from fairloop.errors import BadInputError
from fairloop.gates.policy import load_policy
from fairloop.registry.lineage import describe_run
from fairloop.registry.store import Registry
from fairloop.remedy.constraints import fit_candidate

COMPAS = PROJECT / "datasets" / "compas.yaml"
RAW = PROJECT / "datasets" / "data" / "compas" / "compas-scores-two-years.csv.gz"
TIME = "compas_screening_date"
WINDOW_ROWS = 1000
GAP_THRESHOLD = 0.15  # the prediction-rate gap the test policy tolerates (the champion's own is far below)


def write_test_policy(directory: Path, **monitoring) -> Path:
    path = directory / "monitor-policy.yaml"
    monitoring = {"max_prediction_rate_gap": GAP_THRESHOLD, "persistence_windows": 3, **monitoring}
    path.write_text(yaml.safe_dump({
        "name": "monitor-test", "version": 1,
        # gates no candidate meets (DPD exactly 0): a triggered rerun ends quickly as GateFailed
        "thresholds": {"max_demographic_parity_difference": 0.0},
        "monitoring": monitoring,
    }))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """COMPAS rows split in two: a champion is trained on one half, windows are drawn from the other."""
    folder = tmp_path_factory.mktemp("monitor")
    spec = load_dataset_spec(COMPAS)
    raw = pd.read_csv(RAW, low_memory=False)
    kept = raw[raw["race"].isin(["African-American", "Caucasian"]) & raw["days_b_screening_arrest"].between(-30, 30)
               & (raw["is_recid"] != -1) & (raw["c_charge_degree"] != "O") & (raw["score_text"] != "N/A")]
    train_part = kept.sample(frac=0.6, random_state=1)
    stream_part = kept.drop(train_part.index).reset_index(drop=True)
    train_file = folder / "compas-train.csv"
    train_part.to_csv(train_file, index=False)
    spec_data = yaml.safe_load(COMPAS.read_text())
    spec_data["files"] = [{"path": str(train_file)}]
    spec_path = folder / "compas.yaml"
    spec_path.write_text(yaml.safe_dump(spec_data, sort_keys=False))

    registry = Registry(folder / "registry", folder / "dvc-remote")
    inputs = pipeline.load_inputs(pipeline.RunParams(str(spec_path), constraint=str(PROJECT / "constraints/threshold-dp.yaml"),
                                                     recipe=str(PROJECT / "recipes/none.yaml"),
                                                     policy=str(PROJECT / "policies/default.yaml")))
    splits = pipeline.prepare(inputs)
    model, _ = fit_candidate(splits.train, inputs.template, inputs.sensitive, 0)
    metrics = pipeline.evaluate_models({"c": model}, splits.test, inputs.sensitive)["c"].metrics
    with tempfile.TemporaryDirectory() as scratch:
        copies = pipeline.snapshot_inputs(inputs, Path(scratch))
        registry.promote("compas", model, splits.train.to_frame(spec.label.column), metrics=metrics, baseline_metrics=metrics,
                         gates=[], lineage=describe_run(inputs, pipeline.audit(inputs, splits), pipeline.augment(inputs, splits, pipeline.decide_mode(inputs, splits))[1],
                                                        run_id=None, requested_by="pytest", project_dir=PROJECT
                                                        ).model_copy(update={"inputs_spec_files": copies}),
                         approval={"reviewer": "pytest", "comment": "monitor fixture", "approved": True},
                         inputs_dir=Path(scratch), documents=lambda version: {"report.md": "monitor fixture\n"})
    stream = core.read_window(spec, _write(folder / "stream.csv", stream_part))
    return {"folder": folder, "spec": spec, "spec_path": spec_path, "registry": registry,
            "champion": core.load_champion(registry, spec), "stream_raw": stream_part, "stream": stream}


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def feed(world, windows: list[pd.DataFrame], name: str) -> Path:
    """A production feed: the given row sets dated into consecutive 30-day windows from 2015-01-01."""
    parts = []
    for k, rows in enumerate(windows):
        rows = rows.copy()
        days = np.random.default_rng(k).integers(0, 30, len(rows))
        rows[TIME] = (pd.Timestamp("2015-01-01") + pd.to_timedelta(30 * k + days, unit="D")).strftime("%Y-%m-%d")
        parts.append(rows)
    return _write(world["folder"] / f"{name}.csv", pd.concat(parts, ignore_index=True))


def stable(world, seed: int, rows: int = WINDOW_ROWS) -> pd.DataFrame:
    return world["stream_raw"].sample(rows, replace=True, random_state=seed)


def shifted(world, seed: int, rows: int = WINDOW_ROWS) -> pd.DataFrame:
    """Group shares moved: 90 % African-American (the stream has about 60 %)."""
    raw = world["stream_raw"]
    weights = np.where(raw["race"] == "African-American", 0.9 / (raw["race"] == "African-American").mean(),
                       0.1 / (raw["race"] == "Caucasian").mean())
    return raw.sample(rows, replace=True, weights=weights, random_state=seed)


def monitor_feed(world, path: Path, policy: Path, state: Path) -> list[core.WindowReport]:
    return core.run_monitor(world["spec_path"], path, policy, world["registry"], state, every_window=True)


def test_injected_group_share_shift_fires(world, tmp_path):
    policy = write_test_policy(tmp_path)
    path = feed(world, [stable(world, 0), shifted(world, 1), shifted(world, 2), shifted(world, 3)], "shift")
    reports = monitor_feed(world, path, policy, tmp_path / "state")
    assert [r.rows for r in reports] == [WINDOW_ROWS] * 4
    assert not reports[0].alert
    share = reports[1].metric("group_share:race")
    # a large window: the interval lies above the threshold, so the first shifted window alerts
    assert share.value > 0.2 and share.low > share.threshold and share.alert and reports[1].alert
    assert reports[1].selection_rates.keys() == {"African-American", "Caucasian"}
    # the record, the plot and the window's own rows (what a rerun trains on) are on disk
    window_file = Path(reports[1].window_file)
    assert window_file.is_file() and len(pd.read_csv(window_file)) == WINDOW_ROWS
    assert window_file.parent.parent.joinpath("records", window_file.stem + ".png").stat().st_size > 5000
    event = core.drift_event(reports[1])
    assert event["event"] == "fairloop.drift.detected" and event["resource"]["prefect.resource.id"] == "fairloop.dataset.compas"
    assert event["payload"]["window_file"] == str(window_file)
    assert "group_share:race" in [a["key"] for a in event["payload"]["alerts"]]

    # with the persistence rule alone it fires on the third consecutive shifted window, not before
    (tmp_path / "p").mkdir()
    persistent = write_test_policy(tmp_path / "p", alert_on=["persistent"])
    reports = monitor_feed(world, path, persistent, tmp_path / "state-persistent")
    assert [r.metric("group_share:race").streak for r in reports] == [0, 1, 2, 3]
    assert [r.alert for r in reports] == [False, False, False, True]


def test_feature_shift_fires_within_groups(world, tmp_path):
    policy = write_test_policy(tmp_path)
    window = stable(world, 5)
    window["priors_count"] = window["priors_count"] + 3  # record systems start counting differently
    reports = monitor_feed(world, feed(world, [window], "priors"), policy, tmp_path / "state")
    assert reports[0].alert
    alerts = {m.key for m in reports[0].alerts}
    assert {"ks:priors_count", "ks:priors_count|race=African-American", "ks:priors_count|race=Caucasian"} <= alerts
    assert not any(k.startswith("ks:age") for k in alerts)


def test_stable_stream_does_not_fire(world, tmp_path):
    policy = write_test_policy(tmp_path)
    reports = monitor_feed(world, feed(world, [stable(world, seed) for seed in range(10, 14)], "stable"), policy, tmp_path / "state")
    assert len(reports) == 4 and not any(r.alert for r in reports), [(r.window_start, [m.key for m in r.alerts]) for r in reports]
    assert max(m.value for r in reports for m in r.metrics if m.kind == "ks" and m.group is None) < 0.1
    gap = reports[0].metric("prediction_rate_gap:race")
    assert gap.reference is not None and gap.reference < GAP_THRESHOLD
    assert reports[0].labelled_rows == WINDOW_ROWS and reports[0].metric("equalized_odds_difference:race").value >= 0


def test_chance_excess_in_small_windows_is_no_breach_and_does_not_accumulate(world, tmp_path):
    """Small windows of unshifted rows whose prediction-rate gap exceeds the threshold by chance alone:
    the interval covers the threshold, so no breach, and the same excess three windows running
    still alerts nothing; a real shift in the same three windows does (streak 1, 2, 3)."""
    policy = load_policy(write_test_policy(tmp_path, alert_on=["persistent"]))
    spec, champion, stream = world["spec"], world["champion"], world["stream"]

    def check(rows, previous=None, month=1):  # consecutive months: each window later than the one before
        window = core.Window(rows, f"2015-{month:02d}-01", f"2015-{month + 1:02d}-01")
        return core.check_window(spec, window, champion.reference, champion.model, policy,
                                 sensitive="race", champion_version=champion.version, source="test", previous=previous)

    rng = np.random.default_rng(0)
    for _ in range(200):  # find an 80-row sample of the unshifted stream whose gap exceeds the threshold
        noisy_rows = stream.take(rng.choice(len(stream), 80, replace=False))
        noisy = check(noisy_rows)
        if not any(m.key == "prediction_rate_gap:race" for m in noisy.metrics):
            continue  # a group below min_group_rows in this sample: no gap to test
        gap = noisy.metric("prediction_rate_gap:race")
        if gap.value > gap.threshold:
            break
    assert gap.value > gap.threshold, "no 80-row sample exceeded the gap threshold; the search is broken"
    assert gap.low <= gap.threshold and not gap.breach and not noisy.breaches and not noisy.alert
    previous = None
    for month in (1, 2, 3):
        previous = check(noisy_rows, previous=previous, month=month)
        assert previous.metric("prediction_rate_gap:race").streak == 0 and not previous.alert

    shifted_rows = core.read_window(spec, _write(tmp_path / "shifted.csv", shifted(world, 70)))
    previous, streaks = None, []
    for month in (1, 2, 3):
        previous = check(shifted_rows, previous=previous, month=month)
        streaks.append(previous.metric("group_share:race").streak)
    assert streaks == [1, 2, 3] and previous.metric("group_share:race").alert and previous.alert


def test_bad_window_input_names_file_column_and_value(world, tmp_path):
    policy = write_test_policy(tmp_path)
    registry, state = world["registry"], tmp_path / "state"
    no_priors = _write(tmp_path / "no-priors.csv", stable(world, 0, 50).drop(columns=["priors_count"]))
    with pytest.raises(BadInputError, match=r"no-priors\.csv.*priors_count"):
        core.run_monitor(world["spec_path"], no_priors, policy, registry, state)
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(world["stream_raw"].columns) + "\n")
    with pytest.raises(BadInputError, match=r"empty\.csv.*no data rows"):
        core.run_monitor(world["spec_path"], empty, policy, registry, state)
    bad_date = stable(world, 0, 50)
    bad_date.loc[bad_date.index[3], TIME] = "not a date"
    with pytest.raises(BadInputError, match=r"compas_screening_date.*'not a date'"):
        core.run_monitor(world["spec_path"], _write(tmp_path / "bad-date.csv", bad_date), policy, registry, state)
    with pytest.raises(BadInputError, match=r"nope\.yaml"):
        core.run_monitor(tmp_path / "nope.yaml", no_priors, policy, registry, state)
    with pytest.raises(BadInputError, match="no champion for dataset 'compas'"):
        core.run_monitor(world["spec_path"], no_priors, policy, Registry(tmp_path / "empty-registry"), state)
    assert not state.exists()  # nothing recorded for rejected input

    # the CLI: exit 2 and a one-line message, no traceback
    env = {**os.environ, "FAIRLOOP_REGISTRY_DIR": str(registry.root), "FAIRLOOP_PROJECT_DIR": str(PROJECT)}
    done = subprocess.run(
        [sys.executable, "-m", "fairloop", "monitor", "--dataset", str(world["spec_path"]), "--window", str(no_priors),
         "--policy", str(policy), "--no-server"], capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "bad input" in done.stderr and "priors_count" in done.stderr and "Traceback" not in done.stderr


def test_extra_training_data_joins_the_training_pool(world, tmp_path):
    window = stable(world, 7, 200).reset_index(drop=True)
    window.loc[window.index[:20], "two_year_recid"] = np.nan  # outcomes not known yet: left out
    path = _write(tmp_path / "window.csv", window)
    params = pipeline.RunParams(str(world["spec_path"]))
    plain = pipeline.prepare(pipeline.load_inputs(params))
    extended = pipeline.prepare(pipeline.load_inputs(replace(params, extra_training_data=str(path))))
    assert len(extended.train) == len(plain.train) + 180 and len(extended.validation) == len(plain.validation)
    assert extended.test.X.equals(plain.test.X)  # held-out data unchanged: figures stay comparable
    assert extended.weighting.method == "none" and extended.weighting.drifted_rows == 180
    with pytest.raises(BadInputError, match="extra training data.*window.csv"):
        read_extra_training_rows(load_dataset_spec(world["spec_path"]),
                                 _write(tmp_path / "window.csv", window.assign(two_year_recid=np.nan)))


# -- served deployments on the Prefect test server -------------------------------------------------
@pytest.fixture(scope="module")
def served(world, prefect_server):
    """``fairloop serve`` in its own process group against the test server; stopped afterwards."""
    from prefect.settings import PREFECT_API_URL

    folder = world["folder"]
    webhook = Webhook()
    policy = write_test_policy(folder, schedule={"monitor_cron": "15 6 * * *", "remediation_cron": "0 3 1 * *"})
    env = {
        **os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "FAIRLOOP_PROJECT_DIR": str(PROJECT),
        "FAIRLOOP_REGISTRY_DIR": str(world["registry"].root), "FAIRLOOP_REGISTRY_REMOTE": str(folder / "dvc-remote"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "FAIRLOOP_STATE_DIR": str(folder / "state"),  # reruns train only on windows the monitor recorded here
    }
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fairloop", "serve", "--dataset", str(world["spec_path"]), "--feed", str(folder / "stream.csv"),
         "--policy", str(policy), "--constraint", "constraints/threshold-dp.yaml", "--train-rows", "800",
         "--notify-url", webhook.url],
        cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield {"process": process, "policy": policy, "log": folder / "serve.log", "state": folder / "state",
               "webhook": webhook}
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the serve process and the flow runs it started
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()
        webhook.close()


def _deployment(name: str, served, timeout: float = 90):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert served["process"].poll() is None, served["log"].read_text()[-3000:]
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                time.sleep(0.5)
    raise AssertionError(f"deployment {name} never appeared:\n{served['log'].read_text()[-3000:]}")


def _automations(served, timeout: float = 60):
    """The drift trigger's automation (serve creates it just after the deployment)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            found = client.read_automations_by_name("fairloop-compas-drift-rerun")
            if found:
                return found
            time.sleep(0.5)
    raise AssertionError(f"no automation for the drift trigger:\n{served['log'].read_text()[-3000:]}")


def test_served_deployments_carry_the_configured_cron_and_trigger(served):
    monitor_deployment = _deployment("monitor/compas", served)
    remediation_deployment = _deployment("remediation/compas", served)
    assert [s.schedule.cron for s in monitor_deployment.schedules] == ["15 6 * * *"]
    assert [s.schedule.cron for s in remediation_deployment.schedules] == ["0 3 1 * *"]
    assert remediation_deployment.parameters["request"]["requested_by"] == "schedule"

    automations = _automations(served)
    assert len(automations) == 1
    assert automations[0].trigger.expect == {"fairloop.drift.detected"}
    assert automations[0].actions[0].deployment_id == remediation_deployment.id


def test_drift_event_starts_a_triggered_rerun_with_the_window(world, served, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from fairloop.flows import monitor as monitor_flow
    from fairloop.serving.runs import flow_run_url

    monkeypatch.setenv("FAIRLOOP_REGISTRY_DIR", str(world["registry"].root))
    monkeypatch.setenv("FAIRLOOP_PROJECT_DIR", str(PROJECT))
    remediation_deployment = _deployment("remediation/compas", served)
    _deployment("monitor/compas", served)
    _automations(served)
    time.sleep(2)  # let the triggers service load the new automation before the event arrives
    path = feed(world, [shifted(world, 21)], "served-shift")
    monitored = monitor_flow(dataset=str(world["spec_path"]), window=str(path), policy=str(served["policy"]),
                             every_window=True, state_dir=str(served["state"]), return_state=True)
    records = monitored.result()
    assert records[0]["alert"], records[0]
    window_file = records[0]["window_file"]

    def message(subject: str) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            bodies = [m["body"] for m in served["webhook"].received if m.get("subject") == subject]
            if bodies:
                return bodies[0]
            time.sleep(0.5)
        raise AssertionError(f"no notification {subject!r}: {served['webhook'].received}")

    # someone is told, with where to look: the monitor run's page and the history
    alert = message("fairloop compas: drift alert")
    assert "group_share:race = " in alert and f"Monitor run: {flow_run_url(monitored.state_details.flow_run_id)}" in alert
    assert f"History: `fairloop history compas`, or {served['state'] / 'monitor' / 'compas' / 'history.html'}" in alert

    deadline = time.monotonic() + 300  # a busy 2-core machine: the rerun pins, splits and weights before fitting
    run = None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[remediation_deployment.id])))
            run = next((r for r in runs if r.parameters["request"].get("requested_by") == "drift-trigger"), None)
            if run is not None and run.state is not None and run.state.is_final():
                break
            assert served["process"].poll() is None, served["log"].read_text()[-3000:]
            time.sleep(1)
    assert run is not None, f"no triggered run:\n{served['log'].read_text()[-3000:]}"
    assert run.parameters["request"]["extra_training_data"] == window_file
    assert run.state is not None and run.state.is_final(), f"{run.state}\n{served['log'].read_text()[-3000:]}"
    assert run.state.name == "GateFailed", f"{run.state.name}: {run.state.message}\n{served['log'].read_text()[-3000:]}"

    outcome = message("fairloop compas: GateFailed")  # the outcome, with its reason and the run's page
    assert "demographic_parity_difference" in outcome and outcome.endswith(f"Run: {flow_run_url(run.id)}")

    # the rerun read the drifted window into its training data and said so in the registry's audit log
    decisions = [r for r in world["registry"].audit_log() if r.get("run_id") == str(run.id)]
    assert [d["action"] for d in decisions] == ["rerun_started", "gate_failed"]  # the incident's timeline
    assert all(d["requested_by"] == "drift-trigger" for d in decisions)
    assert decisions[0]["window"] == window_file and decisions[0]["incident"] == records[0]["incident"]
    # it trained on its pinned copy's training part, in its own run folder (retention cannot delete it)
    assert Path(decisions[1]["extra_training_data"]).parent == served["state"] / "runs" / str(run.id)


# -- window identity, retention, the windows reruns may read ---------------------------------------
def _history_lines(state: Path) -> int:
    return len((state / "monitor" / "compas" / "history.jsonl").read_text().splitlines())


def test_same_window_twice_changes_nothing_and_only_a_later_window_advances_the_streak(world, tmp_path):
    policy = write_test_policy(tmp_path, alert_on=["persistent"])
    state = tmp_path / "state"
    run = lambda path, **kw: core.run_monitor(world["spec_path"], path, policy, world["registry"], state, **kw)  # noqa: E731
    first_month = shifted(world, 31)
    path = feed(world, [first_month], "identity-1")
    first = run(path)[0]
    assert first.metric("group_share:race").streak == 1 and not first.rechecked
    files = sorted(p.name for p in (state / "monitor" / "compas").rglob("*"))
    again = run(path)[0]  # the served monitor's next tick on an unchanged feed
    assert again.rechecked and not again.new_alert
    assert again.metric("group_share:race").streak == 1 and again.window_hash == first.window_hash
    assert again.model_dump(exclude={"rechecked", "new_alert"}) == first.model_dump(exclude={"rechecked", "new_alert"})
    assert _history_lines(state) == 1 and sorted(p.name for p in (state / "monitor" / "compas").rglob("*")) == files

    # rows arrive late for the same month: a revision of the range, reported, streak not advanced
    revised = feed(world, [pd.concat([first_month, shifted(world, 32, 200)])], "identity-2")
    revision = run(revised)[0]
    assert (revision.window_start, revision.window_end) == (first.window_start, first.window_end)
    assert not revision.rechecked and revision.window_hash != first.window_hash
    assert revision.metric("group_share:race").streak == 1 and revision.streak_from is None

    # an explicit rolling window overlapping the first one does not advance it either
    rolling = run(revised, window_end="2015-01-20")[0]
    assert rolling.metric("group_share:race").streak == 1

    # the next, non-overlapping month does
    two_months = feed(world, [pd.concat([first_month, shifted(world, 32, 200)]), shifted(world, 33)], "identity-3")
    reports = run(two_months, every_window=True)
    assert [r.rechecked for r in reports] == [True, False]  # the first month is the recorded revision
    assert reports[1].metric("group_share:race").streak == 2 and reports[1].streak_from == first.label


def test_latest_window_is_the_tumbling_window_of_the_last_row(world):
    rows = core.read_window(world["spec"], feed(world, [stable(world, 40, 300), stable(world, 41, 300)], "tumbling"))
    latest = core.latest_window(rows, 30)
    assert (latest.start, latest.end) == ("2015-01-31", "2015-03-02") and len(latest.rows) == 300
    assert (core.latest_window(rows, 30, origin="2015-01-15").start) == "2015-02-14"
    explicit = core.latest_window(rows, 30, end="2015-02-10")
    assert (explicit.start, explicit.end) == ("2015-01-11", "2015-02-10")


def monthly(world, batches: list[pd.DataFrame], name: str) -> Path:
    """A feed of monthly batches: batch k dated over every day of calendar month k from January 2015."""
    parts = []
    for k, rows in enumerate(batches):
        first = pd.Timestamp(2015, 1 + k, 1)
        days = np.random.default_rng(k).integers(0, first.days_in_month, len(rows))
        parts.append(rows.assign(**{TIME: (first + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")}))
    return _write(world["folder"] / f"{name}.csv", pd.concat(parts, ignore_index=True))


def test_calendar_windows_hold_whole_months_and_iso_weeks(world, tmp_path):
    path = monthly(world, [stable(world, seed, 100) for seed in range(60, 66)], "monthly")
    rows = core.read_window(world["spec"], path)
    months = core.split_windows(rows, "month")
    assert [(w.start, w.end) for w in months[:2]] == [("2015-01-01", "2015-02-01"), ("2015-02-01", "2015-03-01")]
    assert [len(w.rows) for w in months] == [100] * 6 and months[-1].end == "2015-07-01"
    # what 30-day windows from the feed's first day make of the same batches: the latest holds June 30 only
    assert len(core.latest_window(rows, 30).rows) < 20 and len(core.latest_window(rows, "month").rows) == 100
    assert core.latest_window(rows, "month", end="2015-03-01").label == "2015-02-01 .. 2015-03-01"
    with pytest.raises(BadInputError, match=r"--window-end: window end 2015-03-04 is not where a calendar month starts.*"
                                            r"use 2015-03-01 or 2015-04-01"):
        core.latest_window(rows, "month", end="2015-03-04")
    with pytest.raises(BadInputError, match="--window-end: window end '2015-13-45' is not a date"):
        core.latest_window(rows, 30, end="2015-13-45")
    weeks = core.split_windows(rows, "week")
    starts = pd.to_datetime([w.start for w in weeks])
    assert (starts.dayofweek == 0).all() and weeks[0].start == "2014-12-29"  # ISO weeks: Monday to Sunday
    assert sum(len(w.rows) for w in weeks) == 600 and all(len(w.rows) for w in weeks)

    # the scheduled monitor with a calendar policy checks and records the whole latest month
    policy = write_test_policy(tmp_path, window={"calendar": "month"}, bootstrap=50)
    (latest,) = core.run_monitor(world["spec_path"], path, policy, world["registry"], tmp_path / "state")
    assert (latest.window_start, latest.window_end, latest.rows) == ("2015-06-01", "2015-07-01", 100)
    assert core.history(tmp_path / "state", "compas")[-1].window_start == "2015-06-01"


def test_a_policy_names_the_window_field_it_cannot_use(tmp_path):
    for monitoring, message in [
        ({"window": {"calendar": "quarter"}}, r"field 'monitoring.window.calendar': Input should be 'month' or 'week' \(got 'quarter'\)"),
        ({"window": {"calendar": "month"}, "window_days": 30}, r"field 'monitoring': window: \{calendar: month\} and window_days"),
    ]:
        policy = write_test_policy(tmp_path, **monitoring)
        with pytest.raises(BadInputError, match=rf"^{policy}: invalid Policy: {message}"):
            load_policy(policy)
    assert load_policy(write_test_policy(tmp_path, window_days=7)).monitoring_settings.period == 7


def test_default_policy_spells_out_every_monitoring_default():
    """policies/default.yaml writes its monitoring section out, with the values the code defaults to."""
    from fairloop.gates.policy import Monitoring

    path = PROJECT / "policies" / "default.yaml"
    written = yaml.safe_load(path.read_text())["monitoring"]

    def unwritten(model: type, values: dict, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if name not in values:
                missing.append(prefix + name)
            elif isinstance(values[name], dict) and isinstance(field.default, SpecModel):
                missing += unwritten(type(field.default), values[name], f"{prefix}{name}.")
        return missing

    assert unwritten(Monitoring, written, "monitoring.") == []
    assert load_policy(path).monitoring == Monitoring()


def test_overlapping_monitor_runs_record_a_window_once(world, tmp_path):
    """Two scheduled runs on the same feed at the same moment (threads here, processes in production):
    one checks and records the window (and alerts), the other finds it recorded."""
    import threading

    policy = write_test_policy(tmp_path, bootstrap=50)
    path = feed(world, [shifted(world, 70, 400)], "overlap")
    state = tmp_path / "state"
    start = threading.Barrier(2)
    results: list = []

    def scheduled_run():
        start.wait()
        results.append(core.run_monitor(world["spec_path"], path, policy, world["registry"], state)[0])

    runs = [threading.Thread(target=scheduled_run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(300)
    assert len(results) == 2, "a monitor run failed"
    assert _history_lines(state) == 1
    assert sorted(r.rechecked for r in results) == [False, True]
    assert [r.new_alert for r in results].count(True) == 1  # one drift event, hence one notification


def test_a_check_that_waits_too_long_for_the_lock_says_which_lock(tmp_path):
    from fairloop.monitor.store import MonitorBusy, check_lock

    with check_lock(tmp_path, "compas"):
        with pytest.raises(MonitorBusy, match=r"another monitor check of dataset 'compas' has held .*compas/check.lock "
                                              r"for more than 0 s; nothing was checked"):
            with check_lock(tmp_path, "compas", timeout=0.2):
                pass


def test_retention_keeps_exactly_the_latest_windows(world, tmp_path):
    policy = write_test_policy(tmp_path, keep_window_rows=3, bootstrap=50)
    state = tmp_path / "state"
    windows = state / "monitor" / "compas" / "windows"
    two = core.run_monitor(world["spec_path"], feed(world, [stable(world, s, 100) for s in (90, 91)], "keep-2"), policy,
                           world["registry"], state, every_window=True)
    assert sorted(p.name for p in windows.iterdir()) == sorted(Path(r.window_file).name for r in two)  # fewer than 3: all
    # the same two windows (recorded: not checked again) and two new ones
    four = core.run_monitor(world["spec_path"], feed(world, [stable(world, s, 100) for s in (90, 91, 92, 93)], "keep-4"),
                            policy, world["registry"], state, every_window=True)
    assert [r.rechecked for r in four] == [True, True, False, False]
    assert sorted(p.name for p in windows.iterdir()) == sorted(Path(r.window_file).name for r in four[-3:])


def test_window_rows_are_kept_only_for_the_latest_windows(world, tmp_path):
    from fairloop.monitor.store import resolve_window_file

    path = feed(world, [stable(world, seed, 200) for seed in (50, 51, 52)], "retention")
    state = tmp_path / "state"
    reports = core.run_monitor(world["spec_path"], path, write_test_policy(tmp_path, keep_window_rows=1), world["registry"],
                               state, every_window=True)
    windows = state / "monitor" / "compas" / "windows"
    assert [p.name for p in windows.iterdir()] == [Path(reports[-1].window_file).name]
    assert resolve_window_file(state, "compas", reports[-1].window_file) == Path(reports[-1].window_file)
    assert resolve_window_file(state, "compas", reports[-1].window_file_sha256) == Path(reports[-1].window_file)
    with pytest.raises(BadInputError, match="no longer kept"):
        resolve_window_file(state, "compas", reports[0].window_file)
    with pytest.raises(BadInputError, match="not in the monitor's window folder"):
        resolve_window_file(state, "compas", windows / ".." / ".." / "compas" / "history.jsonl")
    with pytest.raises(BadInputError, match="not in the monitor's window folder"):
        resolve_window_file(state, "compas", path)
    with pytest.raises(BadInputError, match="no window of dataset 'compas' was recorded with SHA-256"):
        resolve_window_file(state, "compas", "0" * 64)
    stray = windows / "stray.csv"
    stray.write_text(Path(reports[-1].window_file).read_text())
    with pytest.raises(BadInputError, match="does not match the SHA-256"):
        resolve_window_file(state, "compas", stray)
    with Path(reports[-1].window_file).open("a") as handle:  # the recorded file edited after the check
        handle.write(Path(reports[-1].window_file).read_text().splitlines()[1] + "\n")
    with pytest.raises(BadInputError, match="does not match the SHA-256"):
        resolve_window_file(state, "compas", reports[-1].window_file)

    (tmp_path / "none").mkdir()
    state = tmp_path / "state-none"
    reports = core.run_monitor(world["spec_path"], path, write_test_policy(tmp_path / "none", keep_window_rows=0),
                               world["registry"], state, every_window=True)
    assert all(r.window_file is None for r in reports) and not (state / "monitor" / "compas" / "windows").exists()
    assert all(Path(r.record_file).with_suffix(".png").is_file() for r in reports)


def test_window_of_held_out_rows_is_refused(world):
    loaded = load_dataset(world["spec_path"])
    splits = make_splits(loaded)
    from_test = splits.test.take(np.arange(200))
    with pytest.raises(BadInputError, match=r"200 of 200 labelled window row\(s\) are exact copies of rows of the test split"):
        core.refuse_held_out_overlap(from_test, splits, source="window.csv")
    mixed = Split(X=pd.concat([splits.train.X.iloc[:150], splits.validation.X.iloc[:50]], ignore_index=True),
                  y=pd.concat([splits.train.y.iloc[:150], splits.validation.y.iloc[:50]], ignore_index=True),
                  groups=pd.concat([splits.train.groups.iloc[:150], splits.validation.groups.iloc[:50]], ignore_index=True))
    with pytest.raises(BadInputError, match="validation split"):
        core.refuse_held_out_overlap(mixed, splits)
    # new rows of the same population: COMPAS's coarse features make many equal a test row by chance; not refused
    from fairloop.data.datasets import read_extra_training_rows

    new_rows = read_extra_training_rows(world["spec"], _write(world["folder"] / "new-rows.csv", stable(world, 60, 500)))
    core.refuse_held_out_overlap(new_rows, splits)


def test_one_copied_row_is_refused_when_rows_do_not_collide_by_chance():
    rng = np.random.default_rng(0)

    def split(n):
        return Split(X=pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("abc"), n)}),
                     y=pd.Series(rng.integers(0, 2, n)), groups=pd.DataFrame({"g": rng.choice(["p", "q"], n)}))

    splits = Splits(train=split(500), validation=split(100), test=split(200))
    window = split(300)
    core.refuse_held_out_overlap(window, splits)
    copied = Split(X=pd.concat([window.X, splits.test.X.iloc[[7]]], ignore_index=True),
                   y=pd.concat([window.y, splits.test.y.iloc[[7]]], ignore_index=True),
                   groups=pd.concat([window.groups, splits.test.groups.iloc[[7]]], ignore_index=True))
    with pytest.raises(BadInputError, match=r"1 of 301 labelled window row\(s\) are exact copies of rows of the test split \(first: window row 301"):
        core.refuse_held_out_overlap(copied, splits)


def test_history_dashboard_shows_group_rates_incidents_and_their_timeline(world, tmp_path):
    """An incident detected on a shifted window, a triggered rerun that failed its gates (recorded by a
    real registry), then a stable window: the dashboard's timeline, latency and outcome; the CLI table
    and the HTML page, with a hostile group name escaped."""
    from fairloop.monitor.dashboard import incidents, write_history_page

    project = tmp_path / "project"
    state = project / ".fairloop"
    windows = [stable(world, 80), shifted(world, 81), stable(world, 82)]
    reports = core.run_monitor(world["spec_path"], feed(world, windows, "history"), write_test_policy(tmp_path),
                               world["registry"], state, every_window=True)
    assert [r.alert for r in reports] == [False, True, False]
    rates = {g.group: g for g in reports[0].group_rates}
    assert set(rates) == {"African-American", "Caucasian"}
    for g in rates.values():  # the gates' bootstrap interval around every large group's rates
        assert g.selection_interval[0] <= g.selection_rate <= g.selection_interval[1]
        assert g.tpr_interval[0] <= g.true_positive_rate <= g.tpr_interval[1] and g.positives >= 10

    registry = Registry(tmp_path / "registry", tmp_path / "remote")
    registry.record_decision({"dataset": "compas", "run_id": "run-1", "requested_by": "drift-trigger", "action": "gate_failed",
                              "reasons": ["demographic_parity_difference 0.08 > 0.0"]})
    registry.record_decision({"dataset": "compas", "run_id": "run-0", "requested_by": "schedule", "action": "gate_failed"})
    found = incidents(core.history(state, "compas"), registry.audit_log())
    assert len(found) == 1
    incident = found[0]
    assert incident.window == reports[1].label and "group_share:race" in incident.alerts
    # the scheduled run is not this incident's; the stable window closed it under the same champion
    assert [e.what for e in incident.timeline] == ["detected", "subsided", "gate failed"]
    assert incident.outcome == "gate failed" and incident.time_to_promotion_hours is None
    assert incident.status == "subsided" and incident.cleared_on == reports[2].label and incident.time_to_clearance_hours is None
    assert incident.streak_windows == 1 and incident.detection_latency_hours > 0  # from the window's start to the check

    hostile = [r.model_copy(update={"group_rates": [g.model_copy(update={"group": "<script>alert(1)</script>"})
                                                    for g in r.group_rates]}) for r in core.history(state, "compas")]
    page = write_history_page("compas", hostile, registry.audit_log(), tmp_path / "page" / "history.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "gate failed" in page and "data:image/png;base64," in page

    env = {**os.environ, "FAIRLOOP_PROJECT_DIR": str(project), "FAIRLOOP_REGISTRY_DIR": str(registry.root),
           "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "fairloop", "history", "compas"], capture_output=True, text=True, env=env,
                          cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 incident(s)" in done.stdout and "gate failed" in done.stdout and "African-American: selection" in done.stdout
    assert (state / "monitor" / "compas" / "history.html").is_file()
    missing = subprocess.run([sys.executable, "-m", "fairloop", "history", "german"], capture_output=True, text=True, env=env,
                             cwd=PROJECT, timeout=120)
    assert missing.returncode == 2 and "no monitor history for dataset 'german'" in missing.stderr
    assert "Traceback" not in missing.stderr
