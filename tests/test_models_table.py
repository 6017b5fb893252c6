"""`fairloop models` at 80 columns: a real registry (two promotions of a model fitted on the tiny
generated dataset, the second under a sweep-length constraint name), printed by the real command
with COLUMNS=80; every line fits and no cell is cut short."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROJECT
from tiny_world import NAME, make_candidate, promote

LONG = "logistic-regression-exponentiated-gradient-dp@0.02"


def test_models_fits_80_columns_without_cutting_a_cell(tmp_path):
    from fairloop.registry.store import Registry

    candidate = make_candidate(tmp_path / "candidate")
    registry = Registry(tmp_path / "registry", tmp_path / "remote")
    promote(registry, candidate, "ann")
    lineage = candidate["lineage"]
    verdicts = [{"gate": g, "verdict": v} for g, v in (("max_demographic_parity_difference", "pass"),
                                                       ("max_accuracy_drop_vs_baseline", "pass"),
                                                       ("max_equalized_odds_difference", "inconclusive"))]
    promote(registry, {**candidate, "gates": verdicts, "lineage": lineage.model_copy(update={
        "constraint": lineage.constraint.model_copy(update={"name": LONG})})}, "bartholomew")
    env = {**os.environ, "COLUMNS": "80", "FAIRLOOP_REGISTRY_DIR": str(tmp_path / "registry"),
           "FAIRLOOP_REGISTRY_REMOTE": str(tmp_path / "remote"), "FAIRLOOP_STATE_DIR": str(tmp_path / "state")}
    shown = subprocess.run([sys.executable, "-m", "fairloop", "models"], capture_output=True, text=True, env=env,
                           cwd=PROJECT, timeout=300)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, shown.stdout
    assert "…" not in shown.stdout, shown.stdout  # nothing cut: long cells wrap instead
    for entry in registry.history(NAME):
        block = row_block(lines, entry.version)
        figures = [f"{entry.metrics[m]:.3f}" for m in ("accuracy", "demographic_parity_difference", "equalized_odds_difference")]
        reviewer = entry.approval["reviewer"]
        # each cell is the row's lines sliced between where its neighbours start on the row's first line
        starts = [0, block[0].index(entry.promoted_at[:10]), block[0].index("none v1"), block[0].index(figures[0]),
                  block[0].index(figures[2]) + 5, 80]
        cells = ["".join(line[a:b] for line in block).replace(" ", "") for a, b in zip(starts, starts[1:])]
        champion = " *" if entry.version == "v2" else ""
        expected = [entry.version + champion, f"{entry.promoted_at[:10]} {entry.promoted_at[11:16]} by {reviewer}",
                    f"none v1 / {entry.lineage.constraint.name} v1", " ".join(figures),
                    "1 inconclusive, 2 pass" if entry.gates else ""]
        assert cells == [e.replace(" ", "") for e in expected], (cells, "\n".join(block))
    assert {e.lineage.constraint.name for e in registry.history(NAME)} == {"tiny-lr", LONG}


def row_block(lines: list[str], version: str) -> list[str]:
    """The lines of ``version``'s row: its first line and those under it until the next row."""
    first = next(i for i, line in enumerate(lines) if line.split()[:1] == [version])
    end = next((i for i in range(first + 1, len(lines)) if lines[i][:1].strip()), len(lines))
    return [line.ljust(80) for line in lines[first:end]]
