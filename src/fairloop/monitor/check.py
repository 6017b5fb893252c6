"""The whole check: one window against the champion's reference, judged and recorded."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fairloop.data.dataset_spec import DatasetSpec, load_dataset_spec
from fairloop.data.groups import is_intersection
from fairloop.data.rows import Rows
from fairloop.errors import BadInputError
from fairloop.gates.policy import Policy, load_policy
from fairloop.monitor.alerting import (
    already_alerted,
    judge,
    same_window,
    streak_base,
    with_incident,
)
from fairloop.monitor.drift import drift_metrics
from fairloop.monitor.fairness import (
    gap_confidence,
    group_rates,
    labelled_gaps,
    labelled_metrics,
    prediction_rate_gap,
    selection_rates,
    watch_cells,
)
from fairloop.monitor.report import WindowReport
from fairloop.monitor.store import check_lock, history, record
from fairloop.monitor.windows import (
    Window,
    describe_period,
    latest_window,
    read_window,
    reference_rows,
    split_windows,
)
from fairloop.remedy.model import FairModel


def check_window(
    spec: DatasetSpec,
    window: Window,
    reference: Rows,
    model: FairModel,
    policy: Policy,
    *,
    sensitive: str,
    champion_version: str,
    source: str,
    previous: WindowReport | None = None,
    seed: int = 0,
) -> WindowReport:
    """Measure one window against the reference; breaches, streaks and alerts included."""
    started = time.perf_counter()
    cfg = policy.monitoring_settings
    rows = window.rows
    if len(rows) == 0:
        raise BadInputError(f"window {window.label} of {source} has no rows")
    rng = np.random.default_rng(seed)
    skipped: list[str] = []
    ref_groups, win_groups = reference.groups[sensitive], rows.groups[sensitive]
    metrics = drift_metrics(spec.features, reference.X, ref_groups, rows.X, win_groups, cfg, rng, skipped)

    predictions = rows.predictions if rows.predictions is not None else model.predict(rows.X, rows.groups)
    ref_predictions = reference.predictions if reference.predictions is not None else model.predict(reference.X, reference.groups)
    rates = selection_rates(predictions, win_groups)
    if ("rates", sensitive) not in reference.memo:
        reference.memo[("rates", sensitive)] = selection_rates(ref_predictions, ref_groups)
    ref_rates = reference.memo[("rates", sensitive)]
    labels_known = rows.y is not None and rows.y.notna().any()
    labelled_gated = sum(threshold is not None for _, threshold in labelled_gaps(policy))
    watched_cells = [name for name in spec.intersection_names if name != sensitive]  # the champion's own: above
    level = gap_confidence(cfg, 1 + labels_known * labelled_gated + len(watched_cells))
    metrics += prediction_rate_gap(predictions, win_groups, rates, ref_rates, policy, sensitive, seed, skipped, level)
    cell_metrics, cell_rates = watch_cells(predictions, rows.groups, rows.y, reference, ref_predictions, watched_cells,
                                           policy, seed, skipped, level)
    metrics += cell_metrics

    labelled = 0
    if rows.y is not None and rows.y.notna().any():
        known = rows.y.notna().to_numpy()
        labelled = int(known.sum())
        metrics += labelled_metrics(
            rows.y[known].astype(int).to_numpy(), predictions[known], win_groups[known], reference, ref_predictions,
            ref_groups, policy, cfg, sensitive, seed, skipped, level,
        )
    else:
        skipped.append("equalized odds: the window has no labels")

    report = WindowReport(
        dataset=spec.name, champion_version=champion_version, sensitive=sensitive, source=source,
        window_start=window.start, window_end=window.end, rows=len(rows), labelled_rows=labelled,
        reference_rows=len(reference), checked_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        seconds=0.0, metrics=metrics,
        selection_rates={str(g): float(r) for g, r in rates["selection_rate"].items()},
        reference_selection_rates={str(g): float(r) for g, r in ref_rates["selection_rate"].items()},
        skipped=skipped, window_hash=window.content_hash,
        group_rates=group_rates(predictions, win_groups, rows.y, rates, cfg, seed, simultaneous=is_intersection(sensitive)),
        cell_rates=cell_rates,
    )
    report = judge(report, cfg, previous)
    return report.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


@dataclass(frozen=True)
class Champion:
    version: str
    sensitive: str
    model: FairModel
    reference: Rows


def load_champion(registry, spec: DatasetSpec) -> Champion:
    """The registry's champion for ``spec`` and its reference rows (real rows of its training snapshot)."""
    loaded = registry.load_champion(spec.name)
    if loaded is None:
        known = ", ".join(registry.datasets()) or "none"
        raise BadInputError(
            f"no champion for dataset '{spec.name}' in the registry at {registry.root} (datasets with a champion: {known})"
        )
    entry, model = loaded
    sensitive = entry.lineage.sensitive
    reference = reference_rows(spec, registry.root / spec.name / "train.csv")
    reference = replace(reference, predictions=model.predict(reference.X, reference.groups))
    return Champion(version=entry.version, sensitive=sensitive, model=model, reference=reference)


def run_monitor(
    dataset: str | Path,
    window: str | Path,
    policy: str | Path,
    registry,
    state_dir: Path,
    *,
    window_end: str | None = None,
    every_window: bool = False,
    prediction_column: str | None = None,
    persist: bool = True,
) -> list[WindowReport]:
    """Check the latest window of ``window`` (or every window in order) against the champion.

    With ``persist`` (the default) each new check is recorded under
    ``state_dir/monitor/<dataset>/`` and continues the streaks of the recorded window it follows
    (``alerting.streak_base``); a window already recorded (same range, same rows, same
    champion) is not checked again: its recorded report comes back with ``rechecked`` set and
    nothing changes on disk. Recording checks of a dataset hold its lock (``store.check_lock``)
    from reading the history to recording, so overlapping runs record each window once.
    """
    spec = load_dataset_spec(dataset)
    policy_spec = load_policy(policy)
    cfg = policy_spec.monitoring_settings
    champion = load_champion(registry, spec)
    rows = read_window(spec, window, prediction_column=prediction_column)
    if every_window:
        windows = split_windows(rows, cfg.period, start=cfg.window_origin)
    else:
        windows = [latest_window(rows, cfg.period, end=window_end, origin=cfg.window_origin)]
    empty = next((part for part in windows if len(part.rows) == 0), None)
    if empty is not None:
        raise BadInputError(f"no rows of {window} fall in the window {empty.label} ({describe_period(cfg.period)})")
    with check_lock(state_dir, spec.name) if persist else nullcontext():
        return _check_windows(spec, windows, champion, policy_spec, str(window), state_dir, persist)


def _check_windows(spec: DatasetSpec, windows: list[Window], champion: Champion, policy_spec: Policy, source: str,
                   state_dir: Path, persist: bool) -> list[WindowReport]:
    # read here, under the lock: a check that ran while this one waited has recorded its windows
    recorded = history(state_dir, spec.name) if persist else []
    previous = None
    reports = []
    for part in windows:
        identity = WindowReport.model_construct(dataset=spec.name, champion_version=champion.version,
                                                window_start=part.start, window_end=part.end, window_hash=part.content_hash)
        earlier = next((r for r in reversed(recorded) if same_window(r, identity)), None)
        if earlier is not None:
            reports.append(earlier.model_copy(update={"rechecked": True, "new_alert": False}))
            continue
        if persist:
            previous = streak_base(recorded, identity)
        report = check_window(spec, part, champion.reference, champion.model, policy_spec, sensitive=champion.sensitive,
                              champion_version=champion.version, source=source, previous=previous)
        report = report.model_copy(update={"new_alert": report.alert and not already_alerted(recorded, report)})
        if persist:
            report = with_incident(report, recorded)
            report = record(report, spec, part.rows, state_dir, keep_window_rows=policy_spec.monitoring_settings.keep_window_rows)
            recorded.append(report)
        reports.append(report)
        previous = report
    return reports


def to_json(reports: list[WindowReport]) -> str:
    return json.dumps([json.loads(r.model_dump_json()) for r in reports], indent=2)


