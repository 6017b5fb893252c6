"""The monitor's state on disk, per dataset under ``<state_dir>/monitor/<dataset>/``:

* ``history.jsonl``: every check, in order (append-only; a re-check of a recorded window is not
  appended);
* ``records/``: each check's JSON record and plot (aggregates only);
* ``windows/``: the checked windows' own rows in the dataset's raw format, which is what a
  triggered rerun trains on. They hold sensitive columns, so only the latest
  ``monitoring.keep_window_rows`` windows keep them (0: none is written);
* ``check.lock``: held while a check reads the history, checks and records (``check_lock``), so
  overlapping scheduled runs check a dataset one at a time.

A rerun names its window by path or by the SHA-256 the monitor recorded; ``resolve_window_file``
accepts only files in this dataset's ``windows/`` folder whose bytes match a recorded hash.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from fairloop.data.dataset_spec import DatasetSpec
from fairloop.data.datasets import file_sha256
from fairloop.data.rows import Rows
from fairloop.errors import BadInputError, FairloopError
from fairloop.monitor.plots import plot_window
from fairloop.monitor.report import WindowReport

SHA256 = re.compile(r"[0-9a-f]{64}")
# A check takes seconds (an every-window replay minutes); a scheduled run waiting longer than this
# behind another is stuck, and ends with a message instead of piling up behind it.
LOCK_TIMEOUT_SECONDS = 600


class MonitorBusy(FairloopError):
    """Another check of the same dataset held the monitor's lock past ``LOCK_TIMEOUT_SECONDS``."""


def state_folder(state_dir: Path, dataset: str) -> Path:
    return Path(state_dir) / "monitor" / dataset


def windows_folder(state_dir: Path, dataset: str) -> Path:
    return state_folder(state_dir, dataset) / "windows"


@contextmanager
def check_lock(state_dir: Path, dataset: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the dataset's monitor lock (``check.lock`` in its state folder; processes and threads alike).

    Two overlapping checks that both read the history before either records would both find a
    new window unrecorded, record it twice and alert twice: whoever reads the history to decide
    what to record must hold this lock until it has recorded.
    """
    folder = state_folder(state_dir, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / "check.lock"))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:  # the lock dies with its holder's process, so a running check holds it
        raise MonitorBusy(
            f"another monitor check of dataset '{dataset}' has held {folder / 'check.lock'} for more than {timeout:.0f} s; "
            "nothing was checked"
        ) from None
    try:
        yield
    finally:
        lock.release()


def history(state_dir: Path, dataset: str) -> list[WindowReport]:
    """Every recorded check of ``dataset``, oldest first."""
    path = state_folder(state_dir, dataset) / "history.jsonl"
    if not path.is_file():
        return []
    reports = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                reports.append(WindowReport.model_validate_json(line))
            except ValueError as exc:
                raise BadInputError(f"line {number} is not a window record: {str(exc).splitlines()[0]}", source=str(path)) from None
    return reports


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


def record(report: WindowReport, spec: DatasetSpec, rows: Rows, state_dir: Path, *, keep_window_rows: int) -> WindowReport:
    """Write the window's rows (if kept), its JSON record and plot; append it to the dataset's history;
    then delete the rows of all but the latest ``keep_window_rows`` windows."""
    folder = state_folder(state_dir, report.dataset)
    stem = window_stem(report)
    if rows.raw is not None and keep_window_rows > 0:  # rows built in memory have no raw rows to write
        window_file = write_window_file(spec, rows, folder / "windows" / f"{stem}.csv")
        report = report.model_copy(update={"window_file": str(window_file.resolve()), "window_file_sha256": file_sha256(window_file)})
    record_file = folder / "records" / f"{stem}.json"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    report = report.model_copy(update={"record_file": str(record_file.resolve())})
    record_file.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    plot_window(report, record_file.with_suffix(".png"))
    with (folder / "history.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(report.model_dump_json() + "\n")
    enforce_retention(state_dir, report.dataset, keep_window_rows)
    return report


def enforce_retention(state_dir: Path, dataset: str, keep_window_rows: int) -> list[Path]:
    """Delete the window files of all but the ``keep_window_rows`` latest recorded checks; returns the deleted files.

    Files in the folder that no record names (e.g. left by an interrupted check) are deleted too.
    """
    folder = windows_folder(state_dir, dataset)
    if not folder.is_dir():
        return []
    recorded = [Path(r.window_file) for r in history(state_dir, dataset) if r.window_file]
    keep = {path.resolve() for path in recorded[-keep_window_rows:]} if keep_window_rows > 0 else set()
    deleted = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.resolve() not in keep:
            path.unlink()
            deleted.append(path)
    return deleted


def resolve_window_file(state_dir: Path, dataset: str, given: str | Path) -> Path:
    """The monitor's own window file that ``given`` names: a path inside this dataset's window folder,
    or the SHA-256 the monitor recorded for it. The file's bytes must match the recorded hash.

    Raises BadInputError for anything else: a path outside the folder (however it is spelled),
    a file the monitor did not write or that changed since, or one deleted by the retention setting.
    """
    folder = windows_folder(state_dir, dataset).resolve()
    recorded = [(r.window_file_sha256, Path(r.window_file).resolve()) for r in history(state_dir, dataset)
                if r.window_file and r.window_file_sha256]
    text = str(given).strip()
    if SHA256.fullmatch(text):
        named = [path for digest, path in recorded if digest == text]
        if not named:
            raise BadInputError(f"no window of dataset '{dataset}' was recorded with SHA-256 {text}", source=str(folder))
        path = next((p for p in named if p.is_file()), named[-1])
    else:
        path = Path(text).resolve()
        if not path.is_relative_to(folder):
            raise BadInputError(
                f"window file {text} is not in the monitor's window folder {folder}: reruns train only on windows the monitor recorded"
            )
    if not path.is_file():
        raise BadInputError(
            f"window file {path} is no longer kept (monitoring.keep_window_rows deletes the rows of older windows)"
        )
    if (file_sha256(path), path) not in recorded:
        raise BadInputError(
            f"window file {path} does not match the SHA-256 the monitor recorded for it (changed, or not written by the monitor)"
        )
    return path
