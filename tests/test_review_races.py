"""Decisions on a real paused Prefect run: concurrent approve and reject (exactly one wins, the
other caller is told), and an approval whose run never finishes (a clear non-zero exit)."""

from __future__ import annotations

import threading

import pytest
from prefect import flow
from prefect.flow_runs import pause_flow_run
from typer.testing import CliRunner

from conftest import BackgroundRun
from fairloop.errors import BadInputError
from fairloop.serving.outcomes import ExitCode
from fairloop.review.packet import ReviewDecision
from fairloop.serving.runs import submit_review

pytestmark = pytest.mark.usefixtures("prefect_server")


@flow(name="review-race")
def waits_for_review() -> bool:
    form = ReviewDecision.with_initial_data(description="race")
    decision = pause_flow_run(wait_for_input=form, timeout=300, poll_interval=1, key="review-1")
    return decision.approve


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_approve_and_reject_exactly_one_wins(trial):
    run = BackgroundRun(waits_for_review)
    paused = run.wait_paused()
    start = threading.Barrier(2)
    outcomes: dict[bool, object] = {}

    def decide(approve: bool) -> None:
        start.wait()
        try:
            submit_review(paused.id, {"approve": approve, "reviewer": "ann" if approve else "ben", "comment": "race"})
            outcomes[approve] = "applied"
        except BadInputError as exc:
            outcomes[approve] = exc

    threads = [threading.Thread(target=decide, args=(approve,)) for approve in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    applied = [approve for approve, outcome in outcomes.items() if outcome == "applied"]
    assert len(applied) == 1, outcomes
    (loser,) = [outcome for outcome in outcomes.values() if outcome != "applied"]
    assert "another decision reached it first" in str(loser) and "was not applied" in str(loser)
    state = run.finish()
    assert state.result() is applied[0]  # the run got the winner's decision


def test_approve_of_a_run_that_stays_running_exits_non_zero():
    """The flow process is gone (here: there never was one), so nothing ends the run."""
    from prefect.client.orchestration import get_client
    from prefect.states import Paused

    from fairloop.cli import app

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(waits_for_review)
        client.set_flow_run_state(run.id, Paused(), force=True)
    result = CliRunner().invoke(app, ["approve", str(run.id), "--reviewer", "ann", "--wait-seconds", "3"],
                                env={"COLUMNS": "250"})
    text = " ".join((result.output + result.stderr).split())
    assert result.exit_code == ExitCode.FAILED, text
    assert "after 3s the run is still Running" in text and "Nothing is promoted" in text
    assert "Traceback" not in text
