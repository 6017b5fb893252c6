"""The Prefect server on PostgreSQL (``PREFECT_SERVER_DATABASE_CONNECTION_URL``): ``fairloop server``
starts a real ``prefect server start`` against a throw-away PostgreSQL (tests/postgres.py), and a
remediation run whose sweep is fitted on a local Dask cluster pauses for review, is approved and
promotes; its flow run is read back from PostgreSQL itself. Skipped, saying why, only where
PostgreSQL is not installed (``make test`` installs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, BackgroundRun, drain_prefect_workers, write_policy
from fairloop.serving.outcomes import Outcome
from fairloop.registry.store import Registry
from fairloop.serving.runs import submit_review
from postgres import query, throwaway_postgres, unavailable_reason
from synthetic import write_dataset
from test_loop import SERVER_START_SECONDS, base_env, free_port, stop_group

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")

DATABASE_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    """``fairloop server`` on a free port with the database URL in its environment only (in this
    process's environment it would reach Prefect's ephemeral servers too); flows run here talk to it."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    folder = tmp_path_factory.mktemp("postgres-server")
    with throwaway_postgres() as url:
        port = free_port()
        env = {**base_env(folder), "FAIRLOOP_SERVER_PORT": str(port), DATABASE_URL: url}
        started = subprocess.run([sys.executable, "-m", "fairloop", "server"], env=env, cwd=PROJECT, capture_output=True,
                                 text=True, timeout=SERVER_START_SECONDS + 30)
        pid_file = folder / "state" / "prefect-server.pid"
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            api = f"http://127.0.0.1:{port}/api"
            with pytest.MonkeyPatch.context() as patch, temporary_settings(updates={PREFECT_API_URL: api}), \
                    prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
                for name in ("FAIRLOOP_STATE_DIR", "FAIRLOOP_REGISTRY_DIR", "FAIRLOOP_REGISTRY_REMOTE"):
                    patch.setenv(name, env[name])
                try:
                    yield {"database": url, "registry": Path(env["FAIRLOOP_REGISTRY_DIR"])}
                finally:
                    drain_prefect_workers()
        finally:  # the worker `fairloop server` started, then the server
            subprocess.run([sys.executable, "-m", "fairloop", "server", "--stop"], env=env, cwd=PROJECT,
                           capture_output=True, text=True, timeout=120)
            if pid_file.is_file():
                stop_group(int(pid_file.read_text().split()[0]))


def test_remediation_pauses_is_approved_and_promotes_on_a_postgresql_backed_server(postgres_server, remediation_flow, tmp_path):
    directory = tmp_path / "data"
    dataset = write_dataset(directory, "pg", {"a": (3000, 0.45), "b": (2000, 0.2)}, label_noise=0.05)
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.12, max_accuracy_drop_vs_baseline=0.1)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "pg", "version": 1, "recipes": [str(PROJECT / "recipes/none.yaml")], "workers": 2,
        "constraints": [str(PROJECT / "constraints/unconstrained.yaml"),
                        {"template": str(PROJECT / "constraints/threshold-dp.yaml"), "bounds": [0.02, 0.05]}],
        "baseline": str(PROJECT / "constraints/unconstrained.yaml")}))
    run = BackgroundRun(remediation_flow, dataset=str(dataset), sweep_file=str(sweep), policy=str(policy),
                        requested_by="pytest", review_poll_seconds=1, runner="dask")
    paused = run.wait_paused(timeout=600)
    assert query(postgres_server["database"], f"SELECT state_type FROM flow_run WHERE id = '{paused.id}'") == [("PAUSED",)]
    submit_review(paused.id, {"approve": True, "reviewer": "alice", "comment": "checked on PostgreSQL"})
    assert run.finish(timeout=300).name == Outcome.PROMOTED.value
    assert query(postgres_server["database"], f"SELECT state_name FROM flow_run WHERE id = '{paused.id}'") == [("Promoted",)]
    champion = Registry(postgres_server["registry"]).champion("pg")
    assert champion is not None and champion.lineage.sweep.chosen.startswith("none+threshold-dp")
    assert champion.approval["reviewer"] == "alice"
