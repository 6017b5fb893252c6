"""Retrain a registered version from its recorded inputs and check that the result matches."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from pydantic import BaseModel

from fairloop import pipeline
from fairloop.errors import IntegrityError
from fairloop.registry.lineage import Lineage
from fairloop.registry.store import Registry
from fairloop.remedy.crossfit import fit_rows


class Reproduction(BaseModel):
    dataset: str
    version: str
    recorded: dict[str, float]
    reproduced: dict[str, float]
    training_set_identical: bool
    max_abs_difference: float

    @property
    def matches(self) -> bool:
        return self.training_set_identical and self.max_abs_difference == 0.0


def reproduce(registry: Registry, dataset: str, version: str) -> Reproduction:
    """Refuses a version whose stored files (or, for the champion, working copies) no longer
    have their recorded sha256: a tampered version is not "reproduced"."""
    entry = registry.entry(dataset, version)
    if problems := [p for p in registry.verify(dataset) if p.version == version]:
        raise IntegrityError(f"{dataset} {version} does not match its record: "
                             + "; ".join(f"{p.path}: {p.problem}" for p in problems))
    with tempfile.TemporaryDirectory() as scratch:
        inputs_dir = registry.materialize_inputs(dataset, version, Path(scratch))
        inputs = pipeline.load_inputs(recorded_params(entry.lineage, inputs_dir))
        splits = pipeline.prepare(inputs)
        mode = pipeline.decide_mode(inputs, splits)  # the recorded policy decides it again, the same way
        augmented, _ = pipeline.augment(inputs, splits, mode)
        frozen = pipeline.frozen_base(inputs, pipeline.audit(inputs, splits)) if inputs.base_model else None
        model, _ = pipeline.fit_model(fit_rows(splits, mode), inputs.template, inputs.sensitive, inputs.params.seed,
                                      recipe=inputs.recipe, frozen=frozen)
        metrics = pipeline.evaluate_models({"candidate": model}, splits.test, inputs.sensitive, inputs.policy)["candidate"].metrics
    # the registry stores the snapshot with exactly this call
    snapshot = augmented.to_frame(inputs.loaded.spec.label.column).to_csv(index=False).encode()
    return Reproduction(
        dataset=dataset, version=version, recorded=entry.metrics, reproduced=metrics,
        training_set_identical=hashlib.sha256(snapshot).hexdigest() == entry.train_sha256,
        max_abs_difference=max(abs(metrics[k] - entry.metrics[k]) for k in entry.metrics),
    )


def recorded_params(lineage: Lineage, inputs_dir: Path) -> pipeline.RunParams:
    """The RunParams of a registry entry, pointing at its stored copies of the inputs."""
    return pipeline.RunParams(
        dataset=str(inputs_dir / "dataset.yaml"), recipe=str(inputs_dir / "recipe.yaml"),
        constraint=str(inputs_dir / "constraint.yaml"), policy=str(inputs_dir / "policy.yaml"),
        sensitive=lineage.sensitive, train_rows=lineage.train_rows, seed=lineage.seed,
        extra_training_data=(
            str(inputs_dir / lineage.inputs_spec_files["extra"]) if "extra" in lineage.inputs_spec_files else None
        ),
        **({"extra_weighting": lineage.drift.rows.weighting, "extra_max_weight": lineage.drift.rows.max_weight}
           if lineage.drift else {}),
        base_model=recorded_base_model(lineage, inputs_dir),
        base_model_sha256=lineage.base_model.sha256 if lineage.base_model else None,
    )


def recorded_base_model(lineage: Lineage, inputs_dir: Path) -> str | None:
    """The base model of a registry entry: its stored copy of the file, or the recorded import path."""
    if lineage.base_model is None:
        return None
    if "base_model" in lineage.inputs_spec_files:
        return str(inputs_dir / lineage.inputs_spec_files["base_model"])
    return lineage.base_model.location
