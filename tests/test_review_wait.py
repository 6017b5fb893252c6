"""The run-input keys fairloop's outage-tolerant review wait rejoins are the ones Prefect's own
pause uses (a Prefect upgrade that renames them must fail here, not in a week-long review)."""

from __future__ import annotations

import httpx
import pytest
from prefect import flow
from prefect.flow_runs import pause_flow_run

from conftest import BackgroundRun
from fairloop.review.packet import ReviewDecision
from fairloop.review.wait import pause_keyset, server_unreachable
from fairloop.serving.runs import submit_review


@flow(name="review-keys")
def waits_for_review() -> str:
    form = ReviewDecision.with_initial_data(description="keys")
    return pause_flow_run(wait_for_input=form, timeout=300, poll_interval=1, key="review-7").reviewer


@pytest.mark.usefixtures("prefect_server")
def test_pause_keyset_matches_prefects_pause():
    background = BackgroundRun(waits_for_review)
    run = background.wait_paused()
    assert run.state.state_details.pause_key == "review-7"
    assert run.state.state_details.run_input_keyset == pause_keyset("review-7")
    submit_review(run.id, {"approve": True, "reviewer": "ann"})
    assert background.finish().result() == "ann"


def test_what_counts_as_the_server_being_away():
    request = httpx.Request("GET", "http://127.0.0.1:9/api/flow_runs")
    assert server_unreachable(httpx.ConnectError("refused", request=request))
    assert server_unreachable(httpx.HTTPStatusError("busy", request=request, response=httpx.Response(503, request=request)))
    assert not server_unreachable(httpx.HTTPStatusError("no", request=request, response=httpx.Response(404, request=request)))
    assert not server_unreachable(ValueError("a bug, not an outage"))
