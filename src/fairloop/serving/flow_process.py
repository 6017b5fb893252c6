"""Which OS process runs a flow run, and whether it still does.

A remediation run lives in one flow process from its start to its promotion. If that process
is killed (OOM, a reboot, kill -9) the Prefect server never hears of it: the run stays Paused
or Running forever, and an approval sent to it is stored but nothing acts on it. The flow
records its process here when it starts (``runs/<run id>/process.json`` in the state folder);
``fairloop approve/reject`` read it to refuse an approval that nothing would act on, and they and
every command that lists runs (``show``, ``models``, ``serve``) end such a run in a named state
(Crashed, with the reason) instead of leaving it hanging.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from uuid import UUID

import psutil
from pydantic import BaseModel

PROCESS_FILE = "process.json"


class FlowProcess(BaseModel):
    pid: int
    host: str
    created: float  # the process's start time: a recycled pid has another
    dataset: str | None = None  # once the run has read its spec: the decision log's line for a death names it

    @classmethod
    def current(cls, dataset: str | None = None) -> FlowProcess:
        return cls(pid=os.getpid(), host=socket.gethostname(), created=psutil.Process().create_time(), dataset=dataset)

    def alive(self) -> bool | None:
        """True/False on the host that ran it; None elsewhere (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            process = psutil.Process(self.pid)
            # a killed process whose parent has not reaped it yet (an orphan in a container whose init
            # does not reap) is a zombie: dead, though its pid still answers
            return process.create_time() == self.created and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def record_flow_process(run_dir: Path, dataset: str | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PROCESS_FILE).write_text(FlowProcess.current(dataset).model_dump_json())


def read_flow_process(run_dir: Path) -> FlowProcess | None:
    """The recorded process of a run (None: not recorded here, e.g. started on another machine)."""
    path = run_dir / PROCESS_FILE
    if not path.is_file():
        return None
    try:
        return FlowProcess.model_validate_json(path.read_text())
    except ValueError:  # cut short: the process died while writing it, before its run could pause
        return None


def gone_flow_processes(state_dir: Path) -> dict[UUID, FlowProcess]:
    """Runs recorded in ``state_dir`` whose flow process has ended on this host, by run id: each
    run either ended first, or was left Paused or Running when its process died."""
    gone = {}
    for path in sorted((state_dir / "runs").glob(f"*/{PROCESS_FILE}")):
        try:
            run_id = UUID(path.parent.name)
        except ValueError:
            continue  # not a run's folder
        process = read_flow_process(path.parent)
        if process is not None and process.alive() is False:
            gone[run_id] = process
    return gone


def forget_flow_process(run_dir: Path) -> None:
    """Drop the record of an ended run's process: nothing needs to look at it again."""
    (run_dir / PROCESS_FILE).unlink(missing_ok=True)
