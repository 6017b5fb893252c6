"""A dataset's promotion history as ``fairloop models`` prints it: one table that fits an
80-column terminal (no rule between columns, the champion marked beside its version, the
promotion time in minutes with its reviewer, recipe and constraint in one column; cells wrap at
word boundaries and fold a word longer than their column, never cut it)."""

from __future__ import annotations

from collections import Counter

from rich import box
from rich.markup import escape
from rich.table import Table

from fairloop.registry.store import RegistryEntry


def promoted(stamp: str) -> str:
    """'2026-12-07T10:58:12.345+00:00' -> '2026-12-07 10:58' (UTC, as recorded)."""
    return stamp[:16].replace("T", " ")


def gate_counts(entry: RegistryEntry) -> str:
    """'3 pass, 1 inconclusive': the promotion's gate verdicts, counted."""
    return ", ".join(f"{n} {verdict}" for verdict, n in sorted(Counter(g["verdict"] for g in entry.gates).items()))


def history_table(name: str, champion: RegistryEntry | None, history: list[RegistryEntry], *,
                  files_mismatch: bool, root: str) -> Table:
    """Every promoted version of dataset ``name``, oldest first, the ``champion`` marked with *;
    ``files_mismatch``: the registry's files no longer match the champion's record."""
    flag = " [red]FILES DO NOT MATCH THE RECORD[/red]" if files_mismatch else ""
    table = Table(title=f"{escape(name)}: champion {champion.version if champion else 'none'}{flag} ({escape(root)})",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, title_justify="left")
    table.add_column("version", no_wrap=True)
    table.add_column("promoted (UTC), by", overflow="fold", min_width=11)  # one column fewer: the reviewer under the date
    table.add_column("recipe / constraint", overflow="fold", min_width=12)
    for metric in ("acc", "DPD", "EOD"):
        table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("gates", overflow="fold", min_width=len("inconclusive"))
    for entry in history:
        lineage, metrics = entry.lineage, entry.metrics
        table.add_row(
            entry.version + (" *" if champion and entry.version == champion.version else ""),
            f"{promoted(entry.promoted_at)} by {escape(entry.approval.get('reviewer', ''))}",
            escape(f"{lineage.recipe.name} v{lineage.recipe.version} / {lineage.constraint.name} v{lineage.constraint.version}"),
            *(f"{metrics[m]:.3f}" for m in ("accuracy", "demographic_parity_difference", "equalized_odds_difference")),
            gate_counts(entry),
        )
    return table
