"""Bad input to the registry, review and run commands: each case must exit with the documented
code, say what is wrong in words a person can act on, print no traceback, and write nothing
(registry, DVC remote and state folder unchanged). Commands that would contact Prefect get an
unreachable API URL: bad input is refused before any server is involved."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import PROJECT
from fairloop.cli import app
from fairloop.serving.outcomes import ExitCode, refusal_reason
from fairloop.registry.store import Registry
from tiny_world import NAME, registry_with_two_versions

BAD = ExitCode.BAD_INPUT
RUN_ID = str(uuid.UUID(int=7))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with two versions of the tiny dataset (champion v2), and files to point at."""
    base = tmp_path_factory.mktemp("hostile")
    candidate, registry = registry_with_two_versions(base)
    (base / "plain-file").write_text("not a registry\n")
    (base / "project").mkdir()
    (base / "a-directory").mkdir()
    (base / "not-a-model.joblib").write_text("hello\n")
    return {"base": base, "registry": registry, "spec": base / "candidate" / "world" / "tiny.yaml",
            "data": base / "candidate" / "world" / "tiny.csv", "policy": PROJECT / "policies" / "default.yaml"}


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under the folders with its sha256 (git's and DVC's temporary files aside)."""
    files = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            relative = path.relative_to(folder.parent)
            if path.is_file() and not {"tmp", "logs"} & set(relative.parts) and path.name not in ("index", "rwlock"):
                files[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def run(world, monkeypatch, *args: str, registry: Path | None = None):
    monkeypatch.setenv("FAIRLOOP_REGISTRY_DIR", str(registry or world["registry"].root))
    monkeypatch.setenv("FAIRLOOP_REGISTRY_REMOTE", str(world["base"] / "remote"))
    monkeypatch.setenv("FAIRLOOP_PROJECT_DIR", str(world["base"] / "project"))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(PROJECT)
    return CliRunner().invoke(app, list(args))


def assert_refused(world, monkeypatch, args, code, *words, registry: Path | None = None):
    watched = [world["base"] / "registry", world["base"] / "remote", world["base"] / "project"]
    before = snapshot(*watched)
    result = run(world, monkeypatch, *args, registry=registry)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == code, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text
    flat = " ".join(text.split())
    for word in words:
        assert word in flat, f"{word!r} not in: {flat}"
    assert snapshot(*watched) == before, "stray writes"
    return flat


ROLLBACK = ["rollback", NAME, "--reviewer", "dana", "--reason", "regressed"]
CASES = {
    # rollback
    "rollback --to v01": ([*ROLLBACK, "--to", "v01"], BAD, "'v01' is not a version", "no leading zero"),
    "rollback --to 1": ([*ROLLBACK, "--to", "1"], BAD, "'1' is not a version"),
    "rollback --to V1": ([*ROLLBACK, "--to", "V1"], BAD, "'V1' is not a version"),
    "rollback --to unknown v9": ([*ROLLBACK, "--to", "v9"], BAD, "no version 'v9'", "versions: v1, v2"),
    "rollback --to v0": ([*ROLLBACK, "--to", "v0"], BAD, "'v0' is not a version"),
    "rollback --to a ref": ([*ROLLBACK, "--to", "HEAD~1"], BAD, "'HEAD~1' is not a version"),
    "rollback --to an option": ([*ROLLBACK, "--to=--force"], BAD, "'--force' is not a version"),
    "rollback no-op": ([*ROLLBACK, "--to", "v2"], BAD, "v2 already is the champion", "nothing to roll back"),
    "rollback empty reason": (["rollback", NAME, "--to", "v1", "--reviewer", "dana", "--reason", ""], BAD,
                              "needs a reason"),
    "rollback blank reason": (["rollback", NAME, "--to", "v1", "--reviewer", "dana", "--reason", "  "], BAD,
                              "needs a reason"),
    "rollback no reason": (["rollback", NAME, "--to", "v1", "--reviewer", "dana"], BAD, "Missing option", "--reason"),
    "rollback empty reviewer": (["rollback", NAME, "--to", "v1", "--reviewer", "", "--reason", "x"], BAD,
                                "needs the reviewer"),
    "rollback dataset -german": (["rollback", "--to", "v1", "--reviewer", "d", "--reason", "x", "--", "-german"], BAD,
                                 "'-german' is not allowed"),
    "rollback dataset ../x": (["rollback", "../tiny", "--to", "v1", "--reviewer", "d", "--reason", "x"], BAD,
                              "'../tiny' is not allowed"),
    "rollback dataset with @": (["rollback", "tiny@v1", "--to", "v1", "--reviewer", "d", "--reason", "x"], BAD,
                                "'tiny@v1' is not allowed"),
    "rollback dataset with space": (["rollback", "tiny x", "--to", "v1", "--reviewer", "d", "--reason", "x"], BAD,
                                    "'tiny x' is not allowed"),
    "rollback unknown dataset": (["rollback", "tiyn", "--to", "v1", "--reviewer", "d", "--reason", "x"], BAD,
                                 "no dataset 'tiyn'", "datasets: tiny"),
    # models, lineage, reproduce, verify
    "models nosuch": (["models", "nosuch"], BAD, "no dataset 'nosuch'", "datasets: tiny"),
    "models adlt": (["models", "adlt"], BAD, "no dataset 'adlt'", "datasets: tiny"),
    "models -german": (["models", "--", "-german"], BAD, "'-german' is not allowed"),
    "models glob": (["models", "*"], BAD, "'*' is not allowed"),
    "lineage v01": (["lineage", NAME, "v01"], BAD, "'v01' is not a version"),
    "lineage unknown version": (["lineage", NAME, "v3"], BAD, "no version 'v3'", "versions: v1, v2"),
    "lineage unknown dataset": (["lineage", "adult", "v1"], BAD, "no dataset 'adult'", "datasets: tiny"),
    "lineage dataset glob": (["lineage", "t*", "v1"], BAD, "'t*' is not allowed"),
    "lineage version glob": (["lineage", NAME, "v*"], BAD, "'v*' is not a version"),
    "reproduce unknown version": (["reproduce", NAME, "v7"], BAD, "no version 'v7'"),
    "reproduce unknown dataset": (["reproduce", "nosuch", "v1"], BAD, "no dataset 'nosuch'"),
    "reproduce option-like dataset": (["reproduce", "--", "-x", "v1"], BAD, "'-x' is not allowed"),
    "verify unknown dataset": (["verify", "nosuch"], BAD, "no dataset 'nosuch'"),
    # review commands (never reach the server)
    "approve not a run id": (["approve", "not-a-run", "--reviewer", "ann"], BAD, "'not-a-run' is not a flow run id"),
    "approve empty reviewer": (["approve", RUN_ID, "--reviewer", ""], BAD, "a reviewer name is required"),
    "approve blank reviewer": (["approve", RUN_ID, "--reviewer", "   "], BAD, "a reviewer name is required"),
    "approve negative wait": (["approve", RUN_ID, "--reviewer", "ann", "--wait-seconds", "-5"], BAD, "--wait-seconds",
                              "greater than or equal to 1"),
    "reject empty comment": (["reject", RUN_ID, "--reviewer", "ann", "--comment", ""], BAD, "needs a comment"),
    "reject zero wait": (["reject", RUN_ID, "--reviewer", "ann", "--comment", "no", "--wait-seconds", "0"], BAD,
                         "--wait-seconds"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused(world, monkeypatch, case):
    args, code, *words = CASES[case]
    assert_refused(world, monkeypatch, args, code, *words)


REMEDIATE = ["remediate", "--dataset", "datasets/german.yaml"]


@pytest.mark.parametrize("option,value", [("--train-rows", "0"), ("--train-rows", "-5"), ("--seed", "-1"),
                                          ("--approval-timeout", "-1"), ("--approval-timeout", "0")])
def test_remediate_knobs_out_of_range(world, monkeypatch, option, value):
    assert_refused(world, monkeypatch, [*REMEDIATE, option, value], BAD, option, "greater than or equal to")


@pytest.mark.parametrize("policy,words", [
    ({"net_benefit_band": [1.0, 1.0]}, ["net_benefit_band", "0 < low < high < 1"]),
    ({"net_benefit_band": [0.3, 0.1]}, ["net_benefit_band", "[0.3, 0.1]"]),
    ({"thresholds": {}}, ["no threshold is set"]),
])
def test_policies_that_gate_nothing_or_divide_by_zero(world, monkeypatch, tmp_path, policy, words):
    import yaml

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "version": 1, "thresholds": {"max_demographic_parity_difference": 0.1},
                                    **policy}))
    assert_refused(world, monkeypatch, [*REMEDIATE, "--policy", str(path)], BAD, str(path), *words)


def test_registry_path_that_is_a_plain_file(world, monkeypatch):
    plain = world["base"] / "plain-file"
    for args in (["models"], ["models", NAME], ["lineage", NAME, "v1"], ["verify"],
                 ["rollback", NAME, "--to", "v1", "--reviewer", "d", "--reason", "x"]):
        assert_refused(world, monkeypatch, args, BAD, str(plain), "is a file", registry=plain)
    assert plain.read_text() == "not a registry\n"


def test_audit_output_that_is_a_directory(world, monkeypatch):
    directory = world["base"] / "a-directory"
    assert_refused(world, monkeypatch, ["audit", "--dataset", str(world["spec"]), "--output", str(directory)], BAD,
                   str(directory), "is a directory")
    missing = world["base"] / "no-such-folder" / "audit.json"
    assert_refused(world, monkeypatch, ["audit", "--dataset", str(world["spec"]), "--output", str(missing)], BAD,
                   "folder does not exist")
    assert list(directory.iterdir()) == [] and not missing.parent.exists()


def gate_args(world, model: Path, *extra: str) -> list[str]:
    return ["gate", "--model", str(model), "--data", str(world["data"]), "--dataset", str(world["spec"]),
            "--policy", str(world["policy"]), *extra]


class RunsAShellCommand:
    def __init__(self, witness: Path):
        self.witness = witness

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.witness)],))


def test_gate_refuses_to_unpickle_a_file_from_outside_the_registry(world, monkeypatch, tmp_path):
    witness = tmp_path / "pwned"
    planted = tmp_path / "model.joblib"
    planted.write_bytes(pickle.dumps(RunsAShellCommand(witness)))
    assert_refused(world, monkeypatch, gate_args(world, planted), BAD, str(planted), "pickles", "--trust")
    assert_refused(world, monkeypatch, gate_args(world, world["registry"].model_path(NAME), "--baseline", str(planted)),
                   BAD, "--trust")
    assert not witness.exists()
    assert_refused(world, monkeypatch, gate_args(world, tmp_path / "missing.joblib"), BAD, "model file not found")
    assert_refused(world, monkeypatch, gate_args(world, world["base"] / "not-a-model.joblib", "--trust"), BAD,
                   "not a readable model file")


def test_gate_trusts_a_registry_champion_by_its_recorded_hash(world, monkeypatch):
    result = run(world, monkeypatch, *gate_args(world, world["registry"].model_path(NAME)))
    assert result.exit_code in (0, ExitCode.GATE_FAILED), result.output
    assert "policy default" in result.output and "--trust" not in result.output


def test_a_tampered_champion_is_caught_by_gate_models_verify_and_reproduce(world, monkeypatch, tmp_path):
    """The champion replaced by a pickle that would run a command (and, in test_registry, by a
    model that always predicts 1): nothing unpickles it, every command says which file and hashes."""
    for name in ("registry", "remote"):
        shutil.copytree(world["base"] / name, tmp_path / name)
    registry = Registry(tmp_path / "registry", tmp_path / "remote")
    witness = tmp_path / "pwned"
    recorded = registry.champion(NAME).model_sha256
    registry.model_path(NAME).write_bytes(pickle.dumps(RunsAShellCommand(witness)))
    actual = hashlib.sha256(registry.model_path(NAME).read_bytes()).hexdigest()
    monkeypatch.setenv("FAIRLOOP_REGISTRY_REMOTE", str(tmp_path / "remote"))
    for args, code in ((gate_args(world, registry.model_path(NAME)), ExitCode.FAILED), (["models"], ExitCode.FAILED),
                       (["verify"], ExitCode.FAILED), (["reproduce", NAME, "v2"], ExitCode.FAILED)):
        monkeypatch.setenv("FAIRLOOP_REGISTRY_DIR", str(registry.root))
        monkeypatch.setenv("COLUMNS", "250")
        result = CliRunner().invoke(app, args)
        flat = " ".join((result.output + result.stderr).split())
        assert result.exit_code == code, flat
        assert recorded in flat and actual in flat and "model.joblib" in flat, (args, flat)
        assert "Traceback" not in flat
    assert not witness.exists()


def test_review_names_compare_case_insensitively():
    assert "separation of duties" in refusal_reason("ROOT", [], "root")
    assert "separation of duties" in refusal_reason(" Root ", [], "root")
    assert refusal_reason("ANN", ["ann", "ben"], "root") is None
    assert "not on the policy's reviewer list" in refusal_reason("cat", ["ann"], "root")
    assert refusal_reason("", [], "root") == "a reviewer name is required"


def test_a_registry_that_does_not_exist_is_never_created_by_reading_it(world, monkeypatch):
    missing = world["base"] / "no-registry-here"
    for args, code, words in ((["models"], 0, ["No models"]), (["verify"], 0, ["0 version(s) of 0 dataset(s)"]),
                              (["models", NAME], BAD, ["no dataset 'tiny'", "none yet"]),
                              (["lineage", NAME, "v1"], BAD, ["no dataset 'tiny'"]),
                              (["rollback", NAME, "--to", "v1", "--reviewer", "d", "--reason", "x"], BAD,
                               ["no dataset 'tiny'"])):
        assert_refused(world, monkeypatch, args, code, *words, registry=missing)
        assert not missing.exists() and not (missing.parent / f".{missing.name}.lock").exists()


@pytest.mark.parametrize("template,words", [
    ({"learner": "nosuchpackage.Model"}, ["field 'learner'", "cannot import 'nosuchpackage'"]),
    ({"learner": "sklearn.svm.LinearSVC"}, ["LinearSVC", "has no predict_proba"]),
    ({"learner": "sklearn.linear_model.LogisticRegression", "learner_params": {"max_iterations": 5}},
     ["field 'learner_params'", "['max_iterations']"]),
])
def test_remediate_with_a_template_whose_learner_cannot_be_used(world, monkeypatch, tmp_path, template, words):
    import yaml

    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "version": 1, "method": "none", **template}))
    assert_refused(world, monkeypatch, [*REMEDIATE, "--constraint", str(path)], BAD, str(path), *words)


def test_remediate_with_a_sweep_pairing_weights_and_a_learner_without_them(world, monkeypatch, tmp_path):
    import yaml

    template = tmp_path / "knn.yaml"
    template.write_text(yaml.safe_dump({"name": "knn", "version": 1, "method": "none",
                                        "learner": "sklearn.neighbors.KNeighborsClassifier"}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "version": 1, "recipes": ["recipes/reweigh.yaml"],
                                     "constraints": [str(template)]}))
    assert_refused(world, monkeypatch, [*REMEDIATE, "--sweep", str(sweep)], BAD, str(sweep), str(template),
                   "field 'learner'", "takes no sample_weight")


# -- issue 29: the last hostile inputs ---------------------------------------------------------------

def tiny_variant(world, folder: Path, *, csv: bytes | None = None, **changes) -> Path:
    """The tiny spec and its data copied into ``folder`` (a folder of its own: names are unique per
    folder), with spec fields changed and the CSV bytes replaced."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.csv").write_bytes(world["data"].read_bytes() if csv is None else csv)
    spec = {**yaml.safe_load(world["spec"].read_text()), "files": [{"path": "tiny.csv"}], **changes}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("no_server", [[], ["--no-server"]])
def test_monitor_window_end_that_is_not_a_date(world, monkeypatch, no_server):
    assert_refused(world, monkeypatch, ["monitor", "--dataset", str(world["spec"]), "--window", str(world["data"]),
                                        "--window-end", "tomorrow", *no_server],
                   BAD, "--window-end", "'tomorrow' is not a date", "YYYY-MM-DD")


def test_monitor_rows_dated_in_the_future(world, monkeypatch, tmp_path):
    rows = world["data"].read_text().splitlines()
    dated = [f"{rows[0]},day"] + [f"{row},2015-03-{1 + k % 28:02d}" for k, row in enumerate(rows[1:120])]
    dated[8] = dated[8].rsplit(",", 1)[0] + ",2099-01-01"
    spec = tiny_variant(world, tmp_path / "timed", csv=("\n".join(dated) + "\n").encode(), time_column="day")
    assert_refused(world, monkeypatch, ["monitor", "--dataset", str(spec), "--window", str(tmp_path / "timed" / "tiny.csv"),
                                        "--no-server"],
                   BAD, "tiny.csv", "time column 'day'", "1 value(s) dated after tomorrow", "'2099-01-01'")


def test_init_project_that_is_a_file(world, monkeypatch):
    plain = world["base"] / "plain-file"
    for project in (plain, plain / "inside"):
        assert_refused(world, monkeypatch, ["init", "--project", str(project)], BAD, "--project",
                       f"{plain} is a file, not a directory")
    assert plain.read_text() == "not a registry\n"


@pytest.mark.parametrize("reviewers,words", [
    ([""], ["entry 0 ''", "a reviewer name is required", "matches nobody"]),
    (["ann", " \u200b "], ["entry 1", "a reviewer name is required"]),
    (["r\u043e\u043et"], ["entry 0", "mixes Cyrillic and Latin letters"]),
])
def test_policy_reviewer_list_that_names_nobody(world, monkeypatch, tmp_path, reviewers, words):
    import yaml

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "version": 1, "thresholds": {"max_demographic_parity_difference": 0.1},
                                    "approval": {"reviewers": reviewers}}, allow_unicode=True))
    assert_refused(world, monkeypatch, [*REMEDIATE, "--policy", str(path)], BAD, str(path), "approval.reviewers", *words)


def test_look_alike_names_are_the_same_person():
    """What the review flow compares (tests/test_hostile_runs.py drives it on a real run)."""
    for look_alike in ("root\u200b", "\uff52\uff4f\uff4f\uff54", "\u2067root", "r\u00adoot", " ROOT "):
        assert "separation of duties" in refusal_reason(look_alike, [], "root"), look_alike
        assert refusal_reason(look_alike, ["root"], "ann") is None, look_alike
    assert "mixes Cyrillic and Latin letters" in refusal_reason("r\u043e\u043et", [], "ann")
    assert "mixes Greek and Latin letters" in refusal_reason("r\u03bfot", ["root"], "ann")
    assert "separation of duties" in refusal_reason("\u0412\u041e\u0412", [], "bob")  # Cyrillic capitals: 'BOB'
    assert refusal_reason("\u7530\u4e2d\u3055\u304f\u3089", [], "root") is None  # Japanese mixes Han and Hiragana
    from fairloop.review.credentials import ReviewerBook, issue, refusal

    book, token = issue(ReviewerBook(), "root")  # a registered reviewer is found under any of these spellings
    assert refusal(book, "\uff52\uff4f\uff4f\uff54", token) is None and refusal(book, "root\u200b", token) is None
    assert "does not match" in refusal(book, "\uff52\uff4f\uff4f\uff54", "root.not-the-token")


def test_spec_files_that_are_not_data(world, monkeypatch, tmp_path):
    audit = lambda spec, *words: assert_refused(  # noqa: E731
        world, monkeypatch, ["audit", "--dataset", str(spec), "--gx-dir", str(world["base"] / "project" / "gx")],
        BAD, str(spec.parent / "tiny.csv"), *words)
    text = world["data"].read_bytes()
    first_line = text.index(b"\n")
    nul = text[:first_line + 5] + b"\x00" + text[first_line + 5:]
    audit(tiny_variant(world, tmp_path / "nul", csv=nul), "NUL character", "on line 2", "not delimited text")
    directory = tiny_variant(world, tmp_path / "directory")
    (directory.parent / "tiny.csv").unlink()
    (directory.parent / "tiny.csv").mkdir()
    audit(directory, "is a directory, not a data file", "files.path = 'tiny.csv'")
    lines = text.count(b"\n")
    audit(tiny_variant(world, tmp_path / "skip", files=[{"path": "tiny.csv", "skip_rows": lines + 600}]),
          f"skip_rows = {lines + 600} skips every line", f"the file has {lines} lines")


@pytest.mark.parametrize("content,words", [
    (bytes(range(256)) * 8, ["not a text file", "NUL byte at offset 0"]),
    (b"alpha\nbeta\ngamma\n", ["each of the first 3 lines is a single field", "format.separator"]),
])
def test_init_on_files_that_are_not_delimited_text(world, monkeypatch, tmp_path, content, words):
    data = tmp_path / "odd.csv"
    data.write_bytes(content)
    assert_refused(world, monkeypatch, ["init", str(data), "--output", str(world["base"] / "project" / "odd.yaml")],
                   BAD, str(data), *words)


def test_a_name_the_registry_refuses_is_refused_at_load(world, monkeypatch, tmp_path):
    spec = tiny_variant(world, tmp_path / "dotted", name="my.data")
    for args in (["audit", "--dataset", str(spec)], ["init", "--check", str(spec)], [*REMEDIATE[:1], "--dataset", str(spec)]):
        assert_refused(world, monkeypatch, args, BAD, str(spec), "field 'name'", "name 'my.data' is not allowed")


def test_specs_and_sweeps_name_files_only_under_allowed_roots(world, monkeypatch, tmp_path):
    import yaml

    from fairloop.data.datasets import load_dataset

    for named in ("../../../../../../../../etc/passwd", "/etc/passwd"):
        spec = tiny_variant(world, tmp_path / "escape", files=[{"path": named}])
        assert_refused(world, monkeypatch, ["audit", "--dataset", str(spec)], BAD, str(spec), "files.path",
                       f"'{spec.parent / named}' is outside the folders", "FAIRLOOP_ALLOWED_ROOTS")
    outside = tmp_path / "elsewhere" / "t.yaml"
    outside.parent.mkdir()
    outside.write_text(yaml.safe_dump({"name": "t", "version": 1, "method": "none"}))
    sweep = tmp_path / "sweeps" / "sweep.yaml"
    sweep.parent.mkdir()
    sweep.write_text(yaml.safe_dump({"name": "s", "version": 1, "recipes": ["recipes/none.yaml"],
                                     "constraints": [str(outside)]}))
    assert_refused(world, monkeypatch, [*REMEDIATE, "--sweep", str(sweep)], BAD, f"{sweep}: constraints:",
                   f"'{outside}' is outside the folders")

    shared = tmp_path / "shared"  # data kept beside, not under, the spec: allowed once its folder is named
    tiny_variant(world, shared)
    spec = tiny_variant(world, tmp_path / "specs", files=[{"path": "../shared/tiny.csv"}])
    monkeypatch.setenv("FAIRLOOP_ALLOWED_ROOTS", f"/nonexistent:{shared}")
    assert len(load_dataset(spec).all_rows()) == len(world["data"].read_text().splitlines()) - 1
