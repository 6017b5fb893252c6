"""Plots and Markdown of checked windows (matplotlib, Agg backend).

matplotlib is imported where a figure is drawn (a heavy import the CLI's other commands never need).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairloop.monitor.report import WindowReport
from fairloop.templating import render


def plot_window(report: WindowReport, path: Path) -> Path:
    """Each metric as a share of its threshold (1 = threshold) with its interval; groups' selection rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gated = sorted((m for m in report.metrics if m.threshold), key=lambda m: m.value / m.threshold, reverse=True)[:20]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.3 * len(gated) + 1)), gridspec_kw={"width_ratios": [3, 1]})
    positions = np.arange(len(gated))[::-1]
    colours = ["#c0392b" if m.alert else "#e67e22" if m.breach else "#2e86c1" for m in gated]
    left.barh(positions, [m.value / m.threshold for m in gated], color=colours)
    left.errorbar([m.value / m.threshold for m in gated], positions,
                  xerr=[[max(0.0, m.value - m.low) / m.threshold for m in gated], [max(0.0, m.high - m.value) / m.threshold for m in gated]],
                  fmt="none", ecolor="black", capsize=2, lw=0.8)
    left.axvline(1.0, color="black", ls="--", lw=1)
    left.set_yticks(positions, [m.key for m in gated], fontsize=7)
    left.set_xlabel("value / threshold (red: alert, orange: breach)")
    left.set_title(f"{report.dataset} {report.champion_version}: window {report.window_start or 'all'} .. {report.window_end or ''}", fontsize=9)
    groups = sorted(set(report.selection_rates) | set(report.reference_selection_rates))
    x = np.arange(len(groups))
    right.bar(x - 0.2, [report.reference_selection_rates.get(g, np.nan) for g in groups], 0.4, label="reference")
    right.bar(x + 0.2, [report.selection_rates.get(g, np.nan) for g in groups], 0.4, label="window")
    right.set_xticks(x, groups, rotation=30, fontsize=7)
    right.set_title("selection rate by group", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_series(reports: list[WindowReport], path: Path, title: str = "") -> Path:
    """Per window: the worst feature drift (KS, PSI), group-share PSI and fairness gaps, alerts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.window_start or str(i) for i, r in enumerate(reports)]
    x = np.arange(len(reports))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.55 * len(reports) + 3), 7), sharex=True)
    panels = [
        (axes[0], [("ks", "max KS (all rows)", None), ("ks", "max KS (within a group)", "group"), ("psi", "max PSI categorical", None),
                   ("group_share", "group-share PSI", None)]),
        (axes[1], [("prediction_rate_gap", "prediction-rate gap", None), ("equalized_odds_difference", "EOD (labelled)", None)]),
    ]
    for ax, series in panels:
        for kind, name, scope in series:
            values = []
            for r in reports:
                chosen = [m for m in r.metrics if m.kind == kind and ((m.group is not None) == (scope == "group"))]
                values.append(max((m.value for m in chosen), default=np.nan))
            ax.plot(x, values, marker="o", label=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if reports:
        cfg_ks = next((m.threshold for m in reports[0].metrics if m.kind == "ks"), None)
        if cfg_ks:
            axes[0].axhline(cfg_ks, color="grey", ls="--", lw=1)
        gap = next((m.threshold for m in reports[0].metrics if m.kind == "prediction_rate_gap" and m.threshold), None)
        if gap:
            axes[1].axhline(gap, color="grey", ls="--", lw=1)
    for i, r in enumerate(reports):
        if r.alert:
            for ax in axes:
                ax.axvspan(i - 0.4, i + 0.4, color="#c0392b", alpha=0.15)
    axes[1].set_xticks(x, labels, rotation=45, fontsize=7)
    axes[0].set_title(title or "drift per window (red band: alert)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_markdown(report: WindowReport) -> str:
    """Breaches, alerts and group rates of one window (Markdown; data values escaped by the template)."""
    return render("monitor_summary.md.j2", report=report)


def plot_group_trends(reports: list[WindowReport], path: Path) -> Path:
    """Per group over the windows: selection rate and true positive rate with their intervals; alerts shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(reports))
    groups = sorted({g.group for r in reports for g in r.group_rates})
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.5 * len(reports) + 3), 6.5), sharex=True)
    panels = ((axes[0], "selection_rate", "selection_interval", "selection rate"),
              (axes[1], "true_positive_rate", "tpr_interval", "true positive rate (labelled rows)"))
    for ax, value_name, interval_name, title in panels:
        for offset, group in enumerate(groups):
            found = [next((g for g in r.group_rates if g.group == group), None) for r in reports]
            values = np.array([np.nan if g is None or getattr(g, value_name) is None else getattr(g, value_name) for g in found])
            intervals = [None if g is None else getattr(g, interval_name) for g in found]
            low = np.array([np.nan if i is None else v - i[0] for v, i in zip(values, intervals)])
            high = np.array([np.nan if i is None else i[1] - v for v, i in zip(values, intervals)])
            shift = (offset - (len(groups) - 1) / 2) * 0.08
            ax.errorbar(x + shift, values, yerr=[np.nan_to_num(low), np.nan_to_num(high)], marker="o", capsize=2, lw=1,
                        label=group)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for i, r in enumerate(reports):
        if r.alert:
            for ax in axes:
                ax.axvspan(i - 0.4, i + 0.4, color="#c0392b", alpha=0.15)
    axes[1].set_xticks(x, [r.window_start or str(i) for i, r in enumerate(reports)], rotation=45, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
