"""`fairloop init`: drafts that parse the bundled raw files exactly as their hand-written specs do,
drafts of public datasets of other shapes that audit and fit, refusals that say what to pass,
`--check`, `--project`, and the three commands from a CSV file to a paused review."""

from __future__ import annotations

import gzip
import importlib.util
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT, BackgroundRun, write_policy
from synthetic import write_wages
from typer.testing import CliRunner

from fairloop.audit.checks import run_audit
from fairloop.cli import app
from fairloop.data.dataset_spec import CsvFormat
from fairloop.data.datasets import load_dataset
from fairloop.data.splits import make_splits
from fairloop.errors import BadInputError
from fairloop.project.init import check_spec, draft_spec, lay_out_project
from fairloop.remedy.constraints import load_constraint_template

DATASETS = PROJECT / "datasets"
DATA = DATASETS / "data"
runner = CliRunner()


def cli(*args: str):
    result = runner.invoke(app, list(args))
    assert isinstance(result.exception, SystemExit | None), result.exception
    return result


def flat(text: str) -> str:
    return " ".join(text.split())


def hand_written(name: str) -> dict:
    return yaml.safe_load((DATASETS / f"{name}.yaml").read_text())


# ---------------------------------------------------------------------------------------------
# The bundled raw files: the draft reads them as the hand-written specs do

BUNDLED = {
    # name: (raw file, init options a user passes, the hand-written file entry it corresponds to)
    "adult": (DATA / "adult" / "adult.data.gz", dict(label="income", positive=[">50K"], sensitive=["sex", "race"])),
    "compas": (DATA / "compas" / "compas-scores-two-years.csv.gz", dict(label="two_year_recid", sensitive=["race", "sex"])),
    "german": (DATA / "german" / "german.data.gz", dict(label="class", positive=["1"], sensitive=["personal_status"])),
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_draft_of_a_bundled_file_gives_the_hand_written_splits_and_metrics(tmp_path, name):
    from fairlearn.metrics import demographic_parity_difference
    from sklearn.linear_model import LogisticRegression

    from fairloop.remedy.learners import make_preprocessor

    raw_file, options = BUNDLED[name]
    reference = hand_written(name)
    expected = CsvFormat(**reference.get("format", {}))
    # a headerless file: the user names the columns
    draft = draft_spec(raw_file, name=f"{name}-draft", output=tmp_path / "draft.yaml", columns=expected.columns, **options)
    drafted = yaml.safe_load(draft.text)
    # what init detects is what the hand-written spec says
    detected = CsvFormat(**drafted["format"])
    for key in ("separator", "header", "skip_initial_space", "columns", "na_values", "encoding", "quote_char"):
        assert getattr(detected, key) == getattr(expected, key), key
    assert (drafted["label"]["column"], drafted["label"]["positive"]) == (reference["label"]["column"], reference["label"]["positive"][:1])
    # the user's edit: which columns are features, the rows kept and the group mapping are choices init leaves to them
    drafted.update({key: reference[key] for key in ("features", "filters", "sensitive", "split") if key in reference})
    train_file = next(f for f in reference["files"] if f.get("role", "all") in ("all", "train"))
    reference["files"] = [{"path": str(DATASETS / train_file["path"])}]  # the file init was given
    reference["label"] = {**reference["label"], "positive": reference["label"]["positive"][:1],
                          "negative": reference["label"]["negative"][:1]}
    (tmp_path / "draft.yaml").write_text(yaml.safe_dump(drafted, sort_keys=False))
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "hand.yaml").write_text(yaml.safe_dump(reference, sort_keys=False))

    splits = [make_splits(load_dataset(path), train_rows=2000)
              for path in (tmp_path / "draft.yaml", tmp_path / "reference" / "hand.yaml")]
    for part in ("train", "validation", "test"):
        ours, theirs = getattr(splits[0], part), getattr(splits[1], part)
        pd.testing.assert_frame_equal(ours.X, theirs.X)
        pd.testing.assert_series_equal(ours.y, theirs.y)
        pd.testing.assert_frame_equal(ours.groups, theirs.groups)
    metrics = []
    for split in splits:
        features = load_dataset(tmp_path / "draft.yaml").spec.features
        preprocessor = make_preprocessor("one_hot", features.numeric, features.categorical)
        model = LogisticRegression(max_iter=500).fit(preprocessor.fit_transform(split.train.X), split.train.y)
        predicted = model.predict(preprocessor.transform(split.test.X))
        sensitive = split.test.groups.iloc[:, 0]
        metrics.append(((predicted == split.test.y).mean(), demographic_parity_difference(split.test.y, predicted, sensitive_features=sensitive)))
    assert metrics[0] == metrics[1]


# ---------------------------------------------------------------------------------------------
# Public datasets of other shapes: drafted, then audited and fitted

SHIPPED_DRAFTS = {
    # spec in datasets/: (raw file, init options, what the draft had to detect)
    "hmda": (DATA / "hmda" / "Hdma.csv.gz", dict(label="deny", name="hmda"),
             {"separator": ",", "header": True, "na_values": ["NA"]}),
    "anes96": (DATA / "anes96" / "anes96.csv", dict(label="vote", sensitive=["PID"]),
               {"separator": "\t", "header": True, "quote_char": "'", "na_values": []}),
    "chile": (DATA / "chile" / "Chile.csv.gz", dict(label="vote", positive=["Y"], sensitive=["sex", "region"]),
              {"separator": ",", "header": True, "na_values": ["NA"]}),
}


@pytest.mark.parametrize("name", sorted(SHIPPED_DRAFTS))
def test_public_datasets_draft_to_the_shipped_spec_which_audits_and_fits(tmp_path, name):
    raw_file, options, detected = SHIPPED_DRAFTS[name]
    draft = yaml.safe_load(draft_spec(raw_file, output=tmp_path / f"{name}.yaml", **options).text)
    for key, value in detected.items():
        assert draft["format"][key] == value, key
    shipped = hand_written(name)
    # the shipped spec is the draft plus description, provenance and at most one edit (anes96: names for PID's codes)
    edits = [key for key in ("format", "label", "features", "filters", "split") if draft.get(key) != shipped.get(key)]
    sensitive_edits = [s for s, d in zip(shipped["sensitive"], draft["sensitive"]) if s != d]
    assert not edits and len(sensitive_edits) <= 1 and (name == "anes96") == bool(sensitive_edits)

    dataset = load_dataset(DATASETS / f"{name}.yaml")
    report = run_audit(dataset.spec, dataset.all_rows(), gx_root=tmp_path / "gx")
    assert report.verdict in ("pass", "warn"), report.reasons
    splits = make_splits(dataset)
    template = load_constraint_template(PROJECT / "constraints" / "threshold-dp.yaml")
    from fairloop.remedy.constraints import fit_candidate

    model, _ = fit_candidate(splits.train, template, dataset.spec.primary_sensitive)
    assert set(np.unique(model.predict(splits.test.X, splits.test.groups))) <= {0, 1}


def test_anes96_party_codes_map_through_numeric_keys():
    groups = load_dataset(DATASETS / "anes96.yaml").frames["all"].groups["pid"]
    assert groups.value_counts()["strong-democrat"] == 200 and groups.nunique() == 7


def load_generator():
    spec = importlib.util.spec_from_file_location("make_loans", DATA / "generated" / "make_loans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_250k_row_latin1_semicolon_file_drafts_audits_and_fits(tmp_path):
    data = load_generator().write_loans(tmp_path / "loans.csv", rows=250_000, seed=0)
    draft = draft_spec(data, label="défaut", output=tmp_path / "loans.yaml")
    spec = yaml.safe_load(draft.text)
    assert spec["format"]["separator"] == ";" and spec["format"]["encoding"] == "cp1252"
    assert [s["column"] for s in spec["sensitive"]] == ["sexe", "origine"]  # found by name, no edit
    assert "dossier" not in spec["features"]["numeric"]  # an identifier is left out, with the evidence
    assert "dossier: a different integer in every row: an identifier" in draft.text
    dataset = load_dataset(tmp_path / "loans.yaml")
    assert len(dataset.all_rows()) == 250_000
    report = run_audit(dataset.spec, dataset.all_rows(), "origine", gx_root=tmp_path / "gx")
    ratio = [f for f in report.findings if f.check == "base-rate-ratio"]
    assert ratio and ratio[0].column == "origine"  # 2.5 % vs 10 %: the gap alone would stay silent
    splits = make_splits(dataset, sensitive="origine", train_rows=5000)
    from fairloop.remedy.constraints import fit_candidate

    template = load_constraint_template(PROJECT / "constraints" / "threshold-dp.yaml")
    model, _ = fit_candidate(splits.train, template, "origine")
    assert len(model.predict(splits.test.X.head(100), splits.test.groups.head(100))) == 100


# ---------------------------------------------------------------------------------------------
# Refusals: what init cannot tell, it asks for


def test_no_label_named_like_one_asks_for_label(tmp_path):
    with pytest.raises(BadInputError, match=r"cannot tell which column is the label: pass --label COLUMN \(two-valued columns: \['pbcr'"):
        draft_spec(DATA / "hmda" / "Hdma.csv.gz", output=tmp_path / "x.yaml")


def test_a_label_whose_positive_value_cannot_be_told_asks_for_positive(tmp_path):
    with pytest.raises(BadInputError, match=r"cannot tell which value of label column 'column_21' is positive \(values: 1 700, 2 300\): pass --positive"):
        draft_spec(DATA / "german" / "german.data.gz", label="column_21", output=tmp_path / "x.yaml")


def test_no_sensitive_column_found_asks_for_sensitive(tmp_path):
    with pytest.raises(BadInputError, match=r"found no sensitive column by name .*: pass --sensitive COLUMN"):
        draft_spec(DATA / "anes96" / "anes96.csv", label="vote", output=tmp_path / "x.yaml")


def test_a_sensitive_column_of_many_numbers_is_refused(tmp_path):
    with pytest.raises(BadInputError, match=r"--sensitive: column 'age' has more than 20 distinct values, not a set of groups"):
        draft_spec(DATA / "anes96" / "anes96.csv", label="vote", sensitive=["age"], output=tmp_path / "x.yaml")


def test_an_existing_spec_is_not_overwritten_and_nothing_is_written_on_refusal(tmp_path):
    out = tmp_path / "x.yaml"
    out.write_text("mine\n")
    with pytest.raises(BadInputError, match=r"x.yaml: already exists: choose another --output or pass --force"):
        draft_spec(DATA / "hmda" / "Hdma.csv.gz", label="deny", output=out)
    assert out.read_text() == "mine\n"
    with pytest.raises(BadInputError):
        draft_spec(DATA / "hmda" / "Hdma.csv.gz", output=tmp_path / "y.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.yaml"]


def test_column_names_must_match_the_fields(tmp_path):
    with pytest.raises(BadInputError, match=r"--columns gives 2 names but line 1 has 21 fields \(separator ' '\)"):
        draft_spec(DATA / "german" / "german.data.gz", columns=["a", "b"], label="a", output=tmp_path / "x.yaml")


def test_a_name_another_spec_beside_it_uses_is_refused(tmp_path):
    shutil.copy(DATASETS / "german.yaml", tmp_path / "other.yaml")
    with pytest.raises(BadInputError, match=r"x.yaml: name: dataset name 'german' is also the name of .*other.yaml"):
        draft_spec(DATA / "hmda" / "Hdma.csv.gz", label="deny", name="german", output=tmp_path / "x.yaml")
    assert not (tmp_path / "x.yaml").exists()


def test_a_bad_name_is_refused(tmp_path):
    with pytest.raises(BadInputError, match=r"--name '-hmda'"):
        draft_spec(DATA / "hmda" / "Hdma.csv.gz", label="deny", name="-hmda", output=tmp_path / "x.yaml")


def test_the_cli_reports_a_refusal_as_bad_input_without_traceback(tmp_path):
    result = cli("init", str(DATA / "hmda" / "Hdma.csv.gz"), "--output", str(tmp_path / "x.yaml"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "pass --label COLUMN" in flat(result.output)


def test_na_in_a_sensitive_column_is_called_out_in_the_draft(tmp_path):
    data = tmp_path / "people.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"race": rng.choice(["A", "B", "NA"], 600), "score": rng.normal(size=600).round(3),
                          "target": rng.integers(0, 2, 600)})
    frame.to_csv(data, index=False)
    text = draft_spec(data, output=tmp_path / "people.yaml").text
    assert "na_values: [\"NA\"]" in text and "# CHECK: ['race'] hold(s) one of these texts" in text


# ---------------------------------------------------------------------------------------------
# A numeric label: a proposed threshold, and columns derived from the label left out


def test_a_numeric_label_gets_a_threshold_at_its_median_and_columns_derived_from_it_are_left_out(tmp_path):
    data = write_wages(tmp_path / "wages.csv", rows=1500)
    draft = draft_spec(data, label="wage", output=tmp_path / "wages.yaml")
    spec = yaml.safe_load(draft.text)
    median = pd.read_csv(data)["wage"].median()
    assert spec["label"] == {"column": "wage", "positive_if": f"> {median:g}"}
    assert f"proposed: above the median ({median:g}), 750 positive and 750 negative rows; check the cut" in draft.text
    features = [*spec["features"]["numeric"], *spec["features"]["categorical"]]
    assert {"age", "hours", "education", "sector"} <= set(features) and not {"wage", "logwage"} & set(features)
    assert "#   logwage: predicts the label alone (AUC 1.000)" in draft.text  # the leak check found it
    dataset = load_dataset(tmp_path / "wages.yaml")
    assert dataset.all_rows().y.sum() == 750
    report = run_audit(dataset.spec, dataset.all_rows(), gx_root=tmp_path / "gx")
    assert report.verdict == "warn" and not [f for f in report.findings if f.check == "label-leak"], report.reasons


def test_a_thresholded_label_with_empty_values_is_filtered_to_its_range(tmp_path):
    data = write_wages(tmp_path / "wages.csv", rows=600)
    frame = pd.read_csv(data)
    frame.loc[[3, 40], "wage"] = np.nan
    frame.to_csv(data, index=False)
    spec = yaml.safe_load(draft_spec(data, label="wage", output=tmp_path / "wages.yaml").text)
    known = frame["wage"].dropna()
    assert spec["filters"] == [{"column": "wage", "between": [float(known.min()), float(known.max())]}]
    assert len(load_dataset(tmp_path / "wages.yaml").all_rows()) == 598


def test_raw_values_of_a_many_valued_numeric_label_are_refused_with_the_threshold_named(tmp_path):
    data = write_wages(tmp_path / "wages.csv", rows=300)
    with pytest.raises(BadInputError, match=r"label column 'wage' has more than 20 values: not a class label; without "
                                            r"--positive, init proposes a threshold \(label.positive_if\)"):
        draft_spec(data, label="wage", positive=["100"], output=tmp_path / "wages.yaml")


# ---------------------------------------------------------------------------------------------
# --check and --project


def test_check_summarises_rows_groups_and_base_rates():
    summary = check_spec(DATASETS / "german.yaml")
    assert summary.rows == {"all": 1000} and summary.raw_columns == 21
    (sex,) = summary.sensitive
    assert {g.group: g.rows for g in sex.groups} == {"female": 310, "male": 690}
    assert abs(summary.positive_rate - 0.70) < 1e-9
    result = cli("init", "--check", str(DATASETS / "german.yaml"))
    assert result.exit_code == 0
    assert "female 310 (base rate 0.648)" in flat(result.output)


def test_check_shows_use_as_feature(tmp_path):
    spec = hand_written("german")
    spec["files"][0]["path"] = str(DATASETS / spec["files"][0]["path"])
    spec["sensitive"][0]["use_as_feature"] = True
    spec["features"]["categorical"].append("personal_status")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    assert check_spec(tmp_path / "g.yaml").sensitive_used_as_features == ["sex"]
    assert "also a model feature (use_as_feature)" in flat(cli("init", "--check", str(tmp_path / "g.yaml")).output)


def test_check_of_a_broken_spec_names_the_cause(tmp_path):
    spec = hand_written("german")
    spec["files"][0]["path"] = str(DATASETS / spec["files"][0]["path"])
    spec["format"]["columns"] = spec["format"]["columns"][:-1]  # 20 names for 21 fields
    spec["label"]["column"] = "foreign_worker"
    spec["features"]["categorical"].remove("foreign_worker")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    result = cli("init", "--check", str(tmp_path / "g.yaml"))
    assert result.exit_code == 2 and "format.columns lists 20 names but line 1 has 21 fields" in flat(result.output)


def test_project_lays_out_copies_of_the_bundled_files_and_refuses_to_overwrite(tmp_path):
    project = tmp_path / "mine"
    lay_out_project(project)
    for folder in ("recipes", "constraints", "policies"):
        shipped = sorted(p.relative_to(PROJECT / folder) for p in (PROJECT / folder).rglob("*.y*ml"))
        assert sorted(p.relative_to(project / folder) for p in (project / folder).rglob("*.y*ml")) == shipped
    assert (project / "datasets").is_dir()
    assert not (project / "flows").exists()  # configuration only: the flows run from the installed package
    result = cli("init", "--project", str(project))
    assert result.exit_code == 2 and "already there" in flat(result.output)


def test_init_needs_exactly_one_thing_to_do():
    result = cli("init")
    assert result.exit_code == 2 and "give one of: DATA_FILE" in flat(result.output)


# ---------------------------------------------------------------------------------------------
# Three commands from a CSV file to a paused review


@pytest.mark.usefixtures("prefect_server")
def test_three_commands_take_a_new_csv_to_a_paused_review(tmp_path, registry_dir, remediation_flow, monkeypatch):
    from fairloop.serving.runs import submit_review

    workspace = tmp_path / "work"
    (workspace / "datasets").mkdir(parents=True)
    monkeypatch.setenv("FAIRLOOP_ALLOWED_ROOTS", str(workspace))  # its spec names ../loans.csv; fairloop runs from elsewhere
    with gzip.open(DATA / "hmda" / "Hdma.csv.gz", "rb") as source, (workspace / "loans.csv").open("wb") as target:
        shutil.copyfileobj(source, target)
    spec = workspace / "datasets" / "boston.yaml"
    # 1. init
    drafted = cli("init", str(workspace / "loans.csv"), "--label", "deny", "--name", "boston", "--output", str(spec))
    assert drafted.exit_code == 0, drafted.output
    # 2. audit
    audited = cli("audit", "--dataset", str(spec), "--gx-dir", str(tmp_path / "gx"))
    assert audited.exit_code == 0, audited.output
    # 3. remediate (the flow the command runs), up to the review
    policy = write_policy(tmp_path, max_demographic_parity_difference=0.9, max_accuracy_drop_vs_baseline=0.5)
    run = BackgroundRun(remediation_flow, dataset=str(spec), recipe="recipes/none.yaml",
                        constraint="constraints/lr-eg-dp.yaml", policy=str(policy), train_rows=1200,
                        requested_by="pytest", review_poll_seconds=1)
    paused = run.wait_paused()
    submit_review(paused.id, {"approve": False, "reviewer": "bob", "comment": "only a test"})
    assert run.finish().name == "Rejected"
