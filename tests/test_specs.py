"""Data files are validated at load: every shipped file loads, and errors name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PROJECT
from fairloop.constraints import load_constraint_template
from fairloop.datasets import load_dataset, make_splits
from fairloop.errors import BadInputError
from fairloop.policy import load_policy
from fairloop.recipes import load_recipe
from fairloop.sweep import expand_candidates, load_sweep


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


def test_threshold_optimizer_rejects_error_rate_parity(tmp_path):
    with pytest.raises(BadInputError, match="not supported by threshold_optimizer"):
        load_constraint_template(write(tmp_path, "name: x\nversion: 1\nmethod: threshold_optimizer\nconstraint: error_rate_parity\n"))


def test_recipe_hash_changes_with_any_parameter(tmp_path):
    base = "name: r\nversion: 1\nparams:\n  kind: oversample\n  sampler: random\n"
    first = load_recipe(write(tmp_path, base)).content_hash()
    assert load_recipe(write(tmp_path, base)).content_hash() == first
    assert load_recipe(write(tmp_path, base + "  shrinkage: 0.5\n")).content_hash() != first
    assert load_recipe(write(tmp_path, base.replace("version: 1", "version: 2"))).content_hash() != first
