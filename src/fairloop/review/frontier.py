"""The accuracy-fairness frontier of a sweep: a plot and a table a reviewer can read.

One panel per fairness metric (those the policy gates, plus DPD and EOD): every candidate's
held-out test accuracy against that metric, the Pareto front joined up, the chosen candidate,
the unconstrained baseline and the current champion marked, and the policy's threshold drawn.

matplotlib is imported where a figure is drawn (a heavy import the CLI's other commands never need).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from markupsafe import Markup

from fairloop.gates.metrics import metric_label, threshold_on
from fairloop.gates.policy import Policy
from fairloop.remedy.sweep.results import (
    FRONTIER_METRICS,
    SweepOutcome,
    frontier_metrics,
    pareto_mask,
)
from fairloop.review.labels import place_labels
from fairloop.templating import render

# Marker of each candidate kind (constraints.METHOD_KINDS); baseline and champion keep square and star.
KIND_MARKERS = {"unconstrained": "o", "reduction": "^", "post-processing": "v", "in-processing (adversarial)": "D"}


def _threshold(policy: Policy, metric: str) -> float | None:
    return threshold_on(policy.thresholds, metric)


def frontier_png(
    points: dict[str, dict[str, float]], chosen: str | None, references: dict[str, dict[str, float]],
    policy: Policy, title: str, dpi: int = 80, *, narrow: bool = False, group_aware: frozenset[str] = frozenset(),
    forbidden: frozenset[str] = frozenset(), kinds: dict[str, str] | None = None,
) -> bytes:
    """PNG of :func:`frontier_figure` (``narrow`` at 100 dpi)."""
    import matplotlib.pyplot as plt

    figure = frontier_figure(points, chosen, references, policy, title, narrow=narrow, group_aware=group_aware,
                             forbidden=forbidden, kinds=kinds)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100 if narrow else dpi)
    plt.close(figure)
    return buffer.getvalue()


def frontier_figure(
    points: dict[str, dict[str, float]], chosen: str | None, references: dict[str, dict[str, float]],
    policy: Policy, title: str, *, narrow: bool = False, group_aware: frozenset[str] = frozenset(),
    forbidden: frozenset[str] = frozenset(), kinds: dict[str, str] | None = None,
):
    """The frontier: ``points`` are the candidates' test metrics by name, ``references`` those of
    'baseline' and, if any, 'champion'.

    ``narrow`` draws it for the Resume dialog (~470 px): one panel per metric stacked in one
    column, so the image is shown at its natural size and 9 pt labels stay about 12 px tall; the
    chosen point and the policy limit are labelled on each panel. Otherwise two panels per row
    (a wide strip would shrink to a sliver on a report page), the Pareto candidates numbered as
    in the candidates table. The ``group_aware`` candidates (they need the sensitive feature to
    predict) are drawn hollow; the ``forbidden`` ones (the policy cannot choose them) grey, and
    the Pareto front runs through the others only. ``kinds`` gives each candidate's kind
    (unconstrained, reduction, ...): one marker per kind. Labels cover no marker and no other
    label (:func:`~fairloop.review.labels.place_labels`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = frontier_metrics(policy)
    if narrow:
        font, columns, panel = 9, 1, (4.7, 2.7)
    else:
        font, columns, panel = 7, 2, (4.75, 3.9)
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows), dpi=100 if narrow else 80,
                                squeeze=False)
    for unused in axes.flat[len(metrics):]:
        unused.set_visible(False)
    panels = [_draw_panel(axis, metric, points, chosen, references, policy, font, narrow=narrow,
                          group_aware=group_aware, forbidden=forbidden, kinds=kinds or {})
              for axis, metric in zip(axes.flat, metrics, strict=False)]
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_columns = 2 if narrow else 3
    legend_inches = 0.15 + 0.2 * -(-len(labels) // legend_columns)  # one kind of candidate per entry
    title_inches = 0 if narrow else 0.35
    figure.set_figheight(panel[1] * rows + legend_inches + title_inches)
    top = 1 - title_inches / figure.get_figheight()
    figure.legend(handles, labels, fontsize=font, loc="upper center", ncol=legend_columns, frameon=False,
                  bbox_to_anchor=(0.5, top))
    if not narrow:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, top - legend_inches / figure.get_figheight()))
    figure.canvas.draw()  # the layout is final: labels are placed in its pixels
    for axis, labels_of_panel in zip(axes.flat, panels, strict=False):
        place_labels(axis, labels_of_panel, font)
    return figure


def _draw_panel(
    axis, metric: str, points: dict[str, dict[str, float]], chosen: str | None, references: dict[str, dict[str, float]],
    policy: Policy, font: int, *, narrow: bool, group_aware: frozenset[str], forbidden: frozenset[str],
    kinds: dict[str, str],
) -> list[tuple[str, tuple[float, float], str]]:
    """One metric's panel; returns the labels to place once the figure's layout is final."""

    names = list(points)
    accuracy = np.array([points[n]["accuracy"] for n in names])
    values = np.array([points[n][metric] for n in names])
    usable = ~np.isnan(values)
    aware, barred = (np.array([n in group for n in names], dtype=bool) for group in (group_aware, forbidden))
    kind_of = np.array([kinds.get(n, "candidate") for n in names])
    for kind in dict.fromkeys(kind_of):  # one marker per candidate kind, in order of appearance
        marker, of_kind = KIND_MARKERS.get(kind, "o"), usable & (kind_of == kind)
        for shown, style, label in (
            (of_kind & ~aware & ~barred, dict(color="tab:blue", alpha=0.7), kind),
            (of_kind & aware & ~barred, dict(facecolors="none", edgecolors="tab:purple", alpha=0.8), f"{kind}, needs sensitive"),
            (of_kind & barred, dict(facecolors="none", edgecolors="darkgrey"), f"{kind}, policy forbids"),
        ):
            if shown.any():
                axis.scatter(values[shown], accuracy[shown], marker=marker, label=label, **style)
    choosable = np.flatnonzero(usable & ~barred)
    front = choosable[pareto_mask(accuracy[choosable], values[choosable], FRONTIER_METRICS[metric])]
    order = front[np.argsort(values[front])]
    axis.plot(values[order], accuracy[order], color="tab:blue", linewidth=1.2, label="Pareto front (choosable)")
    # numbers, not names (names overlap; the candidates table has the same numbers); the dialog names the chosen only
    labels = [] if narrow else [(names[i] if len(names) == 1 else str(i + 1),
                                 (values[i], accuracy[i]), "black") for i in front]
    if chosen is not None:
        point = (points[chosen][metric], points[chosen]["accuracy"])
        axis.scatter([point[0]], [point[1]], s=170, facecolors="none", edgecolors="tab:green", linewidths=2, label="chosen")
        if narrow:
            labels.append(("chosen", point, "tab:green"))
    for name, marker, colour, label in (("baseline", "s", "tab:red", "unconstrained baseline"),
                                        ("champion", "*", "tab:orange", "current champion")):
        if name in references:
            axis.scatter([references[name][metric]], [references[name]["accuracy"]], marker=marker, s=90,
                         color=colour, label=label)
    threshold = _threshold(policy, metric)
    if threshold is not None:
        axis.axvline(threshold, color="grey", linestyle="--", linewidth=1, label="policy limit")
    fairer = "higher" if FRONTIER_METRICS[metric] else "lower"
    axis.set_xlabel(f"{metric_label(metric)} ({fairer} is fairer)", fontsize=font + 1)
    axis.set_ylabel("accuracy (test)", fontsize=font + 1)
    axis.tick_params(labelsize=font)
    axis.margins(x=0.08, y=0.15)  # room for the labels of points at the edges
    axis.grid(alpha=0.3)
    if threshold is not None and narrow:
        top = axis.get_ylim()[1]
        labels.append((f"limit {threshold:g}", (threshold, top), "dimgrey"))
    return labels


def image_markdown(png: bytes, alt: str = "accuracy-fairness frontier") -> str:
    """The PNG inline (a data URI), so the review form and artifacts show it with no file server."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def candidates_table(outcome: SweepOutcome) -> list[dict]:
    """One row per candidate (for the Prefect table artifact and the report)."""
    rows = []
    for number, c in enumerate(outcome.candidates, start=1):
        rows.append({
            "#": number, "candidate": c.name + (" (chosen)" if c.name == outcome.chosen else "")
            + (" (search)" if c.searched else ""),
            "recipe": c.recipe, "template": c.template, "method": c.method, "constraint": c.constraint or "",
            "bound": c.bound, "learner": c.learner, "kind": c.kind, "needs at predict": c.needs_at_predict,
            "val accuracy": round(c.validation["accuracy"], 4),
            "val DPD": round(c.validation["demographic_parity_difference"], 4),
            "val EOD": round(c.validation["equalized_odds_difference"], 4),
            "test accuracy": round(c.test["accuracy"], 4), "test AUC": round(c.test["auc"], 4),
            "test DPD": round(c.test["demographic_parity_difference"], 4),
            "test EOD": round(c.test["equalized_odds_difference"], 4),
            "test DI": round(c.test["disparate_impact_ratio"], 4),
            "gates (validation)": "pass" if c.passed else "blocked: " + c.gates.blocked_by,
            "Pareto": "yes" if c.pareto else "", "fit s": round(c.fit_seconds, 1),
        })
    return rows


def candidates_markdown(outcome: SweepOutcome) -> str:
    """The sweep's candidates as a Markdown table for the full report (a wide page)."""
    numbered = sorted(enumerate(outcome.candidates, start=1), key=lambda pair: -pair[1].validation["accuracy"])
    return render("candidates.md.j2", outcome=outcome, numbered=numbered)


def _points(outcome: SweepOutcome | None, candidate: dict[str, float] | None, dataset: str):
    """(points, chosen, group-aware names, forbidden names, kinds, title) of a sweep ``outcome`` or a
    single ``candidate``."""
    if outcome is None:
        return {"candidate": candidate}, "candidate", frozenset(), frozenset(), {}, f"{dataset}: candidate"
    aware = frozenset(c.name for c in outcome.candidates if c.needs_sensitive_at_predict)
    forbidden = frozenset(c.name for c in outcome.candidates if not c.choosable)
    points = {c.name: c.test for c in outcome.candidates}
    kinds = {c.name: c.kind for c in outcome.candidates}
    return points, outcome.chosen, aware, forbidden, kinds, f"{dataset}: sweep '{outcome.sweep}', {len(points)} candidates"


def frontier_report(
    policy: Policy, dataset: str, references: dict[str, dict[str, float]],
    outcome: SweepOutcome | None = None, candidate: dict[str, float] | None = None,
) -> tuple[bytes, str]:
    """The frontier PNG and the markdown section showing it: every candidate of a sweep
    ``outcome``, or the one ``candidate`` of a single run (test metrics), against the test
    metrics of the ``references`` ('baseline', 'champion')."""
    points, chosen, aware, forbidden, kinds, title = _points(outcome, candidate, dataset)
    png = frontier_png(points, chosen, references, policy, f"{title} - accuracy vs fairness on held-out test data",
                       group_aware=aware, forbidden=forbidden, kinds=kinds)
    section = render("frontier.md.j2", image=Markup(image_markdown(png)), outcome=outcome,
                     candidates=Markup(candidates_markdown(outcome)) if outcome is not None else None)
    return png, section


def dialog_frontier(
    policy: Policy, dataset: str, references: dict[str, dict[str, float]],
    outcome: SweepOutcome | None = None, candidate: dict[str, float] | None = None,
) -> str:
    """The frontier drawn for the Resume dialog's width, as inline Markdown."""
    points, chosen, aware, forbidden, kinds, title = _points(outcome, candidate, dataset)
    return image_markdown(frontier_png(points, chosen, references, policy, title, narrow=True, group_aware=aware,
                                       forbidden=forbidden, kinds=kinds))
