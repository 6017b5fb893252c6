"""The monitor flow: check a production window against the champion, publish it, alert.

Thin composition over ``fairloop.monitor``: one task measures the window (and records it
under the project's state directory), then the flow publishes a table, a Markdown summary
and the plot as artifacts, and on an alert emits ``fairloop.drift.detected`` for the
dataset's resource, which the remediation deployment's trigger turns into a rerun.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from fairloop import monitor as core
from fairloop.config import get_settings
from fairloop.monitor.dashboard import history_markdown, write_history_page
from fairloop.monitor.store import check_lock
from fairloop.registry.store import Registry


@task(name="check-window", cache_policy=NO_CACHE)
def check_step(dataset: str, window: str, policy: str, window_end: str | None, every_window: bool,
               prediction_column: str | None, state_dir: str | None):
    settings = get_settings()
    registry = Registry(settings.registry_path, settings.remote_path)
    return core.run_monitor(
        dataset, window, policy, registry, Path(state_dir) if state_dir else settings.state_dir,
        window_end=window_end, every_window=every_window,
        prediction_column=prediction_column,
    )


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


@flow(name="monitor")
def monitor(
    dataset: str,
    window: str,
    policy: str = "policies/default.yaml",
    window_end: str | None = None,
    every_window: bool = False,
    prediction_column: str | None = None,
    emit: bool = True,
    state_dir: str | None = None,
) -> list[dict]:
    """``state_dir`` (default: the project's .fairloop/) keeps the window history that streaks count on."""
    logger = get_run_logger()
    reports = check_step(dataset, window, policy, window_end, every_window, prediction_column, state_dir)
    state = Path(state_dir) if state_dir else get_settings().state_dir
    for report in reports:
        key = _slug(f"monitor-{report.dataset}")
        create_table_artifact(key=f"{key}-metrics", table=report.table(),
                              description=f"{report.dataset} {report.champion_version}, window {report.window_start} .. {report.window_end}")
        markdown = core.summary_markdown(report)
        plot = Path(report.record_file).with_suffix(".png") if report.record_file else None
        if plot is not None and plot.is_file():  # inline, so the artifact shows it without a file server
            markdown += f"\n![drift plot](data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()})\n"
        create_markdown_artifact(key=f"{key}-summary", markdown=markdown, description="breaches, alerts and the plot")
        logger.info("%s window %s..%s: %d rows, %d breach(es), alert=%s%s", report.dataset, report.window_start,
                    report.window_end, report.rows, len(report.breaches), report.alert,
                    " (checked before: recorded result, nothing changed)" if report.rechecked else "")
        if report.new_alert and emit:  # once per window range: a re-check or a revision does not alert again
            history_page = core.state_folder(state, report.dataset) / "history.html"  # written below, with this window
            event = emit_event(**core.drift_event(report, history_page=str(history_page)))
            logger.warning("Drift alert on %s: %s; emitted %s (%s)", report.dataset,
                           ", ".join(m.key for m in report.alerts), core.DRIFT_EVENT, event.id if event else "not sent")
    if reports:  # the trend dashboard: history.html next to the history, and the same tables as an artifact
        settings = get_settings()
        dataset_name = reports[0].dataset
        audit = Registry(settings.registry_path, settings.remote_path).audit_log()
        with check_lock(state, dataset_name):  # an overlapping run must not write the page at the same time
            recorded = core.history(state, dataset_name)
            page = write_history_page(dataset_name, recorded, audit, core.state_folder(state, dataset_name) / "history.html")
        create_markdown_artifact(key=_slug(f"monitor-{dataset_name}-history"), markdown=history_markdown(dataset_name, recorded, audit),
                                 description=f"trend dashboard; the page: {page}")
    return [r.model_dump(mode="json") for r in reports]
