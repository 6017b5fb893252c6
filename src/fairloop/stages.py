"""``dvc repro`` driver: each DVC stage runs one ``fairloop.pipeline`` function, passing results
to the next stage through files under ``pipeline/`` (the Prefect flow passes them in memory)."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import yaml

from fairloop import pipeline
from fairloop.errors import BadInputError

STAGES = ("prepare", "audit", "augment", "train", "evaluate")
PARAMS_SECTION = "remediation"


def read_params(path: Path) -> pipeline.RunParams:
    if not path.is_file():
        raise BadInputError("params file not found", source=str(path))
    section = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(PARAMS_SECTION)
    if not isinstance(section, dict):
        raise BadInputError(f"needs a '{PARAMS_SECTION}:' mapping", source=str(path))
    try:
        return pipeline.RunParams(**section)
    except TypeError as exc:
        raise BadInputError(f"section '{PARAMS_SECTION}': {exc}", source=str(path)) from None


def _write_json(path: Path, payload) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def run_stage(name: str, params_path: Path, out: Path) -> str | None:
    """Run stage ``name``; return the audit verdict for the audit stage (None otherwise)."""
    if name not in STAGES:
        raise BadInputError(f"unknown stage '{name}'; stages are {', '.join(STAGES)}")
    inputs = pipeline.load_inputs(read_params(params_path))
    out.mkdir(parents=True, exist_ok=True)
    if name == "prepare":
        joblib.dump(pipeline.prepare(inputs), out / "splits.joblib")
        return None
    splits = joblib.load(out / "splits.joblib")
    if name == "audit":
        report = pipeline.audit(inputs, splits)
        (out / "audit.json").write_text(report.model_dump_json(indent=2) + "\n")
        return report.verdict
    mode = pipeline.decide_mode(inputs, splits)
    if name == "augment":
        augmented, report = pipeline.augment(inputs, splits, mode)
        joblib.dump(augmented, out / "augmented.joblib")
        (out / "augment.json").write_text(report.model_dump_json(indent=2) + "\n")
    elif name == "train":  # applies the recipe itself (per fold, for post-processing), like the flow
        fitted = pipeline.train(inputs, splits, mode)
        joblib.dump({key: model for key, (model, _) in fitted.items()}, out / "models.joblib")
        _write_json(out / "fit_seconds.json", {key: seconds for key, (_, seconds) in fitted.items()})
    else:
        evaluations = pipeline.evaluate_models(joblib.load(out / "models.joblib"), splits.test, inputs.sensitive, inputs.policy)
        _write_json(out / "metrics.json", {key: ev.metrics for key, ev in evaluations.items()})
    return None
