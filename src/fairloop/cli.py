"""The ``fairloop`` command line."""

from __future__ import annotations

import functools
import getpass
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairloop.config import Settings, get_settings
from fairloop.errors import BadInputError, FairloopError
from fairloop.flows.request import RemediationRequest
from fairloop.flows.review import SUSPENDED
from fairloop.serving.outcomes import ExitCode, Outcome
from fairloop.serving.worker import (
    ensure_deployment,
    ensure_worker,
    start_remediation,
    worker_log_path,
)

app = typer.Typer(
    help="fairloop: audit, augment, retrain under fairness constraints, gate, approve, promote, roll back.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for logs and grep

DEFAULT_RECIPE = "recipes/none.yaml"
DEFAULT_CONSTRAINT = "constraints/gs-dp.yaml"
DEFAULT_POLICY = "policies/default.yaml"
FROZEN_MODEL_SWEEP = "constraints/sweeps/frozen-model.yaml"  # remediate --model without --sweep or --constraint
PROBE_ROWS = 50  # rows a --model is asked to score before any run starts
TRUST_WARNING = ("[yellow]warning: --trust: unpickling model files from outside the registry runs any code they "
                 "contain; use it only for files from a source you trust[/yellow]")
TRAINING_TIMEOUT_SECONDS = 3600


def user_errors(command):
    """Turn fairloop's user-facing errors into a one-line message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BadInputError as exc:
            err.print(f"[red]bad input:[/red] {escape(str(exc))}")
            raise typer.Exit(ExitCode.BAD_INPUT) from None
        except FairloopError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(ExitCode.FAILED) from None

    return wrapper


@contextmanager
def prefect_server(settings: Settings, worker: bool = False):
    """Make every Prefect call in the block go to the local server (started if needed); with ``worker``,
    also the remediation deployment and a local worker of its pool (``fairloop.serving.worker``)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from fairloop.serving.server import ensure_server, server_env

    api_url, started = ensure_server(settings)
    if started:
        err.print(f"Started a local Prefect server at {api_url} (log: {settings.state_dir / 'prefect-server.log'})")
    ui_url = os.environ.get("PREFECT_UI_URL") or PREFECT_UI_URL.value() or api_url.removesuffix("/api")
    os.environ.update({"PREFECT_API_URL": api_url, "PREFECT_UI_URL": ui_url,
                       "PREFECT_SERVER_ANALYTICS_ENABLED": server_env(settings)["PREFECT_SERVER_ANALYTICS_ENABLED"]})
    with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
        if worker:
            ensure_deployment(settings)
            if ensure_worker(settings, api_url):
                err.print(f"Started a worker of work pool '{settings.work_pool}' (log: {worker_log_path(settings)})")
        yield api_url


def load_flow(name: str):
    """The flow ``name`` (``remediation`` or ``monitor``) from ``fairloop.flows``."""
    from fairloop import flows

    return getattr(flows, name)


def validate_inputs(dataset: Path, recipe: Path, constraint: Path, policy: Path, sweep: Path | None = None):
    """Fail fast, before any server or training work, on a broken data file or dataset; return the dataset."""
    from fairloop.data.datasets import load_dataset
    from fairloop.gates.policy import load_policy
    from fairloop.remedy.constraints import check_weighting, load_constraint_template
    from fairloop.remedy.recipes import load_recipe

    if sweep is not None:
        from fairloop.remedy.sweep.spec import load_sweep

        if (str(recipe), str(constraint)) != (DEFAULT_RECIPE, DEFAULT_CONSTRAINT):
            raise BadInputError("give either --sweep or --recipe/--constraint: a sweep names its own", field="--sweep")
        load_sweep(sweep)  # reads every recipe and template the sweep names
    else:
        weighting = load_recipe(recipe).produces_weights
        template = load_constraint_template(constraint)
        if weighting:
            check_weighting(template, str(constraint))
    load_policy(policy)
    return load_dataset(dataset)  # reads the files: columns, labels and sensitive values are checked


def validate_base_model(model: str, trust: bool, loaded, recipe: Path, constraint: Path, sweep: Path | None) -> None:
    """Fail fast on a --model run: templates or recipes that would retrain, a model that cannot be
    loaded (or is an untrusted pickle), or one whose output is not a score for each of a few rows."""
    from fairloop.remedy.constraints import load_constraint_template
    from fairloop.remedy.frozen import load_base_model, refusal
    from fairloop.remedy.recipes import load_recipe

    if sweep is not None:
        from fairloop.remedy.sweep.spec import expand_candidates, load_sweep

        pairs = [(c.template, c.recipe) for c in expand_candidates(load_sweep(sweep))[0]]
    else:
        pairs = [(load_constraint_template(constraint), load_recipe(recipe))]
    reasons = list(dict.fromkeys(reason for template, chosen in pairs if (reason := refusal(template, chosen))))
    if reasons:
        raise BadInputError("; ".join(reasons), field="--sweep" if sweep else "--constraint")
    if trust and Path(model).is_file():
        err.print(TRUST_WARNING)
    scorer = load_base_model(model, loaded.spec.features.columns, trust=trust)
    scorer.scores(loaded.all_rows().X.head(PROBE_ROWS))


def validate_runner(runner: str, dask_address: str | None, sweep: Path | None) -> None:
    from fairloop.remedy.sweep.jobs import RUNNERS

    if runner not in RUNNERS:
        raise BadInputError(f"unknown runner '{runner}' (choose one of {', '.join(RUNNERS)})", field="--runner")
    if (runner == "dask" or dask_address) and sweep is None:
        raise BadInputError("--runner dask and --dask-address fit a sweep's candidates: give --sweep", field="--runner")
    if dask_address and "://" not in dask_address:
        raise BadInputError(f"'{dask_address}' is not a Dask scheduler address (e.g. tcp://host:8786)", field="--dask-address")


def exit_for_state(state, run_id) -> ExitCode:
    """Print how the run ended and return its exit code."""
    outcome = Outcome.from_state(state)
    if outcome is None and state.is_failed():
        try:
            state.result(raise_on_failure=True)
        except BadInputError as exc:
            err.print(f"[red]bad input:[/red] {escape(str(exc))}")
            return ExitCode.BAD_INPUT
        except Exception as exc:  # noqa: BLE001 - the run failed; say how, without a traceback
            err.print(f"[red]run {run_id} failed:[/red] {type(exc).__name__}: {escape(str(exc))}")
            return ExitCode.FAILED
    colour = "green" if outcome is Outcome.PROMOTED else "red"
    console.print(f"[{colour}]{outcome.value if outcome else state.name}[/{colour}]: {escape(state.message or '')}")
    return outcome.exit_code if outcome else ExitCode.FAILED


@app.command()
@user_errors
def remediate(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Option(help="dataset spec, e.g. datasets/adult.yaml")],
    recipe: Annotated[Path, typer.Option(help="augmentation recipe")] = Path(DEFAULT_RECIPE),
    constraint: Annotated[Path, typer.Option(help="constraint template")] = Path(DEFAULT_CONSTRAINT),
    policy: Annotated[Path, typer.Option(help="gate policy")] = Path(DEFAULT_POLICY),
    sweep: Annotated[Optional[Path], typer.Option(
        help="sweep file (e.g. constraints/sweeps/default.yaml): fit its recipe x template candidates in "
             "parallel and take the most accurate that passes the policy on validation")] = None,
    sensitive: Annotated[Optional[str], typer.Option(help="sensitive feature, or a declared intersection such as sex:race (default: the spec's first)")] = None,
    train_rows: Annotated[Optional[int], typer.Option(min=1, help="subsample the training pool (quick runs)")] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of splits, samplers and learners")] = 0,
    approval_timeout: Annotated[Optional[int], typer.Option(min=1, help="seconds to wait for review (default: policy's)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the run until it ends (default; the review may take days: "
                                            "Ctrl-C stops only the following), or --no-wait: return once it exists")] = True,
    until_review: Annotated[bool, typer.Option(help="follow the run until it awaits review (or ends), then return")] = False,
    token: Annotated[str, typer.Option(envvar="FAIRLOOP_TOKEN", show_default=False,
                                       help="your reviewer token: records you, verified, as the requester")] = "",
    model: Annotated[Optional[str], typer.Option(
        help="a fitted model to remediate WITHOUT retraining it: a .skops file, a .joblib/.pkl file (with --trust) or "
             "module:function mapping a DataFrame of features to positive-class scores; only post-processing "
             f"candidates apply (default sweep: {FROZEN_MODEL_SWEEP})")] = None,
    trust: Annotated[bool, typer.Option(
        help="let --model be a pickle file (or a skops file with types outside the trusted list): loading it runs "
             "any code it contains")] = False,
    runner: Annotated[str, typer.Option(help="where a sweep's candidates are fitted: 'processes' (this machine's "
                                             "cores) or 'dask' (a local Dask cluster, or --dask-address)")] = "processes",
    dask_address: Annotated[Optional[str], typer.Option(
        help="an existing Dask scheduler (tcp://host:8786) that fits the sweep (default: FAIRLOOP_DASK_ADDRESS)")] = None,
):
    """Run one remediation: audit, augment, retrain (one candidate or a sweep), evaluate, gate, await review, promote.

    With --model: post-process that fitted model instead of retraining (ThresholdOptimizer on its
    scores, the counterfactual guardrail); the base model is the baseline."""
    settings = get_settings()
    # by name: typer vendors its own click, whose ParameterSource is not click's
    chosen = [name for name in ("recipe", "constraint") if ctx.get_parameter_source(name).name != "DEFAULT"]
    if model is not None and sweep is None and not chosen:
        sweep = Path(FROZEN_MODEL_SWEEP)
    loaded = validate_inputs(dataset, recipe, constraint, policy, sweep)
    validate_runner(runner, dask_address, sweep)
    if model is not None:
        validate_base_model(model, trust, loaded, recipe, constraint, sweep)
    requested_by, requester_verified = requester(settings, token)
    request = RemediationRequest(
        dataset=str(dataset), recipe=str(recipe), constraint=str(constraint), policy=str(policy),
        sweep_file=str(sweep) if sweep else None, sensitive=sensitive, train_rows=train_rows, seed=seed,
        approval_timeout=approval_timeout, requested_by=requested_by, requester_verified=requester_verified,
        base_model=model, trust_base_model=trust, runner=runner, dask_address=dask_address)
    with prefect_server(settings, worker=True):
        raise typer.Exit(follow_remediation(settings, start_remediation(settings, request), wait, until_review))


def follow_remediation(settings: Settings, run, wait: bool, until_review: bool = False) -> ExitCode:
    """Follow a run the pool's worker executes until it ends (its outcome's exit code), or with
    ``until_review`` until it awaits review (0); with ``wait`` off, return once it exists. Stopping
    this command (Ctrl-C, a time limit) stops only the following: the run goes on, and how to follow
    it is printed."""
    import signal

    from fairloop.serving.runs import flow_run_url, read_flow_run, review_commands

    console.print(f"Run {run.name} started: {flow_run_url(run.id)}", soft_wrap=True)
    if not wait:
        console.print(f"It runs on a worker of work pool '{settings.work_pool}'; follow it with "
                      f"`fairloop show {run.id}` or in the UI.", soft_wrap=True)
        return ExitCode.PROMOTED

    def stop_following(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_following)  # `timeout` sends SIGTERM
    told = False

    def awaiting_or_ended(run) -> bool:
        nonlocal told
        if run.state and run.state.is_paused() and not told:
            told = True
            console.print(f"[bold]Run {run.name} awaits review[/bold] (it holds no process while it waits). Open it in "
                          f"the Prefect UI and press Resume:\n  {flow_run_url(run.id)}", soft_wrap=True)
            console.print(f"or decide from the shell:\n{escape(review_commands(run.id))}", soft_wrap=True)
        return bool(run.state and (run.state.is_final() or (until_review and told)))

    try:
        run = follow_progress(run.id, awaiting_or_ended, None)
        if until_review and run.state.is_paused():
            return ExitCode.PROMOTED
    except KeyboardInterrupt:
        err.print(f"Stopped following run {run.id}; it goes on on the worker. Follow it with `fairloop show {run.id}` "
                  f"or {flow_run_url(run.id)}", soft_wrap=True)
        return ExitCode.STOPPED_FOLLOWING
    end_abandoned_runs(settings, "remediate")  # an expired review gets its audit line and Expired state
    return exit_for_state(read_flow_run(run.id).state, run.id)


def requester(settings: Settings, token: str) -> tuple[str, bool]:
    """Who starts a run: the reviewer a token belongs to (verified), else the OS user (not verified)."""
    from fairloop.review.credentials import identify, read_book

    if token:
        return identify(read_book(settings.registry_path), token), True
    return getpass.getuser(), False


def follow_progress(run_id, done, timeout: float | None):
    """Show the run's stage, 'k/N models fitted' and elapsed time (its progress artifact) until ``done(run)``
    (or ``timeout`` seconds, if given)."""

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fairloop.serving.runs import read_flow_run, read_progress

    deadline = time.monotonic() + timeout if timeout is not None else None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("starting", total=100)
        while True:
            run = read_flow_run(run_id)
            progress = read_progress(run_id)
            if progress is not None:
                bar.update(task, completed=progress[0], description=escape(progress[1]))
            if done(run) or (deadline is not None and time.monotonic() > deadline):
                return run
            time.sleep(1.0)


def _review(run_id: str, reviewer: str, comment: str, approve: bool, wait_seconds: int, token: str = "",
            accept_inconclusive_risk: bool = False) -> ExitCode:
    import uuid as uuid_module

    from fairloop.person_names import name_problem
    from fairloop.registry.store import Registry
    from fairloop.serving.expiry import reconcile_expired_reviews
    from fairloop.serving.flow_process import read_flow_process
    from fairloop.serving.runs import (
        flow_run_url,
        read_flow_run,
        submit_review,
        wait_for_flow_run,
    )

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
        reconcile_expired_reviews(settings.state_dir, Registry(settings.registry_path, settings.remote_path))
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


def _abandoned(settings: Settings, run_id: str, process, state, who: dict, decided: bool) -> ExitCode:
    """The run's flow process died while the run was in ``state``: end the run Crashed with the
    reason, let the registry finish or undo an interrupted promotion, and audit it with ``who``
    found it (the reviewer, or the command). Nothing acts on a decision for such a run."""
    from fairloop.registry.store import Registry
    from fairloop.review.packet import load_packet
    from fairloop.serving.flow_process import forget_flow_process
    from fairloop.serving.runs import crash_run

    when = ("after the decision was delivered" if decided else "while the run awaited review"
            if state is None or state.is_paused() else f"while the run was {state.name}")
    registry = Registry(settings.registry_path, settings.remote_path)
    recovered = [note["detail"] for note in registry.recover()]  # an interrupted promotion: finished or undone
    promoted = [r["version"] for r in registry.audit_log() if r.get("run_id") == run_id and r["action"] == "promote"]
    reason = (f"the flow process (pid {process.pid} on {process.host}) ended {when}; "
              + (f"it had promoted {promoted[-1]}" if promoted else "nothing was promoted by this run")
              + "".join(f"; registry: {note}" for note in recovered))
    crash_run(run_id, reason)
    packet = load_packet(settings.state_dir / "runs" / run_id)
    dataset = packet.dataset if packet is not None else process.dataset  # None: it died before reading its spec
    if dataset is not None:
        registry.record_decision({"dataset": dataset, "run_id": run_id, "action": "flow_process_died", **who,
                                  "decision_delivered": decided, "reason": reason})
    forget_flow_process(settings.state_dir / "runs" / run_id)
    err.print(f"[red]run {run_id} crashed[/red]: {escape(reason)}. Start a new run to remediate again.", soft_wrap=True)
    return ExitCode.FAILED


def end_abandoned_runs(settings: Settings, command: str) -> None:
    """End Crashed, with the reason, each run this host recorded whose flow process is gone while the
    server still shows it Paused or Running (nothing else ever would); forget the processes of runs
    that ended. Runs this server does not know (recorded with another one) are left alone. Then give
    each suspended review that expired its audit line and Expired state (``fairloop.serving.expiry``)."""
    from fairloop.registry.store import Registry
    from fairloop.serving.expiry import reconcile_expired_reviews
    from fairloop.serving.flow_process import forget_flow_process, gone_flow_processes
    from fairloop.serving.runs import read_flow_runs

    gone = gone_flow_processes(settings.state_dir)
    for run in read_flow_runs(list(gone)) if gone else []:
        if run.state is not None and (run.state.is_final() or not (run.state.is_running() or run.state.is_paused())):
            forget_flow_process(settings.state_dir / "runs" / str(run.id))  # ended, or waiting for a worker
        else:
            _abandoned(settings, str(run.id), gone[run.id], run.state, {"found_by": f"fairloop {command}"}, decided=False)
    for run_id in reconcile_expired_reviews(settings.state_dir, Registry(settings.registry_path, settings.remote_path)):
        err.print(f"Run {run_id} expired: nobody decided its review in time; nothing was promoted.", soft_wrap=True)


@app.command()
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


@app.command()
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


@app.command()
@user_errors
def models(dataset: Annotated[Optional[str], typer.Argument(help="dataset name; all when omitted")] = None):
    """Show each dataset's champion and its promotion history."""
    from fairloop.registry.store import Registry
    from fairloop.review.history import history_table
    from fairloop.serving.flow_process import gone_flow_processes
    from fairloop.serving.server import answering_api_url

    settings = get_settings()
    api_url = gone_flow_processes(settings.state_dir) and answering_api_url(settings)
    if api_url:  # best effort: this command needs no server, and starts none
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            end_abandoned_runs(settings, "models")
    registry = Registry(settings.registry_path, settings.remote_path)
    names = [registry.check_dataset(dataset)] if dataset else registry.datasets()
    if not names:
        console.print(f"No models in the registry at {registry.root} yet.")
        return
    mismatched = [p for name in names for p in registry.check_champion(name)]
    for name in names:
        console.print(history_table(name, registry.champion(name), registry.history(name), root=str(registry.root),
                                    files_mismatch=any(p.dataset == name for p in mismatched)))
    for problem in mismatched:
        err.print(f"[red]{escape(problem.dataset)} {problem.version}:[/red] {escape(problem.path)}: {escape(problem.problem)}",
                  soft_wrap=True)
    if mismatched:
        err.print("[red]a champion's files were changed outside fairloop: runs and monitors refuse it; "
                  "see `fairloop verify` and roll back[/red]")
        raise typer.Exit(ExitCode.FAILED)


@app.command()
@user_errors
def rollback(
    dataset: str,
    to: Annotated[str, typer.Option("--to", help="version to restore, e.g. v1")],
    reviewer: Annotated[str, typer.Option(help="who decides the rollback (audited)")],
    reason: Annotated[str, typer.Option(help="why (audited; required)")],
):
    """Make an earlier version the champion again, model and data restored byte-identical."""
    from fairloop.registry.store import Registry

    settings = get_settings()
    entry = Registry(settings.registry_path, settings.remote_path).rollback(dataset, to, reviewer=reviewer, reason=reason)
    console.print(f"[green]{dataset} champion is now {entry.version}[/green] (model sha256 {entry.model_sha256[:12]}...)")


@app.command()
@user_errors
def lineage(dataset: str, version: str):
    """Print the lineage record of a registered version (JSON)."""
    from fairloop.registry.store import Registry

    settings = get_settings()
    entry = Registry(settings.registry_path, settings.remote_path).entry(dataset, version)
    console.print_json(entry.model_dump_json())


@app.command()
@user_errors
def reproduce(dataset: str, version: str):
    """Retrain a registered version from its recorded inputs; exit 1 unless metrics match exactly."""
    from fairloop.registry.reproduce import reproduce as reproduce_version
    from fairloop.registry.store import Registry

    settings = get_settings()
    result = reproduce_version(Registry(settings.registry_path, settings.remote_path), dataset, version)
    table = Table(title=f"{dataset} {version}: recorded vs reproduced")
    for column in ("metric", "recorded", "reproduced"):
        table.add_column(column)
    for metric, recorded in result.recorded.items():
        table.add_row(metric, f"{recorded:.6f}", f"{result.reproduced[metric]:.6f}")
    console.print(table)
    console.print(f"training set identical: {result.training_set_identical}; "
                  f"max |difference|: {result.max_abs_difference:.2e}")
    console.print("[green]reproduced[/green]" if result.matches else "[red]does not match[/red]")
    raise typer.Exit(0 if result.matches else ExitCode.FAILED)


@app.command()
@user_errors
def verify(dataset: Annotated[Optional[str], typer.Argument(help="dataset name; all when omitted")] = None):
    """Check every version's files (DVC cache and remote) and each champion against the recorded sha256: exit 1 on a mismatch."""
    from fairloop.registry.store import Registry

    settings = get_settings()
    registry = Registry(settings.registry_path, settings.remote_path)
    for note in registry.recover():
        err.print(f"[yellow]recovered:[/yellow] {escape(note['detail'])}")
    names = [registry.check_dataset(dataset)] if dataset else registry.datasets()
    problems = registry.verify(dataset)
    for problem in problems:
        err.print(f"[red]{escape(problem.dataset)} {problem.version}:[/red] {escape(problem.path)}: {escape(problem.problem)}",
                  soft_wrap=True)
    versions = sum(len(registry.history(name)) for name in names)
    if problems:
        err.print(f"[red]{len(problems)} problem(s)[/red] in {versions} version(s) of {len(names)} dataset(s) at {registry.root}")
        raise typer.Exit(ExitCode.FAILED)
    console.print(f"[green]ok[/green]: {versions} version(s) of {len(names)} dataset(s) match their recorded sha256 "
                  f"(working copy, DVC cache{' and remote' if registry.remote else ''}) at {registry.root}")


@app.command()
@user_errors
def stage(
    name: Annotated[str, typer.Argument(help="prepare, audit, augment, train or evaluate")],
    params: Annotated[Path, typer.Option(help="DVC params file")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="folder of the stages' outputs")] = Path("pipeline"),
):
    """Run one stage of the DVC pipeline (what `dvc repro` calls; see dvc.yaml)."""
    from fairloop.stages import run_stage

    verdict = run_stage(name, params, out)
    if verdict == "block":
        err.print(f"[red]audit blocked[/red]: see {escape(str(out / 'audit.json'))}")
        raise typer.Exit(ExitCode.AUDIT_BLOCKED)


@app.command()
@user_errors
def init(
    data_file: Annotated[Optional[Path], typer.Argument(help="the data file (CSV or other delimited text, .gz allowed)")] = None,
    label: Annotated[Optional[str], typer.Option(help="label column (asked for when init cannot tell)")] = None,
    positive: Annotated[Optional[list[str]], typer.Option(help="label value meaning the positive class (repeatable)")] = None,
    sensitive: Annotated[Optional[list[str]], typer.Option(help="sensitive column (repeatable; default: found by name)")] = None,
    name: Annotated[Optional[str], typer.Option(help="dataset name (default: from the file name)")] = None,
    output: Annotated[Optional[Path], typer.Option(help="spec to write (default: datasets/NAME.yaml)")] = None,
    columns: Annotated[Optional[str], typer.Option(help="comma-separated column names for a file without a header")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing spec file")] = False,
    check: Annotated[Optional[Path], typer.Option(help="validate this spec against its files and summarise it")] = None,
    project: Annotated[Optional[Path], typer.Option(help="lay out datasets/, recipes/, constraints/, policies/ here")] = None,
):
    """Draft a dataset spec from a data file; or --check a spec; or lay out a --project directory."""
    from fairloop.project import init as initialise

    if sum(x is not None for x in (data_file, check, project)) != 1:
        raise BadInputError("give one of: DATA_FILE (draft a spec), --check SPEC, --project DIR", field="init")
    if project is not None:
        for path in initialise.lay_out_project(project):
            console.print(f"created {escape(str(path))}")
        console.print(f"Next: cd {escape(str(project))} && fairloop init YOUR_DATA.csv --label COLUMN", soft_wrap=True)
        return
    if check is not None:
        summary = initialise.check_spec(check)
        console.print(f"[green]{escape(summary.spec)}: valid[/green] (dataset {escape(summary.dataset)})", soft_wrap=True)
        console.print(f"  rows: {', '.join(f'{role} {n:,}' for role, n in summary.rows.items())}; {summary.raw_columns} columns "
                      f"in the file, {summary.numeric} numeric and {summary.categorical} categorical features; "
                      f"label '{escape(summary.label)}' positive rate {summary.positive_rate:.3f}", soft_wrap=True)
        for item in summary.sensitive:
            groups = ", ".join(f"{escape(g.group)} {g.rows:,} (base rate {g.base_rate:.3f})" for g in item.groups)
            also = "; also a model feature (use_as_feature)" if item.use_as_feature else ""
            console.print(f"  sensitive '{escape(item.name)}' (column '{escape(item.column)}'){also}: {groups}", soft_wrap=True)
        return
    names = [c.strip() for c in columns.split(",")] if columns else None
    draft = initialise.draft_spec(data_file, label=label, positive=positive, sensitive=sensitive, name=name,
                                  output=output, columns=names, force=force)
    console.print(f"[green]wrote {escape(str(draft.path))}[/green] ({draft.rows:,} labelled rows load with it); "
                  "read its comments, then:", soft_wrap=True)
    console.print(f"  fairloop audit --dataset {escape(str(draft.path))}\n"
                  f"  fairloop remediate --dataset {escape(str(draft.path))} --no-wait", soft_wrap=True)


@app.command()
@user_errors
def audit(
    dataset: Annotated[Path, typer.Option(help="dataset spec")],
    data: Annotated[Optional[Path], typer.Option(help="audit this file (e.g. a new snapshot) with the spec's parsing rules")] = None,
    sensitive: Annotated[Optional[str], typer.Option(help="sensitive feature to report groups for (default: the spec's first)")] = None,
    output: Annotated[Optional[Path], typer.Option(help="also write the JSON audit record to this file")] = None,
    update_reference: Annotated[bool, typer.Option(help="re-learn the suite's category sets and ranges from the spec's own files")] = False,
    gx_dir: Annotated[Optional[Path], typer.Option(help="file-backed Great Expectations context (default: <project>/gx)")] = None,
):
    """Audit a dataset alone: exit 0 on pass or warn, 6 on block, 2 on bad input (a CI step).

    The JSON audit record goes to stdout (and --output), a summary to stderr. The GX suite is
    saved in gx/expectations/ (learned from the spec's own files the first time, or with
    --update-reference) and the validation goes into gx/ Data Docs.
    """
    from fairloop.audit.checks import run_audit
    from fairloop.audit.schema import GxProject, default_gx_root, learn_reference
    from fairloop.data.dataset_spec import load_dataset_spec
    from fairloop.data.datasets import load_data_file, load_dataset

    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise BadInputError("is a directory, not a file" if output.is_dir() else "its folder does not exist",
                            source=str(output), field="--output")
    spec = load_dataset_spec(dataset)
    if sensitive:
        spec.grouping(sensitive)
    own_files = ", ".join(str(dataset.parent / f.path) for f in spec.files)
    project = GxProject(gx_dir or default_gx_root())
    loaded = None
    if data is None or update_reference or project.stored_suite(spec.name) is None:
        loaded = load_dataset(dataset)  # the spec's own files: the audited data, or the reference to learn
    if data is None:
        split, source = loaded.all_rows(), own_files
    else:
        spec, split = load_data_file(dataset, data)
        source = str(data)
    reference = None
    if update_reference or project.stored_suite(spec.name) is None:
        reference = learn_reference(spec, loaded.all_rows(), own_files)
    report = run_audit(spec, split, sensitive, source=source, reference=reference, gx_root=project.root, write_gx=True)
    record = report.model_dump_json(indent=2)
    if output is not None:
        output.write_text(record + "\n", encoding="utf-8")
    typer.echo(record)
    colour = {"pass": "green", "warn": "yellow", "block": "red"}[report.verdict]
    # soft_wrap: CI logs get whole lines (paths and values are never broken)
    err.print(f"[{colour}]audit {report.verdict.upper()}[/{colour}]: {escape(spec.name)}, {report.rows:,} rows of "
              f"{escape(source)}", soft_wrap=True)
    for finding in report.findings:
        if finding.severity != "info":
            err.print(f"  [{colour}]{finding.severity}[/{colour}] {escape(finding.message)}", soft_wrap=True)
    for breakdown in report.sensitive_features:
        top = ", ".join(f"{p.feature} {p.auc:.3f}" for p in report.top_proxies(breakdown.name, 3))
        err.print(f"  top proxies of {escape(breakdown.name)} (AUC): {escape(top)}", soft_wrap=True)
    err.print(f"  GX suite: {escape(report.gx_suite)}; Data Docs: {escape(report.data_docs or 'not built')}", soft_wrap=True)
    raise typer.Exit(ExitCode.AUDIT_BLOCKED if report.verdict == "block" else 0)


@app.command()
@user_errors
def gate(
    model: Annotated[Path, typer.Option(help="model file (registry/<dataset>/model.joblib)")],
    data: Annotated[Path, typer.Option(help="labelled data file in the dataset's raw format")],
    policy: Annotated[Path, typer.Option(help="gate policy")],
    dataset: Annotated[Path, typer.Option(help="dataset spec that says how to read --data")],
    baseline: Annotated[Optional[Path], typer.Option(help="model for the *_vs_baseline gates")] = None,
    champion: Annotated[Optional[Path], typer.Option(help="model for the *_vs_champion gates")] = None,
    sensitive: Annotated[Optional[str], typer.Option()] = None,
    trust: Annotated[bool, typer.Option(
        help="load model files from outside the registry: they are pickles, and loading one runs any code it "
             "contains. Registry champions are checked against their recorded sha256 instead")] = False,
):
    """Gate a model on labelled data with a policy: exit 0 on pass, 3 when the policy blocks it."""
    from fairloop.data.datasets import load_data_file
    from fairloop.gates.policy import apply_gates, load_policy
    from fairloop.pipeline import evaluate_models
    from fairloop.registry.store import Registry
    from fairloop.remedy.model import load_model

    gate_policy = load_policy(policy)
    spec, split = load_data_file(dataset, data)
    sensitive = sensitive or spec.primary_sensitive
    spec.grouping(sensitive)
    settings = get_settings()
    registry = Registry(settings.registry_path, settings.remote_path)
    files = {name: path for name, path in (("candidate", model), ("baseline", baseline), ("champion", champion)) if path}
    recorded = {name: registry.recorded_sha256(path) for name, path in files.items()}
    if trust and any(sha is None for sha in recorded.values()):
        err.print(TRUST_WARNING)
    models = {name: load_model(path, expected_sha256=recorded[name], trust=trust) for name, path in files.items()}
    evaluations = evaluate_models(models, split, sensitive, gate_policy)
    report = apply_gates(gate_policy, evaluations, needs_sensitive_at_predict=models["candidate"].needs_sensitive_at_predict)
    table = Table(title=f"policy {gate_policy.name} v{gate_policy.version} on {data} ({len(split)} rows, {sensitive})")
    table.add_column("gate", overflow="fold")
    for column in ("verdict", "value", f"{gate_policy.bootstrap.confidence:.0%} interval", "threshold"):
        table.add_column(column)
    for r in report.results:
        interval = "" if r.interval is None else f"[{r.interval[0]:.4f}, {r.interval[1]:.4f}]"
        table.add_row(r.gate, r.verdict, "" if r.value is None else f"{r.value:.4f}", interval, str(r.threshold))
    console.print(table)
    for excluded in evaluations["candidate"].excluded_groups:
        console.print(f"left out of {excluded.rate.replace('_', ' ')}: group '{escape(excluded.group)}' ({escape(excluded.reason)})")
    for advice in report.advice:
        console.print(f"[yellow]sample size:[/yellow] {escape(advice)}")
    if not report.passed:
        for reason in report.failures:
            err.print(f"[red]blocked:[/red] {escape(reason)}")
        raise typer.Exit(ExitCode.GATE_FAILED)
    console.print("[green]pass[/green]")


@app.command()
@user_errors
def server(stop: Annotated[bool, typer.Option("--stop", help="stop the local server and worker fairloop started")] = False):
    """Start (or reuse) the local Prefect server and a worker of the project's work pool (which runs
    remediation runs, and resumes them after review); print their URLs. --stop stops both.

    The port is FAIRLOOP_SERVER_PORT (default 4200), the host FAIRLOOP_SERVER_HOST, the pool
    FAIRLOOP_WORK_POOL (default fairloop)."""
    from fairloop.serving.server import stop_server
    from fairloop.serving.worker import stop_worker

    settings = get_settings()
    if stop:
        stopped = stop_worker(settings)  # first: a worker whose server is gone ignores SIGTERM for a while
        if stopped:
            console.print(stopped)
        console.print(stop_server(settings))
        return
    with prefect_server(settings, worker=True) as api_url:
        end_abandoned_runs(settings, "server")
        console.print(f"Prefect API: {api_url}\nPrefect UI:  {api_url.removesuffix('/api')}")
        console.print(f"Work pool:   {settings.work_pool} (a local worker runs; log: {worker_log_path(settings)})")
        console.print(f"Other shells: export PREFECT_API_URL={api_url}")


@app.command()
@user_errors
def doctor(
    trigger_timeout: Annotated[int, typer.Option(help="seconds to wait for the probe automation to fire")] = 60,
):
    """Check the Prefect server the loop runs on: reachable, scheduler and triggers working, server log clean.

    Exit 0 when healthy, 1 with the reasons otherwise. Uses PREFECT_API_URL, or the local server
    fairloop starts (it never starts one itself).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fairloop.serving.doctor import run_doctor
    from fairloop.serving.server import configured_api_url, server_env, server_log_path

    settings = get_settings()
    api_url = configured_api_url() or server_env(settings)["PREFECT_API_URL"]
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        report = run_doctor(api_url, server_log_path(settings), trigger_timeout=trigger_timeout)
    for check in report.checks:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {escape(check.detail)}", soft_wrap=True)
    if not report.healthy:
        err.print(f"[red]unhealthy[/red]: {escape('; '.join(c.name for c in report.problems))} (server {api_url})")
        raise typer.Exit(ExitCode.FAILED)
    console.print(f"[green]healthy[/green]: {api_url}")


@app.command()
@user_errors
def monitor(
    dataset: Annotated[Path, typer.Option(help="dataset spec of the champion to check")],
    window: Annotated[Path, typer.Option(help="production rows in the dataset's raw format (timestamps, optional labels)")],
    policy: Annotated[Path, typer.Option(help="policy with the monitoring section (thresholds, window, persistence)")] = Path(DEFAULT_POLICY),
    window_end: Annotated[Optional[str], typer.Option(help="check the window_days before this date, or the calendar month (week) that ends on it (default: the latest window of the file)")] = None,
    every_window: Annotated[bool, typer.Option(help="check every window of the file in order instead of the latest")] = False,
    prediction_column: Annotated[Optional[str], typer.Option(help="column of production's 0/1 decisions (default: the champion predicts)")] = None,
    server: Annotated[bool, typer.Option(help="--no-server checks locally: no Prefect run, artifacts or drift event")] = True,
):
    """Check a production window against the champion by hand; an alert emits the drift event."""
    from fairloop.data.dataset_spec import load_dataset_spec
    from fairloop.gates.policy import load_policy
    from fairloop.monitor import run_monitor
    from fairloop.registry.store import Registry

    settings = get_settings()
    if window_end is not None:
        from datetime import date

        try:
            date.fromisoformat(window_end)
        except ValueError:
            raise BadInputError(f"'{window_end}' is not a date: give the day the window ends as YYYY-MM-DD",
                                field="--window-end") from None
    load_dataset_spec(dataset)
    load_policy(policy)
    if not window.is_file():
        raise BadInputError("window file not found", source=str(window))
    if server:
        with prefect_server(settings):
            from fairloop.serving.reruns import unserved_reason

            unserved = unserved_reason(load_dataset_spec(dataset).name)
            if unserved:
                err.print(f"[yellow]warning:[/yellow] {escape(unserved)}: an alert now starts no rerun. Start "
                          "`fairloop serve` first (server, serve, then monitors).", soft_wrap=True)
            flow = load_flow("monitor")
            records = flow(dataset=str(dataset), window=str(window), policy=str(policy), window_end=window_end,
                           every_window=every_window, prediction_column=prediction_column)
        from fairloop.monitor import WindowReport

        reports = [WindowReport.model_validate(r) for r in records]
    else:
        reports = run_monitor(dataset, window, policy, Registry(settings.registry_path, settings.remote_path),
                              settings.state_dir, window_end=window_end, every_window=every_window,
                              prediction_column=prediction_column)
    for report in reports:
        table = Table(title=f"{report.dataset} {report.champion_version}: window {report.window_start or 'all rows'} .. "
                            f"{report.window_end or ''} ({report.rows} rows, {report.labelled_rows} labelled)")
        for column in ("metric", "value", "interval", "threshold", "streak", "alert"):
            table.add_column(column)
        for row in report.table():
            if row["breach"] or row["metric"].startswith(("prediction_rate_gap", "group_share", "equalized_odds")):
                table.add_row(escape(row["metric"]), f"{row['value']:.3f}", row["interval"], str(row["threshold"]),
                              str(row["streak"]), "ALERT" if row["alert"] else "")
        console.print(table)
        verdict = "[red]ALERT[/red]: " + ", ".join(m.key for m in report.alerts) if report.alert else "[green]no alert[/green]"
        seen = "; checked before: the recorded result, nothing changed" if report.rechecked else ""
        console.print(f"{verdict}  (record: {escape(str(report.record_file or ''))}{seen})", soft_wrap=True)


@app.command()
@user_errors
def serve(
    dataset: Annotated[Path, typer.Option(help="dataset spec")],
    feed: Annotated[Path, typer.Option(help="production feed the scheduled monitor reads (raw format, with timestamps)")],
    policy: Annotated[Path, typer.Option(help="policy: gates, and monitoring thresholds and cron schedules")] = Path(DEFAULT_POLICY),
    recipe: Annotated[Path, typer.Option(help="recipe of triggered and scheduled reruns")] = Path(DEFAULT_RECIPE),
    constraint: Annotated[Path, typer.Option(help="constraint template of reruns")] = Path(DEFAULT_CONSTRAINT),
    train_rows: Annotated[Optional[int], typer.Option(help="subsample the training pool of reruns")] = None,
    sweep: Annotated[Optional[Path], typer.Option(
        help="reruns run this sweep (default: the policy's monitoring.rerun, i.e. the champion's recipe and template)")] = None,
    notify_url: Annotated[Optional[str], typer.Option(
        help="POST each drift alert and rerun outcome as JSON {subject, body} to this URL (a Prefect webhook block)")] = None,
    notify_block: Annotated[Optional[str], typer.Option(
        help="or send them through this existing Prefect notification block, as TYPE-SLUG/NAME")] = None,
):
    """Serve the monitor and remediation deployments (cron schedules, drift trigger) until stopped.

    Start it before any monitor runs: an alert emitted while nothing serves the remediation
    deployment starts no rerun. A served rerun remediates with the champion's recipe and
    template (the given --recipe/--constraint until a champion exists) or a sweep, and starts
    only once per incident (see the policy's monitoring.rerun and rerun_cooldown_minutes).
    """
    from prefect import serve as prefect_serve

    from fairloop.gates.policy import RerunSweep, load_policy
    from fairloop.serving.deployments import build_deployments

    settings = get_settings()
    validate_inputs(dataset, recipe, constraint, policy)
    rerun = load_policy(policy).monitoring_settings.rerun.remediate_with
    for sweep_file in filter(None, [sweep, Path(rerun.sweep) if isinstance(rerun, RerunSweep) else None]):
        from fairloop.remedy.sweep.spec import load_sweep

        load_sweep(sweep_file)
    if notify_url and notify_block:
        raise BadInputError("give either --notify-url or --notify-block", field="--notify-block")
    if not feed.is_file():  # a typo here would only show at the first scheduled check
        raise BadInputError("production feed file not found", source=str(feed))
    with prefect_server(settings) as api_url:
        end_abandoned_runs(settings, "serve")
        deployments = build_deployments(
            load_flow("monitor"), load_flow("remediation"), dataset=str(dataset), feed=str(feed),
            policy=str(policy), recipe=str(recipe), constraint=str(constraint), train_rows=train_rows,
            sweep_file=str(sweep) if sweep else None,
        )
        if notify_url or notify_block:
            from fairloop.data.dataset_spec import load_dataset_spec
            from fairloop.serving.notify import (
                install_notifications,
                named_block_id,
                webhook_block_id,
            )

            name = load_dataset_spec(dataset).name
            block_id = webhook_block_id(name, notify_url) if notify_url else named_block_id(notify_block)
            for automation in install_notifications(name, block_id):
                console.print(f"automation {automation}: sends to {escape(notify_url or notify_block)}")
        for deployment in deployments:
            schedules = ", ".join(s.schedule.cron for s in deployment.schedules or []) or "no schedule"
            triggers = ", ".join(sorted(t.expect)[0] for t in deployment.triggers or []) or "no trigger"
            console.print(f"{deployment.flow_name}/{deployment.name}: {schedules}; {triggers}")
        console.print(f"Serving on {api_url} (Ctrl-C stops)")
        prefect_serve(*deployments, print_starting_message=False)


@app.command()
@user_errors
def show(run_id: Annotated[str, typer.Argument(help="flow run id (printed when the run starts)")]):
    """Print a run's review report in the terminal: the decision summary the Resume dialog shows."""
    from fairloop.review.packet import load_packet
    from fairloop.review.terminal import print_packet
    from fairloop.serving.runs import read_flow_run

    settings = get_settings()
    with prefect_server(settings):
        end_abandoned_runs(settings, "show")
        run = read_flow_run(run_id)
    packet = load_packet(settings.state_dir / "runs" / str(run.id))
    if packet is None:
        state = run.state.name if run.state else "unknown"
        raise BadInputError(f"run {run.id} ({state}) has no review report in {settings.state_dir / 'runs' / str(run.id)}: "
                            "it has not reached its gates yet, or it ran with another project directory")
    print_packet(console, packet, state=run.state.name if run.state else "unknown")


reviewers_app = typer.Typer(help="Reviewer credentials: tokens that prove who approves or requests a run.",
                            no_args_is_help=True)
app.add_typer(reviewers_app, name="reviewers")


@reviewers_app.command("add")
@user_errors
def reviewers_add(
    name: Annotated[str, typer.Argument(help="the reviewer's name, as they will type it in the review form")],
    rotate: Annotated[bool, typer.Option(help="replace the reviewer's existing token")] = False,
):
    """Issue a reviewer token: printed once, stored only as a salted scrypt hash in the registry."""
    from fairloop.registry.store import Registry
    from fairloop.review.credentials import REVIEWERS_FILE, issue, read_book

    settings = get_settings()
    registry = Registry(settings.registry_path, settings.remote_path)
    book, token = issue(read_book(registry.root), name, rotate=rotate)
    registry.commit_file(REVIEWERS_FILE, book.model_dump_json(indent=2) + "\n", f"Reviewer credential for {name}")
    err.print(f"Token for reviewer [bold]{escape(name)}[/bold] (shown once; give it to them privately). Reviews now "
              "need a token: in the Resume form's token field, or `fairloop approve --token` / FAIRLOOP_TOKEN.")
    typer.echo(token)


@reviewers_app.command("list")
@user_errors
def reviewers_list():
    """The reviewers who hold a token (names and when they were added; never the tokens)."""
    from fairloop.review.credentials import read_book

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


@app.command()
@user_errors
def history(
    dataset: Annotated[str, typer.Argument(help="dataset name (or its spec file) whose monitor history to show")],
    html: Annotated[Optional[Path], typer.Option(help="write the dashboard page here (default: <state>/monitor/<dataset>/history.html)")] = None,
):
    """The monitor's trend dashboard: per window, group rates with intervals, drift and alerts; incidents with their timeline."""
    from fairloop.data.dataset_spec import load_dataset_spec
    from fairloop.monitor.dashboard import incidents, print_history, write_history_page
    from fairloop.monitor.store import history as monitor_history
    from fairloop.monitor.store import state_folder
    from fairloop.registry.store import Registry

    settings = get_settings()
    name = load_dataset_spec(dataset).name if dataset.endswith((".yaml", ".yml")) else dataset
    reports = monitor_history(settings.state_dir, name)
    if not reports:
        raise BadInputError(f"no monitor history for dataset '{name}' under {settings.state_dir} (run fairloop monitor first)")
    audit = Registry(settings.registry_path, settings.remote_path).audit_log()
    print_history(console, name, reports, incidents(reports, audit))
    page = write_history_page(name, reports, audit, html or state_folder(settings.state_dir, name) / "history.html")
    console.print(f"Dashboard: {escape(str(page))}", soft_wrap=True)


@app.command()
@user_errors
def rerun(
    dataset: Annotated[str, typer.Argument(help="dataset name whose latest open incident to remediate")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run until it ends (default) or return once it exists")] = True,
    token: Annotated[str, typer.Option(help="your reviewer token: the run is then requested by you, verified")] = "",
):
    """Start by hand the rerun a drift alert starts: the served remediation/<dataset> deployment, on the
    latest open incident's alerting window (e.g. after fixing a feed). Cooldowns do not apply; the one-run-
    per-incident rule does. Exit codes as for remediate (0 with --no-wait once the run exists)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from fairloop.monitor.alerting import open_incident
    from fairloop.monitor.store import history as monitor_history
    from fairloop.serving.reruns import unserved_reason
    from fairloop.serving.runs import flow_run_url, read_flow_run, review_commands

    settings = get_settings()
    reports = monitor_history(settings.state_dir, dataset)
    incident = open_incident(reports)
    if incident is None:
        raise BadInputError(f"dataset '{dataset}' has no open incident under {settings.state_dir} (fairloop history "
                            f"{dataset} shows its incidents)")
    kept = [r for r in reports if r.incident == incident and r.alert and r.window_file and Path(r.window_file).is_file()]
    if not kept:
        raise BadInputError(f"incident {incident} of '{dataset}' has no alerting window whose rows are still kept "
                            "(monitoring.keep_window_rows): the next alerting window starts its rerun")
    requested_by, verified = requester(settings, token)
    with prefect_server(settings):
        unserved = unserved_reason(dataset)
        if unserved:
            raise BadInputError(f"{unserved}: start it with fairloop serve (the rerun runs there, as a drift alert's does)")
        with get_client(sync_client=True) as client:  # a run's parameters replace the deployment's: merge the request
            served = client.read_deployment_by_name(f"remediation/{dataset}").parameters.get("request", {})
        run = run_deployment(f"remediation/{dataset}", timeout=0, parameters={"request": {
            **served, "requested_by": requested_by, "requester_verified": verified,
            "extra_training_data": kept[-1].window_file, "incident": incident}})
        console.print(f"Rerun {run.name} of incident {escape(incident)} on window {escape(kept[-1].label)}: "
                      f"{flow_run_url(run.id)}", soft_wrap=True)
        if not wait:
            raise typer.Exit(ExitCode.PROMOTED)
        run = follow_progress(run.id, lambda r: bool(r.state and (r.state.is_paused() or r.state.is_final())),
                              TRAINING_TIMEOUT_SECONDS)
        if run.state.is_paused():
            console.print(f"[bold]Rerun {run.name} awaits review[/bold]: {flow_run_url(run.id)}\n"
                          f"{escape(review_commands(run.id))}", soft_wrap=True)
            raise typer.Exit(ExitCode.PROMOTED)
        raise typer.Exit(exit_for_state(read_flow_run(run.id).state, run.id))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
