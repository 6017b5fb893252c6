"""Where fairloop keeps things. Every path can be set by an environment variable (FAIRLOOP_*)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAIRLOOP_")

    project_dir: Path = Path(".")
    # The registry is its own git + DVC repository so promotions never commit into the
    # project checkout.
    registry_dir: Path | None = None
    registry_remote: Path | None = None
    server_host: str = "127.0.0.1"
    server_port: int = 4200
    # How long `prefect server start` may take to answer (a busy machine takes minutes).
    server_startup_seconds: int = 300
    # The Prefect work pool whose workers run remediation runs (fairloop.serving.worker).
    work_pool: str = "fairloop"
    # Run files, monitor history and the local server's log; tests and second deployments give
    # each their own (FAIRLOOP_STATE_DIR) while sharing the project's flows and data files.
    state_dir_setting: Path | None = Field(None, validation_alias="FAIRLOOP_STATE_DIR")
    # A Dask scheduler (tcp://host:8786) that fits every sweep's candidates instead of the local process pool.
    dask_address: str | None = None
    # Folders (separated by os.pathsep) whose files a spec or sweep may name, besides the naming file's
    # own folder, the project and the working directory: a data file must not make fairloop open any
    # file on the machine.
    allowed_roots: str = ""

    @property
    def state_dir(self) -> Path:
        return self.state_dir_setting or self.project_dir / ".fairloop"

    @property
    def registry_path(self) -> Path:
        return (self.registry_dir or self.project_dir / "registry").resolve()

    def file_roots(self, naming_file: Path) -> list[Path]:
        """The folders under which ``naming_file`` (a spec or sweep) may name files: its own, the project,
        the working directory (where a sweep's relative paths start) and those of ``allowed_roots``."""
        extra = [Path(root) for root in self.allowed_roots.split(os.pathsep) if root.strip()]
        return list(dict.fromkeys(root.resolve() for root in (naming_file.parent, self.project_dir, Path.cwd(), *extra)))

    @property
    def remote_path(self) -> Path:
        return (self.registry_remote or self.state_dir / "dvc-remote").resolve()


def get_settings() -> Settings:
    return Settings()
