"""Stored HTML injection: data values (group names, column names, category values, audit
findings) reach the reviewer's browser only as text.

A generated dataset with hostile names goes through a real remediation run (real audit, fit,
gates, pause for review on the session's Prefect server), is approved and promoted into a real
registry; then the review form's description, every artifact of the run, report.md,
report.html and the model card are read back. None may hold the raw markup, and report.html
(parsed) may hold no element or attribute the data asked for.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BackgroundRun, write_policy
from fairloop.serving.outcomes import Outcome
from fairloop.registry.store import Registry
from fairloop.serving.runs import read_flow_run, submit_review
from fairloop.templating import md_text

HOSTILE_GROUP = "<img src=x onerror=alert(1)>"
OTHER_GROUP = "a|b *c* [x](javascript:alert(4))"
HOSTILE_COLUMN = "<svg onload=alert(2)>"
HOSTILE_CATEGORY = "<script>alert(3)</script>"
RAW_HTML = [HOSTILE_GROUP, HOSTILE_COLUMN, HOSTILE_CATEGORY, "<img", "<svg", "<script"]
RAW_MARKDOWN = "[x](javascript:alert(4))"  # a link in Markdown; harmless text once in HTML
# what the generated report pages may contain; anything else came from data
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "strong", "em", "table", "thead",
             "tbody", "tr", "th", "td", "ul", "li", "img", "blockquote", "a", "code", "hr"}


def hostile_dataset(directory) -> str:
    """2,000 rows: a sensitive column whose groups are named with markup, a categorical column
    named with markup whose values are markup too (and a proxy of the group, so the audit's
    findings name it), and a useful numeric feature."""
    rng = np.random.default_rng(0)
    n = 2000
    group = rng.choice([HOSTILE_GROUP, OTHER_GROUP], size=n, p=[0.6, 0.4])
    minority = group == OTHER_GROUP
    score = rng.normal(size=n) + 0.6 * ~minority
    label = (score + rng.normal(scale=0.8, size=n) > 0.3).astype(int)
    proxy = np.where(minority ^ (rng.random(n) < 0.1), HOSTILE_CATEGORY, "plain")
    frame = pd.DataFrame({"score": score.round(3), HOSTILE_COLUMN: proxy, "grp": group, "y": label})
    frame.to_csv(directory / "hostile.csv", index=False)
    spec = {
        "name": "hostile", "version": 1, "description": "Generated data with markup in its names.",
        "files": [{"path": "hostile.csv", "role": "all"}],
        "label": {"column": "y", "positive": [1], "negative": [0]},
        "sensitive": [{"name": "grp", "column": "grp"}],
        "features": {"numeric": ["score"], "categorical": [HOSTILE_COLUMN]},
    }
    path = directory / "hostile.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_safe_page(where: str, page: str) -> None:
    parser = Elements()
    parser.feed(page)
    assert {tag for tag, _ in parser.tags} <= PAGE_TAGS, where
    assert not [attrs for _, attrs in parser.tags if any(name.startswith("on") for name in attrs)], where
    assert all(attrs.get("src", "").startswith("data:image/png;base64,") for tag, attrs in parser.tags if tag == "img"), where
    assert all(attrs.get("href", "").startswith("http") for tag, attrs in parser.tags if tag == "a"), where


def assert_inert(where: str, text: str) -> None:
    """No raw markup in ``text``, and rendered as Markdown it makes no element the data asked for."""
    import markdown

    for raw in [*RAW_HTML, RAW_MARKDOWN]:
        assert raw not in text, f"{where} holds the raw markup {raw!r}"
    assert_safe_page(where, markdown.markdown(text, extensions=["tables"]))


def read_artifacts(run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {f"{a.type}:{a.key}:{a.id}": a.data if isinstance(a.data, str) else json.dumps(a.data) for a in artifacts}


def form_description(run) -> str:
    from prefect.input import keyset_from_paused_state
    from prefect.input.actions import read_flow_run_input

    return read_flow_run_input(keyset_from_paused_state(run.state)["description"], flow_run_id=run.id)


def test_md_text_keeps_values_literal():
    assert md_text(HOSTILE_GROUP) == "&lt;img src=x onerror=alert(1)&gt;"
    assert md_text("a|b\n*c*") == r"a\|b \*c\*"
    assert md_text("[x](javascript:alert(4))") == r"\[x\](javascript:alert(4))"
    assert md_text("none+eg-dp@0.02") == r"none+eg-dp\@0.02"  # an entity would show literally in the Prefect UI


@pytest.mark.slow
def test_hostile_names_reach_no_report_form_or_artifact_as_markup(prefect_server, remediation_flow, registry_dir, tmp_path):
    dataset = hostile_dataset(tmp_path)
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.9, max_accuracy_drop_vs_baseline=0.5)
    run = BackgroundRun(remediation_flow, dataset=dataset, recipe="recipes/oversample-base-rates.yaml",
                        constraint="constraints/unconstrained.yaml", policy=str(policy), requested_by="pytest",
                        review_poll_seconds=1)
    paused = run.wait_paused(timeout=600)  # generous: the suite must pass on a busy machine
    description = form_description(read_flow_run(paused.id))
    assert "What changes for whom" in description
    assert "&lt;img src=x onerror=alert(1)&gt;" in description  # the group is named, as text
    assert_inert("the review form", description)
    submit_review(paused.id, {"approve": True, "reviewer": "alice", "comment": f"fine {HOSTILE_CATEGORY}"})
    state = run.finish(timeout=600)
    assert state.name == Outcome.PROMOTED.value, state.message

    artifacts = read_artifacts(paused.id)
    assert {key.split(":")[1] for key in artifacts} >= {"audit-report", "remediation-report", "frontier", "model-card"}
    for key, text in artifacts.items():
        if not key.startswith("table:"):  # table cells are JSON data the UI shows as text
            assert_inert(f"artifact {key}", text)
    folder = Registry(registry_dir).root / "hostile"
    for name in ("report.md", "model_card.md"):
        assert_inert(name, (folder / name).read_text())
    page = (folder / "report.html").read_text()
    assert not [raw for raw in (HOSTILE_GROUP, HOSTILE_COLUMN, HOSTILE_CATEGORY) if raw in page]
    assert_safe_page("report.html", page)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # shown as text
