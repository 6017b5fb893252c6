"""What a promoted model records about where it came from: a typed record written by the
remediation flow, stored in the registry entry, and read by the registry, ``reproduce`` and the
monitor."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fairloop.audit.record import AuditReport
from fairloop.data.datasets import file_sha256
from fairloop.data.groups import (
    SIMULTANEOUS_METHOD,
    GroupFloors,
    intersection_parts,
    is_intersection,
)
from fairloop.data.membership import MembershipReport
from fairloop.monitor.drifted import DriftLineage
from fairloop.pipeline import Inputs
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.frozen import BaseModelSource
from fairloop.remedy.recipes import AugmentReport

TRACKED_PACKAGES = (
    "fairloop", "fairlearn", "scikit-learn", "imbalanced-learn", "pandas", "numpy",
    "great-expectations", "prefect", "dvc",
)


class Record(BaseModel):
    # a misspelt field is an error, not a silent extra; a metric that has no value on some rows
    # (NaN) is written as "NaN" and read back as NaN (JSON has no NaN, and null would not read back)
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class FileIdentity(Record):
    """A versioned data file (recipe, template, policy, sweep): name, version, content hash, path used."""

    name: str
    version: int
    sha256: str
    path: str | None = None


class DatasetLineage(Record):
    name: str
    version: int
    spec_path: str
    spec_sha256: str
    data_sha256: str
    files: dict[str, str]  # file role -> sha256 of the raw file


class CodeVersion(Record):
    git_commit: str | None
    git_dirty: bool | None


class SweepLineage(FileIdentity):
    chosen: str | None
    template_file: str
    explanation: str
    candidates: list[dict[str, Any]]  # name, validation and test metrics, fit seconds of every candidate


class ExtraData(Record):
    """Labelled production rows appended to the training pool (a drifted window)."""

    path: str
    sha256: str


class IntersectionSetup(Record):
    """How an intersectional run was gated: the cells of which sensitive features, the floors a
    cell needs, and the simultaneous interval method."""

    sensitive: str
    features: list[str]
    floors: GroupFloors
    interval_method: str
    confidence: float


class RiskAcceptance(Record):
    """A reviewer's explicit acceptance of gates the data could not decide (policy
    ``inconclusive: review_with_acceptance``)."""

    gates: list[str]
    reviewer: str
    reason: str


class Lineage(Record):
    dataset: DatasetLineage
    recipe: FileIdentity
    constraint: FileIdentity
    policy: FileIdentity
    sensitive: str
    seed: int
    train_rows: int | None
    augment: AugmentReport
    audit: AuditReport
    code: CodeVersion
    packages: dict[str, str]
    prefect_flow_run_id: str | None
    requested_by: str
    sweep: SweepLineage | None = None
    extra_training_data: ExtraData | None = None
    evaluation: ModeDecision | None = None  # holdout or crossfit, and why
    accepted_inconclusive: RiskAcceptance | None = None  # who accepted which undecided gates, and why
    requester_verified: bool = False  # the requester proved their identity with a reviewer token
    # set at promotion: where the registry keeps each input file (role -> path under inputs/)
    inputs_spec_files: dict[str, str] = {}
    parent: str | None = None  # the champion version this one replaced
    # set when the run gated the cells of an intersection; absent otherwise (older records read as before)
    intersection: IntersectionSetup | None = Field(None, exclude_if=lambda value: value is None)
    base_model: BaseModelSource | None = None  # remediate --model: the frozen model the candidate wraps
    missing_sensitive: MembershipReport | None = None  # test rows with no sensitive value: inferred (how) or excluded
    # a rerun answering a drift alert: its incident, the window rows it trained and was judged on, how it weighted them
    drift: DriftLineage | None = Field(None, exclude_if=lambda value: value is None)


def describe_run(
    inputs: Inputs, audit: AuditReport, augment: AugmentReport, *, run_id: str | None, requested_by: str,
    project_dir: Path, sweep: SweepLineage | None = None, evaluation: ModeDecision | None = None,
    accepted_inconclusive: dict | None = None, requester_verified: bool = False, base_model: BaseModelSource | None = None,
    missing_sensitive: MembershipReport | None = None, drift: DriftLineage | None = None,
) -> Lineage:
    """The lineage of a run about to be promoted, from its loaded inputs and reports."""
    spec, params = inputs.loaded.spec, inputs.params
    extra = params.extra_training_data
    return Lineage(
        dataset=DatasetLineage(name=spec.name, version=spec.version, spec_path=params.dataset,
                               spec_sha256=spec.content_hash(), data_sha256=inputs.loaded.data_sha256,
                               files=inputs.loaded.files_sha256),
        recipe=FileIdentity(**inputs.recipe.identity(params.recipe)),
        constraint=FileIdentity(**inputs.template.identity(params.constraint)),
        policy=FileIdentity(**inputs.policy.identity(params.policy)),
        sensitive=inputs.sensitive, seed=params.seed, train_rows=params.train_rows, augment=augment, audit=audit,
        code=code_version(project_dir), packages=package_versions(), prefect_flow_run_id=run_id,
        requested_by=requested_by, requester_verified=requester_verified, sweep=sweep, evaluation=evaluation,
        accepted_inconclusive=RiskAcceptance(**accepted_inconclusive) if accepted_inconclusive else None,
        extra_training_data=ExtraData(path=extra, sha256=file_sha256(Path(extra))) if extra else None,
        intersection=IntersectionSetup(
            sensitive=inputs.sensitive, features=intersection_parts(inputs.sensitive), floors=inputs.policy.group_floors,
            interval_method=SIMULTANEOUS_METHOD, confidence=inputs.policy.bootstrap.confidence,
        ) if is_intersection(inputs.sensitive) else None,
        base_model=base_model,
        missing_sensitive=missing_sensitive,
        drift=drift,
    )


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_version(project_dir: Path) -> CodeVersion:
    """The project's git commit and whether the working tree had uncommitted changes."""

    def git(*args: str) -> str | None:
        result = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return CodeVersion(git_commit=commit, git_dirty=bool(status) if status is not None else None)
