"""The data audit on the bundled real data (Adult, COMPAS, German): every verdict path, the
findings the audit must make (Adult's proxies of sex, its small race x sex cells), and every
kind of bad input, each refused with a message naming file, column and value, or turned into
an audit finding, with no traceback and nothing written. On generated data: a disparity only a
declared intersection shows, label leaks (and an identifier that is none), a thresholded label
from spec to fit."""

from __future__ import annotations

import functools
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT
from synthetic import write_dataset, write_wages
from typer.testing import CliRunner

from fairloop.audit.checks import run_audit
from fairloop.audit.report import publish_artifacts, render_markdown
from fairloop.audit.schema import learn_reference
from fairloop.cli import app
from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import load_data_file, load_dataset
from fairloop.data.rows import Split
from fairloop.errors import BadInputError
from fairloop.serving.outcomes import ExitCode

DATASETS = PROJECT / "datasets"
COMPAS_FILE = DATASETS / "data" / "compas" / "compas-scores-two-years.csv.gz"
GERMAN_FILE = DATASETS / "data" / "german" / "german.data.gz"


@functools.cache
def loaded(name: str):
    return load_dataset(DATASETS / f"{name}.yaml")


@functools.cache
def compas_raw() -> pd.DataFrame:
    return pd.read_csv(COMPAS_FILE)


def german_lines() -> list[str]:
    with gzip.open(GERMAN_FILE, "rt") as handle:
        return handle.read().splitlines()


def spec_copy(tmp_path: Path, name: str, mutate=lambda spec: None) -> Path:
    """The shipped spec NAME with absolute file paths, changed by ``mutate``, written to tmp_path."""
    spec = yaml.safe_load((DATASETS / f"{name}.yaml").read_text())
    for source in spec["files"]:
        source["path"] = str(DATASETS / source["path"])
    mutate(spec)
    path = tmp_path / f"{name}-variant.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def audit(name_or_spec, split: Split | None = None, tmp_path: Path | None = None, **kwargs):
    """run_audit on a shipped dataset's rows, with a throw-away GX directory."""
    loaded_dataset = loaded(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    split = split if split is not None else loaded_dataset.all_rows()
    return run_audit(loaded_dataset.spec, split, gx_root=tmp_path / "gx", **kwargs)


def by_check(report, check: str):
    return [f for f in report.findings if f.check == check]


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


runner = CliRunner()


def cli(*args: str):
    """The CLI in this process; anything but a clean exit (an uncaught exception) fails the test."""
    result = runner.invoke(app, list(args))
    assert isinstance(result.exception, SystemExit | None), result.exception
    assert "Traceback" not in result.output + result.stderr
    return result


# -------------------------------------------------------------------------------------------
# Verdicts on the real data


def test_german_passes_with_its_groups_and_no_proxy(tmp_path):
    report = audit("german", tmp_path=tmp_path)
    assert report.verdict == "pass", report.reasons
    assert report.reasons == []
    assert {(g.group, g.rows) for g in report.groups} == {("female", 310), ("male", 690)}
    assert abs(report.base_rate_gap - (0.723 - 0.648)) < 0.002
    assert all(not p.flagged for p in report.proxies)
    assert report.proxies[0].feature == "age" and 0.6 < report.proxies[0].auc < 0.7
    assert report.intersection is None  # one sensitive feature declared
    assert all(e.success for e in report.expectations) and len(report.expectations) > 40


def test_adult_warns_on_proxies_of_sex_small_race_x_sex_cells_and_base_rates(tmp_path):
    report = audit("adult", tmp_path=tmp_path)
    assert report.verdict == "warn"
    assert not [f for f in report.findings if f.severity == "block"]

    sex_proxies = report.top_proxies("sex", 11)
    flagged = [p.feature for p in sex_proxies if p.flagged]
    assert flagged[0] == "relationship" and "marital-status" in flagged, sex_proxies
    assert sex_proxies[0].auc > 0.8 and sex_proxies[0].nmi > 0.2
    (proxy,) = by_check(report, "proxy")
    assert "relationship" in proxy.message and "marital-status" in proxy.message
    assert "seeded sample of 10,000 of 48,842 rows" in proxy.message
    assert not any(p.flagged for p in report.proxies if p.sensitive == "race")

    small = {(c.group, c.label, c.rows) for c in report.intersection.small_cells}
    assert {group for group, label, _ in small} >= {"sex=Female & race=Other", "sex=Female & race=Amer-Indian-Eskimo"}
    assert all(rows < 30 and label == 1 for _, label, rows in small)
    (cells,) = [f for f in by_check(report, "small-cells") if "intersection" in f.message]
    assert "sex=Female & race=Other & label=1" in cells.message

    gaps = {f.column: f for f in by_check(report, "base-rate-gap")}
    assert set(gaps) == {"sex", "race"}
    female, male = sorted(report.groups, key=lambda g: g.group)
    assert (female.rows, male.rows) == (16192, 32650)
    assert female.base_rate_ci_low < female.base_rate < female.base_rate_ci_high < male.base_rate_ci_low


def test_compas_warns_on_the_base_rate_gap_only(tmp_path):
    report = audit("compas", tmp_path=tmp_path)
    assert report.verdict == "warn"
    assert {f.check for f in report.findings if f.severity == "warn"} == {"base-rate-gap"}
    (race,) = [f for f in by_check(report, "base-rate-gap") if f.column == "race"]
    assert "Caucasian vs African-American base rates 0.391 vs 0.523 (ratio 0.747)" in race.message
    assert report.intersection.name == "race x sex" and not report.intersection.small_cells
    assert max(p.auc for p in report.proxies) < 0.7


def test_compas_restricted_to_one_race_blocks(tmp_path):
    spec = spec_copy(tmp_path, "compas", lambda s: s["filters"][-1].update({"in": ["African-American"]}))
    report = audit(load_dataset(spec), tmp_path=tmp_path, source="compas-one-race")
    assert report.verdict == "block"
    (single,) = [f for f in report.findings if f.check == "sensitive-two-groups"]
    assert single.severity == "block" and single.value == "African-American" and single.column == "sensitive.race"
    assert report.reasons[0].startswith("compas-one-race: sensitive 'race' (column 'race'): every row is in group 'African-American'")
    assert report.proxies and all(p.sensitive == "sex" for p in report.proxies)  # nothing to predict for race


def test_a_spec_expectation_the_real_data_breaks_blocks_and_names_column_and_values(tmp_path):
    def require_age_up_to_70(spec):
        spec["audit"] = {"expectations": [{"type": "expect_column_values_to_be_between",
                                           "kwargs": {"column": "age", "min_value": 19, "max_value": 70}}]}

    report = audit(load_dataset(spec_copy(tmp_path, "german", require_age_up_to_70)), tmp_path=tmp_path)
    assert report.verdict == "block"
    (finding,) = [f for f in report.findings if f.severity == "block"]
    assert finding.check == "audit.expectations[0]" and finding.column == "age"
    assert "unexpected value(s)" in finding.message and "75" in finding.message  # German's oldest applicant


def test_the_same_expectation_as_a_warning_only_warns(tmp_path):
    def warn_on_age(spec):
        spec["audit"] = {"expectations": [{"type": "expect_column_values_to_be_between", "severity": "warn",
                                           "kwargs": {"column": "age", "min_value": 19, "max_value": 70}}]}

    report = audit(load_dataset(spec_copy(tmp_path, "german", warn_on_age)), tmp_path=tmp_path)
    assert report.verdict == "warn" and [f.check for f in report.findings if f.severity != "info"] == ["audit.expectations[0]"]


def test_thresholds_come_from_the_spec(tmp_path):
    """A lower proxy threshold and a smaller cell minimum change what German's audit says."""
    def stricter(spec):
        spec["audit"] = {"proxy_auc_threshold": 0.6, "min_cell_rows": 200, "base_rate_gap_warn": 0.05}

    report = audit(load_dataset(spec_copy(tmp_path, "german", stricter)), tmp_path=tmp_path)
    assert report.verdict == "warn"
    flagged = {p.feature: p.auc for p in report.proxies if p.flagged}
    assert {"age", "employment_since"} <= set(flagged) and min(flagged.values()) >= 0.6
    assert {c.group for c in report.cells if c.too_small} == {"female", "male"}  # female bad 109, male bad 191
    # German's 0.075 gap exceeds 0.05 but is not significant at 1 % on 1,000 rows (chi-square p = 0.02)
    assert report.sensitive_features[0].chi2_pvalue > 0.01 and not by_check(report, "base-rate-gap")


def test_proxies_use_a_seeded_sample_and_the_record_is_deterministic(tmp_path):
    def small_sample(spec):
        spec["audit"] = {"proxy_sample_rows": 2000}

    dataset = load_dataset(spec_copy(tmp_path, "adult", small_sample))
    subsample = dataset.all_rows().take(np.arange(0, 48842, 4))
    first, second = (audit(dataset, subsample, tmp_path=tmp_path) for _ in range(2))
    assert first.proxy_sample_rows == 2000
    assert "seeded sample of 2,000 of 12,211 rows" in by_check(first, "proxy")[0].message
    assert first.model_dump_json() == second.model_dump_json()


def test_missing_sensitive_values_form_an_explicit_group_counted_in_the_audit(tmp_path):
    raw = compas_raw().head(1500).copy()
    raw.loc[raw.index[:40], "race"] = np.nan
    data = tmp_path / "compas-missing-race.csv"
    raw.to_csv(data, index=False)

    spec_fail = spec_copy(tmp_path, "compas")
    with pytest.raises(BadInputError, match=r"compas-missing-race.csv: sensitive column 'race' has 40 empty value\(s\) \(first at data row 1\)"):
        load_data_file(spec_fail, data)

    spec_group = spec_copy(tmp_path, "compas", lambda s: s["sensitive"][0].update(missing="group"))
    spec, split = load_data_file(spec_group, data)
    kept = int((split.groups["race"] == "missing").sum())
    assert 0 < kept <= 40  # the row filters on other columns may drop some; the race filter keeps them all
    report = run_audit(spec, split, gx_root=tmp_path / "gx", source=str(data))
    (finding,) = by_check(report, "missing-sensitive")
    assert f"{kept} row(s) have no value" in finding.message and finding.column == "race"
    assert report.sensitive_features[0].missing_rows == kept
    assert "missing" in {g.group for g in report.groups}


# -------------------------------------------------------------------------------------------
# Reference snapshot, file-backed GX context, CLI


def test_cli_learns_the_reference_suite_then_flags_unseen_categories_in_a_new_snapshot(tmp_path):
    gx_dir = tmp_path / "gx"
    spec = spec_copy(tmp_path, "compas")
    first = cli("audit", "--dataset", str(spec), "--gx-dir", str(gx_dir), "--output", str(tmp_path / "record.json"))
    assert first.exit_code == 0, first.output + first.stderr
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["verdict"] == "warn" and record == json.loads(first.stdout)
    suite_file = gx_dir / "expectations" / "compas.json"
    suite = json.loads(suite_file.read_text())
    charge = [e for e in suite["expectations"] if e["kwargs"].get("column") == "c_charge_degree" and e["meta"]["check"] == "reference-categories"]
    assert charge[0]["kwargs"]["value_set"] == ["F", "M"]
    assert (gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    assert record["data_docs"].endswith("index.html")

    snapshot = compas_raw().head(2000).copy()
    snapshot.loc[snapshot.index[:25], "c_charge_degree"] = "X"  # a charge degree the reference never saw
    data = tmp_path / "snapshot.csv"
    snapshot.to_csv(data, index=False)
    before = suite_file.read_bytes()
    second = cli("audit", "--dataset", str(spec), "--data", str(data), "--gx-dir", str(gx_dir))
    assert second.exit_code == 0, second.stderr
    report = json.loads(second.stdout)
    (unseen,) = [f for f in report["findings"] if f["check"] == "reference-categories"]
    assert unseen["column"] == "c_charge_degree" and unseen["value"] == "X" and "'X' (" in unseen["message"]
    assert report["reasons"][0].startswith(str(data))
    assert suite_file.read_bytes() == before  # the reference is the committed suite, not the new snapshot


def test_first_audit_of_a_snapshot_learns_the_reference_from_the_specs_own_files(tmp_path):
    snapshot = compas_raw().head(2000).copy()
    snapshot.loc[snapshot.index[:25], "c_charge_degree"] = "X"
    data = write_compas(tmp_path, snapshot, "snapshot.csv")
    result = cli("audit", "--dataset", str(spec_copy(tmp_path, "compas")), "--data", str(data), "--gx-dir", str(tmp_path / "gx"))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["reference"].endswith("compas-scores-two-years.csv.gz (5,278 rows)")
    assert [f["value"] for f in report["findings"] if f["check"] == "reference-categories"] == ["X"]


def test_update_reference_relearns_the_suite_when_the_specs_own_data_changes(tmp_path):
    own = write_compas(tmp_path, compas_raw(), "own.csv")
    spec = spec_copy(tmp_path, "compas", lambda s: s["files"][0].update(path=str(own)))
    gx_dir = tmp_path / "gx"
    assert cli("audit", "--dataset", str(spec), "--gx-dir", str(gx_dir)).exit_code == 0
    suite_file = gx_dir / "expectations" / "compas.json"
    learned = suite_file.read_bytes()

    write_compas(tmp_path, compas_raw().assign(age_cat=lambda f: f.age_cat.replace("Less than 25", "Under 25")), "own.csv")
    stale = json.loads(cli("audit", "--dataset", str(spec), "--gx-dir", str(gx_dir)).stdout)
    assert [f["value"] for f in stale["findings"] if f["check"] == "reference-categories"] == ["Under 25"]
    assert suite_file.read_bytes() == learned

    relearned = json.loads(cli("audit", "--dataset", str(spec), "--gx-dir", str(gx_dir), "--update-reference").stdout)
    assert not [f for f in relearned["findings"] if f["check"] == "reference-categories"]
    assert b'"Under 25"' in suite_file.read_bytes()


def test_a_feature_added_to_the_spec_after_the_suite_was_stored_is_learned_and_said_so(tmp_path):
    without_housing = spec_copy(tmp_path, "german", lambda s: s["features"]["categorical"].remove("housing"))
    assert cli("audit", "--dataset", str(without_housing), "--gx-dir", str(tmp_path / "gx")).exit_code == 0
    report = audit("german", tmp_path=tmp_path)  # the shipped spec, which has housing
    (info,) = by_check(report, "reference")
    assert info.severity == "info" and "no category set or range for ['housing']" in info.message
    assert report.verdict == "pass" and any(e.column == "housing" and e.check == "reference-categories" for e in report.expectations)


def test_cli_exit_codes_pass_and_block(tmp_path):
    passed = cli("audit", "--dataset", str(spec_copy(tmp_path, "german")), "--gx-dir", str(tmp_path / "gx"))
    assert passed.exit_code == 0 and json.loads(passed.stdout)["verdict"] == "pass"
    one_race = spec_copy(tmp_path, "compas", lambda s: s["filters"][-1].update({"in": ["Caucasian"]}))
    blocked = cli("audit", "--dataset", str(one_race), "--gx-dir", str(tmp_path / "gx"))
    assert blocked.exit_code == ExitCode.AUDIT_BLOCKED
    assert "every row is in group 'Caucasian'" in flat(blocked.stderr)


def test_cli_as_a_ci_step_in_a_real_process(tmp_path):
    """The installed command, as CI runs it: JSON on stdout, exit 6 on block."""
    spec = spec_copy(tmp_path, "german", lambda s: s.update(filters=[{"column": "class", "in": [1]}]))
    result = subprocess.run(
        [sys.executable, "-m", "fairloop", "audit", "--dataset", str(spec), "--gx-dir", str(tmp_path / "gx")],
        capture_output=True, text=True, timeout=120, cwd=PROJECT,
    )
    assert result.returncode == ExitCode.AUDIT_BLOCKED, result.stderr
    assert "Traceback" not in result.stderr
    assert "every row has label 1 (raw values [1])" in flat(result.stderr)
    assert json.loads(result.stdout)["verdict"] == "block"


def test_repeated_audits_leave_the_committed_gx_files_unchanged(tmp_path):
    spec = spec_copy(tmp_path, "german")
    assert cli("audit", "--dataset", str(spec), "--gx-dir", str(tmp_path / "gx")).exit_code == 0
    committed = {p: p.read_bytes() for p in (tmp_path / "gx").rglob("*") if p.is_file() and "uncommitted" not in p.parts}
    assert cli("audit", "--dataset", str(spec), "--gx-dir", str(tmp_path / "gx")).exit_code == 0
    assert {p: p.read_bytes() for p in committed} == committed


def test_the_shipped_suites_match_what_the_specs_and_data_give():
    """gx/expectations/*.json are committed: re-learning them from the bundled data changes nothing."""
    from fairloop.audit.schema import GxProject, _suite_content, build_suite

    project = GxProject(PROJECT / "gx")
    for name in ("adult", "compas", "german"):
        dataset = loaded(name)
        files = ", ".join(str(Path("datasets") / f.path) for f in dataset.spec.files)
        expected = build_suite(dataset.spec, learn_reference(dataset.spec, dataset.all_rows(), files))
        assert _suite_content(project.stored_suite(name)) == _suite_content(expected), (
            f"gx/expectations/{name}.json is stale: run `fairloop audit --dataset datasets/{name}.yaml "
            "--update-reference` and commit gx/")


def test_markdown_for_the_reviewer_lists_findings_cells_and_proxies(tmp_path):
    report = audit("adult", loaded("adult").all_rows().take(np.arange(0, 48842, 2)), tmp_path=tmp_path)
    text = render_markdown(report)
    assert "## Data audit of `adult`: **WARN**" in text
    assert "| sex | relationship |" in text and "### Intersection sex x race" in text
    assert "| Female | 8," in text  # rows per group with thousands separators


def test_the_audit_publishes_its_artifacts_on_a_prefect_run(prefect_server, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    @flow
    def audit_german():
        from prefect.runtime import flow_run

        report = audit("german", tmp_path=tmp_path)
        publish_artifacts(report)
        return report.verdict, flow_run.id

    verdict, run_id = audit_german()
    assert verdict == "pass"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {"audit-report", "audit-cells", "audit-proxies", "audit-leaks"}
    assert "Data audit of `german`: **PASS**" in by_key["audit-report"].data
    assert by_key["audit-proxies"].type == by_key["audit-leaks"].type == "table"


# -------------------------------------------------------------------------------------------
# Bad input: files


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_compas(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv", **to_csv) -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False, **to_csv)
    return path


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (lambda d: d / "nowhere.csv", ["nowhere.csv", "data file not found"]),
        (lambda d: write_compas(d, compas_raw().head(300), sep=";"),
         ["bad.csv", "looks ';'-separated: set format.separator to ';' (it is ',')"]),
        (lambda d: write_compas(d, compas_raw().head(300), header=False),
         ["bad.csv", "first line looks like data, not a header", "format.header: false"]),
        (lambda d: write_compas(d, compas_raw().head(300).drop(columns="two_year_recid")),
         ["bad.csv", "['two_year_recid']", "label.column"]),
        (lambda d: write_compas(d, compas_raw().head(300).drop(columns="race")),
         ["bad.csv", "['race']", "sensitive[].column"]),
        (lambda d: write_compas(d, compas_raw().head(300).assign(two_year_recid=lambda f: f.two_year_recid.where(f.index % 50 > 0))),
         ["bad.csv", "label column 'two_year_recid' has", "empty value(s)"]),
        (lambda d: write_compas(d, compas_raw().head(300).assign(two_year_recid=lambda f: f.two_year_recid + (f.index % 7 == 0) * 2)),
         ["bad.csv", "'two_year_recid'", "['2', '3']", "label.positive [1]", "label.negative [0]"]),
        (lambda d: write_compas(d, compas_raw().head(300).assign(priors_count=lambda f: f.priors_count.astype(str).where(f.index % 10 != 3, "several"))),
         ["bad.csv", "numeric feature 'priors_count'", "'several'"]),
        (lambda d: empty_file(d / "empty.csv"), ["empty.csv", "file is empty"]),
        (lambda d: write_compas(d, compas_raw().head(0)), ["bad.csv", "header but no data rows"]),
    ],
    ids=["missing-file", "wrong-separator", "header-missing", "label-absent", "sensitive-absent", "nan-labels",
         "label-more-than-two-values", "text-in-numeric", "empty-file", "header-only"],
)
def test_bad_compas_snapshot_is_refused_naming_file_column_value_and_writes_nothing(tmp_path, make_file, expected):
    data = make_file(tmp_path)
    spec = spec_copy(tmp_path, "compas")
    gx_dir, output = tmp_path / "gx", tmp_path / "record.json"
    result = cli("audit", "--dataset", str(spec), "--data", str(data), "--gx-dir", str(gx_dir), "--output", str(output))
    assert result.exit_code == ExitCode.BAD_INPUT, result.output + result.stderr
    message = flat(result.stderr)
    for fragment in expected:
        assert fragment in message, message
    assert not gx_dir.exists() and not output.exists()


def test_duplicated_column_the_spec_uses_is_refused_when_the_copies_differ(tmp_path):
    raw = compas_raw().head(300)
    data = tmp_path / "duplicated.csv"
    pd.concat([raw, pd.DataFrame({"age": 30}, index=raw.index)], axis=1).to_csv(data, index=False)
    assert data.read_text().splitlines()[0].split(",").count("age") == 2
    with pytest.raises(BadInputError, match=r"duplicated.csv: column 'age' appears 2 times in the header.*differ in \d+ row"):
        load_data_file(spec_copy(tmp_path, "compas"), data)
    # COMPAS itself repeats priors_count and decile_score with identical copies: accepted
    assert len(load_data_file(spec_copy(tmp_path, "compas"), COMPAS_FILE)[1]) == 5278


def test_german_with_a_header_line_its_spec_does_not_expect_is_refused(tmp_path):
    spec = load_dataset_spec(DATASETS / "german.yaml")
    data = tmp_path / "german-with-header.txt"
    data.write_text("\n".join([" ".join(spec.format.columns), *german_lines()[:200]]) + "\n")
    with pytest.raises(BadInputError, match=r"german-with-header.txt: the first line repeats the column names"):
        load_data_file(spec_copy(tmp_path, "german"), data)


def test_latin1_file_read_as_utf8_names_the_encoding_field(tmp_path):
    raw = compas_raw().head(300).assign(c_charge_desc="Batterie sur policier armé")
    data = tmp_path / "latin1.csv"
    raw.to_csv(data, index=False, encoding="latin-1")
    with pytest.raises(BadInputError, match=r"latin1.csv: not utf-8 text \(spec field format.encoding = 'utf-8'\)"):
        load_data_file(spec_copy(tmp_path, "compas"), data)


def test_quoted_unicode_csv_with_a_bom_parses_and_unseen_values_are_named_exactly(tmp_path):
    raw = compas_raw().head(1500).copy()
    raw["age_cat"] = raw["age_cat"].where(raw.index % 10 > 0, "Moins de 25, Zürich «test»")
    data = tmp_path / "quoted.csv"
    raw.to_csv(data, index=False, encoding="utf-8-sig")  # BOM first, quoted fields with commas
    assert data.read_bytes().startswith(b"\xef\xbb\xbf") and b'"Moins de 25, Z\xc3\xbcrich' in data.read_bytes()
    spec_path = spec_copy(tmp_path, "compas")
    spec, split = load_data_file(spec_path, data)
    assert "Moins de 25, Zürich «test»" in set(split.X["age_cat"])
    reference = learn_reference(spec, loaded("compas").all_rows(), "compas")
    report = run_audit(spec, split, reference=reference, gx_root=tmp_path / "gx", source=str(data))
    (unseen,) = by_check(report, "reference-categories")
    assert unseen.value == "Moins de 25, Zürich «test»" and unseen.column == "age_cat"
    assert report.verdict == "warn"


# -------------------------------------------------------------------------------------------
# Bad input that the data parses into: audit findings


def test_every_row_in_one_group_blocks_naming_the_group(tmp_path):
    german = loaded("german").all_rows()
    males = german.take(np.flatnonzero(german.groups["sex"].to_numpy() == "male"))
    report = audit("german", males, tmp_path=tmp_path, source="german-males.txt")
    assert report.verdict == "block"
    assert report.reasons[0] == ("german-males.txt: sensitive 'sex' (column 'personal_status'): every row is in group "
                                 "'male'; fairness needs two or more groups to compare")


def test_every_row_one_label_blocks_naming_the_raw_values(tmp_path):
    german = loaded("german").all_rows()
    bad_credit = german.take(np.flatnonzero(german.y.to_numpy() == 0))
    report = audit("german", bad_credit, tmp_path=tmp_path)
    assert report.verdict == "block"
    (finding,) = [f for f in report.findings if f.severity == "block"]
    assert finding.check == "label-both-classes" and finding.value == "0"
    assert "every row has label 0 (raw values [2])" in finding.message


def test_label_with_one_raw_value_and_no_negative_mapping_blocks(tmp_path):
    """label.negative omitted (no mapping) and the file has only the positive value."""
    spec = spec_copy(tmp_path, "german", lambda s: s["label"].pop("negative"))
    data = tmp_path / "good-only.txt"
    data.write_text("\n".join(line for line in german_lines() if line.endswith(" 1")) + "\n")
    spec_model, split = load_data_file(spec, data)
    report = run_audit(spec_model, split, gx_root=tmp_path / "gx", source=str(data))
    assert report.verdict == "block" and "every row has label 1 (raw values [1])" in report.reasons[0]


def test_label_with_three_raw_values_and_no_negative_mapping_is_refused(tmp_path):
    spec = spec_copy(tmp_path, "german", lambda s: s["label"].pop("negative"))
    lines = german_lines()
    lines[5] = lines[5][:-1] + "3"
    data = tmp_path / "three-labels.txt"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=r"three-labels.txt: label column 'class' has more than two values \(\['2', '3'\]"):
        load_data_file(spec, data)


def test_a_column_with_100000_distinct_categories_blocks(tmp_path):
    adult = loaded("adult").all_rows()
    rows = adult.take(np.random.default_rng(0).integers(0, len(adult), 100_000))
    ids = pd.Series([f"person-{k:06d}" for k in range(100_000)], dtype="str")
    wide = Split(X=rows.X.assign(occupation=ids), y=rows.y, groups=rows.groups)
    report = audit("adult", wide, tmp_path=tmp_path, source="adult-with-ids.csv")
    assert report.verdict == "block"
    (finding,) = [f for f in report.findings if f.severity == "block"]
    assert finding.check == "category-count" and finding.column == "occupation" and finding.value == "100000"
    assert report.reasons[0].startswith("adult-with-ids.csv: categorical feature 'occupation' has 100000 distinct values")
    occupation = next(p for p in report.proxies if p.sensitive == "sex" and p.feature == "occupation")
    assert occupation.nmi is None and not occupation.flagged  # an identifier predicts nothing out of fold


# -------------------------------------------------------------------------------------------
# Bad input: the audit section of a spec


@pytest.mark.parametrize(
    ("audit_section", "expected"),
    [
        ({"not_null": ["no_such_column"]}, r"german-variant.yaml: .*audit.not_null\[0\]: unknown column 'no_such_column'"),
        ({"expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "agee"}}]},
         r"audit.expectations\[0\].kwargs.column: unknown column 'agee'"),
        ({"min_cell_rows": 0}, r"field 'audit.min_cell_rows'"),
        ({"proxy_threshold": 0.8}, r"field 'audit.proxy_threshold': Extra inputs are not permitted"),
    ],
    ids=["not-null-unknown-column", "expectation-unknown-column", "min-cell-rows-zero", "misspelled-field"],
)
def test_bad_audit_section_is_refused_at_load_naming_the_field(tmp_path, audit_section, expected):
    spec = spec_copy(tmp_path, "german", lambda s: s.update(audit=audit_section))
    with pytest.raises(BadInputError, match=expected):
        load_dataset_spec(spec)


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ({"type": "expect_column_values_to_be_pretty", "kwargs": {"column": "age"}},
         r"audit.expectations\[0\].type: unknown Great Expectations type 'expect_column_values_to_be_pretty'"),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"column": "age", "min_value": "young"}},
         r"audit.expectations\[0\].kwargs: expect_column_values_to_be_between does not accept .*'young'"),
    ],
    ids=["unknown-type", "bad-kwargs"],
)
def test_bad_spec_expectation_is_bad_input_and_writes_nothing(tmp_path, expectation, expected):
    spec = spec_copy(tmp_path, "german", lambda s: s.update(audit={"expectations": [expectation]}))
    with pytest.raises(BadInputError, match=expected):
        audit(load_dataset(spec), tmp_path=tmp_path)
    result = cli("audit", "--dataset", str(spec), "--gx-dir", str(tmp_path / "gx-cli"))
    assert result.exit_code == ExitCode.BAD_INPUT, result.stderr
    assert "audit.expectations[0]" in flat(result.stderr)
    assert not (tmp_path / "gx-cli").exists()


# -------------------------------------------------------------------------------------------
# Base-rate ratios, four-fifths call-outs, sensitive features used as model features


def rates_split(rates: dict[str, float], rows_per_group: int = 4000, seed: int = 0) -> Split:
    """Generated rows: German's feature columns resampled, groups with exactly the given positive rates."""
    german = loaded("german").all_rows()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(german), rows_per_group * len(rates))
    base = german.take(picks)
    labels = np.concatenate([(np.arange(rows_per_group) < round(rate * rows_per_group)).astype(int) for rate in rates.values()])
    groups = np.repeat(list(rates), rows_per_group)
    return Split(X=base.X, y=pd.Series(labels, name="label"), groups=pd.DataFrame({"sex": groups}))


def test_a_fourfold_ratio_between_small_rates_warns_though_the_gap_is_small(tmp_path):
    report = audit("german", rates_split({"female": 0.10, "male": 0.025}), tmp_path=tmp_path)
    (finding,) = by_check(report, "base-rate-ratio")
    assert finding.value == "male" and finding.column == "personal_status"
    assert "male's positive-label rate is 0.250 times female's" in finding.message
    assert "audit.base_rate_ratio_warn = 0.8" in finding.message and "differ by only 0.075" in finding.message
    assert not by_check(report, "base-rate-gap")  # .075 < .10: the gap alone stayed silent


def test_the_ratio_threshold_comes_from_the_spec(tmp_path):
    spec = spec_copy(tmp_path, "german", lambda s: s.update(audit={"base_rate_ratio_warn": 0.2}))
    report = audit(load_dataset(spec), rates_split({"female": 0.10, "male": 0.025}), tmp_path=tmp_path)
    assert not by_check(report, "base-rate-ratio")


def test_equal_rates_do_not_warn(tmp_path):
    report = audit("german", rates_split({"female": 0.30, "male": 0.30}), tmp_path=tmp_path)
    assert not by_check(report, "base-rate-ratio") and not by_check(report, "base-rate-gap")
    assert not by_check(report, "four-fifths-meaningless")


@pytest.mark.parametrize(("rates", "named"), [({"female": 0.02, "male": 0.03}, "female 0.020, male 0.030"),
                                              ({"female": 0.97, "male": 0.99}, "female 0.970, male 0.990")])
def test_rates_near_zero_or_one_call_the_four_fifths_rule_meaningless(tmp_path, rates, named):
    report = audit("german", rates_split(rates), tmp_path=tmp_path)
    (finding,) = by_check(report, "four-fifths-meaningless")
    assert named in finding.message and "four-fifths (ratio) rule meaningless" in finding.message
    assert "the ratio of negative-label rates is" in finding.message


def test_a_sensitive_feature_used_as_a_model_feature_is_shown_in_the_audit(tmp_path):
    def also_feature(spec):
        spec["sensitive"][0]["use_as_feature"] = True
        spec["features"]["categorical"].append("personal_status")
    report = audit(load_dataset(spec_copy(tmp_path, "german", also_feature)), tmp_path=tmp_path)
    assert report.sensitive_used_as_features == ["sex"]
    assert "personal_status" not in {p.feature for p in report.proxies}  # a column is no proxy of itself
    (finding,) = by_check(report, "sensitive-as-feature")
    assert finding.severity == "info" and finding.column == "personal_status"
    assert "Sensitive features also used as model features (use_as_feature): sex." in render_markdown(report)
    plain = audit("german", tmp_path=tmp_path)
    assert "(use_as_feature): none." in render_markdown(plain)


# -------------------------------------------------------------------------------------------
# Generated data: a disparity only a declared intersection shows, label leaks, a thresholded label

# each marginal group's base rate is 0.335; the cells' are 0.22 or 0.45
BALANCED_MARGINALS = {("F", "B"): (600, 0.22), ("F", "A"): (600, 0.45), ("M", "A"): (600, 0.22), ("M", "B"): (600, 0.45)}


def test_a_declared_intersection_gets_the_base_rate_finding_its_marginals_hide(tmp_path):
    spec = write_dataset(tmp_path, "cells", BALANCED_MARGINALS, sensitive=("sex", "race"))
    dataset = load_dataset(spec)
    report = audit(dataset, tmp_path=tmp_path)
    assert report.verdict == "warn"
    assert all(b.base_rate_gap < 0.05 for b in report.sensitive_features)  # sex and race alone: nothing to see
    (cells,) = by_check(report, "base-rate-gap")
    assert cells.column == "sex, race" and cells.value in ("sex=F & race=B", "sex=M & race=A")
    assert re.search(r"^intersection sex:race \(sex, race\): .*\((F, B|M, A)\) vs \((F, A|M, B)\) base rates "
                     r"0\.2\d\d vs 0\.4\d\d \(ratio 0\.4\d\d\)", cells.message), cells.message
    assert cells.message in report.reasons
    assert [b.name for b in report.intersections] == ["sex:race"]
    assert "### Declared intersection sex:race" in render_markdown(report)
    # the intersection as the run's sensitive feature: its cells are the audited groups
    by_cells = audit(dataset, tmp_path=tmp_path, sensitive="sex:race")
    assert {g.group for g in by_cells.groups} == {f"sex={s} & race={r}" for s, r in BALANCED_MARGINALS}


def wage_spec(tmp_path: Path, numeric: list[str], categorical: list[str], rows: int = 900, **audit_settings) -> Path:
    """A spec of the generated wage survey whose label is 'wage > 120' (a thresholded numeric column)."""
    write_wages(tmp_path / "wages.csv", rows)
    spec = {"name": "wages", "version": 1, "files": [{"path": "wages.csv"}],
            "label": {"column": "wage", "positive_if": "> 120"}, "sensitive": [{"name": "sex", "column": "sex"}],
            "features": {"numeric": numeric, "categorical": categorical}, "audit": audit_settings}
    path = tmp_path / "wages.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_features_derived_from_the_label_block_the_audit_named_with_their_figures(tmp_path):
    spec = wage_spec(tmp_path, ["age", "hours", "education", "logwage"], ["sector", "band"])
    report = audit(load_dataset(spec), tmp_path=tmp_path)
    assert report.verdict == "block"
    (leak,) = by_check(report, "label-leak")
    assert leak.severity == "block" and leak.message in report.reasons
    assert "'logwage' (AUC 1.000, rank)" in leak.message  # one threshold on it separates the classes
    assert "'band' (AUC 1.000, cross-fitted)" in leak.message  # a deterministic mapping of a categorical
    assert "the label 'wage' (positive: wage > 120)" in leak.message and "900 rows" in leak.message
    assert {s.feature for s in report.leaks if s.flagged} == {"logwage", "band"}
    assert max(s.auc for s in report.leaks if not s.flagged) < 0.8  # the ordinary features are not leaks
    assert "| logwage | 1.000 | rank | yes |" in render_markdown(report)
    blocked = cli("audit", "--dataset", str(spec), "--gx-dir", str(tmp_path / "gx"))
    assert blocked.exit_code == ExitCode.AUDIT_BLOCKED and "label leak: 'band'" in flat(blocked.stderr)


def test_an_identifier_is_no_label_leak(tmp_path):
    """Every row's own value 'maps' to its label; out of fold it predicts nothing."""
    spec = wage_spec(tmp_path, ["age", "hours"], ["sector", "case"])
    raw = pd.read_csv(tmp_path / "wages.csv")
    raw.assign(case=[f"c{k:05d}" for k in range(len(raw))]).to_csv(tmp_path / "wages.csv", index=False)
    report = audit(load_dataset(spec), tmp_path=tmp_path)
    (case,) = [s for s in report.leaks if s.feature == "case"]
    assert case.auc < 0.6 and not case.flagged and not by_check(report, "label-leak")


def test_the_leak_threshold_comes_from_the_spec(tmp_path):
    spec = spec_copy(tmp_path, "german", lambda s: s.update(audit={"label_leak_auc": 0.65}))
    report = audit(load_dataset(spec), tmp_path=tmp_path)
    (leak,) = by_check(report, "label-leak")
    assert leak.column == "checking_status" and "'checking_status' (AUC 0.695, cross-fitted)" in leak.message
    assert "AUC >= 0.65 (audit.label_leak_auc; all 1,000 rows)" in leak.message


def test_a_thresholded_label_from_spec_to_audit_to_a_fit_and_its_input_snapshot(tmp_path):
    from fairloop import pipeline

    spec = wage_spec(tmp_path, ["age", "hours", "education"], ["sector"], rows=2000)
    raw = pd.read_csv(tmp_path / "wages.csv")
    (tmp_path / "lr.yaml").write_text(yaml.safe_dump(
        {"name": "lr", "version": 1, "learner": "logistic_regression", "method": "none"}))
    inputs = pipeline.load_inputs(pipeline.RunParams(
        dataset=str(spec), recipe=str(PROJECT / "recipes" / "none.yaml"), constraint=str(tmp_path / "lr.yaml"),
        policy=str(PROJECT / "policies" / "default.yaml")))
    assert (inputs.loaded.all_rows().y == (raw["wage"] > 120).astype(int)).all()
    splits = pipeline.prepare(inputs)
    report = pipeline.audit(inputs, splits)
    assert report.verdict == "warn" and not by_check(report, "label-leak")  # men's higher wages: a base-rate gap
    fitted = pipeline.train(inputs, splits, pipeline.decide_mode(inputs, splits))
    evaluation = pipeline.evaluate_models({"candidate": fitted["candidate"][0]}, splits.test, "sex")["candidate"]
    assert evaluation.metrics["accuracy"] > 0.7  # education, hours and age predict wage > 120
    # the run's input snapshot (lineage, reproduce) keeps the rule (only its file paths differ): same labels
    pipeline.snapshot_inputs(inputs, tmp_path / "snapshot")
    again = load_dataset(tmp_path / "snapshot" / "dataset.yaml")
    assert again.spec.label == inputs.loaded.spec.label and again.spec.label.positive_if == "> 120"
    pd.testing.assert_series_equal(again.all_rows().y, inputs.loaded.all_rows().y)
