"""Fitting a sweep's candidates: the rows each evaluation mode fits on, one fit job per candidate and
fold (under a time budget), run serially here or in the flow's process pool."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from threadpoolctl import threadpool_limits

from fairloop.data.rows import Split
from fairloop.data.splits import Splits, stratified_split
from fairloop.errors import BadInputError
from fairloop.gates.evaluate import predict
from fairloop.pipeline import fit_model
from fairloop.remedy.crossfit import ModeDecision, fit_rows, fold_positions
from fairloop.remedy.frozen import FrozenModel
from fairloop.remedy.model import FairModel, Predictions
from fairloop.remedy.recipes import (
    AugmentReport,
    apply_recipe,
)
from fairloop.remedy.sweep.spec import SweepCandidate


@dataclass(frozen=True)
class SweepData:
    """The rows every fit job needs (sent to each worker once, see ``fairloop.remedy.fitters``).

    holdout: candidates are fitted on ``fit`` (the training split) and selected on
    ``selection`` (the validation split). crossfit: ``fit`` and ``selection`` are both the
    training pool; ``folds`` hold the held-out positions of each fold."""

    mode: ModeDecision
    fit: Split
    selection: Split
    test: Split
    folds: tuple[np.ndarray, ...] = ()
    frozen: FrozenModel | None = None  # remediate --model: candidates post-process this model

    @staticmethod
    def of(splits: Splits, mode: ModeDecision, sensitive: str, seed: int, frozen: FrozenModel | None = None) -> SweepData:
        if mode.mode == "holdout":
            return SweepData(mode, splits.train, splits.validation, splits.test, frozen=frozen)
        pool = fit_rows(splits, mode)
        return SweepData(mode, pool, pool, splits.test, tuple(fold_positions(pool, sensitive, mode.folds, seed)), frozen)


@dataclass(frozen=True)
class FitJob:
    """One fit of a candidate: on all fit rows (``fold`` None: the model that may be promoted),
    or without one cross-fitting fold (to predict that fold)."""

    key: str  # the candidate's name, or BASELINE
    candidate: SweepCandidate
    fold: int | None = None
    budget_seconds: float | None = None  # stopped past it (the baseline has none: every candidate is gated against it)
    max_rows: int | None = None  # a reduction's subsample (SweepSpec.reduction_rows)


BASELINE = "(baseline)"


@dataclass
class JobResult:
    fit_seconds: float
    model: FairModel | None = None  # the final fit only
    selection: Predictions | None = None  # holdout: on the validation split; crossfit: on the fold
    test: Predictions | None = None
    augment: AugmentReport | None = None
    error: str | None = None
    timed_out: bool = False


class FitTimedOut(BaseException):
    """Raised inside a fit that ran past its job's time budget (a BaseException, like
    KeyboardInterrupt, so no library's ``except Exception`` turns it into a fitting error)."""


@contextmanager
def time_budget(seconds: float | None):
    """Stop the code in the block ``seconds`` after it starts by raising :class:`FitTimedOut` in
    this thread (delivered at its next Python instruction: learners return to Python every
    iteration). Works in any thread of any process, so the same budget holds serially, in the
    process pool and on Dask workers (which run tasks in threads, where signals cannot reach)."""
    if seconds is None:
        yield
        return
    target, lock, finished = threading.get_ident(), threading.Lock(), threading.Event()

    def expire():
        with lock:
            if not finished.is_set():
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(FitTimedOut))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:  # after this no exception can be raised here any more
            finished.set()
        timer.cancel()


def run_fit_job(job: FitJob, data: SweepData, sensitive: str, seed: int) -> JobResult:
    """Fit one job and predict what it is for: one worker process's share of a sweep. A candidate
    that cannot be fitted on these rows (e.g. a reduction on a group with one label) is an
    outcome of the sweep, reported with its reason, not a crash of the run."""
    candidate = job.candidate
    if job.fold is None:
        rows, held = data.fit, None
    else:
        held = data.folds[job.fold]
        rows = data.fit.take(np.setdiff1d(np.arange(len(data.fit)), held))
    if job.max_rows is not None and len(rows) > job.max_rows:
        rows = stratified_subsample(rows, sensitive, job.max_rows, seed)
    try:
        with time_budget(job.budget_seconds):
            model, seconds = fit_model(rows, candidate.template, sensitive, seed, candidate.recipe, data.frozen)
    except FitTimedOut:
        return JobResult(fit_seconds=job.budget_seconds, timed_out=True,
                         error=f"timed out: stopped after {job.budget_seconds:g} s (candidate_timeout_seconds)")
    except (ValueError, ArithmeticError, BadInputError) as exc:
        return JobResult(fit_seconds=0.0, error=f"{type(exc).__name__}: {exc}")
    if held is not None:
        return JobResult(fit_seconds=seconds, selection=predict(model, data.fit.take(held)))
    _, report = apply_recipe(rows, candidate.recipe, sensitive, seed)
    return JobResult(
        fit_seconds=seconds, model=model, augment=report, test=predict(model, data.test),
        selection=predict(model, data.selection) if data.mode.mode == "holdout" else None,
    )


@dataclass
class FittedCandidate:
    """A candidate's final model, its selection predictions (validation or out-of-fold) and test
    predictions, or why it could not be fitted."""

    model: FairModel | None
    fit_seconds: float  # the final fit
    crossfit_seconds: float  # the K fold fits (0 in holdout)
    augment: AugmentReport | None
    selection: Predictions | None
    test: Predictions | None
    error: str | None = None
    timed_out: bool = False


def assemble(jobs: list[FitJob], results: list[JobResult], data: SweepData) -> dict[str, FittedCandidate]:
    """Each candidate's job results as one FittedCandidate (out-of-fold predictions reassembled)."""
    by_name: dict[str, dict[int | None, JobResult]] = {}
    for job, result in zip(jobs, results, strict=True):
        by_name.setdefault(job.key, {})[job.fold] = result
    fitted = {}
    for name, parts in by_name.items():
        final = parts[None]
        errors = [r.error for r in parts.values() if r.error]
        if errors:
            fitted[name] = FittedCandidate(None, 0.0, 0.0, None, None, None, error=errors[0],
                                           timed_out=any(r.timed_out for r in parts.values()))
            continue
        selection = final.selection
        if data.mode.mode == "crossfit":
            selection = Predictions.concatenate([(data.folds[k], parts[k].selection) for k in range(len(data.folds))],
                                                len(data.fit))
        fitted[name] = FittedCandidate(
            model=final.model, fit_seconds=final.fit_seconds,
            crossfit_seconds=sum(r.fit_seconds for k, r in parts.items() if k is not None),
            augment=final.augment, selection=selection, test=final.test,
        )
    return fitted


def sweep_jobs(candidates: dict[str, SweepCandidate], data: SweepData, budget_seconds: float | None = None,
               reduction_rows: int | None = None) -> list[FitJob]:
    folds = [None, *range(len(data.folds))]
    return [FitJob(key, candidate, fold, None if key == BASELINE else budget_seconds,
                   reduction_rows if candidate.is_reduction else None)
            for key, candidate in candidates.items() for fold in folds]


def stratified_subsample(rows: Split, sensitive: str, size: int, seed: int) -> Split:
    """``size`` of ``rows``, keeping every group x label cell's share (``fairloop.data.splits.stratified_split``)."""
    return stratified_split(rows, 1 - size / len(rows), seed, sensitive)[0]


FitAll = Callable[[list[FitJob], SweepData, str, int], list[JobResult]]


def fit_serially(jobs: list[FitJob], data: SweepData, sensitive: str, seed: int) -> list[JobResult]:
    """One job after the other in this process, one thread each (as in the process pool: the
    same results, and OpenMP threads spinning over small fits cost more than they give)."""

    with threadpool_limits(limits=1):
        return [run_fit_job(job, data, sensitive, seed) for job in jobs]


Runner = Literal["processes", "dask"]


RUNNERS: tuple[Runner, ...] = ("processes", "dask")
