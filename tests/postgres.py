"""A throw-away PostgreSQL from Debian's ``postgresql`` package: ``initdb`` and ``pg_ctl`` in a
temporary directory, on a free port, trust authentication on 127.0.0.1 only. PostgreSQL refuses
to run as root, so as root it runs as the package's ``postgres`` OS user. Used by the tests and by
``bench/server_contention.py``."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from conftest import free_port

START_SECONDS = 300  # pg_ctl's own wait: initdb and start-up on a busy 2-core machine


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def unavailable_reason() -> str | None:
    """Why a throw-away PostgreSQL cannot run here, or None."""
    if binaries() is None:
        return ("PostgreSQL is not installed (Debian's postgresql package: `make postgresql`, which `make test` "
                "runs, installs it with apt)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run PostgreSQL as"
    return None


@contextmanager
def throwaway_postgres(database: str = "prefect") -> Iterator[str]:
    """Start PostgreSQL with one empty ``database``; yield its SQLAlchemy asyncpg URL; stop it and
    delete its files."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir = binaries()
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="fairloop-postgres-"))  # under /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str | Path) -> None:
        done = subprocess.run([*as_user, *map(str, command)], capture_output=True, text=True, timeout=START_SECONDS + 60)
        if done.returncode != 0:
            log = folder / "postgres.log"
            raise RuntimeError(f"{' '.join(map(str, command))} failed: {done.stdout}{done.stderr}"
                               + (log.read_text() if log.is_file() else ""))

    started = False
    try:
        run(bin_dir / "initdb", "-D", data, "-U", "prefect", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(bin_dir / "pg_ctl", "-D", data, "-l", folder / "postgres.log", "-w", "-t", str(START_SECONDS),
            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        started = True
        run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", database)
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/{database}"
    finally:
        if started:
            run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "120", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def query(url: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the database at ``url`` (asyncpg, as the Prefect server uses)."""
    import asyncio

    import asyncpg

    async def fetch():
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(fetch())
