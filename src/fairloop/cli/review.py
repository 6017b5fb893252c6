"""Commands of the human review: approve, reject, show (the review report) and reviewers (credentials)."""

from __future__ import annotations

import uuid as uuid_module
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fairloop.cli.common import (
    _abandoned,
    console,
    end_abandoned_runs,
    err,
    exit_for_state,
    prefect_server,
    record_expired_reviews,
    user_errors,
)
from fairloop.config import get_settings
from fairloop.errors import BadInputError
from fairloop.flows.review import SUSPENDED
from fairloop.person_names import name_problem
from fairloop.registry.store import Registry
from fairloop.review.credentials import REVIEWERS_FILE, issue, read_book
from fairloop.review.no_candidate import load_no_candidate
from fairloop.review.packet import load_packet
from fairloop.review.terminal import print_no_candidate, print_packet
from fairloop.serving.flow_process import read_flow_process
from fairloop.serving.outcomes import ExitCode
from fairloop.serving.runs import (
    flow_run_url,
    read_flow_run,
    submit_review,
    wait_for_flow_run,
)
from fairloop.serving.worker import ensure_worker, worker_log_path

reviewers_app = typer.Typer(help="Reviewer credentials: tokens that prove who approves or requests a run.",
                            no_args_is_help=True)


def _review(run_id: str, reviewer: str, comment: str, approve: bool, wait_seconds: int, token: str = "",
            accept_inconclusive_risk: bool = False) -> ExitCode:


    try:
        run_id = str(uuid_module.UUID(run_id))  # the run's folder is named in the canonical form
    except ValueError:
        raise BadInputError(f"'{run_id}' is not a flow run id (a UUID)", field="RUN_ID") from None
    problem = name_problem(reviewer)
    if problem:
        raise BadInputError(problem, field="--reviewer")
    if not approve and not comment.strip():
        raise BadInputError("a rejection needs a comment saying why (it is audited)", field="--comment")
    settings = get_settings()
    process = read_flow_process(settings.state_dir / "runs" / run_id)  # None while suspended: it holds none
    with prefect_server(settings) as api_url:
        record_expired_reviews(settings)
        # whether the process is gone is read first: once it is, the state read next is the run's last
        gone = process is not None and process.alive() is False
        state = read_flow_run(run_id).state
        if state is not None and state.is_final():
            raise BadInputError(f"flow run {run_id} is not awaiting review: it ended {state.name} "
                                f"({state.message or 'no message'}); nothing was changed", field="RUN_ID")
        if gone:
            return _abandoned(settings, run_id, process, state, {"reviewer": reviewer}, decided=False)
        if state is not None and state.name == SUSPENDED and ensure_worker(settings, api_url):
            err.print(f"Started a worker of work pool '{settings.work_pool}' to resume the run "
                      f"(log: {worker_log_path(settings)})")
        submit_review(run_id, {"approve": approve, "reviewer": reviewer, "comment": comment, "token": token,
                               "accept_inconclusive_risk": accept_inconclusive_risk})
        console.print(f"Sent the {'approval' if approve else 'rejection'} of {run_id} as {escape(reviewer)}; waiting for the run...")
        run = wait_for_flow_run(
            run_id, lambda r: bool(r.state and (r.state.is_final() or r.state.is_paused()
                                                or (process is not None and process.alive() is False))),
            wait_seconds,
        )
        if not (run.state.is_final() or run.state.is_paused()):
            run = read_flow_run(run_id)  # it may have ended just as its process did
            if not run.state.is_final() and process is not None and process.alive() is False:
                return _abandoned(settings, run_id, process, run.state, {"reviewer": reviewer}, decided=True)
        if run.state.is_paused():
            refusals = [r for r in Registry(settings.registry_path).audit_log()
                        if r.get("run_id") == str(run.id) and r.get("action") == "refused"]
            reason = refusals[-1]["comment"] if refusals else "see the run's logs"
            err.print(f"[red]refused[/red]: {escape(reason)}; the run is still awaiting review", soft_wrap=True)
            return ExitCode.FAILED
        if not run.state.is_final():
            err.print(f"[red]the decision was delivered, but after {wait_seconds}s the run is still {run.state.name}[/red]: "
                      f"its flow process may have died. Nothing is promoted until it ends; check it in the UI "
                      f"({escape(flow_run_url(run_id))}) and `fairloop models`.", soft_wrap=True)
            return ExitCode.FAILED
        return exit_for_state(read_flow_run(run_id).state, run_id)


@user_errors
def approve(
    run_id: str,
    reviewer: Annotated[str, typer.Option(help="your name, as the policy lists reviewers")],
    comment: Annotated[str, typer.Option()] = "",
    wait_seconds: Annotated[int, typer.Option(min=1, help="how long to wait for the promotion")] = 600,
    token: Annotated[str, typer.Option(envvar="FAIRLOOP_TOKEN", show_default=False,
                                       help="your reviewer token (fairloop reviewers add); or set FAIRLOOP_TOKEN")] = "",
    accept_inconclusive_risk: Annotated[bool, typer.Option(
        help="accept the inconclusive gates (needed when the policy says inconclusive: review_with_acceptance); "
             "the comment is recorded as your reason")] = False,
):
    """Approve a run that awaits review (the same call as the UI's Resume form)."""
    raise typer.Exit(_review(run_id, reviewer, comment, True, wait_seconds, token, accept_inconclusive_risk))


@user_errors
def reject(
    run_id: str,
    reviewer: Annotated[str, typer.Option(help="your name")],
    comment: Annotated[str, typer.Option(help="why: recorded in the audit log")],
    wait_seconds: Annotated[int, typer.Option(min=1, help="how long to wait for the run to end")] = 120,
    token: Annotated[str, typer.Option(envvar="FAIRLOOP_TOKEN", show_default=False,
                                       help="your reviewer token (fairloop reviewers add); or set FAIRLOOP_TOKEN")] = "",
):
    """Reject a run that awaits review; nothing is promoted and the comment is recorded."""
    raise typer.Exit(_review(run_id, reviewer, comment, False, wait_seconds, token))


@user_errors
def show(run_id: Annotated[str, typer.Argument(help="flow run id (printed when the run starts)")]):
    """Print a run's review report in the terminal: the decision summary the Resume dialog shows, or,
    for a run whose sweep chose no candidate, why, every candidate's gates and the baseline's figures."""
    settings = get_settings()
    with prefect_server(settings):
        end_abandoned_runs(settings, "show")
        run = read_flow_run(run_id)
    run_dir, state = settings.state_dir / "runs" / str(run.id), run.state.name if run.state else "unknown"
    packet = load_packet(run_dir)
    if packet is not None:
        print_packet(console, packet, state=state)
        return
    no_candidate = load_no_candidate(run_dir)  # a sweep that chose nothing: no packet, but what it found
    if no_candidate is not None:
        print_no_candidate(console, no_candidate, state=state)
        return
    raise BadInputError(f"run {run.id} ({state}) has no review report in {run_dir}: "
                        "it has not reached its gates yet, or it ran with another project directory")


@user_errors
def reviewers_add(
    name: Annotated[str, typer.Argument(help="the reviewer's name, as they will type it in the review form")],
    rotate: Annotated[bool, typer.Option(help="replace the reviewer's existing token")] = False,
):
    """Issue a reviewer token: printed once, stored only as a salted scrypt hash in the registry."""
    settings = get_settings()
    registry = Registry(settings.registry_path, settings.remote_path)
    book, token = issue(read_book(registry.root), name, rotate=rotate)
    registry.commit_file(REVIEWERS_FILE, book.model_dump_json(indent=2) + "\n", f"Reviewer credential for {name}")
    err.print(f"Token for reviewer [bold]{escape(name)}[/bold] (shown once; give it to them privately). Reviews now "
              "need a token: in the Resume form's token field, or `fairloop approve --token` / FAIRLOOP_TOKEN.")
    typer.echo(token)


@user_errors
def reviewers_list():
    """The reviewers who hold a token (names and when they were added; never the tokens)."""
    book = read_book(get_settings().registry_path)
    if not book.reviewers:
        console.print("No reviewer credentials: reviews are accepted by name alone (fairloop reviewers add NAME).")
        return
    table = Table(title="reviewers")
    for column in ("name", "added", "added by"):
        table.add_column(column)
    for credential in book.reviewers.values():
        table.add_row(escape(credential.name), credential.added_at, escape(credential.added_by))
    console.print(table)
