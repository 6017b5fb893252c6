"""The loop's steps run alone, e.g. as CI steps: audit, gate, and one DVC pipeline stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from fairloop.audit.checks import run_audit
from fairloop.audit.schema import GxProject, default_gx_root, learn_reference
from fairloop.cli.common import TRUST_WARNING, console, err, user_errors
from fairloop.config import get_settings
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import load_data_file, load_dataset
from fairloop.errors import BadInputError
from fairloop.gates.policy import apply_gates, load_policy
from fairloop.pipeline import evaluate_models
from fairloop.registry.store import Registry
from fairloop.remedy.model import load_model
from fairloop.serving.outcomes import ExitCode
from fairloop.stages import run_stage


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


@user_errors
def stage(
    name: Annotated[str, typer.Argument(help="prepare, audit, augment, train or evaluate")],
    params: Annotated[Path, typer.Option(help="DVC params file")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="folder of the stages' outputs")] = Path("pipeline"),
):
    """Run one stage of the DVC pipeline (what `dvc repro` calls; see dvc.yaml)."""
    verdict = run_stage(name, params, out)
    if verdict == "block":
        err.print(f"[red]audit blocked[/red]: see {escape(str(out / 'audit.json'))}")
        raise typer.Exit(ExitCode.AUDIT_BLOCKED)
