"""A tiny generated dataset and a real promotion candidate on it (logistic regression, a few
hundred rows), for registry, crash and bad-input tests that are about wiring, not models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from conftest import PROJECT

NAME = "tiny"


def write_world(folder: Path, rows: int = 400, seed: int = 0) -> Path:
    """A dataset spec and CSV with two groups of different size and base rate; returns the spec."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], size=rows, p=[0.65, 0.35])
    x1 = rng.normal(size=rows) + (group == "a") * 0.5
    x2 = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    label = (x1 + 0.5 * x2 + rng.normal(scale=0.8, size=rows) > 0.3).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x1": x1.round(4), "x2": x2.round(4), "colour": colour, "group": group, "label": label}).to_csv(
        folder / "tiny.csv", index=False)
    spec = {
        "name": NAME, "version": 1, "description": "generated: two groups, different base rates",
        "files": [{"path": str(folder / "tiny.csv")}],
        "label": {"column": "label", "positive": [1], "negative": [0]},
        "sensitive": [{"name": "group", "column": "group"}],
        "features": {"numeric": ["x1", "x2"], "categorical": ["colour"]},
        "split": {"test_size": 0.3, "validation_size": 0.2, "seed": 0},
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    template = {"name": "tiny-lr", "version": 1, "learner": "logistic_regression", "method": "none"}
    (folder / "tiny-lr.yaml").write_text(yaml.safe_dump(template))
    return folder / "tiny.yaml"


def make_candidate(folder: Path, seed: int = 0) -> dict:
    """Everything ``Registry.promote`` takes, from a real run of the pipeline's stages."""
    from fairloop import pipeline
    from fairloop.registry.lineage import describe_run

    spec_path = write_world(folder / "world")
    params = pipeline.RunParams(dataset=str(spec_path), recipe=str(PROJECT / "recipes/none.yaml"),
                                constraint=str(folder / "world" / "tiny-lr.yaml"),
                                policy=str(PROJECT / "policies/default.yaml"), seed=seed)
    inputs = pipeline.load_inputs(params)
    splits = pipeline.prepare(inputs)
    audit = pipeline.audit(inputs, splits)
    mode = pipeline.decide_mode(inputs, splits)
    augmented, augment_report = pipeline.augment(inputs, splits, mode)
    fitted = pipeline.train(inputs, splits, mode)
    evaluations = pipeline.evaluate_models({k: m for k, (m, _) in fitted.items()}, splits.test, inputs.sensitive)
    snapshot = folder / "inputs"
    copies = pipeline.snapshot_inputs(inputs, snapshot)
    lineage = describe_run(inputs, audit, augment_report, run_id=None, requested_by="pytest", project_dir=PROJECT,
                           evaluation=mode)
    return {
        "model": fitted["candidate"][0], "train": augmented.to_frame("label"),
        "metrics": evaluations["candidate"].metrics, "baseline_metrics": evaluations["baseline"].metrics,
        "gates": [], "lineage": lineage.model_copy(update={"inputs_spec_files": copies}),
        "documents": lambda version: {"report.md": f"report {version}\n"}, "inputs_dir": snapshot,
    }


def promote(registry, candidate: dict, reviewer: str = "ann"):
    return registry.promote(NAME, **candidate, approval={"reviewer": reviewer, "comment": "", "approved": True})


def registry_with_two_versions(base: Path):
    """A candidate and a registry holding v1 (approved by ann) and v2 (by ben, the champion)."""
    from fairloop.registry.store import Registry

    candidate = make_candidate(base / "candidate")
    registry = Registry(base / "registry", base / "remote")
    promote(registry, candidate, "ann")
    promote(registry, candidate, "ben")
    return candidate, registry
