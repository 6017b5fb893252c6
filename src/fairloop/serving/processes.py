"""The detached processes fairloop starts and stops (the local Prefect server and its worker).

Each is recorded in a pid file as "pid start-time": a recorded pid names fairloop's process only
while a live process has that pid and that start time, since pids are reused. Each leads its own
process group (``start_new_session``), so stopping it stops what it started too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

STOP_TIMEOUT_SECONDS = 30


def record_process(pid_file: Path, pid: int) -> None:
    pid_file.write_text(f"{pid} {psutil.Process(pid).create_time()}\n")


def recorded_process(pid_file: Path) -> psutil.Process | None:
    """The live process ``pid_file`` records (None: no file, or that process has ended)."""
    try:
        pid, created = pid_file.read_text().split()
        process = psutil.Process(int(pid))
        if abs(process.create_time() - float(created)) < 1 and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def stop_process_group(process: psutil.Process, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM to the group ``process`` leads; SIGKILL if it has not ended within ``timeout`` seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
