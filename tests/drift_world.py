"""Generated production feeds whose drift the test controls, for the drift-remediation loop.

Rows: ``sex`` (F/M), ``x1`` and ``x2`` (what the label depends on), ``x3`` (noise plus
``proxy`` x [sex == F]: lets a group-blind model tell the groups apart), ``colour`` (noise),
``day`` (ISO date) and ``label`` ~ Bernoulli(sigmoid(2 (q1 + 0.5 x2) + intercept)) where ``q1`` is
a person's *qualification*. Drift kinds (each on group F only):

* ``group_share``: F's share of the rows changes; nothing else;
* ``new_channel``: most of F's rows (``channel_share``) now arrive through a new intake channel
  (``colour`` 'purple', never seen in training) whose measured ``x1`` is ``q1 + shift`` while labels
  follow ``q1``: the champion under-selects F; a model retrained with drifted rows learns the
  channel's offset, and rows without the channel are decided as before (**correctable**);
* ``measured_shift``: every F row's measured ``x1`` is ``q1 + shift``: a group-blind model can meet
  parity on the drifted rows only by treating F differently through the proxy ``x3``, which breaks
  parity on the old rows (**not correctable** while both are gated);
* ``label_shift``: F's intercept moves by ``shift`` (its base rate changes at the same features);
* ``true_shift``: F's qualification itself moves by ``shift`` and labels follow it: F's base rate
  falls far below M's, so selection rates within 0.05 of each other cost any group-blind model far
  more accuracy than a policy allows (**not correctable** under such a policy).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from scipy.special import expit

Kind = Literal["none", "group_share", "new_channel", "measured_shift", "label_shift", "true_shift"]


def draw(rows: int, seed: int, *, kind: Kind = "none", shift: float = 0.0, share_f: float = 0.5, proxy: float = 1.5,
         channel_share: float = 0.7, start: str = "2026-01-01", days: int = 28) -> pd.DataFrame:
    """``rows`` people dated uniformly over ``days`` days from ``start``."""
    rng = np.random.default_rng(seed)
    female = rng.random(rows) < (share_f if kind != "group_share" else min(0.95, share_f * (1 + shift)))
    q1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    if kind == "true_shift":
        q1 = q1 + shift * female
    channel = female & (rng.random(rows) < channel_share) if kind == "new_channel" else np.zeros(rows, dtype=bool)
    biased = female if kind == "measured_shift" else channel
    x1 = q1 + shift * biased
    intercept = shift * female if kind == "label_shift" else 0.0
    label = (rng.random(rows) < expit(2.0 * (q1 + 0.5 * x2) + intercept)).astype(int)
    day = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days, rows), unit="D")
    return pd.DataFrame({
        "x1": x1.round(4), "x2": x2.round(4), "x3": (proxy * female + rng.normal(size=rows)).round(4),
        "colour": np.where(channel, "purple", rng.choice(["red", "green", "blue"], size=rows)), "sex": np.where(female, "F", "M"),
        "day": day.strftime("%Y-%m-%d"), "label": label,
    })


def write_spec(folder: Path, name: str, train: pd.DataFrame) -> Path:
    """The training rows as ``<name>.csv`` and a dataset spec reading them (production windows are cut by ``day``)."""
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / f"{name}.csv", index=False)
    spec = {
        "name": name, "version": 1, "description": "generated: two groups, one proxy, a drift the test controls",
        "format": {"separator": ",", "header": True}, "files": [{"path": f"{name}.csv"}],
        "label": {"column": "label", "positive": [1], "negative": [0]},
        "sensitive": [{"name": "sex", "column": "sex"}],
        "features": {"numeric": ["x1", "x2", "x3"], "categorical": ["colour"]},
        "time_column": "day", "split": {"test_size": 0.3, "validation_size": 0.2, "seed": 0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def month(k: int) -> str:
    """The first day of the k-th 28-day window from 2026-01-01 (windows of the test policy: 28 days)."""
    return (pd.Timestamp("2026-01-01") + pd.Timedelta(days=28 * k)).date().isoformat()


def feed(windows: list[pd.DataFrame], path: Path, unlabelled: tuple[int, ...] = ()) -> Path:
    """Windows one after another (window k dated in the k-th 28 days); windows in ``unlabelled`` lose their labels."""
    parts = []
    for k, window in enumerate(windows):
        window = window.copy()
        window["day"] = (pd.Timestamp(month(k)) + pd.to_timedelta(
            np.random.default_rng(k).integers(0, 28, len(window)), unit="D")).strftime("%Y-%m-%d")
        if k in unlabelled:
            window["label"] = np.nan
        parts.append(window)
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return path


def promote_champion(spec: Path, policy: Path, registry, template: str) -> None:
    """v1 of the generated dataset: ``template`` fitted on its training rows, promoted with its lineage."""
    from fairloop import pipeline
    from fairloop.remedy.constraints import fit_candidate
    from fairloop.registry.lineage import describe_run

    project = Path(__file__).resolve().parents[1]
    inputs = pipeline.load_inputs(pipeline.RunParams(str(spec), constraint=template, recipe=str(project / "recipes/none.yaml"),
                                                     policy=str(policy)))
    splits = pipeline.prepare(inputs)
    model, _ = fit_candidate(splits.train, inputs.template, inputs.sensitive, 0)
    metrics = pipeline.evaluate_models({"c": model}, splits.test, inputs.sensitive)["c"].metrics
    with tempfile.TemporaryDirectory() as scratch:
        copies = pipeline.snapshot_inputs(inputs, Path(scratch))
        lineage = describe_run(inputs, pipeline.audit(inputs, splits),
                               pipeline.augment(inputs, splits, pipeline.decide_mode(inputs, splits))[1],
                               run_id=None, requested_by="generated-world", project_dir=project)
        registry.promote(inputs.loaded.spec.name, model, splits.train.to_frame("label"), metrics=metrics,
                         baseline_metrics=metrics, gates=[], lineage=lineage.model_copy(update={"inputs_spec_files": copies}),
                         approval={"reviewer": "generated-world", "comment": "champion v1 of a generated world", "approved": True},
                         inputs_dir=Path(scratch), documents=lambda version: {"report.md": "generated world\n"})
