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
    audit.jsonl            append-only log of every decision (promote, reject, expire, rollback)

Each promotion is one commit tagged ``D@vN``; the champion is whatever ``HEAD`` holds, so a
rollback checks an earlier tag's files out again and DVC restores the exact bytes. Every
mutation holds a file lock (DVC's own lock refuses concurrent use) and either commits
completely or leaves the previous commit's state in the working tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from filelock import FileLock
from pydantic import BaseModel

from fairloop.datasets import file_sha256
from fairloop.errors import RegistryError
from fairloop.model import FairModel

AUDIT_LOG = "audit.jsonl"
MARKER = ".fairloop-registry"  # committed at creation: only such repositories are ever reset or cleaned
LOCK_TIMEOUT_SECONDS = 600


class RegistryEntry(BaseModel):
    dataset: str
    version: str
    promoted_at: str
    model_sha256: str
    train_sha256: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    gates: list[dict[str, Any]]
    lineage: dict[str, Any]
    approval: dict[str, Any]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: Path, remote: Path | None = None):
        self.root = Path(root).resolve()
        self.remote = Path(remote).resolve() if remote else None

    # -- plumbing -------------------------------------------------------------------------
    def _git(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
        if check and result.returncode != 0:
            raise RegistryError(f"git {' '.join(args)} failed in {self.root}: {result.stderr.strip()}")
        return result.stdout

    def _dvc(self):
        from dvc.repo import Repo

        return Repo(str(self.root))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root.parent / f".{self.root.name}.lock"), timeout=LOCK_TIMEOUT_SECONDS):
            yield

    @property
    def initialised(self) -> bool:
        return (self.root / ".git").is_dir() and (self.root / ".dvc").is_dir()

    def _init(self) -> None:
        from dvc.repo import Repo

        if (self.root / ".git").exists() and not (self.root / MARKER).is_file():
            # A registry transaction stages everything and resets the tree on failure: never
            # do that to a repository holding anything else, such as the project checkout.
            raise RegistryError(
                f"{self.root} is a git repository that fairloop did not create; point FAIRLOOP_REGISTRY_DIR "
                "at a new or empty directory (the registry must be its own repository)"
            )
        if not (self.root / ".git").is_dir():
            self._git("init", "-q", "-b", "main")
            self._git("config", "user.name", "fairloop registry")
            self._git("config", "user.email", "registry@fairloop.invalid")
        if not (self.root / ".dvc").is_dir():
            repo = Repo.init(str(self.root))
            with repo.config.edit() as conf:
                conf["core"]["analytics"] = False
                conf["core"]["check_update"] = False
                if self.remote is not None:
                    conf["remote"]["storage"] = {"url": str(self.remote)}
                    conf["core"]["remote"] = "storage"
            (self.root / AUDIT_LOG).touch()
            (self.root / MARKER).write_text("This repository is a fairloop model registry.\n")
            self._git("add", "-A")
            self._git("commit", "-q", "-m", "Initialise fairloop registry")

    def _restore_head(self) -> None:
        """Put the working tree back to HEAD: git files and DVC-tracked outputs."""
        self._git("reset", "-q", "--hard", "HEAD")
        self._git("clean", "-q", "-fd")
        self._dvc().checkout(force=True, allow_missing=True)

    # -- reading --------------------------------------------------------------------------
    def _versions_of(self, dataset: str) -> list[int]:
        if not self.initialised:
            return []
        tags = self._git("tag", "--list", f"{dataset}@v*").split()
        numbers = [int(m.group(1)) for t in tags if (m := re.fullmatch(rf"{re.escape(dataset)}@v(\d+)", t))]
        return sorted(numbers)

    def datasets(self) -> list[str]:
        if not self.initialised:
            return []
        return sorted({t.rsplit("@", 1)[0] for t in self._git("tag", "--list", "*@v*").split()})

    def entry(self, dataset: str, version: str) -> RegistryEntry:
        if not re.fullmatch(r"v\d+", version) or int(version[1:]) not in self._versions_of(dataset):
            known = ", ".join(f"v{n}" for n in self._versions_of(dataset)) or "none"
            raise RegistryError(f"{dataset} has no version '{version}' (versions: {known})")
        return RegistryEntry.model_validate_json(self._git("show", f"{dataset}@{version}:{dataset}/entry.json"))

    def history(self, dataset: str) -> list[RegistryEntry]:
        return [self.entry(dataset, f"v{n}") for n in self._versions_of(dataset)]

    def champion(self, dataset: str) -> RegistryEntry | None:
        path = self.root / dataset / "entry.json"
        if not self.initialised or not path.is_file():
            return None
        return RegistryEntry.model_validate_json(path.read_text())

    def _dvc_outputs(self, dataset: str) -> list[Path]:
        """Files of a dataset's entry whose bytes DVC keeps (the rest is in git)."""
        folder = self.root / dataset
        data = sorted((folder / "inputs" / "data").glob("*")) if (folder / "inputs" / "data").is_dir() else []
        return [folder / "model.joblib", folder / "train.csv", *[p for p in data if p.suffix != ".dvc" and p.name != ".gitignore"]]

    def model_path(self, dataset: str) -> Path:
        return self.root / dataset / "model.joblib"

    def load_champion(self, dataset: str) -> tuple[RegistryEntry, FairModel] | None:
        entry = self.champion(dataset)
        if entry is None:
            return None
        return entry, joblib.load(self.model_path(dataset))

    def _dvc_outputs_at(self, dataset: str) -> list[Path]:
        """DVC outputs named by the ``.dvc`` files now checked out (before DVC restores them)."""
        return [p.with_suffix("") for p in sorted((self.root / dataset).rglob("*.dvc"))]

    @staticmethod
    def recorded_hashes(entry: RegistryEntry) -> dict[str, str]:
        """sha256 of each file an entry promised: model, training snapshot and raw data files."""
        hashes = {f"{entry.dataset}/model.joblib": entry.model_sha256, f"{entry.dataset}/train.csv": entry.train_sha256}
        files = entry.lineage.get("dataset", {}).get("files", {})
        spec = entry.lineage.get("inputs_spec_files", {})
        for role, sha in files.items():
            if role in spec:
                hashes[f"{entry.dataset}/inputs/{spec[role]}"] = sha
        return hashes

    def materialize_inputs(self, dataset: str, version: str, destination: Path) -> Path:
        """Write the inputs ``version`` was trained on into ``destination``, workspace untouched."""
        import dvc.api

        entry = self.entry(dataset, version)
        rev = f"{dataset}@{version}"
        destination.mkdir(parents=True, exist_ok=True)
        for name in ("dataset.yaml", "recipe.yaml", "constraint.yaml", "policy.yaml"):
            (destination / name).write_text(self._git("show", f"{rev}:{dataset}/inputs/{name}"))
        (destination / "data").mkdir(exist_ok=True)
        for relative in entry.lineage["inputs_spec_files"].values():
            with dvc.api.open(f"{dataset}/inputs/{relative}", repo=str(self.root), rev=rev, mode="rb") as source:
                (destination / relative).write_bytes(source.read())
        return destination

    def audit_log(self) -> list[dict[str, Any]]:
        path = self.root / AUDIT_LOG
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- writing --------------------------------------------------------------------------
    def _append_audit(self, record: dict[str, Any]) -> None:
        with (self.root / AUDIT_LOG).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"at": now_iso(), **record}, sort_keys=True) + "\n")

    def _transaction(self, write: Callable[[], tuple[str, str | None]]) -> None:
        """Under the lock, run ``write`` (returns commit message and optional tag) and commit it.

        Any failure before the tag exists restores HEAD, so the working tree holds the previous
        champion and the history has no partial entry.
        """
        with self._locked():
            self._init()
            if self._git("status", "--porcelain").strip():
                self._restore_head()  # an earlier crash left debris: HEAD is the truth
            head = self._git("rev-parse", "HEAD").strip()
            try:
                message, tag = write()
                self._git("add", "-A")
                self._git("commit", "-q", "-m", message)
                if tag:
                    self._git("tag", "-a", tag, "-m", message)
            except BaseException:
                self._git("reset", "-q", "--hard", head)
                self._restore_head()
                raise

    def commit_file(self, relative: str, text: str, message: str) -> None:
        """Write one registry-wide file (e.g. reviewers.json) and commit it."""

        def write() -> tuple[str, None]:
            (self.root / relative).write_text(text, encoding="utf-8")
            return message, None

        self._transaction(write)

    def record_decision(self, record: dict[str, Any]) -> None:
        """Append a decision that promotes nothing (reject, expire, refused reviewer, gate failure)."""

        def write() -> tuple[str, None]:
            self._append_audit(record)
            return f"{record['dataset']}: {record['action']}", None

        self._transaction(write)

    def promote(
        self,
        dataset: str,
        model: FairModel,
        train: pd.DataFrame,
        *,
        metrics: dict[str, float],
        baseline_metrics: dict[str, float],
        gates: list[dict[str, Any]],
        lineage: dict[str, Any],
        approval: dict[str, Any],
        documents: Callable[[str], dict[str, str | bytes]],
        inputs_dir: Path,
    ) -> RegistryEntry:
        """Write a new champion version, commit and tag it; nothing is left half-written on failure.

        ``documents(version)`` gives the files for people (report, model card, frontier plot) by name;
        ``inputs_dir`` holds the run's input files (see ``pipeline.snapshot_inputs``).
        """
        written: list[RegistryEntry] = []

        def write() -> tuple[str, str]:
            version = f"v{(self._versions_of(dataset) or [0])[-1] + 1}"
            parent = self.champion(dataset)
            folder = self.root / dataset
            folder.mkdir(parents=True, exist_ok=True)
            joblib.dump(model, self.model_path(dataset))
            train.to_csv(folder / "train.csv", index=False)
            entry = RegistryEntry(
                dataset=dataset, version=version, promoted_at=now_iso(),
                model_sha256=file_sha256(self.model_path(dataset)), train_sha256=file_sha256(folder / "train.csv"),
                metrics=metrics, baseline_metrics=baseline_metrics, gates=gates,
                lineage={**lineage, "parent": parent.version if parent else None}, approval=approval,
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
            repo = self._dvc()
            repo.add([str(p) for p in self._dvc_outputs(dataset)])
            if self.remote is not None:
                repo.push()
            self._append_audit({"action": "promote", "dataset": dataset, "version": version,
                                "run_id": lineage.get("prefect_flow_run_id"),
                                "candidate": lineage.get("constraint", {}).get("name"),
                                "recipe": lineage.get("recipe", {}).get("name"),
                                "verdicts": {g["gate"]: g["verdict"] for g in gates}, **approval})
            written.append(entry)
            return f"Promote {dataset} {version} (approved by {approval.get('reviewer')})", f"{dataset}@{version}"

        self._transaction(write)
        return written[0]

    def rollback(self, dataset: str, version: str, *, reviewer: str, reason: str) -> RegistryEntry:
        """Make ``version`` the champion again, its model and data restored byte-identical."""
        target = self.entry(dataset, version)
        current = self.champion(dataset)
        restored: list[RegistryEntry] = []

        def write() -> tuple[str, None]:
            self._git("rm", "-q", "-r", "--ignore-unmatch", "--", dataset)
            self._git("checkout", f"{dataset}@{version}", "--", dataset)
            repo = self._dvc()
            outputs = [str(p) + ".dvc" for p in self._dvc_outputs_at(dataset)]
            try:
                repo.checkout(targets=outputs, force=True)
            except Exception:  # the local cache lost it: fetch from the remote
                repo.pull(targets=outputs, force=True)
            for path, expected in self.recorded_hashes(target).items():
                actual = file_sha256(self.root / path)
                if actual != expected:
                    raise RegistryError(f"restored {path} has sha256 {actual}, {version} recorded {expected}")
            self._append_audit({"action": "rollback", "dataset": dataset, "version": version,
                                "from_version": current.version if current else None,
                                "reviewer": reviewer, "comment": reason})
            restored.append(target)
            return f"Roll back {dataset} to {version} (by {reviewer}: {reason})", None

        self._transaction(write)
        return restored[0]
