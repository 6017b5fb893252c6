"""Every performance claim side by side, each figure beside its target (not a test; on demand).

    .venv/bin/python bench/claims_bench.py [--parts quality speed reductions scale]
        [--datasets adult:sex adult:race compas:race german:sex hmda:black chile:region]
        [--sizes 100000 300000 1000000] [--workers 2] [--out bench/results/claims.json]

Parts (each prints its rows as it finishes; the markdown table and the JSON come at the end):
- quality: per dataset, the default sweep (constraints/sweeps/default.yaml, default policy, its
  evaluation mode) against anchors fitted on the same rows with the same learner
  (HistGradientBoosting): unconstrained; Fairlearn ExponentiatedGradient with its defaults
  (DemographicParity(), eps 0.01, max_iter 50); ThresholdOptimizer for demographic parity with no
  tolerance (thresholds on 5-fold held-out scores, as fairloop fits it); Kamiran-Calders
  reweighing. The oracle threshold frontier is of the chosen candidate's own scorer (the
  unconstrained scorer when nothing is chosen): group thresholds maximising test accuracy at
  DPD <= d, chosen on test with test labels (the upper bound of threshold post-processing) and
  chosen on the selection rows then applied to test. Test accuracy, scorer AUC, DPD, EOD with
  95 % bootstrap intervals (fairloop.gates.intervals, resampled within each group), fit seconds,
  and the chosen candidate's accuracy gap to the test oracle at its own test DPD
  (target <= 0.3 points), and whether it is at least as accurate as every anchor whose DPD is
  equal or tighter.
- speed: full Adult remediation (load, audit, sweep, evaluation, gates, reports) up to the review
  pause, in the real flow on a temporary Prefect server (human wait excluded); orchestration
  overhead = that flow's wall time / the same work as plain calls of the same library functions
  with a plain process pool (target <= 1.10); stricter, the sweep alone as Prefect tasks / as
  plain calls; sweep wall / (sum of fit seconds / workers) (target <= 1.3).
- reductions: the large-data strategy (sweep file ``reduction_rows``): ExponentiatedGradient and
  GridSearch x DemographicParity fitted on all rows vs on a group x label stratified subsample,
  on Adult grown to the first ``--sizes`` entry: accuracy, DPD, EOD and fit seconds.
- scale: Adult's training file grown to each of ``--sizes`` rows by SEEDED RESAMPLING WITH NOISE on
  the numeric columns (each value + N(0, (0.05 sd)^2), rounded and clipped to the column's range;
  capital gain/loss zeros stay zero); the test file is Adult's own. End-to-end = the remediation
  flow up to review with the default sweep plus ``reduction_rows``; peak RSS of every process
  together (this one, the Prefect server, the sweep's workers), sampled every 0.5 s; targets on
  2 cores: 1M rows <= 10 min, <= 8 GiB, time(1M) / time(100k) <= 12.

The machine's 1-minute load average is printed beside every figure: a busy machine makes
every time longer, so a figure measured under load says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
DEFAULT_SWEEP = "constraints/sweeps/default.yaml"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow as flow_decorator  # noqa: E402  (after the settings above)

ROWS: list[dict] = []  # every figure: part, subject, figure, value, target, ratio, load


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def record(part: str, subject: str, figure: str, value, target: str = "", ratio: float | None = None, **extra) -> None:
    row = {"part": part, "subject": subject, "figure": figure, "value": value, "target": target,
           "ratio": None if ratio is None or not math.isfinite(ratio) else round(ratio, 3), "load": load_average(), **extra}
    ROWS.append(row)
    print(f"[{part}] {subject}: {figure} = {value}" + (f"  (target {target}, ratio {row['ratio']})" if target else "")
          + f"  [load {row['load']}]", flush=True)


# ---------------------------------------------------------------- fitting without Prefect

def plain_fitter(workers: int, timings: dict):
    """The sweep's jobs as plain function calls in a plain process pool (forked, so it starts at
    once), the rows passed as Prefect's pool gets them (a file each worker reads once), longest
    first. ``timings`` gets the wall seconds of the fits and their summed fit seconds."""
    import pickle

    from fairloop.remedy.fitters import (
        limit_to_one_thread,
        longest_first,
        run_fit_job_on_rows_file,
    )

    def fit_all(jobs, data, sensitive, seed):
        started = time.perf_counter()
        order = longest_first(jobs)
        with tempfile.TemporaryDirectory() as scratch, \
                ProcessPoolExecutor(min(workers, len(jobs)), initializer=limit_to_one_thread) as pool:
            rows_file = str(Path(scratch) / "rows.pickle")
            with open(rows_file, "wb") as out:
                pickle.dump(data, out, protocol=pickle.HIGHEST_PROTOCOL)
            futures = {i: pool.submit(run_fit_job_on_rows_file, jobs[i], rows_file, sensitive, seed) for i in order}
            results = [futures[i].result() for i in range(len(jobs))]
        timings.update(wall=time.perf_counter() - started, fit_sum=sum(r.fit_seconds for r in results), jobs=len(jobs))
        return results

    return fit_all


def timed(fit_all, timings: dict):
    """A FitAll that records its wall seconds and summed fit seconds in ``timings``."""
    def wrapped(jobs, data, sensitive, seed):
        started = time.perf_counter()
        results = fit_all(jobs, data, sensitive, seed)
        timings.update(wall=time.perf_counter() - started, fit_sum=sum(r.fit_seconds for r in results), jobs=len(jobs))
        return results

    return wrapped


# ---------------------------------------------------------------- metrics and the oracle

def figures(y, decisions, scores, groups) -> dict:
    """Accuracy, scorer AUC, DPD, EOD, each with a 95 % interval (200 resamples within each group)."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        equalized_odds_difference,
    )
    from sklearn.metrics import roc_auc_score

    from fairloop.gates.intervals import bootstrap_intervals

    y, decisions, groups = np.asarray(y).astype(int), np.asarray(decisions).astype(int), np.asarray(groups).astype(str)
    intervals = bootstrap_intervals(y, {"m": decisions}, groups, n_boot=200, confidence=0.95, seed=0,
                                    challengers=(), scores={"m": np.asarray(scores, dtype=float)})["m"]
    point = {
        "accuracy": float((y == decisions).mean()), "auc": float(roc_auc_score(y, scores)),
        "demographic_parity_difference": float(demographic_parity_difference(y, decisions, sensitive_features=groups)),
        "equalized_odds_difference": float(equalized_odds_difference(y, decisions, sensitive_features=groups)),
    }
    return {name: {"value": round(value, 4), "interval": [round(v, 4) for v in intervals.get(name, (np.nan, np.nan))]}
            for name, value in point.items()}


class ThresholdOracle:
    """Per-group top-k curves of one scorer: the most accurate group thresholds whose selection
    rates all lie within a band of width ``d`` (DPD <= d), by a scan over the band's start."""

    def __init__(self, scores, y, groups):
        self.groups = np.asarray(groups).astype(str)
        self.names = sorted(set(self.groups))
        self.total = len(self.groups)
        self.curves, self.sorted_scores = {}, {}
        for name in self.names:
            member = self.groups == name
            order = np.argsort(-np.asarray(scores)[member], kind="stable")
            labels = np.asarray(y).astype(int)[member][order]
            true_positives = np.concatenate([[0], np.cumsum(labels)])
            k = np.arange(len(labels) + 1)
            negatives = len(labels) - labels.sum()
            self.curves[name] = true_positives + negatives - (k - true_positives)  # correct decisions with top-k selected
            self.sorted_scores[name] = np.asarray(scores)[member][order]

    def best(self, d: float, grid: int = 2001) -> tuple[float, dict[str, float]]:
        """(accuracy, per-group score threshold) of the best choice at DPD <= d."""
        best_correct, best_k = -1, None
        for start in np.linspace(0.0, 1.0, grid):
            correct, picks = 0, {}
            for name in self.names:
                curve = self.curves[name]
                n = len(curve) - 1
                low, high = math.ceil(start * n - 1e-9), math.floor(min(1.0, start + d) * n + 1e-9)
                if low > high or low > n:
                    break
                k = low + int(np.argmax(curve[low:high + 1]))
                correct += curve[k]
                picks[name] = k
            else:
                if correct > best_correct:
                    best_correct, best_k = correct, picks
        thresholds = {name: (np.inf if k == 0 else float(self.sorted_scores[name][k - 1])) for name, k in best_k.items()}
        return best_correct / self.total, thresholds


def apply_thresholds(scores, groups, thresholds: dict[str, float]) -> np.ndarray:
    groups = np.asarray(groups).astype(str)
    cut = np.array([thresholds.get(g, np.inf) for g in groups])
    return (np.asarray(scores) >= cut).astype(int)


# ---------------------------------------------------------------- quality

def quality(item: str, workers: int, sweep_path: str) -> dict:
    from threadpoolctl import threadpool_limits

    from fairloop import pipeline
    from fairloop.gates.evaluate import predict
    from fairloop.remedy.constraints import (
        ConstraintTemplate,
        fit_candidate,
        load_constraint_template,
    )
    from fairloop.remedy.crossfit import fit_rows
    from fairloop.remedy.recipes import load_recipe
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep

    dataset, sensitive = item.split(":")
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=f"datasets/{dataset}.yaml", sensitive=sensitive))
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    timings: dict = {}
    started = time.perf_counter()
    swept = run_sweep(load_sweep(sweep_path), splits, sensitive, 0, inputs.policy, mode,
                      fit_all=plain_fitter(workers, timings))
    sweep_seconds = time.perf_counter() - started
    test, outcome = splits.test, swept.outcome
    y, groups = test.y.to_numpy(), test.groups[sensitive].to_numpy()
    rows_fit = fit_rows(splits, mode)
    hgb = load_constraint_template("constraints/unconstrained.yaml")
    anchors = {
        "unconstrained": ("recipes/none.yaml", hgb),
        "EG default": ("recipes/none.yaml", ConstraintTemplate(name="eg-default", version=1, method="exponentiated_gradient",
                                                               constraint="demographic_parity")),
        "TO default": ("recipes/none.yaml", ConstraintTemplate(name="to-default", version=1, method="threshold_optimizer",
                                                               constraint="demographic_parity")),
        "Reweighing": ("recipes/reweigh.yaml", hgb),
    }
    models = {}
    for label, (recipe, template) in anchors.items():
        with threadpool_limits(limits=1):  # as the sweep's workers fit: fit seconds comparable
            model, seconds = fit_candidate(rows_fit, template, sensitive, 0, recipe=load_recipe(recipe))
        p = predict(model, test)
        models[label] = {**figures(y, p.decisions, p.scores, groups), "fit_seconds": round(seconds, 2)}
    chosen_name = outcome.chosen
    if chosen_name:
        fitted = swept.fitted[chosen_name]
        scorer_test, scorer_selection = fitted.test.scores, fitted.selection.scores
        models[f"chosen: {chosen_name}"] = {**figures(y, fitted.test.decisions, fitted.test.scores, groups),
                                            "fit_seconds": round(fitted.fit_seconds, 2)}
    else:
        scorer_test, scorer_selection = swept.baseline.test.scores, swept.baseline.selection.scores
    selection = splits.validation if mode.mode == "holdout" else rows_fit
    oracle_test = ThresholdOracle(scorer_test, y, groups)
    oracle_selection = ThresholdOracle(scorer_selection, selection.y.to_numpy(), selection.groups[sensitive].to_numpy())
    for d in (0.01, 0.02, 0.05, 0.10):
        _, thresholds = oracle_test.best(d)
        decisions = apply_thresholds(scorer_test, groups, thresholds)
        models[f"oracle on test, DPD<={d}"] = {**figures(y, decisions, scorer_test, groups), "fit_seconds": 0.0}
        _, thresholds = oracle_selection.best(d)
        decisions = apply_thresholds(scorer_test, groups, thresholds)
        models[f"oracle on {'validation' if mode.mode == 'holdout' else 'out-of-fold pool'}, DPD<={d}"] = {
            **figures(y, decisions, scorer_test, groups), "fit_seconds": 0.0}
    result = {"dataset": dataset, "sensitive": sensitive, "mode": mode.mode, "rows": {
        "fit": len(rows_fit), "validation": len(splits.validation), "test": len(test)},
        "chosen": chosen_name, "explanation": outcome.explanation, "sweep_seconds": round(sweep_seconds, 1),
        "sweep_wall_over_fit_sum_per_worker": timings["wall"] / (timings["fit_sum"] / workers), "models": models}
    subject = f"{dataset}/{sensitive}"
    for label, m in models.items():
        record("quality", subject, f"{label}: acc / AUC / DPD / EOD",
               " / ".join(f"{m[k]['value']:.4f} [{m[k]['interval'][0]:.3f}, {m[k]['interval'][1]:.3f}]"
                          for k in ("accuracy", "auc", "demographic_parity_difference", "equalized_odds_difference"))
               + f"; fit {m['fit_seconds']} s")
    if chosen_name:
        chosen = models[f"chosen: {chosen_name}"]
        own_dpd = chosen["demographic_parity_difference"]["value"]
        oracle_accuracy, _ = oracle_test.best(own_dpd)
        gap = (oracle_accuracy - chosen["accuracy"]["value"]) * 100
        result["gap_to_oracle_points"] = gap
        record("quality", subject, f"chosen's accuracy gap to the test oracle at its own DPD {own_dpd:.4f} (points)",
               round(gap, 2), "<= 0.3", gap / 0.3)
        beaten = [label for label in anchors if models[label]["demographic_parity_difference"]["value"] <= own_dpd
                  and models[label]["accuracy"]["value"] > chosen["accuracy"]["value"]]
        result["anchors_more_accurate_at_equal_or_tighter_dpd"] = beaten
        # An anchor that reads the sensitive attribute to decide is no alternative where the policy
        # forbids that (the default one does) and the chosen candidate does not need it.
        chosen_needs = swept.chosen[0].template.needs_sensitive_at_predict
        forbidden = not inputs.policy.allow_sensitive_at_predict and not chosen_needs
        deployable = [label for label in beaten if not (forbidden and anchors[label][1].needs_sensitive_at_predict)]
        result["deployable_anchors_more_accurate_at_equal_or_tighter_dpd"] = deployable
        record("quality", subject, "anchors more accurate at equal or tighter DPD, deployable under the policy",
               ", ".join(deployable) or "none", "none")
        record("quality", subject, "… and those that need the sensitive attribute to decide (the policy forbids it)",
               ", ".join(sorted(set(beaten) - set(deployable))) or "none")
    else:
        record("quality", subject, "chosen", "none passes the policy", "a candidate")
    return result


# ---------------------------------------------------------------- a flow run up to review

class PeakMemory:
    """Peak of the summed RSS of this process and every descendant, sampled every 0.5 s."""

    def __init__(self):
        import psutil

        self.psutil, self.peak, self.running = psutil, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = self.psutil.Process()
        while self.running:
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except self.psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


@functools.cache
def remediation_flow():
    """The remediation flow (imported from the package, so process-pool workers unpickle it by name)."""
    from fairloop.flows import remediation

    return remediation


def remediation_until_review(dataset: str, sweep: str, workers_note: str = "") -> dict:
    """The real remediation flow in a thread of this process (on the current Prefect server) until it
    pauses for review or ends; then a rejection is sent so nothing is promoted. Returns seconds and peak RSS."""
    from prefect import tags

    from fairloop.flows.request import RemediationRequest
    from fairloop.serving.runs import find_tagged_run, submit_review, wait_for_flow_run

    flow = remediation_flow()
    tag, outcome = f"bench-{uuid.uuid4().hex[:10]}", {}

    def target():
        with tags(tag):
            outcome["state"] = flow(request=RemediationRequest(dataset=dataset, sweep_file=sweep, requested_by="bench",
                                                               review_poll_seconds=1), return_state=True)

    with PeakMemory() as memory:
        started = time.perf_counter()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        run = None
        while run is None and thread.is_alive():
            run = find_tagged_run(tag)
            time.sleep(0.5)
        if run is not None:
            run = wait_for_flow_run(run.id, lambda r: bool(r.state and (r.state.is_paused() or r.state.is_final())),
                                    timeout=4 * 3600, poll=0.5)
        seconds = time.perf_counter() - started
    state = run.state.name if run is not None else outcome.get("state")
    if run is not None and run.state.is_paused():
        submit_review(run.id, {"approve": False, "reviewer": "bench-reviewer", "comment": "benchmark: not promoted"})
    thread.join(600)
    return {"seconds": seconds, "peak_rss_gib": memory.peak / 2**30, "state": str(state)}


# ---------------------------------------------------------------- speed

@flow_decorator(name="claims-sweep")
def prefect_sweep(dataset: str, sweep_path: str, workers: int) -> dict:
    """The sweep as Prefect tasks in Prefect's process pool, timed, its workers started before
    the audit as in the real flow. A flow defined at module level with small parameters, like the
    real one: a flow that closed over the rows would ship a pickled copy of them with every
    task's context (measured: a 31.8 s sweep instead of 28 s)."""
    from fairloop import pipeline
    from fairloop.remedy.fitters import fitter
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep

    timings: dict = {}
    with fitter(workers=workers) as fit_all:
        inputs = pipeline.load_inputs(pipeline.RunParams(dataset=dataset))
        splits = pipeline.prepare(inputs)
        pipeline.audit(inputs, splits)
        outcome = run_sweep(load_sweep(sweep_path), splits, inputs.sensitive, 0, inputs.policy,
                            pipeline.decide_mode(inputs, splits), fit_all=timed(fit_all, timings)).outcome
    return {"timings": timings, "validation": [c.validation for c in outcome.candidates]}


def plain_until_review(dataset: str, sweep_path: str, workers: int) -> dict:
    """The flow's work up to the review pause as plain calls of the same library functions, in
    flows/remediation.py's order (load, prepare, audit, sweep in a plain process pool, augment,
    evaluate, gates, frontier). Left out, as orchestration: Prefect artifacts, the review packet's
    markdown and the run-process record (milliseconds). Returns seconds, sweep timings, validation figures."""
    from dataclasses import replace

    from fairloop import pipeline
    from fairloop.gates.policy import apply_gates
    from fairloop.remedy.sweep.run import run_sweep
    from fairloop.remedy.sweep.spec import load_sweep
    from fairloop.review.frontier import frontier_report

    timings: dict = {}
    started = time.perf_counter()
    inputs = pipeline.load_inputs(pipeline.RunParams(dataset=dataset))
    splits = pipeline.prepare(inputs)
    mode = pipeline.decide_mode(inputs, splits)
    pipeline.audit(inputs, splits)
    swept = run_sweep(load_sweep(sweep_path), splits, inputs.sensitive, 0, inputs.policy, mode,
                      fit_all=plain_fitter(workers, timings))
    if swept.chosen is not None:
        chosen, fitted = swept.chosen
        inputs = replace(inputs, recipe=chosen.recipe, template=chosen.template)
        pipeline.augment(inputs, splits, mode)
        evaluations = pipeline.evaluate_models({"baseline": swept.baseline.model, "candidate": fitted.model},
                                               splits.test, inputs.sensitive, inputs.policy)
        apply_gates(inputs.policy, evaluations, needs_sensitive_at_predict=chosen.template.needs_sensitive_at_predict,
                    evaluation_mode=mode.mode)
        frontier_report(inputs.policy, inputs.loaded.spec.name, {"baseline": evaluations["baseline"].metrics},
                        swept.outcome, evaluations["candidate"].metrics)
    else:
        frontier_report(inputs.policy, inputs.loaded.spec.name, swept.reference_test_metrics(), swept.outcome)
    return {"seconds": time.perf_counter() - started, "timings": timings,
            "validation": [c.validation for c in swept.outcome.candidates]}


def speed(workers: int, sweep_path: str) -> dict:
    """Orchestration overhead as the issue defines it (the flow's wall time up to review / the same
    work as plain calls) and, stricter, of the sweep alone (Prefect tasks / a plain process pool)."""
    dataset = "datasets/adult.yaml"
    result = {}
    with tempfile.TemporaryDirectory() as scratch, environment(scratch):
        end_to_end = remediation_until_review(dataset, sweep_path)
        record("speed", "adult/sex", "full remediation up to review, real flow (s)", round(end_to_end["seconds"], 1),
               state=end_to_end["state"])
        result["end_to_end"] = end_to_end
        swept = prefect_sweep(dataset, sweep_path, workers)
    plain = plain_until_review(dataset, sweep_path, workers)
    flow_overhead = end_to_end["seconds"] / plain["seconds"]
    record("speed", "adult/sex", "orchestration overhead: flow up to review / the same work as plain calls (s)",
           f"{end_to_end['seconds']:.1f} / {plain['seconds']:.1f} = {flow_overhead:.3f}", "<= 1.10", flow_overhead / 1.10,
           value_ratio=flow_overhead)
    prefect_timings, plain_timings = swept["timings"], plain["timings"]
    ratio = prefect_timings["wall"] / (prefect_timings["fit_sum"] / workers)
    record("speed", "adult/sex", f"sweep wall / (sum of fit s / {workers} workers)",
           f"{prefect_timings['wall']:.1f} / ({prefect_timings['fit_sum']:.1f} / {workers}) = {ratio:.2f}", "<= 1.3", ratio / 1.3,
           value_ratio=ratio)
    sweep_overhead = prefect_timings["wall"] / plain_timings["wall"]
    record("speed", "adult/sex", "sweep alone: Prefect tasks / plain process pool (sweep wall s)",
           f"{prefect_timings['wall']:.1f} / {plain_timings['wall']:.1f} = {sweep_overhead:.3f}", "", value_ratio=sweep_overhead)
    same = swept["validation"] == plain["validation"]
    record("speed", "adult/sex", "Prefect and plain sweeps give the same validation figures", same, "True")
    result.update(prefect=prefect_timings, plain=plain_timings, plain_seconds=plain["seconds"], sweep_ratio=ratio,
                  flow_overhead=flow_overhead, sweep_overhead=sweep_overhead, same=same)
    return result


class environment:
    """A temporary Prefect server and a throw-away registry and state directory for flow runs."""

    def __init__(self, scratch: str):
        self.scratch = Path(scratch)

    def __enter__(self):
        from prefect.testing.utilities import prefect_test_harness

        self.saved = {k: os.environ.get(k) for k in ("FAIRLOOP_REGISTRY_DIR", "FAIRLOOP_REGISTRY_REMOTE", "FAIRLOOP_STATE_DIR")}
        os.environ.update(FAIRLOOP_REGISTRY_DIR=str(self.scratch / "registry"),
                          FAIRLOOP_REGISTRY_REMOTE=str(self.scratch / "remote"), FAIRLOOP_STATE_DIR=str(self.scratch / "state"))
        self.harness = prefect_test_harness(server_startup_timeout=180)
        self.harness.__enter__()
        return self

    def __exit__(self, *exc):
        self.harness.__exit__(*exc)
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- grown Adult

def grown_adult(directory: Path, rows: int, seed: int = 0) -> Path:
    """Adult's training file resampled (with replacement, seeded) to ``rows`` rows with noise on the
    numeric columns; Adult's own test file; a dataset spec pointing at both."""
    import yaml

    from fairloop.data.dataset_spec import load_dataset_spec
    from fairloop.data.reading import read_raw_file

    spec_path = PROJECT / "datasets" / "adult.yaml"
    spec = load_dataset_spec(spec_path)
    train_source = next(f for f in spec.files if f.role == "train")
    raw = read_raw_file(spec, train_source, spec_path.parent / train_source.path)
    rng = np.random.default_rng(seed)
    grown = raw.iloc[rng.integers(0, len(raw), size=rows)].reset_index(drop=True)
    for column in [*spec.features.numeric, "fnlwgt"]:
        values = grown[column].to_numpy(dtype=float)
        noisy = values + rng.normal(0.0, 0.05 * np.nanstd(raw[column].to_numpy(dtype=float)), size=rows)
        noisy = np.clip(np.round(noisy), np.nanmin(raw[column]), np.nanmax(raw[column]))
        if column in ("capital-gain", "capital-loss"):
            noisy = np.where(values == 0, 0, noisy)
        grown[column] = noisy.astype("int64")
    directory.mkdir(parents=True, exist_ok=True)
    train_path = directory / f"adult-{rows}.data.gz"
    grown.to_csv(train_path, header=False, index=False, na_rep="?")
    document = yaml.safe_load(spec_path.read_text())
    document["name"] = f"adult-grown-{rows}"
    document["description"] = f"Adult's training file resampled with noise on numeric columns to {rows} rows (benchmark)"
    document["files"] = [{"path": str(train_path), "role": "train"},
                         {"path": str(spec_path.parent / "data/adult/adult.test.gz"), "role": "test", "skip_rows": 1}]
    path = directory / f"adult-{rows}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def large_sweep(directory: Path, sweep_path: str, reduction_rows: int) -> Path:
    import yaml

    document = yaml.safe_load((PROJECT / sweep_path).read_text())
    document.update(name="default-large", reduction_rows=reduction_rows)
    path = directory / "default-large.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def reductions(size: int, subsample: int) -> dict:
    from fairloop import pipeline
    from fairloop.gates.evaluate import predict
    from fairloop.remedy.constraints import fit_candidate, load_constraint_template
    from fairloop.remedy.sweep.jobs import stratified_subsample

    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        inputs = pipeline.load_inputs(pipeline.RunParams(dataset=str(grown_adult(Path(scratch), size))))
    splits = pipeline.prepare(inputs)
    sensitive, test = inputs.sensitive, splits.test
    y, groups = test.y.to_numpy(), test.groups[sensitive].to_numpy()
    from threadpoolctl import threadpool_limits

    for template_path in ("constraints/eg-dp.yaml", "constraints/gs-dp.yaml"):
        template = load_constraint_template(template_path).model_copy(update={"bound": 0.01})
        for label, rows in (("all rows", splits.train), (f"{subsample} rows", stratified_subsample(splits.train, sensitive, subsample, 0))):
            with threadpool_limits(limits=1):  # as in the sweep's workers
                model, seconds = fit_candidate(rows, template, sensitive, 0)
            p = predict(model, test)
            m = {**figures(y, p.decisions, p.scores, groups), "fit_seconds": round(seconds, 1), "fit_rows": len(rows)}
            result[f"{template.name}@0.01 on {label}"] = m
            record("reductions", f"adult grown to {size} (resampled with noise)", f"{template.name}@0.01 on {label}: acc / DPD / EOD / fit s",
                   f"{m['accuracy']['value']:.4f} / {m['demographic_parity_difference']['value']:.4f} / "
                   f"{m['equalized_odds_difference']['value']:.4f} / {m['fit_seconds']}")
    return result


def scale(size: int, sweep_path: str, reduction_rows: int) -> dict:
    """One grown size end to end on a temporary Prefect server of its own."""
    with tempfile.TemporaryDirectory() as scratch, environment(scratch):
        spec = grown_adult(Path(scratch) / "data", size)
        run = remediation_until_review(str(spec), str(large_sweep(Path(scratch), sweep_path, reduction_rows)))
    subject = f"adult grown to {size:,} rows (resampled with noise)"
    million = size == 1_000_000
    record("scale", subject, "end to end up to review (s)", round(run["seconds"], 1), "<= 600" if million else "",
           run["seconds"] / 600 if million else None, state=run["state"])
    record("scale", subject, "peak RSS, all processes (GiB)", round(run["peak_rss_gib"], 2), "<= 8" if million else "",
           run["peak_rss_gib"] / 8 if million else None)
    return run


def markdown() -> str:
    lines = ["| part | subject | figure | value | target | value / target | load (1 min) |", "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        lines.append(f"| {row['part']} | {row['subject']} | {row['figure']} | {row['value']} | {row['target']} | "
                     f"{'' if row['ratio'] is None else row['ratio']} | {row['load']} |")
    return "\n".join(lines)


def save(path: Path, report: dict) -> None:
    path.write_text(json.dumps({**report, "rows": ROWS}, indent=2, default=float))
    path.with_suffix(".md").write_text(markdown() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["quality", "speed", "reductions", "scale"],
                        choices=["quality", "speed", "reductions", "scale"])
    parser.add_argument("--datasets", nargs="+",
                        default=["adult:sex", "adult:race", "compas:race", "german:sex", "hmda:black", "chile:region"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--reduction-rows", type=int, default=50_000, help="the large-data sweep's reduction_rows")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sweep", default=DEFAULT_SWEEP, help="the sweep of the quality and speed parts (and, with "
                                                               "--reduction-rows added, of the scale part)")
    parser.add_argument("--out", type=Path, default=RESULTS / "claims.json")
    args = parser.parse_args()
    os.chdir(PROJECT)
    report: dict = {"sweep": args.sweep, "cores": os.cpu_count(), "workers": args.workers,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for part in args.parts:  # in the order given; the JSON is rewritten after each, so a long run keeps what it has
        if part == "quality":
            report["quality"] = []
            for item in args.datasets:
                report["quality"].append(quality(item, args.workers, args.sweep))
                save(args.out, report)
        elif part == "speed":
            report["speed"] = speed(args.workers, args.sweep)
        elif part == "reductions":
            report["reductions"] = reductions(args.sizes[0], args.reduction_rows)
        else:
            report["scale"] = {}
            for size in args.sizes:
                report["scale"][size] = scale(size, args.sweep, args.reduction_rows)
                save(args.out, report)
            if {100_000, 1_000_000} <= set(report["scale"]):
                growth = report["scale"][1_000_000]["seconds"] / report["scale"][100_000]["seconds"]
                record("scale", "adult grown (resampled with noise)", "time(1M) / time(100k)", round(growth, 2), "<= 12",
                       growth / 12)
        save(args.out, report)
    print("\n" + markdown())
    save(args.out, report)
    print(f"\nwritten: {args.out}, {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
