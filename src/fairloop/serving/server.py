"""Find or start the local Prefect server (SQLite by default) that fairloop's runs talk to.

Prefect's settings are imported where read, after the command has set up the environment it reads them from.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fairloop.config import Settings
from fairloop.errors import ServerError
from fairloop.serving.processes import (
    record_process,
    recorded_process,
    stop_process_group,
)

PID_FILE = "prefect-server.pid"


def healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def auth_headers() -> dict[str, str]:
    """Basic auth from PREFECT_API_AUTH_STRING ('user:password'), as Prefect's own client sends it."""
    from prefect.settings import get_current_settings

    secret = get_current_settings().api.auth_string
    if secret is None or not secret.get_secret_value():
        return {}
    return {"Authorization": "Basic " + base64.b64encode(secret.get_secret_value().encode()).decode()}


def check_credentials(api_url: str) -> None:
    """The health probe answers without credentials; a server that requires them would refuse
    every later call, so say so now, naming the setting."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/admin/version", headers=auth_headers(), timeout=5)
    except httpx.HTTPError as exc:
        raise ServerError(f"the Prefect server at {api_url} did not answer: {exc}") from None
    if response.status_code == 401:
        given = "refused the credentials in" if auth_headers() else "requires credentials: set"
        raise ServerError(
            f"the Prefect server at {api_url} {given} PREFECT_API_AUTH_STRING "
            "('user:password', the value of the server's PREFECT_SERVER_API_AUTH_STRING)"
        )


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def answering_api_url(settings: Settings) -> str | None:
    """The API URL of the server fairloop talks to, if one answers there and takes our credentials
    (None otherwise: this never starts a server)."""
    api = configured_api_url() or server_env(settings)["PREFECT_API_URL"]
    if not healthy(api):
        return None
    try:
        check_credentials(api)
    except ServerError:
        return None
    return api


def server_env(settings: Settings) -> dict[str, str]:
    """Environment of a local server and of the processes that talk to it."""
    api = f"http://{settings.server_host}:{settings.server_port}/api"
    return {
        "PREFECT_API_URL": api,
        "PREFECT_UI_URL": f"http://{settings.server_host}:{settings.server_port}",
        # Without this the UI keeps calling port 4200 when the server runs elsewhere.
        "PREFECT_SERVER_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def server_log_path(settings: Settings) -> Path:
    """Where a server fairloop started writes its log (``fairloop doctor`` reads it)."""
    return settings.state_dir / "prefect-server.log"


def prefect_executable() -> str:
    beside = Path(sys.executable).with_name("prefect")
    found = str(beside) if beside.exists() else shutil.which("prefect")
    if not found:
        raise ServerError("the 'prefect' command is not installed in this environment")
    return found


def ensure_server(settings: Settings) -> tuple[str, bool]:
    """Return (API URL, started): reuse a configured or running server, else start one.

    A PREFECT_API_URL that is configured but unreachable is an error rather than silently
    replaced, because runs and approvals must all go to the same server.
    """
    configured = configured_api_url()
    if configured:
        if healthy(configured):
            check_credentials(configured)
            return configured, False
        raise ServerError(
            f"PREFECT_API_URL is set to {configured} but no Prefect server answers there; start it, "
            "or unset PREFECT_API_URL to let fairloop start a local one"
        )
    env = server_env(settings)
    api = env["PREFECT_API_URL"]
    if healthy(api):
        check_credentials(api)
        return api, False
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = server_log_path(settings)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [prefect_executable(), "server", "start", "--host", settings.server_host, "--port", str(settings.server_port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env}, start_new_session=True,  # outlives this command
        )
    record_process(settings.state_dir / PID_FILE, process.pid)  # for `fairloop server --stop`
    deadline = time.monotonic() + settings.server_startup_seconds
    while time.monotonic() < deadline:
        if healthy(api):
            check_credentials(api)
            return api, True
        time.sleep(1)
    raise ServerError(f"the Prefect server did not answer at {api} within {settings.server_startup_seconds}s (FAIRLOOP_SERVER_STARTUP_SECONDS); see {log_path}")


def stop_server(settings: Settings) -> str:
    """Stop the server :func:`ensure_server` started (its whole process group); say what happened."""
    pid_file = settings.state_dir / PID_FILE
    api = server_env(settings)["PREFECT_API_URL"]
    process = recorded_process(pid_file)
    pid_file.unlink(missing_ok=True)
    if process is None:
        if healthy(api):
            raise ServerError(f"a Prefect server answers at {api}, but fairloop did not start it (no live process in "
                              f"{pid_file}); stop it where it was started")
        return f"No local Prefect server is running at {api}."
    stop_process_group(process)  # the server and its own workers
    return f"Stopped the Prefect server at {api} (process {process.pid})."
