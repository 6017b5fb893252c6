"""The fairness report as HTML (with plots) and the model card, stored with every promoted model."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

from fairloop.evaluate import Evaluation
from fairloop.policy import GateReport


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def group_plots(evaluations: dict[str, Evaluation]) -> str:
    """Selection rate (with the candidate's bootstrap interval) and TPR by group, and
    calibration by group (mean predicted probability against the observed positive rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(evaluations["candidate"].by_group)
    x = np.arange(len(groups))
    width = 0.8 / len(evaluations)
    figure, (rates, tprs, calibration) = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (name, ev) in enumerate(evaluations.items()):
        selection = [ev.by_group[g]["selection_rate"] for g in groups]
        intervals = [ev.intervals.get(f"selection_rate[{g}]") for g in groups]
        errors = None
        if all(intervals):
            errors = np.array([[s - lo, hi - s] for s, (lo, hi) in zip(selection, intervals)]).T
        rates.bar(x + i * width, selection, width, yerr=errors, capsize=3, label=name)
        tprs.bar(x + i * width, [ev.by_group[g]["true_positive_rate"] for g in groups], width, label=name)
    candidate = evaluations["candidate"].by_group
    calibration.scatter([candidate[g]["observed_rate"] for g in groups], [candidate[g]["mean_score"] for g in groups])
    for g in groups:
        calibration.annotate(g, (candidate[g]["observed_rate"], candidate[g]["mean_score"]), fontsize=8)
    calibration.plot([0, 1], [0, 1], linestyle="--", color="grey")
    for axis, title in ((rates, "selection rate (95% interval)"), (tprs, "true positive rate")):
        axis.set_xticks(x + width * (len(evaluations) - 1) / 2, groups, rotation=20, fontsize=8)
        axis.set_title(title)
        axis.legend(fontsize=8)
    calibration.set(title="candidate calibration by group", xlabel="observed positive rate", ylabel="mean predicted probability")
    png = _png(figure)
    plt.close(figure)
    return f'<img alt="metrics by group" src="data:image/png;base64,{png}">'


def render_html(title: str, report_markdown: str, evaluations: dict[str, Evaluation]) -> str:
    import markdown

    body = markdown.markdown(report_markdown, extensions=["tables"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>"
        f"{body}<h3>Metrics by group</h3>{group_plots(evaluations)}</body></html>\n"
    )


def render_model_card(
    *, dataset: str, description: str, provenance: str, version: str, candidate_label: str, recipe_label: str,
    sensitive: list[str], evaluation: Evaluation, gates: GateReport, needs_sensitive_at_predict: bool,
    approval: dict, train_rows: int, test_rows: int, confidence: float,
) -> str:
    groups = "\n".join(
        f"| {g} | {int(m['count'])} | {m['selection_rate']:.3f} | {m['true_positive_rate']:.3f} | "
        f"{m['false_positive_rate']:.3f} | {m['mean_score']:.3f} | {m['observed_rate']:.3f} |"
        for g, m in evaluation.by_group.items()
    )
    limitations = [
        "Group fairness is measured for the declared sensitive features only; other groups are not covered.",
        f"Metrics come from {test_rows:,} held-out rows; gate intervals are {confidence:.0%} bootstrap intervals.",
        "Demographic parity and equalized odds conflict where base rates differ; see the gate table for what was enforced.",
    ]
    if needs_sensitive_at_predict:
        limitations.insert(0, "Uses the sensitive feature at prediction time (ThresholdOptimizer): disparate "
                              "treatment in many jurisdictions; legal review required before use.")
    return "\n".join([
        f"# Model card: {dataset} {version}",
        "",
        "## Intended use",
        f"Decision support for the task of the `{dataset}` dataset: {description.strip()} Not for use on populations "
        "or decisions outside that task without a new audit and gate.",
        "",
        "## Model",
        f"{candidate_label}; training data recipe: {recipe_label}. Trained on {train_rows:,} rows.",
        "",
        "## Data",
        provenance or "(no provenance recorded in the dataset spec)",
        "",
        f"## Sensitive features\n{', '.join(sensitive)} (metrics below by `{evaluation.sensitive}`)",
        "",
        "## Metrics by group (held-out test data)",
        "| group | rows | selection rate | TPR | FPR | mean score | observed rate |",
        "|---|---|---|---|---|---|---|",
        groups,
        "",
        "## Performance (held-out test data)",
        f"Accuracy {evaluation.metrics['accuracy']:.4f} vs {evaluation.metrics['majority_class_accuracy']:.4f} for always "
        f"predicting the majority class; balanced accuracy {evaluation.metrics['balanced_accuracy']:.4f}; AUC of the "
        f"underlying scorer {evaluation.metrics['auc']:.4f} (of the deployed decisions: {evaluation.metrics['decision_auc']:.4f}).",
        "",
        f"## Gates (policy `{gates.policy}`, evaluation mode `{gates.evaluation_mode}`)",
        *[f"- {r.gate}: **{r.verdict}** - {r.reason}" for r in gates.results],
        "",
        "## Limitations",
        *[f"- {item}" for item in limitations],
        "",
        "## Approval",
        f"Approved by {approval['reviewer']} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Comment: {approval['comment'] or '(none)'}",
        *([f"Accepted the risk of inconclusive gates {approval['accepted_inconclusive']['gates']}."]
          if approval.get("accepted_inconclusive") else []),
        "",
    ])
