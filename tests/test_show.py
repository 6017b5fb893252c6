"""`fairloop show RUN_ID`: the review report in the terminal, read from a real paused run's record."""

from __future__ import annotations

import re
import uuid

import pytest
from typer.testing import CliRunner

from conftest import BackgroundRun, write_policy
from fairloop.cli import app
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
