"""Commands on the model registry: models, rollback, lineage, reproduce, verify."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.markup import escape
from rich.table import Table

from fairloop.cli.common import (
    console,
    end_abandoned_runs,
    err,
    user_errors,
)
from fairloop.config import get_settings
from fairloop.registry.reproduce import reproduce as reproduce_version
from fairloop.registry.store import Registry
from fairloop.review.history import history_table
from fairloop.serving.flow_process import gone_flow_processes
from fairloop.serving.outcomes import ExitCode
from fairloop.serving.server import answering_api_url


@user_errors
def models(dataset: Annotated[Optional[str], typer.Argument(help="dataset name; all when omitted")] = None):
    """Show each dataset's champion and its promotion history."""

    settings = get_settings()
    api_url = gone_flow_processes(settings.state_dir) and answering_api_url(settings)
    if api_url:  # best effort: this command needs no server, and starts none

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


@user_errors
def rollback(
    dataset: str,
    to: Annotated[str, typer.Option("--to", help="version to restore, e.g. v1")],
    reviewer: Annotated[str, typer.Option(help="who decides the rollback (audited)")],
    reason: Annotated[str, typer.Option(help="why (audited; required)")],
):
    """Make an earlier version the champion again, model and data restored byte-identical."""
    settings = get_settings()
    entry = Registry(settings.registry_path, settings.remote_path).rollback(dataset, to, reviewer=reviewer, reason=reason)
    console.print(f"[green]{dataset} champion is now {entry.version}[/green] (model sha256 {entry.model_sha256[:12]}...)")


@user_errors
def lineage(dataset: str, version: str):
    """Print the lineage record of a registered version (JSON)."""
    settings = get_settings()
    entry = Registry(settings.registry_path, settings.remote_path).entry(dataset, version)
    console.print_json(entry.model_dump_json())


@user_errors
def reproduce(dataset: str, version: str):
    """Retrain a registered version from its recorded inputs; exit 1 unless metrics match exactly."""
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


@user_errors
def verify(dataset: Annotated[Optional[str], typer.Argument(help="dataset name; all when omitted")] = None):
    """Check every version's files (DVC cache and remote) and each champion against the recorded sha256: exit 1 on a mismatch."""
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
