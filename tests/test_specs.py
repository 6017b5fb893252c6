"""Data files are validated at load: every shipped file loads, and errors name file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT

from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.data.datasets import load_dataset
from fairloop.data.rows import Split
from fairloop.data.splits import make_splits
from fairloop.errors import BadInputError
from fairloop.gates.policy import load_policy
from fairloop.remedy.constraints import POST_PROCESSING, load_constraint_template
from fairloop.remedy.recipes import NoneParams, Recipe, apply_recipe, load_recipe
from fairloop.remedy.sweep.spec import expand_candidates, load_sweep


@pytest.mark.parametrize("path", sorted((PROJECT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    assert load_recipe(path).version >= 1


@pytest.mark.parametrize("path", sorted((PROJECT / "constraints").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_constraint_templates_load(path):
    assert load_constraint_template(path).version >= 1


@pytest.mark.parametrize("path", sorted((PROJECT / "constraints" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_expand_to_at_least_eight_candidates(path, monkeypatch):
    monkeypatch.chdir(PROJECT)  # sweep files name recipes and templates from the project root
    candidates, _ = expand_candidates(load_sweep(path))
    if path.name == "frozen-model.yaml":  # remediate --model: every kind a frozen model can take, nothing that retrains
        assert sorted({c.template.method for c in candidates}) == sorted(POST_PROCESSING)
        return
    assert len(candidates) >= 8


@pytest.mark.parametrize("path", sorted((PROJECT / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_load(path):
    assert load_policy(path).thresholds


@pytest.mark.parametrize(
    ("name", "rows", "train_label_rate"),
    [("adult", {"train": 32561, "test": 16281}, 0.24), ("compas", {"all": 5278}, 0.47), ("german", {"all": 1000}, 0.70)],
)
def test_shipped_datasets_load_with_the_publishers_row_counts(name, rows, train_label_rate):
    loaded = load_dataset(PROJECT / "datasets" / f"{name}.yaml")
    assert {role: len(split) for role, split in loaded.frames.items()} == rows
    splits = make_splits(loaded)
    assert abs(splits.train.y.mean() - train_label_rate) < 0.02
    # no row is in two splits (stratified carving keeps them disjoint)
    assert len(splits.train) + len(splits.validation) == len(loaded.frames.get("train", loaded.frames.get("all"))) - (
        0 if "test" in loaded.frames else len(splits.test)
    )


def test_german_sex_comes_from_the_personal_status_mapping():
    loaded = load_dataset(PROJECT / "datasets" / "german.yaml")
    groups = loaded.frames["all"].groups["sex"].value_counts().to_dict()
    assert groups == {"male": 690, "female": 310}
    assert "personal_status" not in loaded.frames["all"].X.columns


def test_adult_test_file_labels_with_a_period_map_to_the_same_classes():
    loaded = load_dataset(PROJECT / "datasets" / "adult.yaml")
    assert set(loaded.frames["test"].y.unique()) == {0, 1}
    assert abs(loaded.frames["test"].y.mean() - 0.236) < 0.01


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_yaml_syntax_error_names_the_file(tmp_path):
    with pytest.raises(BadInputError, match=r"spec.yaml: not valid YAML"):
        load_recipe(write(tmp_path, "name: [unclosed\n"))


def test_unknown_field_is_refused_with_its_name(tmp_path):
    with pytest.raises(BadInputError, match=r"field 'bund'"):
        load_constraint_template(write(tmp_path, "name: x\nversion: 1\nmethod: exponentiated_gradient\nconstraint: demographic_parity\nbund: 0.1\n"))


def test_unknown_recipe_kind_is_refused_naming_file_field_and_value(tmp_path):
    path = write(tmp_path, "name: x\nversion: 1\nparams:\n  kind: smote\n")
    with pytest.raises(BadInputError, match=rf"{re.escape(str(path))}: .*field 'params': .*'smote'"):
        load_recipe(path)


def test_a_recipe_of_unknown_kind_built_without_validation_is_refused_when_applied():
    recipe = Recipe.model_construct(name="x", version=1, params=NoneParams.model_construct(kind="smote"))
    split = Split(X=pd.DataFrame({"f": [0.0, 1.0]}), y=pd.Series([0, 1], name="label"),
                  groups=pd.DataFrame({"g": ["a", "b"]}))
    with pytest.raises(BadInputError, match=r"recipe 'x' has unknown kind 'smote'"):
        apply_recipe(split, recipe, "g")


def test_threshold_optimizer_rejects_error_rate_parity(tmp_path):
    with pytest.raises(BadInputError, match="not supported by threshold_optimizer"):
        load_constraint_template(write(tmp_path, "name: x\nversion: 1\nmethod: threshold_optimizer\nconstraint: error_rate_parity\n"))


def test_recipe_hash_changes_with_any_parameter(tmp_path):
    base = "name: r\nversion: 1\nparams:\n  kind: oversample\n  sampler: random\n"
    first = load_recipe(write(tmp_path, base)).content_hash()
    assert load_recipe(write(tmp_path, base)).content_hash() == first
    assert load_recipe(write(tmp_path, base + "  shrinkage: 0.5\n")).content_hash() != first
    assert load_recipe(write(tmp_path, base.replace("version: 1", "version: 2"))).content_hash() != first


# ---------------------------------------------------------------------------------------------
# Bounded YAML and safe names (every data file goes through load_spec)


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    import time

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 10)]
    started = time.monotonic()
    with pytest.raises(BadInputError, match=r"spec.yaml: refused YAML: its anchors and aliases expand to more than"):
        load_recipe(write(tmp_path, "\n".join(levels) + "\nname: x\nversion: 1\n"))
    assert time.monotonic() - started < 5


def test_recursive_yaml_alias_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="recursive alias"):
        load_recipe(write(tmp_path, "name: x\nversion: 1\nparams: &p {kind: oversample, again: *p}\n"))


def test_oversized_data_file_is_refused_before_parsing(tmp_path):
    with pytest.raises(BadInputError, match=r"too large for a data file"):
        load_recipe(write(tmp_path, "name: x\nversion: 1\n" + "# padding\n" * 120_000))


@pytest.mark.parametrize("name", ["-german", "German", "../x", "a b", ".hidden", "x" * 65, ""])
def test_unsafe_names_are_refused_at_load_naming_file_and_field(tmp_path, name):
    with pytest.raises(BadInputError, match=r"spec.yaml: invalid Recipe: field 'name': .*not allowed"):
        load_recipe(write(tmp_path, f"name: {name!r}\nversion: 1\nparams:\n  kind: none\n"))


def test_dataset_named_with_a_leading_dash_is_refused(tmp_path):
    path = german_variant(tmp_path, lambda s: s.update(name="-german"))
    with pytest.raises(BadInputError, match=r"german\.yaml: invalid DatasetSpec: field 'name': name '-german' is not allowed"):
        load_dataset(path)


# ---------------------------------------------------------------------------------------------
# Dataset specs: errors that name the real cause

GERMAN = PROJECT / "datasets" / "german.yaml"


def german_variant(tmp_path: Path, mutate=lambda spec: None, lines: list[str] | None = None, name: str = "german") -> Path:
    """The shipped German spec (or its raw lines, changed) in tmp_path, with ``mutate`` applied."""
    import gzip

    import yaml

    spec = yaml.safe_load(GERMAN.read_text())
    data = tmp_path / "german.data"
    with gzip.open(PROJECT / "datasets" / "data" / "german" / "german.data.gz", "rt") as handle:
        original = handle.read().splitlines()
    data.write_text("\n".join(lines(original) if callable(lines) else (lines or original)) + "\n")
    spec["files"] = [{"path": str(data)}]
    mutate(spec)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_numeric_keys_in_a_value_map_are_compared_by_value(tmp_path):
    # the label column read as numbers; the map's keys are numbers too (YAML reads `1:` as an int)
    def map_class(spec):
        spec["sensitive"].append({"name": "credit_class", "column": "class", "values": {1: "good", 2.0: "bad"}})
        spec["label"].update(positive=["1"], negative=[2.0])  # text and float for the same values
    loaded = load_dataset(german_variant(tmp_path, map_class))
    split = loaded.frames["all"]
    assert split.groups["credit_class"].value_counts().to_dict() == {"good": 700, "bad": 300}
    assert split.y.sum() == 700


def test_a_missing_column_name_is_named_first_with_its_line(tmp_path):
    # 21 fields per line, 20 names: pandas would shift every column one to the right
    path = german_variant(tmp_path, lambda s: s["format"]["columns"].remove("telephone"))
    with pytest.raises(BadInputError, match=r"format.columns lists 20 names but line 1 has 21 fields .*add the missing name"):
        load_dataset(path)


def test_a_line_with_an_extra_field_later_in_the_file_is_named(tmp_path):
    path = german_variant(tmp_path, lines=lambda lines: [*lines[:500], lines[500] + " A999", *lines[501:]])
    with pytest.raises(BadInputError, match=r"line 501 has 22 fields, the lines before it 21"):
        load_dataset(path)


def test_label_mismatch_says_how_values_were_read(tmp_path):
    path = german_variant(tmp_path, lambda s: s["label"].update(positive=["good"], negative=["bad"]))
    with pytest.raises(BadInputError, match=r"label column 'class' has value\(s\) \['1', '2'\] .*the file's values read as "
                                            r"numbers, the spec's written as text"):
        load_dataset(path)


def test_sensitive_value_map_mismatch_says_how_values_were_read(tmp_path):
    path = german_variant(tmp_path, lambda s: s["sensitive"][0].update(values={"A91": "male", "A92": "female"}))
    with pytest.raises(BadInputError, match=r"value\(s\) \['A93', 'A94'\] of column 'personal_status' have no entry "
                                            r"in sensitive.values \(the file's values read as text"):
        load_dataset(path)


def test_separator_with_a_blank_reads_like_skip_initial_space_and_leaks_no_pandas_warning(tmp_path):
    import warnings

    import yaml

    spec = yaml.safe_load((PROJECT / "datasets" / "adult.yaml").read_text())
    for source in spec["files"]:
        source["path"] = str(PROJECT / "datasets" / source["path"])
    spec["format"].update(separator=", ", skip_initial_space=False)
    path = tmp_path / "adult.yaml"
    path.write_text(yaml.safe_dump(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ParserWarning reaches the user
        loaded = load_dataset(path)
    reference = load_dataset(PROJECT / "datasets" / "adult.yaml")
    assert loaded.frames["train"].X.equals(reference.frames["train"].X)


def test_infinite_numeric_value_is_named(tmp_path):
    path = german_variant(tmp_path, lines=lambda lines: [lines[0].replace(" 1169 ", " inf ", 1), *lines[1:]])
    with pytest.raises(BadInputError, match=r"numeric feature 'credit_amount' has infinite value 'inf' \(1 row\(s\), first at data row 1\)"):
        load_dataset(path)


def test_n_a_in_a_numeric_column_is_an_error_naming_the_fix(tmp_path):
    path = german_variant(tmp_path, lines=lambda lines: [lines[0].replace(" 1169 ", " n/a ", 1), *lines[1:]])
    with pytest.raises(BadInputError, match=r"numeric feature 'credit_amount' has non-numeric value 'n/a' .*add it to format.na_values"):
        load_dataset(path)
    fixed = german_variant(tmp_path, lambda s: s["format"].update(na_values=["n/a"]),
                           lines=lambda lines: [lines[0].replace(" 1169 ", " n/a ", 1), *lines[1:]])
    assert load_dataset(fixed).frames["all"].X["credit_amount"].isna().sum() == 1


def test_a_group_called_NA_stays_a_group(tmp_path):
    def na_group(lines):
        return [line.replace("A95", "NA") for line in lines]

    path = german_variant(tmp_path, lambda s: s["sensitive"][0]["values"].update({"NA": "female"}), lines=na_group)
    groups = load_dataset(path).frames["all"].groups["sex"]
    assert groups.value_counts().to_dict() == {"male": 690, "female": 310}


def test_corrupt_gzip_and_plain_text_named_gz_are_named(tmp_path):
    import gzip

    data = (PROJECT / "datasets" / "data" / "german" / "german.data.gz").read_bytes()
    truncated = tmp_path / "cut.data.gz"
    truncated.write_bytes(data[: len(data) // 2])
    plain = tmp_path / "plain.data.gz"
    plain.write_bytes(gzip.decompress(data))
    for path, message in ((truncated, r"cut.data.gz: corrupt or truncated gzip file"),
                          (plain, r"plain.data.gz: the file is named .gz but is not gzip-compressed")):
        spec = german_variant(tmp_path, lambda s, p=path: s.update(files=[{"path": str(p)}]))
        with pytest.raises(BadInputError, match=message):
            load_dataset(spec)


def test_unknown_encoding_is_refused_at_load(tmp_path):
    path = german_variant(tmp_path, lambda s: s["format"].update(encoding="utf-9"))
    with pytest.raises(BadInputError, match=r"field 'format.encoding': .*unknown encoding 'utf-9'"):
        load_dataset(path)


def test_two_dataset_specs_with_one_name_are_refused(tmp_path):
    german_variant(tmp_path, name="german-copy")
    path = german_variant(tmp_path)
    with pytest.raises(BadInputError, match=r"german.yaml: name: dataset name 'german' is also the name of .*german-copy.yaml"):
        load_dataset(path)


def test_use_as_feature_puts_the_sensitive_column_into_the_features(tmp_path):
    def also_feature(spec):
        spec["sensitive"][0]["use_as_feature"] = True
        spec["features"]["categorical"].append("personal_status")
    loaded = load_dataset(german_variant(tmp_path, also_feature))
    assert loaded.spec.sensitive_used_as_features == ["sex"]
    assert "personal_status" in loaded.frames["all"].X.columns  # the model reads it
    assert loaded.frames["all"].groups["sex"].nunique() == 2  # and it is still audited as groups


def test_sensitive_feature_needs_use_as_feature_and_the_flag_needs_the_feature(tmp_path):
    listed = german_variant(tmp_path, lambda s: s["features"]["categorical"].append("personal_status"))
    with pytest.raises(BadInputError, match=r"sensitive column 'personal_status' is listed as a feature; .*use_as_feature: true"):
        load_dataset(listed)
    flagged = german_variant(tmp_path, lambda s: s["sensitive"][0].update(use_as_feature=True))
    with pytest.raises(BadInputError, match=r"sensitive\[0\].use_as_feature: column 'personal_status' must also be listed"):
        load_dataset(flagged)


def test_a_quoted_field_spanning_lines_is_not_a_field_count_mismatch(tmp_path):
    from fairloop.data.dataset_spec import CsvFormat
    from fairloop.data.reading import read_table

    data = tmp_path / "quoted.csv"
    data.write_text('id,comment,sex\n1,"fine",F\n2,"two\nlines",M\n3,"x, y",F\n4,"three\nline\nnote",M\n')
    frame, _ = read_table(CsvFormat(), data)
    assert frame["comment"].tolist() == ["fine", "two\nlines", "x, y", "three\nline\nnote"]
    data.write_text('id,comment,sex\n1,"fine",F\n2,"two\nlines",M,extra\n')
    with pytest.raises(BadInputError, match=r"the header \(line 1\) has 3 names but line 3 has 4 fields"):
        read_table(CsvFormat(), data)


# ---------------------------------------------------------------------------------------------
# Thresholded labels: label.positive_if

def thresholded(tmp_path: Path, comparison, **label) -> Path:
    """The German spec with its label 'class' (1 good, 2 bad) given by a comparison."""
    return german_variant(tmp_path, lambda s: s.update(label={"column": "class", "positive_if": comparison, **label}))


@pytest.mark.parametrize(("comparison", "positives"), [("== 1", 700), ("!= 1", 300), ("<1.5", 700), ("<= 1", 700),
                                                       (" > 1 ", 300), (">= 2.0", 300), ("> -1e3", 1000)])
def test_a_thresholded_label_is_positive_where_its_comparison_holds(tmp_path, comparison, positives):
    split = load_dataset(thresholded(tmp_path, comparison)).frames["all"]
    assert int(split.y.sum()) == positives and set(split.y.unique()) <= {0, 1}


def test_a_thresholded_label_equals_the_same_label_by_raw_values(tmp_path):
    by_values = load_dataset(GERMAN).frames["all"].y  # positive: [1]
    assert (load_dataset(thresholded(tmp_path, "< 2")).frames["all"].y == by_values).all()


@pytest.mark.parametrize("comparison", [">> 120", "> abc", "120", "between 1 and 2", "> nan", "=> 3"])
def test_a_comparison_that_is_not_one_is_refused_naming_file_field_and_value(tmp_path, comparison):
    with pytest.raises(BadInputError, match=rf"german\.yaml: invalid DatasetSpec: field 'label\.positive_if': "
                                            rf"'{re.escape(comparison)}' is not a comparison with a number"):
        load_dataset(thresholded(tmp_path, comparison))


@pytest.mark.parametrize(("label", "expected"), [
    ({"positive": [1]}, "give either 'positive' .* not both"),
    ({"negative": [2]}, "'negative' cannot go with 'positive_if'"),
])
def test_a_thresholded_label_takes_no_raw_values(tmp_path, label, expected):
    with pytest.raises(BadInputError, match=rf"german\.yaml: invalid DatasetSpec: field 'label': {expected}"):
        load_dataset(thresholded(tmp_path, "> 1", **label))


def test_a_label_with_neither_rule_is_refused(tmp_path):
    path = german_variant(tmp_path, lambda s: s.update(label={"column": "class"}))
    with pytest.raises(BadInputError, match=r"field 'label': give either 'positive' .* not neither"):
        load_dataset(path)


def test_an_unquoted_comparison_is_a_yaml_error_that_says_to_quote_it(tmp_path):
    path = thresholded(tmp_path, "> 1")
    path.write_text(path.read_text().replace("positive_if: '> 1'", "positive_if: > 1"))
    with pytest.raises(BadInputError, match=r"(?s)german\.yaml: not valid YAML: .*positive_if: > 1.*quote it, e\.g\. positive_if: \"> 120\""):
        load_dataset(path)


def test_a_text_in_a_thresholded_label_column_is_named_with_its_row(tmp_path):
    path = german_variant(tmp_path, lambda s: s.update(label={"column": "class", "positive_if": "== 1"}),
                          lines=lambda lines: [*lines[:9], lines[9].rsplit(" ", 1)[0] + " unknown", *lines[10:]])
    with pytest.raises(BadInputError, match=r"german\.data: label column 'class' has value 'unknown' \(1 row\(s\), first at "
                                            r"data row 10\), but label\.positive_if '== 1' compares numbers"):
        load_dataset(path)


def test_the_new_spec_fields_leave_the_hashes_of_existing_specs_alone(tmp_path):
    """Lineage identifies a spec by its content hash: a field at its default must not change it."""
    for path in sorted((PROJECT / "datasets").glob("*.yaml")):
        dumped = load_dataset_spec(path).model_dump(mode="json")
        assert "positive_if" not in dumped["label"] and "label_leak_auc" not in dumped["audit"], path.name
    hashes = {load_dataset_spec(thresholded(tmp_path, cut)).content_hash() for cut in ("> 1", "> 1.5", ">= 1")}
    assert len(hashes) == 3
