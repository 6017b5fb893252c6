"""Where a sweep's fits run: Prefect's process pool on this machine (the default) or Dask
through prefect-dask (a local cluster, or an existing scheduler by address). Every fit is a
Prefect task run named after its candidate, so the UI shows the sweep as it goes.

**Workers start before the rows exist.** Prefect's process pool starts its workers with
``spawn``: each is a fresh interpreter that imports Prefect, scikit-learn and Fairlearn before
it can fit anything (measured on 2 cores: the first fit began 2.8 s and the second worker's 5.5 s
after the sweep started, every sweep); a local Dask cluster starts the same way. A fitter used
as a context manager starts its workers on ``__enter__``, so a flow can enter it before its
audit and the start-up runs beside it. The workers stop when the fits are done (or on
``__exit__`` if no fit came), long before a run waits for its reviewer; called outside a
``with``, a fitter starts them itself.

**The rows reach each worker once.** A job never carries them (that would be a pickled copy per
queued job: jobs x rows of memory in the flow's process). The process pool's workers read them
from a file this process writes, when the fits begin, into a temporary directory only its
user can read (a pickle it wrote itself); each worker keeps the rows of the last file it read.
Dask scatters them to every worker.

Prefect's task runners and prefect-dask (an optional extra) are imported when a runner starts: fit workers and serial sweeps never load them.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from threadpoolctl import threadpool_limits

from fairloop.remedy.fit_progress import FitCounter, OnFitted, expected_fit_cost
from fairloop.remedy.sweep.jobs import (
    FitAll,
    FitJob,
    JobResult,
    Runner,
    SweepData,
    fit_serially,
    run_fit_job,
)

__all__ = ["FitAll", "ProcessPoolFitter", "DaskFitter", "fitter", "fit_serially", "counted_serial_fitter"]


def fitter(runner: Runner = "processes", workers: int | None = None, dask_address: str | None = None,
           on_fitted: OnFitted | None = None) -> ProcessPoolFitter | DaskFitter:
    """Where a flow fits its sweep: Prefect's process pool on this machine (the default), or Dask
    through prefect-dask, on a local cluster or, given ``dask_address``, an existing scheduler.
    ``workers``: processes (default: one per core); ``on_fitted`` is called as the fits start and
    as each finishes (progress for the CLI and the UI, ``fairloop.remedy.fit_progress.FitCount``)."""
    if runner == "dask" or dask_address:
        return DaskFitter(dask_address, workers, on_fitted)
    return ProcessPoolFitter(workers, on_fitted)


class _TaskFitter(ABC):
    """A :data:`FitAll` over a Prefect task runner that may be started before it is called."""

    def __init__(self, workers: int | None, on_fitted: OnFitted | None):
        self.workers = workers or os.cpu_count() or 1
        self.on_fitted = on_fitted
        self.runner = None
        self.starting: list = []  # futures of work started with the runner

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __call__(self, jobs: list[FitJob], data: SweepData, sensitive: str, seed: int) -> list[JobResult]:
        if self.runner is None:
            self.start()
        try:
            function, shared = self.share(data)
            results = fit_as_tasks(self.runner, function, shared, jobs, sensitive, seed, self.on_fitted)
            for future in self.starting:
                future.result()
            return results
        finally:  # the workers and their rows are not kept past the fits
            self.close()

    @abstractmethod
    def start(self) -> None:
        """Start the runner and its workers."""

    @abstractmethod
    def share(self, data: SweepData) -> tuple[Callable[..., JobResult], dict]:
        """The task function and the parameters that give every job the rows."""

    def close(self) -> None:
        if self.runner is not None:
            runner, self.runner, self.starting = self.runner, None, []
            runner.__exit__(None, None, None)


class ProcessPoolFitter(_TaskFitter):
    """Prefect's process pool (the work is CPU-bound), one thread per worker so ``workers``
    workers use that many cores."""

    def __init__(self, workers: int | None, on_fitted: OnFitted | None):
        super().__init__(workers, on_fitted)
        self.scratch: tempfile.TemporaryDirectory | None = None  # the rows file's directory while started

    def start(self) -> None:
        from prefect import task
        from prefect.cache_policies import NO_CACHE
        from prefect.task_runners import ProcessPoolTaskRunner

        self.scratch = tempfile.TemporaryDirectory(prefix="fairloop-sweep-")
        self.runner = ProcessPoolTaskRunner(max_workers=self.workers, initializer=limit_to_one_thread).__enter__()
        # One start-up task per worker: each submission the pool cannot hand to an idle worker
        # spawns one, so all of them start now, and import what fitting needs.
        start_up = task(start_fit_worker, name="start-fit-worker", cache_policy=NO_CACHE)
        self.starting = [self.runner.submit(start_up, {}) for _ in range(self.workers)]

    def share(self, data: SweepData) -> tuple[Callable[..., JobResult], dict]:
        rows_file = Path(self.scratch.name) / f"rows-{uuid.uuid4().hex}.pickle"
        with rows_file.open("wb") as out:
            pickle.dump(data, out, protocol=pickle.HIGHEST_PROTOCOL)
        return run_fit_job_on_rows_file, {"rows_file": str(rows_file)}

    def close(self) -> None:
        super().close()
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None


class DaskFitter(_TaskFitter):
    """prefect-dask's ``DaskTaskRunner``: the scheduler at ``address``, else a local cluster of
    ``workers`` processes with one thread each. Every worker must be able to import fairloop
    and reach the Prefect API."""

    def __init__(self, address: str | None, workers: int | None, on_fitted: OnFitted | None):
        super().__init__(workers, on_fitted)
        self.address = address

    def start(self) -> None:
        from prefect_dask import DaskTaskRunner

        if self.address:
            runner = DaskTaskRunner(address=self.address)
        else:
            runner = DaskTaskRunner(cluster_kwargs={"n_workers": self.workers, "threads_per_worker": 1,
                                                    "processes": True, "dashboard_address": ":0"})
        self.runner = runner.__enter__()
        self.runner.client.run(limit_to_one_thread)

    def share(self, data: SweepData) -> tuple[Callable[..., JobResult], dict]:
        return run_fit_job, {"data": self.runner.client.scatter(data, broadcast=True, hash=False)}


def fit_as_tasks(runner, function: Callable[..., JobResult], shared: dict, jobs: list[FitJob], sensitive: str,
                 seed: int, on_fitted: OnFitted | None) -> list[JobResult]:
    """Submit every job to a started Prefect task ``runner`` as a ``fit-candidate`` task run of
    ``function`` (with the ``shared`` parameters), longest first, and collect the results."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import as_completed

    fit_task = task(function, name="fit-candidate", cache_policy=NO_CACHE)
    order = longest_first(jobs)
    counter = FitCounter(job_costs(jobs), on_fitted)
    counter.start()  # "0/N fitted" as the fits start: the longest come first and take a while to finish
    futures = {
        i: runner.submit(
            fit_task.with_options(task_run_name=f"fit-{jobs[i].candidate.name}"
                                  + ("" if jobs[i].fold is None else f"-fold{jobs[i].fold + 1}")),
            {"job": jobs[i], **shared, "sensitive": sensitive, "seed": seed})
        for i in order
    }
    position = {future.task_run_id: i for i, future in futures.items()}
    results = {}
    for future in as_completed(list(futures.values())):
        results[position[future.task_run_id]] = future.result()
        counter.finished(position[future.task_run_id])
    return [results[i] for i in range(len(jobs))]


def counted_serial_fitter(on_fitted: OnFitted | None) -> FitAll:
    """:func:`fit_serially`, job by job, reporting each fit to ``on_fitted`` (a frozen model's
    candidates: they fit no learner, so no pool is started for them)."""

    def fit_all(jobs: list[FitJob], data: SweepData, sensitive: str, seed: int) -> list[JobResult]:
        counter = FitCounter(job_costs(jobs), on_fitted)
        counter.start()
        results = []
        for position, job in enumerate(jobs):
            results.extend(fit_serially([job], data, sensitive, seed))
            counter.finished(position)
        return results

    return fit_all


def job_costs(jobs: list[FitJob]) -> list[float]:
    """Each job's expected cost (``fairloop.remedy.fit_progress``), in unconstrained fits."""
    return [expected_fit_cost(job.candidate.template.method) for job in jobs]


def longest_first(jobs: list[FitJob]) -> list[int]:
    """Positions of ``jobs`` in the order to start them: the most expensive first (a reduction refits
    its learner dozens of times; started last, one would leave the other workers idle at the end)."""
    costs = job_costs(jobs)
    return sorted(range(len(jobs)), key=lambda i: -costs[i])


def limit_to_one_thread() -> None:
    """Each worker fits with one thread, so N workers use N cores instead of fighting over them
    (HistGradientBoosting would take every core in every worker)."""

    threadpool_limits(limits=1)


def start_fit_worker() -> None:
    """A process-pool worker's first task: importing this module has imported the fitting code
    (scikit-learn, Fairlearn, imbalanced-learn); the learners' own modules come with the first fit."""


_worker_rows: tuple[str, SweepData] | None = None  # (file, rows) of the last rows file this worker read


def run_fit_job_on_rows_file(job: FitJob, rows_file: str, sensitive: str, seed: int) -> JobResult:
    """:func:`run_fit_job` on the rows in ``rows_file``, read once per worker."""
    global _worker_rows
    if _worker_rows is None or _worker_rows[0] != rows_file:
        with open(rows_file, "rb") as source:
            _worker_rows = (rows_file, pickle.load(source))
    return run_fit_job(job, _worker_rows[1], sensitive, seed)
