"""The accuracy-fairness frontier of a sweep: a plot and a table a reviewer can read.

One panel per fairness metric (those the policy gates, plus DPD and EOD): every candidate's
held-out test accuracy against that metric, the Pareto front joined up, the chosen candidate,
the unconstrained baseline and the current champion marked, and the policy's threshold drawn.
"""

from __future__ import annotations

import base64
import io

from fairloop.evaluate import METRIC_LABELS
from fairloop.policy import GATES, Policy
from fairloop.sweep import FRONTIER_METRICS, SweepOutcome, frontier_metrics, pareto_mask


def _threshold(policy: Policy, metric: str) -> float | None:
    for gate, threshold in policy.thresholds.model_dump().items():
        if threshold is not None and GATES[gate][0] == metric and GATES[gate][1] != "drop":
            return threshold
    return None


def frontier_png(
    points: dict[str, dict[str, float]], chosen: str | None, references: dict[str, dict[str, float]],
    policy: Policy, title: str, dpi: int = 80,
) -> bytes:
    """PNG of the frontier: ``points`` are the candidates' test metrics by name, ``references``
    those of 'baseline' and, if any, 'champion'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(points)
    metrics = frontier_metrics(policy)
    # two panels per row: the review dialog is narrow, and a wide strip would shrink to a sliver
    rows = (len(metrics) + 1) // 2
    figure, axes = plt.subplots(rows, 2, figsize=(9.5, 3.9 * rows), squeeze=False)
    for unused in axes.flat[len(metrics):]:
        unused.set_visible(False)
    accuracy = np.array([points[n]["accuracy"] for n in names])
    for axis, metric in zip(axes.flat, metrics, strict=False):
        values = np.array([points[n][metric] for n in names])
        usable = ~np.isnan(values)
        axis.scatter(values[usable], accuracy[usable], color="tab:blue", alpha=0.7, label="candidate")
        front = np.flatnonzero(usable)[pareto_mask(accuracy[usable], values[usable], FRONTIER_METRICS[metric])]
        order = front[np.argsort(values[front])]
        axis.plot(values[order], accuracy[order], color="tab:blue", linewidth=1.5, label="Pareto front")
        for i in front:  # numbers, not names: names overlap; the candidates table has the same numbers
            label = names[i] if len(names) == 1 else str(i + 1)
            axis.annotate(label, (values[i], accuracy[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if chosen is not None:
            axis.scatter([points[chosen][metric]], [points[chosen]["accuracy"]], s=160, facecolors="none",
                         edgecolors="tab:green", linewidths=2, label="chosen")
        for name, marker, colour, label in (("baseline", "s", "tab:red", "unconstrained baseline"),
                                            ("champion", "*", "tab:orange", "current champion")):
            if name in references:
                axis.scatter([references[name][metric]], [references[name]["accuracy"]], marker=marker, s=90,
                             color=colour, label=label)
        threshold = _threshold(policy, metric)
        if threshold is not None:
            axis.axvline(threshold, color="grey", linestyle="--", linewidth=1, label="policy threshold")
        fairer = "higher" if FRONTIER_METRICS[metric] else "lower"
        axis.set(xlabel=f"{METRIC_LABELS.get(metric, metric)} ({fairer} is fairer)", ylabel="accuracy (test)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def image_markdown(png: bytes, alt: str = "accuracy-fairness frontier") -> str:
    """The PNG inline (a data URI), so the review form and artifacts show it with no file server."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def candidates_table(outcome: SweepOutcome) -> list[dict]:
    """One row per candidate (for the Prefect table artifact and the report)."""
    rows = []
    for number, c in enumerate(outcome.candidates, start=1):
        rows.append({
            "#": number, "candidate": c.name + (" (chosen)" if c.name == outcome.chosen else ""),
            "recipe": c.recipe, "template": c.template, "method": c.method, "constraint": c.constraint or "",
            "bound": c.bound, "learner": c.learner,
            "sensitive at predict": "yes" if c.needs_sensitive_at_predict else "no",
            "val accuracy": round(c.validation["accuracy"], 4),
            "val DPD": round(c.validation["demographic_parity_difference"], 4),
            "val EOD": round(c.validation["equalized_odds_difference"], 4),
            "test accuracy": round(c.test["accuracy"], 4), "test AUC": round(c.test["auc"], 4),
            "test DPD": round(c.test["demographic_parity_difference"], 4),
            "test EOD": round(c.test["equalized_odds_difference"], 4),
            "test DI": round(c.test["disparate_impact_ratio"], 4),
            "gates (validation)": "pass" if c.passed else "blocked: " + ", ".join(g.gate for g in c.gates.blocking),
            "Pareto": "yes" if c.pareto else "", "fit s": round(c.fit_seconds, 1),
        })
    return rows


def candidates_markdown(outcome: SweepOutcome) -> str:
    """A compact markdown table for the review form (the UI dialog is narrow)."""
    header = ["| # | candidate | val acc | val DPD | val EOD | test acc | test DPD | test EOD | validation gates |",
              "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    numbered = sorted(enumerate(outcome.candidates, start=1), key=lambda pair: -pair[1].validation["accuracy"])
    for number, c in numbered:
        # code spans: the UI would turn "recipe+template@0.02" into an e-mail link
        name = f"**`{c.name}`** (chosen)" if c.name == outcome.chosen else f"`{c.name}`"
        if c.needs_sensitive_at_predict:
            name += " [uses sensitive at predict]"
        verdict = "pass" if c.passed else "blocked: " + ", ".join(g.metric for g in c.gates.blocking)
        rows.append(
            f"| {number} | {name}{' *' if c.pareto else ''} | {c.validation['accuracy']:.4f} | "
            f"{c.validation['demographic_parity_difference']:.4f} | {c.validation['equalized_odds_difference']:.4f} | "
            f"{c.test['accuracy']:.4f} | {c.test['demographic_parity_difference']:.4f} | "
            f"{c.test['equalized_odds_difference']:.4f} | {verdict} |"
        )
    legend = "\\* on the Pareto front (test accuracy vs a fairness metric); # is the candidate's number in the plot."
    return "\n".join([*header, *rows, "", legend])


def frontier_report(
    policy: Policy, dataset: str, references: dict[str, dict[str, float]],
    outcome: SweepOutcome | None = None, candidate: dict[str, float] | None = None,
) -> tuple[bytes, str]:
    """The frontier PNG and the markdown section showing it: every candidate of a sweep
    ``outcome``, or the one ``candidate`` of a single run (test metrics), against the test
    metrics of the ``references`` ('baseline', 'champion')."""
    if outcome is None:
        points, chosen, title = {"candidate": candidate}, "candidate", f"{dataset}: candidate"
    else:
        points = {c.name: c.test for c in outcome.candidates}
        chosen, title = outcome.chosen, f"{dataset}: sweep '{outcome.sweep}', {len(points)} candidates"
    png = frontier_png(points, chosen, references, policy, f"{title} - accuracy vs fairness on held-out test data")
    parts = [image_markdown(png)]
    if outcome is not None:
        parts += [outcome.explanation.replace("\n", "\n\n"), candidates_markdown(outcome)]
        if outcome.skipped:
            parts.append("Skipped: " + "; ".join(f"{name} ({reason})" for name, reason in outcome.skipped))
    return png, "\n\n".join(parts)
