"""What a promoted model records about where it came from."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TRACKED_PACKAGES = (
    "fairloop", "fairlearn", "scikit-learn", "imbalanced-learn", "pandas", "numpy",
    "great-expectations", "prefect", "dvc",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_version(project_dir: Path) -> dict[str, str | bool | None]:
    """The project's git commit and whether the working tree had uncommitted changes."""

    def git(*args: str) -> str | None:
        result = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}
