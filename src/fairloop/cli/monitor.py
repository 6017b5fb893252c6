"""Commands of monitoring: monitor (check a production window) and history (the trend dashboard)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from fairloop.cli.common import (
    DEFAULT_POLICY,
    console,
    err,
    load_flow,
    prefect_server,
    user_errors,
)
from fairloop.config import get_settings
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.errors import BadInputError
from fairloop.gates.policy import load_policy
from fairloop.monitor import WindowReport, run_monitor
from fairloop.monitor.dashboard import incidents, print_history, write_history_page
from fairloop.monitor.store import history as monitor_history
from fairloop.monitor.store import state_folder
from fairloop.registry.store import Registry
from fairloop.serving.reruns import unserved_reason


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
    settings = get_settings()
    if window_end is not None:
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
            unserved = unserved_reason(load_dataset_spec(dataset).name)
            if unserved:
                err.print(f"[yellow]warning:[/yellow] {escape(unserved)}: an alert now starts no rerun. Start "
                          "`fairloop serve` first (server, serve, then monitors).", soft_wrap=True)
            flow = load_flow("monitor")
            records = flow(dataset=str(dataset), window=str(window), policy=str(policy), window_end=window_end,
                           every_window=every_window, prediction_column=prediction_column)
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


@user_errors
def history(
    dataset: Annotated[str, typer.Argument(help="dataset name (or its spec file) whose monitor history to show")],
    html: Annotated[Optional[Path], typer.Option(help="write the dashboard page here (default: <state>/monitor/<dataset>/history.html)")] = None,
):
    """The monitor's trend dashboard: per window, group rates with intervals, drift and alerts; incidents with their timeline."""
    settings = get_settings()
    name = load_dataset_spec(dataset).name if dataset.endswith((".yaml", ".yml")) else dataset
    reports = monitor_history(settings.state_dir, name)
    if not reports:
        raise BadInputError(f"no monitor history for dataset '{name}' under {settings.state_dir} (run fairloop monitor first)")
    audit = Registry(settings.registry_path, settings.remote_path).audit_log()
    print_history(console, name, reports, incidents(reports, audit))
    page = write_history_page(name, reports, audit, html or state_folder(settings.state_dir, name) / "history.html")
    console.print(f"Dashboard: {escape(str(page))}", soft_wrap=True)
