"""The fairness report as HTML (with plots) and the model card, stored with every promoted model.

matplotlib is imported where a figure is drawn (a heavy import the CLI's other commands never need).
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timezone

import markdown
import numpy as np
from markupsafe import Markup

from fairloop.data.groups import SIMULTANEOUS_METHOD, is_intersection
from fairloop.gates.evaluate import Evaluation
from fairloop.gates.policy import GateReport
from fairloop.remedy.frozen import BaseModelSource
from fairloop.templating import MARKDOWN_EXTRA_ESCAPES, render


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def group_plots(evaluations: dict[str, Evaluation]) -> str:
    """A base64 PNG: selection rate (with the candidate's bootstrap interval) and TPR by group, and
    calibration by group (mean predicted probability against the observed positive rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return png


def render_html(title: str, report_markdown: str, evaluations: dict[str, Evaluation], *, run_id: str,
                approval: dict) -> str:
    """report.html: ``report_markdown`` (rendered from an escaping template, so it holds no raw
    HTML from data) as HTML, with the plots by group, headed by what the page records: the run,
    when it was decided, and the reviewer's decision (``approval`` as the registry stores it)."""

    converter = markdown.Markdown(extensions=["tables"])
    converter.ESCAPED_CHARS.extend(MARKDOWN_EXTRA_ESCAPES)  # md_text's escapes, as the Prefect UI reads them
    body = Markup(converter.convert(report_markdown))
    return render("report.html.j2", title=title, body=body, plots_png_base64=group_plots(evaluations), run_id=run_id,
                  approval=approval, decided_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def render_model_card(
    *, dataset: str, description: str, provenance: str, version: str, candidate_label: str, recipe_label: str,
    sensitive: list[str], evaluation: Evaluation, gates: GateReport, needs_sensitive_at_predict: bool,
    approval: dict, train_rows: int, test_rows: int, confidence: float, base_model: BaseModelSource | None = None,
) -> str:
    limitations = [
        "Group fairness is measured for the declared sensitive features only; other groups are not covered.",
        f"Metrics come from {test_rows:,} held-out rows; gate intervals are {confidence:.0%} bootstrap intervals.",
        "Demographic parity and equalized odds conflict where base rates differ; see the gate table for what was enforced.",
    ]
    if is_intersection(evaluation.sensitive):
        limitations.insert(0, f"Gated on the cells of {evaluation.sensitive.replace(':', ' x ')} (worst cells first "
                              f"in the report) with {SIMULTANEOUS_METHOD}; cells below the group floors are listed "
                              "below and do not count.")
    if base_model is not None:
        limitations.insert(0, "The base model was not retrained: any bias in it that the post-processing does not "
                              "reach (features other than the sensitive one and its flagged proxies) remains.")
    if needs_sensitive_at_predict:
        limitations.insert(0, "Uses the sensitive feature at prediction time (ThresholdOptimizer): disparate "
                              "treatment in many jurisdictions; legal review required before use.")
    return render(
        "model_card.md.j2", dataset=dataset, description=" ".join(description.split()), provenance=provenance,
        version=version, candidate_label=candidate_label, recipe_label=recipe_label, sensitive=sensitive,
        evaluation=evaluation, gates=gates, limitations=limitations, approval=approval, train_rows=train_rows,
        approved_at=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", base_model=base_model,
    )
