"""Commands that set a project up and check it: init (spec, project layout) and doctor (the Prefect server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.markup import escape

from fairloop.cli.common import (
    console,
    err,
    user_errors,
)
from fairloop.config import get_settings
from fairloop.errors import BadInputError
from fairloop.project import init as initialise
from fairloop.serving.doctor import run_doctor
from fairloop.serving.outcomes import ExitCode
from fairloop.serving.server import configured_api_url, server_env, server_log_path


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


@user_errors
def doctor(
    trigger_timeout: Annotated[int, typer.Option(help="seconds to wait for the probe automation to fire")] = 60,
):
    """Check the Prefect server the loop runs on: reachable, scheduler and triggers working, server log clean.

    Exit 0 when healthy, 1 with the reasons otherwise. Uses PREFECT_API_URL, or the local server
    fairloop starts (it never starts one itself).
    """
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
