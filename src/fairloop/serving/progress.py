"""A remediation run's progress: one Prefect progress artifact per run (a bar in the UI, read by
``fairloop remediate``) and a log line per step, the bar moving by expected work, not step count.

Every step a run takes is named on the bar as it starts (no silent minute), fitting counts its
models from the first fit on ("fit: 0/12 models fitted"), and the bar ends in the run's final
state: the flow writes it when it ends, and for runs that end without flow code running (a
suspended review the server expires, a flow process that died) the command that finds them does.
A run resumed after its review (a new process, ``fairloop.flows.review``) carries on with the same
artifact, from where it stood: the steps it replays from stored results do not move the bar back.
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import Artifact

from fairloop.remedy.fit_progress import SEARCHING, SELECTING, FitCount

PROGRESS_KEY = "remediation-progress"
# The steps of a run, as the bar names them (a sweep's own two: ``fairloop.remedy.fit_progress``).
LOAD_INPUTS, AUDIT, FIT, AUGMENT = "load inputs", "audit", "fit", "augment"
EVALUATE, PUBLISH_REVIEW, AWAIT_REVIEW, PROMOTE = "evaluate and gate", "publish review", "await review", "promote"
DESCRIPTION_CHARS = 200  # the artifact's description is one line of the UI's list and of the CLI's bar

# Each step of a run, in the order it runs, with its share of the bar (percent of the run's work;
# the review's wait is none). Measured with `bench/progress_weights.py flow` on 2 cores (German's
# default sweep at load 1.5, with HistGradientBoosting's early stopping; the other two before it,
# shared with other work, load 5-9), seconds and share of each step:
#
#   step               German, default sweep    German, 8-candidate sweep   Adult, 8-candidate sweep
#                      (crossfit, 72 fits;      (crossfit, 54 fits;         (holdout, 9 fits;
#                      GateFailed, 61 s)        approved, 143 s)            approved, 122 s)
#   load inputs          0.4 s   1 %              0.6 s   0 %                 1.0 s   1 %
#   audit                4.5 s   7 %              6.3 s   4 %                 7.4 s   6 %
#   fit                 47 s    77 %              124 s  87 %                  77 s  64 %
#   select candidate     4.7 s   8 % (twice)      3.9 s   3 %                17.2 s  14 %
#   augment              -                        0.5 s   0 %                 0.3 s   0 %
#   evaluate and gate    -                        0.7 s   0 %                 9.5 s   8 %
#   publish review       4.1 s   7 % (frontier)   2.6 s   2 %                 3.0 s   3 %
#   promote (to the end) -                        4.4 s   3 %                 5.8 s   5 %
#
# (commands: `flow` for the first; `flow --sweep S --policy P --approve [--dataset datasets/adult.yaml]`
# for the others, S: recipes none and reweigh x unconstrained, threshold-dp at 0.01 and 0.02 and
# threshold-eo; P: DPD <= 0.5, accuracy drop <= 0.5, sensitive feature allowed at prediction.) The
# weights lie between German's fit-bound runs and Adult's, whose selection and evaluation bootstrap
# thousands of rows (the "silent minute" after the last fit of the default sweep on Adult).
# "search after the grid" runs only when no grid candidate passes (up to the sweep's budget); it
# counts its fits on the bar but has no share, so a run without it never jumps over it. A run
# without a sweep fits two models and selects nothing: its bar skips the selection's share.
STAGE_WEIGHTS: dict[str, float] = {
    LOAD_INPUTS: 1.0,
    AUDIT: 4.0,
    FIT: 75.0,
    SELECTING: 10.0,
    SEARCHING: 0.0,
    AUGMENT: 0.5,
    EVALUATE: 5.0,
    PUBLISH_REVIEW: 2.0,
    AWAIT_REVIEW: 0.0,
    PROMOTE: 2.5,
}


def stage_percent(stage: str, fraction: float = 0.0) -> float:
    """Percent of the run done when ``stage`` is ``fraction`` done: every earlier step's share
    plus that part of its own."""
    names = list(STAGE_WEIGHTS)
    before = sum(STAGE_WEIGHTS[name] for name in names[:names.index(stage)])
    share = STAGE_WEIGHTS[stage] * min(max(fraction, 0.0), 1.0)
    return round(100 * (before + share) / sum(STAGE_WEIGHTS.values()), 1)


def fit_description(count: FitCount) -> str:
    return f"{FIT}: {count.done}/{count.total} models fitted"


def search_description(fitted: int) -> str:
    return f"{SEARCHING}: {fitted} more model{'' if fitted == 1 else 's'} fitted"


class ProgressReporter:
    """A run's progress, reported by the flow as it goes (see the module docstring)."""

    def __init__(self, logger, run_id: str | UUID):
        self.logger = logger
        self.started = time.monotonic()
        self.stage_name: str | None = None
        self.search_fitted = self.search_batch_start = 0  # the search fits in batches: counted across them
        existing = progress_artifact(run_id)
        if existing is None:
            self.artifact_id = create_progress_artifact(progress=0.0, key=PROGRESS_KEY, description="starting")
            self.resumed_at = 0.0
        else:  # resumed after review: the replayed steps stay below where the run stood
            self.artifact_id, self.resumed_at = existing.id, float(existing.data or 0.0)
        self.percent = self.resumed_at

    def stage(self, stage: str, description: str | None = None) -> None:
        """``stage`` begins (its name is the description unless one is given)."""
        self.stage_name = stage
        self._update(stage_percent(stage), description or stage)

    def fitted(self, count: FitCount) -> None:
        """A batch of fits started (``count.done`` 0) or one more finished: the grid's, or the search's."""
        if self.stage_name == SEARCHING:
            if count.done == 0:
                self.search_batch_start = self.search_fitted
            self.search_fitted = self.search_batch_start + count.done
            self._update(stage_percent(SEARCHING), search_description(self.search_fitted))
            return
        self._update(stage_percent(FIT, count.fraction), fit_description(count))

    def done(self, description: str) -> None:
        """The run ended: ``description`` starts with its final state's name."""
        self._update(100.0, description)

    def _update(self, percent: float, description: str) -> None:
        elapsed = time.monotonic() - self.started
        self.logger.info("[%6.1fs] %s", elapsed, description)
        if percent < self.resumed_at:  # a step replayed from its stored result: the bar stays put
            return
        self.percent = max(self.percent, percent)  # the bar never moves back (a step may come twice)
        update_progress_artifact(self.artifact_id, progress=self.percent, description=description[:DESCRIPTION_CHARS])


def progress_artifact(run_id: str | UUID) -> Artifact | None:
    """The run's latest progress artifact, None before the flow made it."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(run_id))]), key=ArtifactFilterKey(any_=[PROGRESS_KEY])))
    return max(artifacts, key=lambda a: a.updated or a.created) if artifacts else None


def read_progress(run_id: str | UUID) -> tuple[float, str] | None:
    """(percent, description) of a run's progress artifact, None before the flow made it."""
    artifact = progress_artifact(run_id)
    return None if artifact is None else (float(artifact.data or 0.0), artifact.description or "")


def end_progress(run_id: str | UUID, description: str) -> None:
    """Write a run's final state on its bar when no flow code will (it expired while suspended, or
    its process died); a run that never made its artifact is left without one."""
    artifact = progress_artifact(run_id)
    if artifact is not None:
        update_progress_artifact(artifact.id, progress=100.0, description=description[:DESCRIPTION_CHARS])
