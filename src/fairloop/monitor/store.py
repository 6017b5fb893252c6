"""The monitor's state on disk: per dataset, the history of checked windows, their JSON records
and the windows' own rows (what a triggered rerun trains on)."""

from __future__ import annotations

from pathlib import Path

from fairloop.datasets import DatasetSpec
from fairloop.errors import BadInputError
from fairloop.monitor.plots import plot_window
from fairloop.monitor.report import WindowReport
from fairloop.monitor.windows import Rows


# -- state, files, plots -----------------------------------------------------------------------
def state_folder(state_dir: Path, dataset: str) -> Path:
    return Path(state_dir) / "monitor" / dataset


def last_report(state_dir: Path, dataset: str) -> WindowReport | None:
    history = state_folder(state_dir, dataset) / "history.jsonl"
    if not history.is_file():
        return None
    lines = [line for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
    return WindowReport.model_validate_json(lines[-1]) if lines else None


def window_stem(report: WindowReport) -> str:
    span = f"{report.window_start}_{report.window_end}" if report.window_start else "all"
    return f"{span}-{report.checked_at.replace(':', '').replace('+0000', 'Z')}"


def write_window_file(spec: DatasetSpec, rows: Rows, path: Path) -> Path:
    """The window's rows in the dataset's raw format (what a triggered rerun trains on)."""
    if rows.raw is None:
        raise BadInputError("this window has no raw rows to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = spec.format
    columns = fmt.columns if not fmt.header and fmt.columns else list(rows.raw.columns)
    rows.raw.to_csv(path, sep=fmt.separator, header=fmt.header, index=False, columns=columns, encoding=fmt.encoding)
    return path


def record(report: WindowReport, spec: DatasetSpec, rows: Rows, state_dir: Path) -> WindowReport:
    """Write the window's rows, its JSON record and plot; append it to the dataset's history."""
    folder = state_folder(state_dir, report.dataset)
    stem = window_stem(report)
    if rows.raw is not None:  # rows built in memory (no raw file behind them) have nothing to write
        window_file = write_window_file(spec, rows, folder / "windows" / f"{stem}.csv")
        report = report.model_copy(update={"window_file": str(window_file.resolve())})
    (folder / "records").mkdir(parents=True, exist_ok=True)
    (folder / "records" / f"{stem}.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    plot_window(report, folder / "records" / f"{stem}.png")
    with (folder / "history.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(report.model_dump_json() + "\n")
    return report


