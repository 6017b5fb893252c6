"""`fairloop show RUN_ID`: the review report in the terminal, read from a real paused run's record."""

from __future__ import annotations

import re
import uuid

import pytest
import yaml
from conftest import BackgroundRun, write_policy
from synthetic import write_dataset
from typer.testing import CliRunner

from fairloop.cli import app
from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.registry.store import Registry
from fairloop.serving.outcomes import Outcome
from fairloop.serving.runs import submit_review

pytestmark = pytest.mark.usefixtures("prefect_server")


def show(run_id: str, columns: int = 160):
    """``fairloop show`` on a console ``columns`` wide. Rich fixes a console's width when it is created if
    COLUMNS is set then, and falls back to 80 on a dumb terminal (pytest-xdist workers): the width
    is set on the console itself, so the tables never fold whatever ran before in this process."""
    from fairloop.cli.common import console

    width, console.width = console.width, columns
    try:
        return CliRunner().invoke(app, ["show", run_id], env={"COLUMNS": str(columns)})
    finally:
        console.width = width


def test_show_prints_the_dialogs_report_and_refuses_what_it_cannot_show(remediation_flow, registry_dir, tmp_path):
    from prefect import flow

    policy = write_policy(tmp_path, max_demographic_parity_difference=0.5, max_accuracy_drop_vs_baseline=0.2)
    run = BackgroundRun(remediation_flow, dataset="datasets/adult.yaml", recipe="recipes/none.yaml",
                        constraint="constraints/threshold-dp.yaml", policy=str(policy), train_rows=3000,
                        requested_by="pytest", review_poll_seconds=1)
    paused = run.wait_paused(timeout=600)
    shown = show(str(paused.id))
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "Approving promotes threshold-dp for adult. It passes all 2 gates" in text
    assert "Needs sex at prediction time" in text
    assert "What changes for whom" in text and "Female" in text and "Male" in text and "TPR: qualified selected" in text
    assert "DPD ≤ 0.5" in text and "accuracy drop vs baseline ≤ 0.2" in text and "pass" in text
    assert "AUC of the decisions" in text and "full report: http" in text
    assert f"fairloop approve/reject {paused.id}" in text
    # the dialog's first screen, in people and in words
    assert re.search(r"Male \([\d,]+\): [\d,]+ lose selection \([\d,]+ qualified\)", text)
    assert re.search(r"worse: EOD rises 0\.\d{3} → 0\.\d{3}", text)
    # calibration by group, with the bootstrap interval of each group's gap
    assert re.search(r"calibration: predicted − observed │ -?0\.\d{3} \[-?0\.\d{3}, -?0\.\d{3}\]", text), text

    # in an 80-column terminal only links and commands (kept whole, to copy) run past the edge
    narrow = show(str(paused.id), columns=80)
    assert narrow.exit_code == 0, narrow.output
    overlong = [line for line in narrow.stdout.splitlines() if len(line.rstrip()) > 80 and "http" not in line]
    assert overlong == [], overlong

    unknown = show(str(uuid.uuid4()))
    assert unknown.exit_code == 2 and "no flow run" in unknown.output
    assert show("not-a-run").exit_code == 2

    @flow(name="not-a-remediation")
    def elsewhere():
        from prefect.runtime import flow_run

        return flow_run.id

    other = show(str(elsewhere()))
    assert other.exit_code == 2 and "has no review report" in other.output

    submit_review(paused.id, {"approve": False, "reviewer": "alice", "comment": "read it in the terminal"})
    assert run.finish(timeout=600).name == Outcome.REJECTED.value


def test_show_a_sweep_that_chose_nothing_says_why_with_the_groups_the_floors_left_out(remediation_flow, registry_dir,
                                                                                          tmp_path):
    """A run whose sweep finds no candidate ends GateFailed with no review packet; `show` still prints
    what it found, and approve/reject refuse it, name its state and change nothing. Generated rows:
    two groups of 500 and a group of 24 rows, under the default floors (30 rows, 10 positives, 10
    negatives) on every split."""
    spec = write_dataset(tmp_path, "nocand", {"a": (500, 0.5), "b": (500, 0.15), "tiny": (24, 0.3)}, seed=4)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "nocand-sweep", "version": 1, "recipes": ["recipes/none.yaml"],
                                     "constraints": ["constraints/unconstrained.yaml"]}))
    # a DPD of exactly 0 no interval can prove: nothing passes, whatever the fit
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.0, evaluation="holdout")
    state = remediation_flow(dataset=str(spec), sweep_file=str(sweep), policy=str(policy), requested_by="pytest",
                             return_state=True)
    assert state.name == Outcome.GATE_FAILED.value, state.message
    run_id = str(state.state_details.flow_run_id)

    shown = show(run_id)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "has not reached its gates" not in text
    assert f"run {run_id}, GateFailed" in text and "Nothing to approve" in text and "no review to approve or reject" in text
    assert " ".join(state.message.splitlines()[0].split()) in text  # the sweep's explanation, as the run ended with it
    assert "nocand-sweep" in text and "none+unconstrained" in text and "blocked: fails demographic_parity_difference" in text
    assert "Reference models on the test rows" in text and "Baseline by group" in text
    # the tiny group, with the counts it has on the test rows (the truth: the same split, formed again)
    test_rows = make_splits(load_dataset(spec)).test
    tiny = (test_rows.groups["group"] == "tiny").to_numpy()
    rows, positives = int(tiny.sum()), int(test_rows.y.to_numpy()[tiny].sum())
    assert 0 < rows < 30
    assert (f"left out of the group metrics on the test rows: tiny ({rows} rows, {positives} positive, "
            f"{rows - positives} negative): {rows} rows < floor 30: its selection rate does not count; "
            f"{positives} positives < floor 10: its TPR does not count") in text
    assert "left out of the group metrics on the validation split: tiny (" in text
    assert "left out of the group metrics on the test rows: a " not in text  # the large groups count
    assert show(run_id, columns=80).exit_code == 0

    # approve/reject of a run that ended: refused, naming the state; nothing changes, no audit line
    audit_before = Registry(registry_dir).audit_log()
    assert [r["action"] for r in audit_before] == ["gate_failed"]
    for command in (["approve", run_id, "--reviewer", "alice"],
                    ["reject", run_id, "--reviewer", "alice", "--comment", "no"]):
        refused = CliRunner().invoke(app, command)
        assert refused.exit_code == 2, refused.output
        assert "not awaiting review: it ended GateFailed" in " ".join(refused.output.split())
    assert Registry(registry_dir).audit_log() == audit_before
    assert Registry(registry_dir).champion("nocand") is None
