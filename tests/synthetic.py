"""Generated tabular datasets whose group sizes, base rates, label noise and feature signal the
test controls, written as a CSV file plus a dataset spec (so they go through real loading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.special import expit


def write_dataset(
    directory: Path, name: str, groups: dict[str | tuple[str, ...], tuple[int, float]], *, signal: float = 2.0,
    label_noise: float = 0.0, seed: int = 0, proxy: float = 0.0, test_size: float = 0.3,
    sensitive: tuple[str, ...] = ("group",), shift: dict | None = None, hidden: dict[str, float] | None = None,
) -> Path:
    """``groups``: name -> (rows, base rate). ``signal`` scales how much the features say about
    the label (0: useless features, AUC ~ .5); ``label_noise`` flips that share of labels;
    ``proxy`` makes feature ``x3`` reveal the group. With several ``sensitive`` columns the
    names are tuples (one value per column: a cell) and the spec declares their intersection.
    ``shift``: group -> amount added to its ``x1`` at the same base rate, so a group-blind model
    selects that group less (negative) or more often than its labels warrant. ``hidden`` (group
    -> share, one sensitive column) blanks that share of each group's sensitive values (spec
    ``missing: group``; the true group stays in column ``true_group``, which the spec does not
    read). Returns the spec path."""
    frame = generate(groups, signal=signal, label_noise=label_noise, seed=seed, proxy=proxy, sensitive=sensitive,
                     shift=shift)
    if hidden:
        frame = hide_sensitive(frame, hidden, seed)
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_csv(directory / f"{name}.csv", index=False)
    spec = {
        "name": name, "version": 1, "description": f"generated: { {str(k): v for k, v in groups.items()} }, signal {signal}, noise {label_noise}",
        "format": {"separator": ",", "header": True},
        "files": [{"path": f"{name}.csv"}],
        "label": {"column": "label", "positive": [1], "negative": [0]},
        "sensitive": [{"name": column, "column": column, **({"missing": column} if hidden else {})} for column in sensitive],
        **({"intersections": [list(sensitive)]} if len(sensitive) > 1 else {}),
        "features": {"numeric": ["x1", "x2", "x3"], "categorical": ["colour"]},
        "split": {"test_size": test_size, "validation_size": 0.2, "seed": 0},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def hide_sensitive(frame: pd.DataFrame, shares: dict[str, float], seed: int) -> pd.DataFrame:
    """``frame`` with the sensitive value blanked for ``shares[g]`` of group g's rows (same share for
    every group: missing completely at random; different shares: missing more often in one group).
    The true value is kept in ``true_group``."""
    rng = np.random.default_rng(seed + 1)
    share = frame["group"].map(shares).fillna(0.0).to_numpy()
    hidden = frame.assign(true_group=frame["group"])
    hidden["group"] = frame["group"].where(rng.random(len(frame)) >= share)
    return hidden


def generate(groups: dict[str | tuple[str, ...], tuple[int, float]], *, signal: float = 2.0, label_noise: float = 0.0,
             seed: int = 0, proxy: float = 0.0, sensitive: tuple[str, ...] = ("group",),
             shift: dict | None = None) -> pd.DataFrame:
    """The rows of ``write_dataset``, shuffled: features x1, x2 (label signal), x3 (``proxy`` x the group's
    index, plus noise), colour (noise), the sensitive column(s), label."""
    rng = np.random.default_rng(seed)
    parts = []
    for index, (group, (rows, base_rate)) in enumerate(groups.items()):
        x1, x2 = rng.normal(size=rows) + (shift or {}).get(group, 0.0), rng.normal(size=rows)
        latent = signal * (x1 + 0.5 * x2)
        # the intercept that gives this group its base rate (bisection on the mean probability)
        low, high = -30.0, 30.0
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if expit(latent + mid).mean() < base_rate else (low, mid)
        label = (rng.random(rows) < expit(latent + (low + high) / 2)).astype(int)
        flip = rng.random(rows) < label_noise
        label[flip] = 1 - label[flip]
        parts.append(pd.DataFrame({
            "x1": x1.round(4), "x2": x2.round(4), "x3": (proxy * index + rng.normal(size=rows)).round(4),
            "colour": rng.choice(["red", "green", "blue"], size=rows),
            **dict(zip(sensitive, group if isinstance(group, tuple) else (group,), strict=True)), "label": label,
        }))
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def simultaneous_coverage(replicates: int, seed: int = 0, n_boot: int = 200,
                          sizes: tuple[int, ...] = (400, 300, 200, 150, 100, 60, 50, 40),
                          naive_replicates: int | None = None) -> dict[str, float]:
    """Seeded simulation: decisions drawn with known per-cell selection rates (8 cells, true DPD
    0.10); the share of replicates whose intervals cover the truth: the simultaneous family (all
    cells at once), the DPD interval derived from the simultaneous pairwise family and, in the
    first ``naive_replicates``, the per-cell percentile intervals (all at once)."""
    from fairloop.gates.intervals import bootstrap_intervals

    sizes = np.asarray(sizes)
    rates = np.array([0.30, 0.32, 0.28, 0.30, 0.35, 0.25, 0.30, 0.31])
    names = np.array([f"c{i}" for i in range(len(sizes))])
    groups = np.repeat(names, sizes)
    rng = np.random.default_rng(seed)
    naive_replicates = replicates if naive_replicates is None else naive_replicates
    hits = {"simultaneous": 0, "per_cell": 0, "dpd": 0}

    def covered(found):
        return all(found[f"selection_rate[{n}]"][0] <= r <= found[f"selection_rate[{n}]"][1] for n, r in zip(names, rates))

    for replicate in range(replicates):
        decisions = (rng.random(len(groups)) < np.repeat(rates, sizes)).astype(int)
        y = rng.integers(0, 2, len(groups))
        options = {"n_boot": n_boot, "confidence": 0.95, "seed": replicate}
        found = bootstrap_intervals(y, {"m": decisions}, groups, simultaneous=True, **options)["m"]
        hits["simultaneous"] += covered(found)
        low, high = found["demographic_parity_difference"]
        hits["dpd"] += bool(low <= rates.max() - rates.min() <= high)
        if replicate < naive_replicates:
            hits["per_cell"] += covered(bootstrap_intervals(y, {"m": decisions}, groups, simultaneous=False, **options)["m"])
    return {"simultaneous": hits["simultaneous"] / replicates, "dpd": hits["dpd"] / replicates,
            "per_cell": hits["per_cell"] / naive_replicates, "replicates": replicates}


def write_wages(path: Path, rows: int, seed: int = 0) -> Path:
    """A generated wage survey at ``path`` (CSV): sex, age, hours, sector, education and the wage, a
    numeric column a label thresholds (``wage > 120``: about a third of the rows), plus two columns
    derived from the wage, as survey extracts often carry: ``logwage`` and ``band`` (its bracket,
    one label value per band at 120). Men earn about 16 % more at equal inputs."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], size=rows)
    age, hours, education = rng.integers(18, 65, rows), rng.integers(10, 60, rows), rng.integers(8, 20, rows)
    log_wage = (3.4 + 0.05 * education + 0.01 * hours + 0.005 * (age - 18) + 0.15 * (sex == "M")
                + rng.normal(0, 0.35, rows))
    wage = np.exp(log_wage).round(2)
    frame = pd.DataFrame({
        "sex": sex, "age": age, "hours": hours, "sector": rng.choice(["retail", "industry", "services", "public"], size=rows),
        "education": education, "wage": wage, "logwage": np.log(wage).round(4),
        "band": np.where(wage > 120, "upper", np.where(wage > 60, "middle", "lower")),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
