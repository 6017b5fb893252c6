"""Scaling out: the sweep on a real local Dask cluster (prefect-dask) gives the process pool's
result, and a candidate past the sweep's time budget is stopped and listed, not waited on.
Generated data (tests/synthetic.py) keeps the fits small and the outcome known."""

from __future__ import annotations

import time

import pytest
import yaml
from conftest import PROJECT, write_policy
from synthetic import write_dataset

from fairloop import pipeline
from fairloop.remedy import fitters
from fairloop.remedy.crossfit import ModeDecision
from fairloop.remedy.sweep.run import run_sweep
from fairloop.remedy.sweep.spec import load_sweep

GROUPS = {"a": (900, 0.45), "b": (500, 0.2)}


def sweep_file(directory, **overrides):
    spec = {
        "name": "scale", "version": 1, "recipes": [str(PROJECT / "recipes/none.yaml"), str(PROJECT / "recipes/reweigh.yaml")],
        "constraints": [str(PROJECT / "constraints/unconstrained.yaml"),
                        {"template": str(PROJECT / "constraints/lr-eg-dp.yaml"), "recipes": [str(PROJECT / "recipes/none.yaml")]},
                        {"template": str(PROJECT / "constraints/threshold-dp.yaml"), "bounds": [0.02, 0.05],
                         "recipes": [str(PROJECT / "recipes/none.yaml")]}],
        "baseline": str(PROJECT / "constraints/unconstrained.yaml"), "workers": 2, **overrides,
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_sweep(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scale")
    # a policy some candidates pass on 400 validation rows: a candidate is chosen
    policy = write_policy(directory, max_demographic_parity_difference=0.15, max_accuracy_drop_vs_baseline=0.1)
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(write_dataset(directory, "scale", GROUPS, label_noise=0.05)),
                                                     policy=str(policy)))
    return directory, inputs, pipeline.prepare(inputs)


def test_dask_cluster_gives_the_process_pool_result(generated, prefect_server):
    """Same seed, same rows: a real Dask cluster (2 worker processes x 1 thread) reached by its
    scheduler address, the rows scattered once, chooses the same candidate with the same metrics
    as Prefect's process pool. (``--runner dask`` with a cluster of its own runs in
    tests/test_postgres_server.py.)"""
    from distributed import LocalCluster
    from prefect import flow

    directory, inputs, splits = generated
    swept = sweep_file(directory)
    mode = ModeDecision(mode="holdout", reason="test")

    @flow
    def fit_sweep(runner: str, address: str | None = None):
        return run_sweep(swept, splits, "group", 0, inputs.policy, mode,
                               fit_all=fitters.fitter(runner, workers=2, dask_address=address)).outcome

    pool = fit_sweep("processes")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        dask = fit_sweep("dask", cluster.scheduler_address)
    assert len(pool.candidates) == 5 and pool.chosen is not None
    timings = {"fit_seconds", "crossfit_seconds"}
    assert [c.model_dump(exclude=timings) for c in dask.candidates] == [c.model_dump(exclude=timings) for c in pool.candidates]
    assert dask.chosen == pool.chosen and dask.explanation == pool.explanation
    assert all(c.fit_seconds > 0 for c in dask.candidates)


def test_a_candidate_past_its_time_budget_is_stopped_and_listed(generated):
    """A reduction that cannot finish within the budget (thousands of iterations) is stopped
    near the budget, not waited on; it is listed as timed out, the others are still chosen from."""
    directory, inputs, splits = generated
    slow = directory / "slow-eg.yaml"
    slow.write_text(yaml.safe_dump({
        "name": "slow-eg", "version": 1, "description": "an ExponentiatedGradient that runs far past the budget",
        "learner": "hist_gradient_boosting", "method": "exponentiated_gradient", "constraint": "demographic_parity",
        "bound": 0.001, "method_params": {"eps": 1e-6, "max_iter": 100000, "nu": 0.0}}))  # a gap is never < 0
    budget = 3.0
    swept = sweep_file(directory, recipes=[str(PROJECT / "recipes/none.yaml")], candidate_timeout_seconds=budget,
                       constraints=[str(PROJECT / "constraints/unconstrained.yaml"), str(slow)])
    started = time.monotonic()
    outcome = run_sweep(swept, splits, "group", 0, inputs.policy, ModeDecision(mode="holdout", reason="test")).outcome
    elapsed = time.monotonic() - started
    assert [c.name for c in outcome.candidates] == ["none+unconstrained"], outcome.skipped
    assert outcome.skipped == [("none+slow-eg@0.001", f"timed out: stopped after {budget:g} s (candidate_timeout_seconds)")]
    assert elapsed < budget + 60, f"the sweep waited {elapsed:.0f} s for a fit with a {budget} s budget"
