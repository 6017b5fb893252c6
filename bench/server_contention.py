"""Concurrent flow runs against one Prefect server on SQLite and on PostgreSQL (not a test).

    .venv/bin/python bench/server_contention.py [--runs 8] [--tasks 40] [--backends sqlite postgresql]

For each backend: a real ``prefect server start`` on a free port (SQLite: its default database in
a fresh PREFECT_HOME; PostgreSQL: a throw-away one from Debian's package, see tests/postgres.py),
then ``--runs`` processes started at once, each running a flow of ``--tasks`` small tasks (every
task run is several state writes) plus a table artifact. Printed per backend: wall seconds, runs
that failed, and how often the server logged SQLite's "database is locked" (and any other error
lines). This is why fairloop documents PostgreSQL for concurrent runs (README, "Scaling out").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))
from postgres import free_port, throwaway_postgres, unavailable_reason  # noqa: E402

START_SECONDS = 300
FLOW = """
import sys
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

@task
def step(i):
    return i * i

@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
def busy(n):
    values = [f.result() for f in [step.submit(i) for i in range(n)]]
    create_table_artifact(table=[{"i": i, "v": v} for i, v in enumerate(values)], key="contention")
    return sum(values)

busy(int(sys.argv[1]))
"""


def last_error_line(stderr: str) -> str:
    """The exception line that ended a failed run (its last line naming an error)."""
    lines = [line for line in stderr.splitlines() if "Error" in line or "Exception" in line or "locked" in line]
    return (lines[-1] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "no output")[:300]


def run_backend(name: str, database_url: str | None, runs: int, tasks: int) -> dict:
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
               "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        log_path = Path(home) / "server.log"
        prefect = str(Path(sys.executable).with_name("prefect"))
        with log_path.open("wb") as log:
            server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{name} server did not start: {log_path.read_text()[-2000:]}")
                time.sleep(1)
            client_env = {**env, "PREFECT_API_URL": api}
            client_env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
            started = time.perf_counter()
            children = [subprocess.Popen([sys.executable, "-c", FLOW, str(tasks)], env=client_env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(runs)]
            errors = [child.communicate(timeout=3600)[1].decode(errors="replace") for child in children]
            wall = time.perf_counter() - started
            failed = sum(child.returncode != 0 for child in children)
            time.sleep(2)  # let the server flush its log lines about the last writes
            text = log_path.read_text(errors="replace") + "\n".join(errors)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)
    return {"backend": name, "runs": runs, "tasks_per_run": tasks, "wall_seconds": round(wall, 1), "failed_runs": failed,
            "database_is_locked": text.count("database is locked"),
            "error_lines": sum(1 for line in text.splitlines() if "| ERROR" in line),
            "failures": sorted({last_error_line(e) for child, e in zip(children, errors) if child.returncode != 0}),
            "load": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    results = []
    for backend in args.backends:
        if backend == "sqlite":
            results.append(run_backend("sqlite", None, args.runs, args.tasks))
        elif unavailable_reason():
            print(f"postgresql skipped: {unavailable_reason()}")
            continue
        else:
            with throwaway_postgres() as url:
                results.append(run_backend("postgresql", url, args.runs, args.tasks))
        print(json.dumps(results[-1]), flush=True)
    print("\n| backend | concurrent runs x tasks | wall s | failed runs | 'database is locked' | server ERROR lines | load |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['runs']} x {r['tasks_per_run']} | {r['wall_seconds']} | {r['failed_runs']} | "
              f"{r['database_is_locked']} | {r['error_lines']} | {r['load']} |")
    for r in results:
        for failure in r["failures"]:
            print(f"{r['backend']}: a failed run ended with: {failure}")
    out = PROJECT / "bench" / "results" / "server_contention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
