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

Crash safety: every mutation holds a file lock and is a journaled transaction. It writes
``.git/fairloop-transaction.json`` (the base commit), stages everything (files, DVC cache and
remote, the index), writes the commit and tag objects, records them in the journal, then
publishes branch and tag in one ``git update-ref --stdin`` transaction. The next registry
operation that finds a journal finishes a sealed transaction (its objects are complete) or
undoes an unsealed one (back to the base commit), removes stale git and DVC locks, and logs
what it did in ``audit.jsonl``. Models are unpickled only from bytes whose sha256 matches the
entry's record.
"""

from __future__ import annotations

import io
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
import yaml
from filelock import FileLock
from pydantic import BaseModel, ConfigDict

from fairloop.data.datasets import file_sha256
from fairloop.errors import BadInputError, IntegrityError, RegistryError
from fairloop.registry import decision_log
from fairloop.registry.decision_log import Decision
from fairloop.registry.lineage import Lineage
from fairloop.remedy.model import FairModel, load_model

AUDIT_LOG = "audit.jsonl"
MARKER = ".fairloop-registry"  # committed at creation: only such repositories are ever reset or cleaned
JOURNAL = "fairloop-transaction.json"  # inside .git: never part of the working tree
LOCK_TIMEOUT_SECONDS = 600
# Names reach git refs, DVC paths and the file system: letters, digits, '_' and '-', starting
# with a letter or digit (so never an option such as '-german', never '..' or a slash).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
VERSION_PATTERN = re.compile(r"v[1-9][0-9]{0,8}")
NOT_CHECKED = "not checked"  # promote(gated_against=...) default: no champion check (never a version name)

# Called with the name of each step of a transaction as it is reached. The crash tests use it
# to kill a real promotion at every step; it is None otherwise.
STEP_HOOK: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


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


def serialize_model(model: FairModel) -> bytes:
    """The bytes the registry stores for ``model`` (``model.joblib``). A run serializes its candidate
    once, when it is put up for review, and promotes those bytes: serializing a reloaded model again
    can give other bytes (pickle's memo follows object identity), and the promoted file must be the
    one reviewed, byte for byte."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def now_iso() -> str:
    # milliseconds: a monitor window and the decision a rerun records can fall in the same second, and an
    # incident's timeline is ordered by these stamps
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Registry:
    def __init__(self, root: Path, remote: Path | None = None):
        self.root = Path(root).resolve()
        self.remote = Path(remote).resolve() if remote else None

    # -- plumbing -------------------------------------------------------------------------
    def _run_git(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, input=stdin,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )

    def _git(self, *args: str, stdin: str | None = None) -> str:
        result = self._run_git(*args, stdin=stdin)
        if result.returncode != 0:
            raise RegistryError(f"git {' '.join(args)} failed in {self.root}: {result.stderr.strip()}")
        return result.stdout

    def _dvc(self):
        from dvc.repo import Repo

        return Repo(str(self.root))

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise BadInputError("the registry path is a file, not a directory; set FAIRLOOP_REGISTRY_DIR to a directory",
                                source=str(self.root))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._check_root()
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root.parent / f".{self.root.name}.lock"), timeout=LOCK_TIMEOUT_SECONDS):
            yield

    @property
    def initialised(self) -> bool:
        self._check_root()
        return (self.root / ".git").is_dir() and (self.root / ".dvc").is_dir()

    @property
    def _journal_path(self) -> Path:
        return self.root / ".git" / JOURNAL

    def _init(self) -> None:
        from dvc.repo import Repo

        ours = (self.root / MARKER).is_file() or (  # or a first use killed before it wrote the marker
            self._run_git("rev-parse", "--verify", "-q", "HEAD").returncode != 0
            and {p.name for p in self.root.iterdir()} <= {".git", ".dvc", ".dvcignore"})
        if (self.root / ".git").exists() and not ours:
            # A registry transaction stages everything and resets the tree on failure: never
            # do that to a repository holding anything else, such as the project checkout.
            raise RegistryError(
                f"{self.root} is a git repository that fairloop did not create; point FAIRLOOP_REGISTRY_DIR "
                "at a new or empty directory (the registry must be its own repository)"
            )
        if (self.root / ".git").is_dir() and self._run_git("rev-parse", "--verify", "-q", "HEAD").returncode == 0:
            return
        # first use, or a first use killed before its first commit: (re)create from scratch
        self._git("init", "-q", "-b", "main")
        (self.root / MARKER).write_text("This repository is a fairloop model registry.\n")
        self._git("config", "user.name", "fairloop registry")
        self._git("config", "user.email", "registry@fairloop.invalid")
        repo = Repo.init(str(self.root), force=True)
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
            if self.remote is not None:
                conf["remote"]["storage"] = {"url": str(self.remote)}
                conf["core"]["remote"] = "storage"
        (self.root / AUDIT_LOG).touch()
        self._git("add", "-A")
        self._git("commit", "-q", "-m", "Initialise fairloop registry")

    def _checkout_outputs(self, targets: list[str] | None = None) -> None:
        """Make DVC-tracked files match the ``.dvc`` files checked out; fetch from the remote
        what the local cache lost."""
        repo = self._dvc()
        try:
            repo.checkout(targets=targets, force=True)
        except Exception:  # noqa: BLE001 - any cache problem: the remote holds the same bytes
            if self.remote is None:
                raise
            repo.pull(targets=targets, force=True)

    def _reset_to(self, commit: str) -> None:
        """Working tree, index and DVC outputs exactly as ``commit`` has them."""
        self._git("reset", "-q", "--hard", commit)
        self._git("clean", "-q", "-fd")
        self._checkout_outputs()

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

    # -- crash recovery -------------------------------------------------------------------
    def _interrupted(self) -> bool:
        return self.initialised and self._journal_path.is_file()

    def _write_journal(self, journal: dict[str, Any]) -> None:
        temporary = self._journal_path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(journal, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._journal_path)

    def _stale_locks(self) -> list[str]:
        """Remove lock files left by a killed git or DVC process (we hold the registry lock, so
        no live process of ours owns them); return what was removed."""
        git_dir = self.root / ".git"
        candidates = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "packed-refs.lock",
                      *sorted((git_dir / "refs").rglob("*.lock"))]
        removed = []
        for lock in candidates:
            if lock.is_file():
                lock.unlink()
                removed.append(str(lock.relative_to(self.root)))
        rwlock = self.root / ".dvc" / "tmp" / "rwlock"
        if rwlock.is_file():
            try:
                valid = isinstance(json.loads(rwlock.read_text()), dict)
            except ValueError:
                valid = False
            if not valid:  # empty or half-written: DVC would refuse every operation
                rwlock.unlink()
                removed.append(str(rwlock.relative_to(self.root)))
        return removed

    def _recover(self) -> list[dict[str, Any]]:
        """Finish or undo an interrupted transaction, clear stale locks and stray changes.
        Returns audit records of what was done (the caller commits them)."""
        notes: list[dict[str, Any]] = []
        removed = self._stale_locks()
        if removed:
            notes.append({"action": "recover", "detail": "removed stale locks", "paths": removed})
        if self._journal_path.is_file():
            journal = json.loads(self._journal_path.read_text())
            branch = self._git("symbolic-ref", "HEAD").strip()
            head = self._git("rev-parse", "HEAD").strip()
            what = {k: journal.get(k) for k in ("operation", "dataset", "tag", "base", "commit")}
            if journal.get("commit") and head in (journal["base"], journal["commit"]):
                self._publish(branch, journal)  # sealed: its objects are complete, finish it
                self._reset_to(journal["commit"])
                notes.append({"action": "recover", "detail": f"finished an interrupted {journal['operation']}", **what})
            else:
                self._reset_to(head)  # not sealed (head is still the base): undo it
                notes.append({"action": "recover", "detail": f"undid an interrupted {journal['operation']}", **what})
            self._journal_path.unlink()
        elif changed := self._git("status", "--porcelain").splitlines():
            self._reset_to("HEAD")
            notes.append({"action": "recover", "detail": "discarded changes no fairloop operation made",
                          "paths": [line[3:] for line in changed]})
        return notes

    def _publish(self, branch: str, journal: dict[str, Any]) -> None:
        """Move the branch to the new commit and create the tag in one ref transaction (idempotent)."""
        head = self._git("rev-parse", branch).strip()
        commands = []
        if head != journal["commit"]:
            commands.append(f"update {branch} {journal['commit']} {journal['base']}")
        if journal.get("tag"):
            ref = f"refs/tags/{journal['tag']}"
            existing = self._run_git("rev-parse", "--verify", "-q", ref).stdout.strip()
            if not existing:
                commands.append(f"create {ref} {journal['tag_object']}")
        if commands:
            self._git("update-ref", "--stdin", stdin="start\n" + "\n".join(commands) + "\nprepare\ncommit\n")

    def recover(self) -> list[dict[str, Any]]:
        """Finish or undo an interrupted operation now (every mutation also does this first)."""
        if not self.initialised:  # nothing to recover, and nothing to create
            return []
        with self._locked():
            notes = self._recover()
            if notes:
                self._run("recover", None, lambda: ("Recover the registry after an interrupted operation", None), notes)
            return notes

    # -- writing --------------------------------------------------------------------------
    def _append_audit(self, record: Decision | dict[str, Any]) -> None:
        with (self.root / AUDIT_LOG).open("a", encoding="utf-8") as handle:
            handle.write(decision_log.as_line(record, now_iso()) + "\n")

    def _run(self, operation: str, dataset: str | None, stage: Callable[[], tuple[str, str | None]],
             notes: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> None:
        """One journaled transaction (lock held, registry recovered): ``stage`` writes the files
        and returns the commit message and optional tag; then seal and publish."""
        branch = self._git("symbolic-ref", "HEAD").strip()
        base = self._git("rev-parse", "HEAD").strip()
        journal: dict[str, Any] = {"operation": operation, "dataset": dataset, "base": base, "pid": os.getpid(),
                                   "started": now_iso()}
        self._write_journal(journal)
        _step("journal-written")
        try:
            for note in notes:
                self._append_audit(note)
            message, tag = stage()
            self._git("add", "-A")
            _step("staged")
            tree = self._git("write-tree").strip()
            commit = self._git("commit-tree", tree, "-p", base, "-m", message).strip()
            journal.update(commit=commit, tag=tag)
            if tag:
                journal["tag_object"] = self._git("mktag", stdin=(
                    f"object {commit}\ntype commit\ntag {tag}\ntagger fairloop registry <registry@fairloop.invalid> "
                    f"{int(datetime.now(timezone.utc).timestamp())} +0000\n\n{message}\n")).strip()
            _step("objects-written")
            self._write_journal(journal)  # sealed: from here on a crash is finished, not undone
            _step("sealed")
        except BaseException:
            self._reset_to(base)
            self._journal_path.unlink(missing_ok=True)
            raise
        self._publish(branch, journal)
        _step("published")
        self._journal_path.unlink()
        _step("done")

    def _transaction(self, operation: str, dataset: str | None, stage: Callable[[], tuple[str, str | None]]) -> None:
        with self._locked():
            self._init()
            notes = self._recover()
            if notes:  # committed on their own: the operation below may still be refused
                self._run("recover", None, lambda: ("Recover the registry after an interrupted operation", None), notes)
            _step("recovered")
            self._run(operation, dataset, stage)

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
            _step("model-written")
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
            _step("files-written")
            repo = self._dvc()
            repo.add([str(p) for p in self._dvc_outputs(dataset)])
            _step("dvc-added")
            if self.remote is not None:
                repo.push()
                _step("dvc-pushed")
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
            _step("files-written")
            self._checkout_outputs([str(p) + ".dvc" for p in self._dvc_outputs_at(dataset)])
            _step("dvc-checked-out")
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
