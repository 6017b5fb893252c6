"""The registry's git repository with DVC, under a file lock: every mutation one journaled
transaction, and the crash recovery that finishes or undoes an interrupted one
(:class:`fairloop.registry.store.Registry` adds the models on top).

Crash safety: every mutation holds a file lock and is a journaled transaction. It writes
``.git/fairloop-transaction.json`` (the base commit), stages everything (files, DVC cache and
remote, the index), writes the commit and tag objects, records them in the journal, then
publishes branch and tag in one ``git update-ref --stdin`` transaction. The next registry
operation that finds a journal finishes a sealed transaction (its objects are complete) or
undoes an unsealed one (back to the base commit), removes stale git and DVC locks, and logs
what it did in ``audit.jsonl``.

DVC is imported where a registry operation needs it (seconds to import; read-only commands never do).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from fairloop.errors import BadInputError, RegistryError
from fairloop.registry import decision_log
from fairloop.registry.decision_log import Decision

AUDIT_LOG = "audit.jsonl"
MARKER = ".fairloop-registry"  # committed at creation: only such repositories are ever reset or cleaned
JOURNAL = "fairloop-transaction.json"  # inside .git: never part of the working tree
LOCK_TIMEOUT_SECONDS = 600

# Called with the name of each step of a transaction as it is reached. The crash tests use it
# to kill a real promotion at every step; it is None otherwise.
STEP_HOOK: Callable[[str], None] | None = None


def reach_step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


def now_iso() -> str:
    # milliseconds: a monitor window and the decision a rerun records can fall in the same second, and an
    # incident's timeline is ordered by these stamps
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RegistryRepository:
    """The repository at ``root`` (DVC remote: ``remote``): git and DVC calls, the lock, transactions, recovery."""

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
        reach_step("journal-written")
        try:
            for note in notes:
                self._append_audit(note)
            message, tag = stage()
            self._git("add", "-A")
            reach_step("staged")
            tree = self._git("write-tree").strip()
            commit = self._git("commit-tree", tree, "-p", base, "-m", message).strip()
            journal.update(commit=commit, tag=tag)
            if tag:
                journal["tag_object"] = self._git("mktag", stdin=(
                    f"object {commit}\ntype commit\ntag {tag}\ntagger fairloop registry <registry@fairloop.invalid> "
                    f"{int(datetime.now(timezone.utc).timestamp())} +0000\n\n{message}\n")).strip()
            reach_step("objects-written")
            self._write_journal(journal)  # sealed: from here on a crash is finished, not undone
            reach_step("sealed")
        except BaseException:
            self._reset_to(base)
            self._journal_path.unlink(missing_ok=True)
            raise
        self._publish(branch, journal)
        reach_step("published")
        self._journal_path.unlink()
        reach_step("done")

    def _transaction(self, operation: str, dataset: str | None, stage: Callable[[], tuple[str, str | None]]) -> None:
        with self._locked():
            self._init()
            notes = self._recover()
            if notes:  # committed on their own: the operation below may still be refused
                self._run("recover", None, lambda: ("Recover the registry after an interrupted operation", None), notes)
            reach_step("recovered")
            self._run(operation, dataset, stage)
