"""Commands that run the loop: remediate, rerun, and the Prefect server and deployments it runs on (server, serve)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from prefect import serve as prefect_serve
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from rich.markup import escape

from fairloop.cli.common import (
    DEFAULT_CONSTRAINT,
    DEFAULT_POLICY,
    DEFAULT_RECIPE,
    TRAINING_TIMEOUT_SECONDS,
    TRUST_WARNING,
    console,
    end_abandoned_runs,
    err,
    exit_for_state,
    follow_progress,
    load_flow,
    prefect_server,
    requester,
    user_errors,
)
from fairloop.config import Settings, get_settings
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import load_dataset
from fairloop.errors import BadInputError
from fairloop.flows.request import RemediationRequest
from fairloop.gates.policy import RerunSweep, load_policy
from fairloop.monitor.alerting import open_incident
from fairloop.monitor.store import history as monitor_history
from fairloop.remedy.constraints import check_weighting, load_constraint_template
from fairloop.remedy.frozen import load_base_model, refusal
from fairloop.remedy.recipes import load_recipe
from fairloop.remedy.sweep.jobs import RUNNERS
from fairloop.remedy.sweep.spec import expand_candidates, load_sweep
from fairloop.serving.deployments import build_deployments
from fairloop.serving.notify import (
    install_notifications,
    named_block_id,
    webhook_block_id,
)
from fairloop.serving.outcomes import ExitCode
from fairloop.serving.reruns import unserved_reason
from fairloop.serving.runs import (
    flow_run_url,
    read_flow_run,
    review_commands,
)
from fairloop.serving.server import stop_server
from fairloop.serving.worker import start_remediation, stop_worker, worker_log_path

FROZEN_MODEL_SWEEP = "constraints/sweeps/frozen-model.yaml"  # remediate --model without --sweep or --constraint
PROBE_ROWS = 50  # rows a --model is asked to score before any run starts
RUN_TAG_ENV = "FAIRLOOP_RUN_TAG"
RUN_START_TIMEOUT_SECONDS = 600  # --no-wait: how long the background process may take to create its flow run
RUN_START_POLL_SECONDS = 1.0


def validate_inputs(dataset: Path, recipe: Path, constraint: Path, policy: Path, sweep: Path | None = None):
    """Fail fast, before any server or training work, on a broken data file or dataset; return the dataset."""
    if sweep is not None:
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
    if sweep is not None:
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
    if runner not in RUNNERS:
        raise BadInputError(f"unknown runner '{runner}' (choose one of {', '.join(RUNNERS)})", field="--runner")
    if (runner == "dask" or dask_address) and sweep is None:
        raise BadInputError("--runner dask and --dask-address fit a sweep's candidates: give --sweep", field="--runner")
    if dask_address and "://" not in dask_address:
        raise BadInputError(f"'{dask_address}' is not a Dask scheduler address (e.g. tcp://host:8786)", field="--dask-address")


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


@user_errors
def rerun(
    dataset: Annotated[str, typer.Argument(help="dataset name whose latest open incident to remediate")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run until it ends (default) or return once it exists")] = True,
    token: Annotated[str, typer.Option(help="your reviewer token: the run is then requested by you, verified")] = "",
):
    """Start by hand the rerun a drift alert starts: the served remediation/<dataset> deployment, on the
    latest open incident's alerting window (e.g. after fixing a feed). Cooldowns do not apply; the one-run-
    per-incident rule does. Exit codes as for remediate (0 with --no-wait once the run exists)."""


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


@user_errors
def server(stop: Annotated[bool, typer.Option("--stop", help="stop the local server and worker fairloop started")] = False):
    """Start (or reuse) the local Prefect server and a worker of the project's work pool (which runs
    remediation runs, and resumes them after review); print their URLs. --stop stops both.

    The port is FAIRLOOP_SERVER_PORT (default 4200), the host FAIRLOOP_SERVER_HOST, the pool
    FAIRLOOP_WORK_POOL (default fairloop)."""

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
    settings = get_settings()
    validate_inputs(dataset, recipe, constraint, policy)
    rerun = load_policy(policy).monitoring_settings.rerun.remediate_with
    for sweep_file in filter(None, [sweep, Path(rerun.sweep) if isinstance(rerun, RerunSweep) else None]):
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
