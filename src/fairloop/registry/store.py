"""The model registry: a git repository whose large files (model, training snapshot) are
tracked by DVC, with a local directory remote.

Layout, per dataset ``D``::

    D/model.joblib(.dvc)   the champion model (bytes in the DVC cache and remote)
    D/train.csv(.dvc)      the training set it was fitted on, after augmentation
    D/entry.json           version, metrics, gate verdicts, lineage, approval
    D/report.md, .html     the report the reviewer saw (HTML with plots by group)
    D/model_card.md        intended use, data, metrics by group, gates, limitations, approval
    D/inputs/              the run's dataset spec, recipe, template and policy (git) and its
                           raw data files (DVC): everything ``fairloop reproduce`` needs
    audit.jsonl            append-only log of every decision (promote, reject, expire, rollback,
                           recovery of an interrupted operation)

Each promotion is one commit tagged ``D@vN``; the champion is what the branch head holds, so
a rollback checks an earlier tag's files out again and DVC restores the exact bytes.

Crash safety: see :mod:`fairloop.registry.repository`. Models are unpickled only from bytes whose
sha256 matches the entry's record.

DVC is imported where a registry operation needs it (seconds to import; read-only commands never do).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict

from fairloop.data.datasets import file_sha256
from fairloop.errors import BadInputError, IntegrityError, RegistryError
from fairloop.registry import decision_log
from fairloop.registry.decision_log import Decision
from fairloop.registry.lineage import Lineage
from fairloop.registry.repository import (
    AUDIT_LOG,
    RegistryRepository,
    now_iso,
    reach_step,
)
from fairloop.remedy.model import FairModel, load_model

# Names reach git refs, DVC paths and the file system: letters, digits, '_' and '-', starting
# with a letter or digit (so never an option such as '-german', never '..' or a slash).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
VERSION_PATTERN = re.compile(r"v[1-9][0-9]{0,8}")
NOT_CHECKED = "not checked"  # promote(gated_against=...) default: no champion check (never a version name)



def check_name(name: str, what: str = "dataset name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BadInputError(
            f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise BadInputError(f"{version!r} is not a version: versions are written v1, v2, ... (no leading zero)")
    return version



def serialize_model(model: FairModel) -> bytes:
    """The bytes the registry stores for ``model`` (``model.joblib``). A run serializes its candidate
    once, when it is put up for review, and promotes those bytes: serializing a reloaded model again
    can give other bytes (pickle's memo follows object identity), and the promoted file must be the
    one reviewed, byte for byte."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()

class ChampionChanged(RegistryError):
    """A promotion refused because the champion it was gated against is no longer the champion."""


class RegistryEntry(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")  # NaN metrics (see lineage.Record) read back

    dataset: str
    version: str
    promoted_at: str
    model_sha256: str
    train_sha256: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    gates: list[dict[str, Any]]
    lineage: Lineage
    approval: dict[str, Any]


class Problem(BaseModel):
    """One thing ``verify`` found wrong: which version and file, and what."""

    dataset: str
    version: str
    path: str
    problem: str


class Registry(RegistryRepository):

    # -- reading --------------------------------------------------------------------------
    def _versions_of(self, dataset: str) -> list[int]:
        if not self.initialised:
            return []
        tags = self._git("tag", "--list", "--", f"{dataset}@v*").split()
        numbers = [int(m.group(1)) for t in tags if (m := re.fullmatch(rf"{re.escape(dataset)}@v(\d+)", t))]
        return sorted(numbers)

    def datasets(self) -> list[str]:
        if not self.initialised:
            return []
        return sorted({t.rsplit("@", 1)[0] for t in self._git("tag", "--list", "--", "*@v*").split()})

    def check_dataset(self, dataset: str) -> str:
        """``dataset`` if the registry has versions of it; else a bad-input error naming the known ones."""
        check_name(dataset)
        if not self._versions_of(dataset):
            known = ", ".join(self.datasets()) or "none yet"
            raise BadInputError(f"the registry at {self.root} has no dataset '{dataset}' (datasets: {known})")
        return dataset

    def entry(self, dataset: str, version: str) -> RegistryEntry:
        self.check_dataset(dataset)
        check_version(version)
        if int(version[1:]) not in self._versions_of(dataset):
            known = ", ".join(f"v{n}" for n in self._versions_of(dataset))
            raise BadInputError(f"{dataset} has no version '{version}' (versions: {known})")
        return RegistryEntry.model_validate_json(self._git("show", f"refs/tags/{dataset}@{version}:{dataset}/entry.json"))

    def history(self, dataset: str) -> list[RegistryEntry]:
        return [self.entry(dataset, f"v{n}") for n in self._versions_of(dataset)]

    def champion(self, dataset: str) -> RegistryEntry | None:
        """The published champion: the entry the branch head holds (never a half-written one)."""
        check_name(dataset)
        if not self.initialised:
            return None
        shown = self._run_git("show", f"HEAD:{dataset}/entry.json")
        return RegistryEntry.model_validate_json(shown.stdout) if shown.returncode == 0 else None

    def _dvc_outputs(self, dataset: str) -> list[Path]:
        """Files of a dataset's entry whose bytes DVC keeps (the rest is in git)."""
        folder = self.root / dataset
        data = sorted((folder / "inputs" / "data").glob("*")) if (folder / "inputs" / "data").is_dir() else []
        return [folder / "model.joblib", folder / "train.csv", *[p for p in data if p.suffix != ".dvc" and p.name != ".gitignore"]]

    def model_path(self, dataset: str) -> Path:
        return self.root / check_name(dataset) / "model.joblib"

    def recorded_sha256(self, path: Path) -> str | None:
        """The sha256 the champion's entry records for ``path`` if it is the champion model file."""
        path = Path(path).resolve()
        if path.parent.parent != self.root or path.name != "model.joblib" or not NAME_PATTERN.fullmatch(path.parent.name):
            return None
        champion = self.champion(path.parent.name)
        return champion.model_sha256 if champion else None

    def load_champion(self, dataset: str) -> tuple[RegistryEntry, FairModel] | None:
        """The champion entry and its model, unpickled only if every file the entry recorded
        (model, training snapshot, raw inputs) still has its recorded sha256."""
        if not self.initialised:
            return None
        if self._interrupted():
            self.recover()
        entry = self.champion(dataset)
        if entry is None:
            return None
        with self._locked():  # no promotion or rollback rewrites the files while they are read
            if problems := self.check_champion(dataset):
                raise IntegrityError(
                    f"the champion {dataset} {entry.version} does not match its record, refusing to use it: "
                    + "; ".join(f"{p.path} has {p.problem.removeprefix('champion file has ')}" for p in problems)
                    + ". Its files were changed outside fairloop: see `fairloop verify`, then roll back")
            return entry, load_model(self.model_path(dataset), expected_sha256=entry.model_sha256)

    @staticmethod
    def recorded_hashes(entry: RegistryEntry) -> dict[str, str]:
        """sha256 of each file an entry promised: model, training snapshot, raw data files and the
        file of a base model it post-processes."""
        hashes = {f"{entry.dataset}/model.joblib": entry.model_sha256, f"{entry.dataset}/train.csv": entry.train_sha256}
        spec = entry.lineage.inputs_spec_files
        for role, sha in entry.lineage.dataset.files.items():
            if role in spec:
                hashes[f"{entry.dataset}/inputs/{spec[role]}"] = sha
        if entry.lineage.base_model is not None and "base_model" in spec:
            hashes[f"{entry.dataset}/inputs/{spec['base_model']}"] = entry.lineage.base_model.sha256
        return hashes

    def materialize_inputs(self, dataset: str, version: str, destination: Path) -> Path:
        """Write the inputs ``version`` was trained on into ``destination``, workspace untouched;
        refuses bytes that differ from the recorded sha256."""
        import dvc.api

        entry = self.entry(dataset, version)
        rev = f"refs/tags/{dataset}@{version}"
        destination.mkdir(parents=True, exist_ok=True)
        for name in ("dataset.yaml", "recipe.yaml", "constraint.yaml", "policy.yaml"):
            (destination / name).write_text(self._git("show", f"{rev}:{dataset}/inputs/{name}"))
        (destination / "data").mkdir(exist_ok=True)
        recorded = self.recorded_hashes(entry)
        with self._locked():  # DVC reads take its repository lock: serialise with writers
            for relative in entry.lineage.inputs_spec_files.values():
                with dvc.api.open(f"{dataset}/inputs/{relative}", repo=str(self.root), rev=rev, mode="rb") as source:
                    (destination / relative).write_bytes(source.read())
                expected = recorded.get(f"{dataset}/inputs/{relative}")
                if expected and file_sha256(destination / relative) != expected:
                    raise IntegrityError(f"{dataset} {version}'s input {relative} has sha256 "
                                         f"{file_sha256(destination / relative)}, recorded {expected}")
        return destination

    def audit_log(self) -> list[dict[str, Any]]:
        path = self.root / AUDIT_LOG
        if not self.initialised or not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def decisions(self) -> list[Decision]:
        """The decision log as typed records (``fairloop.registry.decision_log``), oldest first."""
        return [decision_log.parse(line) for line in self.audit_log()]

    # -- verification ---------------------------------------------------------------------
    def _cache_paths(self, rev: str, path: str) -> list[Path]:
        """Where the DVC cache and the remote keep the bytes of ``path`` as ``rev`` tracks it."""
        meta = yaml.safe_load(self._git("show", f"{rev}:{path}.dvc"))
        md5 = meta["outs"][0]["md5"]
        relative = Path("files", "md5", md5[:2], md5[2:])
        roots = [self.root / ".dvc" / "cache"] + ([self.remote] if self.remote is not None else [])
        return [root / relative for root in roots]

    def verify(self, dataset: str | None = None) -> list[Problem]:
        """Check every version's files (DVC cache and remote) and each champion's working copy
        against the recorded sha256, and each version's parent; return what is wrong."""
        if self._interrupted():
            self.recover()
        names = [self.check_dataset(dataset)] if dataset else self.datasets()
        problems: list[Problem] = []
        for name in names:
            previous_champion = None
            for entry in self.history(name):
                rev = f"refs/tags/{name}@{entry.version}"
                parent_commit = self._git("rev-parse", f"{rev}^{{commit}}^").strip()
                shown = self._run_git("show", f"{parent_commit}:{name}/entry.json")
                previous_champion = RegistryEntry.model_validate_json(shown.stdout).version if shown.returncode == 0 else None
                if entry.lineage.parent != previous_champion:
                    problems.append(Problem(dataset=name, version=entry.version, path=f"{name}/entry.json",
                                            problem=f"records parent {entry.lineage.parent}, but the champion before it "
                                                    f"was {previous_champion}"))
                for path, expected in self.recorded_hashes(entry).items():
                    for stored in self._cache_paths(rev, path):
                        actual = file_sha256(stored) if stored.is_file() else "missing"
                        if actual != expected:
                            problems.append(Problem(dataset=name, version=entry.version, path=str(stored),
                                                    problem=f"sha256 {actual}, recorded {expected} (copy of {path})"))
            problems += self.check_champion(name)
        return problems

    def check_champion(self, dataset: str) -> list[Problem]:
        """The champion's working-copy files whose bytes differ from its record."""
        champion = self.champion(dataset)
        problems = []
        for path, expected in (self.recorded_hashes(champion) if champion else {}).items():
            actual = file_sha256(self.root / path) if (self.root / path).is_file() else "missing"
            if actual != expected:
                problems.append(Problem(dataset=dataset, version=champion.version, path=str(self.root / path),
                                        problem=f"champion file has sha256 {actual}, recorded {expected}"))
        return problems

    # -- writing --------------------------------------------------------------------------
    def commit_file(self, relative: str, text: str, message: str) -> None:
        """Write one registry-wide file (e.g. reviewers.json) and commit it."""

        def write() -> tuple[str, None]:
            (self.root / relative).write_text(text, encoding="utf-8")
            return message, None

        self._transaction("reviewers", None, write)

    def record_decision(self, record: Decision | dict[str, Any]) -> None:
        """Append a decision that promotes nothing (reject, expire, refused reviewer, gate failure); a dict
        is read as the record type its ``action`` names (``fairloop.registry.decision_log``)."""
        record = record if isinstance(record, Decision) else decision_log.parse(record)
        check_name(record.dataset)

        def write() -> tuple[str, None]:
            self._append_audit(record)
            return f"{record.dataset}: {record.action}", None

        self._transaction(record.action, record.dataset, write)

    def promote(
        self,
        dataset: str,
        model: FairModel | bytes,
        train: pd.DataFrame,
        *,
        metrics: dict[str, float],
        baseline_metrics: dict[str, float],
        gates: list[dict[str, Any]],
        lineage: Lineage,
        approval: dict[str, Any],
        documents: Callable[[str], dict[str, str | bytes]],
        inputs_dir: Path,
        gated_against: str | None = NOT_CHECKED,
    ) -> RegistryEntry:
        """Write a new champion version, commit and tag it; nothing is left half-written on failure.

        ``model``: the model, or its bytes as :func:`serialize_model` gave them to the reviewer.
        ``documents(version)`` gives the files for people (report, model card, frontier plot) by name;
        ``inputs_dir`` holds the run's input files (see ``pipeline.snapshot_inputs``).
        ``gated_against``: the champion version (None: no champion) the run was gated and reviewed
        against; if another promotion or a rollback changed the champion since, the promotion is
        refused and logged, since its gates and review compared against a model no longer in place.
        """
        check_name(dataset)
        written: list[RegistryEntry] = []

        def write() -> tuple[str, str]:
            version = f"v{(self._versions_of(dataset) or [0])[-1] + 1}"
            parent = self.champion(dataset)
            if gated_against != NOT_CHECKED and (parent.version if parent else None) != gated_against:
                raise ChampionChanged(
                    f"the champion of {dataset} changed from {gated_against or 'none'} to "
                    f"{parent.version if parent else 'none'} while this run awaited review; it was gated and reviewed "
                    f"against {gated_against or 'no champion'}, so it is not promoted: run the remediation again"
                )
            folder = self.root / dataset
            folder.mkdir(parents=True, exist_ok=True)
            self.model_path(dataset).write_bytes(model if isinstance(model, bytes) else serialize_model(model))
            train.to_csv(folder / "train.csv", index=False)
            reach_step("model-written")
            entry = RegistryEntry(
                dataset=dataset, version=version, promoted_at=now_iso(),
                model_sha256=file_sha256(self.model_path(dataset)), train_sha256=file_sha256(folder / "train.csv"),
                metrics=metrics, baseline_metrics=baseline_metrics, gates=gates,
                lineage=lineage.model_copy(update={"parent": parent.version if parent else None}), approval=approval,
            )
            (folder / "entry.json").write_text(entry.model_dump_json(indent=2) + "\n")
            for name, content in documents(version).items():
                if isinstance(content, bytes):
                    (folder / name).write_bytes(content)
                else:
                    (folder / name).write_text(content, encoding="utf-8")
            self._git("rm", "-q", "-r", "--ignore-unmatch", "--", f"{dataset}/inputs")
            shutil.rmtree(folder / "inputs", ignore_errors=True)
            shutil.copytree(inputs_dir, folder / "inputs")
            reach_step("files-written")
            repo = self._dvc()
            repo.add([str(p) for p in self._dvc_outputs(dataset)])
            reach_step("dvc-added")
            if self.remote is not None:
                repo.push()
                reach_step("dvc-pushed")
            self._append_audit({"action": "promote", "dataset": dataset, "version": version,
                                "run_id": lineage.prefect_flow_run_id, "candidate": lineage.constraint.name,
                                "requested_by": lineage.requested_by,
                                "incident": lineage.drift.incident if lineage.drift else None,
                                "recipe": lineage.recipe.name,
                                "verdicts": {g["gate"]: g["verdict"] for g in gates}, **approval})
            written.append(entry)
            return f"Promote {dataset} {version} (approved by {approval.get('reviewer')})", f"{dataset}@{version}"

        try:
            self._transaction("promote", dataset, write)
        except ChampionChanged as refused:
            self.record_decision({"action": "refused", "dataset": dataset, "run_id": lineage.prefect_flow_run_id,
                                  "reason": str(refused), **approval})
            raise
        return written[0]

    def rollback(self, dataset: str, version: str, *, reviewer: str, reason: str) -> RegistryEntry:
        """Make ``version`` the champion again, its model and data restored byte-identical.

        Refused without a reviewer or a reason, or when ``version`` already is the champion."""
        if not reviewer.strip():
            raise BadInputError("a rollback needs the reviewer who decides it", field="--reviewer")
        if not reason.strip():
            raise BadInputError("a rollback needs a reason (it is audited)", field="--reason")
        target = self.entry(dataset, version)
        if (champion := self.champion(dataset)) is not None and champion.version == version:
            raise BadInputError(f"{version} already is the champion of {dataset}: nothing to roll back")
        restored: list[RegistryEntry] = []

        def write() -> tuple[str, None]:
            current = self.champion(dataset)
            if current is not None and current.version == version:
                raise BadInputError(f"{version} already is the champion of {dataset}: nothing to roll back")
            self._git("rm", "-q", "-r", "--ignore-unmatch", "--", dataset)
            self._git("checkout", f"refs/tags/{dataset}@{version}", "--", dataset)
            reach_step("files-written")
            self._checkout_outputs([str(p) + ".dvc" for p in self._dvc_outputs_at(dataset)])
            reach_step("dvc-checked-out")
            repaired = self._repair_from_remote(target)
            self._append_audit({"action": "rollback", "dataset": dataset, "version": version,
                                **({"repaired_from_remote": repaired} if repaired else {}),
                                "from_version": current.version if current else None,
                                "reviewer": reviewer, "comment": reason})
            restored.append(target)
            return f"Roll back {dataset} to {version} (by {reviewer}: {reason})", None

        self._transaction("rollback", dataset, write)
        return restored[0]

    def _repair_from_remote(self, entry: RegistryEntry) -> list[str]:
        """Check the restored files against ``entry``'s sha256; a file restored from a corrupt
        cache object is fetched again from the remote (the corrupt object removed first).
        Returns the paths repaired; raises if the remote's bytes do not match either."""
        rev = f"refs/tags/{entry.dataset}@{entry.version}"
        wrong = [path for path, expected in self.recorded_hashes(entry).items()
                 if file_sha256(self.root / path) != expected]
        if wrong and self.remote is not None:
            for path in wrong:
                self._cache_paths(rev, path)[0].unlink(missing_ok=True)
                (self.root / path).unlink(missing_ok=True)
            self._dvc().pull(targets=[str(self.root / path) + ".dvc" for path in wrong], force=True)
        for path in wrong:
            actual, expected = file_sha256(self.root / path), self.recorded_hashes(entry)[path]
            if actual != expected:
                raise IntegrityError(f"restored {path} has sha256 {actual}, {entry.version} recorded {expected} "
                                     "(local cache and remote)")
        return wrong

    def _dvc_outputs_at(self, dataset: str) -> list[Path]:
        """DVC outputs named by the ``.dvc`` files now checked out (before DVC restores them)."""
        return [p.with_suffix("") for p in sorted((self.root / dataset).rglob("*.dvc"))]
