"""`fairloop server` on FAIRLOOP_SERVER_PORT and `fairloop server --stop`: a real server process."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
from conftest import free_port


def test_server_starts_on_the_configured_port_and_stop_ends_only_what_fairloop_started(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(FAIRLOOP_PROJECT_DIR=str(tmp_path), FAIRLOOP_SERVER_PORT=str(port), PREFECT_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")

    def fairloop(*args):
        return subprocess.run([sys.executable, "-m", "fairloop", *args], env=env, capture_output=True, text=True, timeout=300)

    assert "No local Prefect server is running" in fairloop("server", "--stop").stdout
    started = fairloop("server")
    assert started.returncode == 0, started.stderr
    api = f"http://127.0.0.1:{port}/api"
    assert f"Prefect API: {api}" in started.stdout
    assert httpx.get(f"{api}/health", timeout=5).status_code == 200
    pid = int((tmp_path / ".fairloop" / "prefect-server.pid").read_text().split()[0])  # "pid start-time"

    stopped = fairloop("server", "--stop")
    assert stopped.returncode == 0 and f"Stopped the Prefect server at {api} (process {pid})" in stopped.stdout
    assert not (tmp_path / ".fairloop" / "prefect-server.pid").exists()
    try:
        httpx.get(f"{api}/health", timeout=5)
        raise AssertionError("the server still answers")
    except httpx.HTTPError:
        pass
    assert not os.path.exists(f"/proc/{pid}/cmdline") or b"prefect" not in open(f"/proc/{pid}/cmdline", "rb").read()


def test_stop_refuses_a_server_fairloop_did_not_start(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    port = httpx.URL(PREFECT_API_URL.value()).port  # the session's test server, started by Prefect itself
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(FAIRLOOP_PROJECT_DIR=str(tmp_path), FAIRLOOP_SERVER_PORT=str(port))
    refused = subprocess.run([sys.executable, "-m", "fairloop", "server", "--stop"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 1 and "fairloop did not start it" in refused.stderr
    assert httpx.get(f"{PREFECT_API_URL.value()}/health", timeout=5).status_code == 200
