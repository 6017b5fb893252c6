"""``fairloop init``: draft a dataset spec from a data file, check a spec against its files, lay out a project.

The draft says what it found and how (separator and header from ``csv.Sniffer``, types from
``pandas.to_numeric`` over the rows read, label and group values with their counts) in YAML
comments, and refuses to guess what it cannot tell: which column is the label, which value is
positive, which columns are sensitive. The draft is loaded through the spec loader before it
is written, so what ``init`` writes always loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from pydantic import BaseModel, ValidationError

from fairloop.audit.leakage import leak_scores
from fairloop.data.dataset_spec import (
    AuditSpec,
    CsvFormat,
    DatasetSpec,
    LabelSpec,
    check_unique_name,
)
from fairloop.data.datasets import LoadedDataset, load_dataset, read_dataset
from fairloop.data.parsing import label_vector
from fairloop.data.reading import read_table
from fairloop.data.spec import NAME_PATTERN
from fairloop.data.values import canonical, canonical_series
from fairloop.errors import BadInputError
from fairloop.project.profiling import (
    MAX_GROUPS,
    ColumnProfile,
    detect_format,
    profile_columns,
)

MAX_ROWS = 200_000  # types, label and group values are read from at most this many rows
LABEL_NAMES = ("label", "target", "class", "y", "outcome")
SENSITIVE_WORDS = (
    "sex", "gender", "race", "ethnicity", "ethnic", "ethn", "black", "nonwhite", "nwhite", "white", "colour", "color",
    "religion", "nationality", "citizen", "citizenship", "native", "origin", "language", "disability", "marital",
    "sexe", "genre", "origine", "nationalite",  # French: the generated loans file
)

POSITIVE_OF_PAIR = {("0", "1"): "1", ("false", "true"): "true", ("no", "yes"): "yes", ("n", "y"): "y"}  # lower case


class Draft(BaseModel):
    name: str
    path: Path
    rows: int
    text: str


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64]
    return slug or "dataset"


def _yaml(value) -> str:
    """One scalar or list in YAML (JSON's double-quoted strings are valid YAML)."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _raw_value(text: str, numeric: bool):
    """A label or filter value as the spec writes it: a number when the column holds numbers."""
    if numeric:
        number = float(text)
        return int(number) if number.is_integer() else number
    return text


def _counts(values: dict[str, int], limit: int = 6) -> str:
    shown = ", ".join(f"{k} {v:,}" for k, v in list(values.items())[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _choose_label(profiles: dict[str, ColumnProfile], label: str | None, positive: list[str] | None, path: Path,
                  frame: pd.DataFrame) -> tuple[str, str, LabelSpec, str]:
    """The label column, how it was chosen, its rule (raw values or a proposed threshold) and how that was chosen."""
    binary = [p.name for p in profiles.values() if len(p.values) == 2]
    if label is None:
        named = [name for name in binary if name.lower() in LABEL_NAMES]
        if len(named) != 1:
            raise BadInputError(
                "cannot tell which column is the label: pass --label COLUMN"
                + (f" (two-valued columns: {binary[:12]})" if binary else ""), source=str(path),
            )
        label, how = named[0], "guessed: the only two-valued column named like a label"
    else:
        how = "given with --label"
    if label not in profiles:
        raise BadInputError(f"--label: no column '{label}' (columns: {list(profiles)[:30]})", source=str(path))
    column = profiles[label]
    values = list(column.values)
    if column.numeric and not positive and len(values) != 2:
        return label, how, *_proposed_threshold(label, frame[label], path)
    if not values:
        raise BadInputError(f"label column '{label}' has more than {MAX_GROUPS} values: not a class label"
                            + ("; without --positive, init proposes a threshold (label.positive_if) for a numeric label"
                               if column.numeric else ""), source=str(path))
    by_value = {canonical(v): v for v in values}
    if positive:
        chosen = [by_value.get(canonical(v)) for v in positive]
        unknown = [v for v, c in zip(positive, chosen) if c is None]
        if unknown:
            raise BadInputError(f"--positive {unknown}: not a value of label column '{label}' (its values: {values})",
                                source=str(path))
        positive_how = "given with --positive"
    elif len(values) == 2 and tuple(sorted(v.lower() for v in values)) in POSITIVE_OF_PAIR:
        wanted = POSITIVE_OF_PAIR[tuple(sorted(v.lower() for v in values))]
        chosen = [v for v in values if v.lower() == wanted]
        positive_how = "guessed from the values: check it is the outcome the model should predict"
    else:
        raise BadInputError(
            f"cannot tell which value of label column '{label}' is positive (values: {_counts(column.values)}): "
            "pass --positive VALUE (repeat it for several)", source=str(path),
        )
    negative = [v for v in values if v not in chosen]
    if not negative:
        raise BadInputError(f"label column '{label}': every value is positive; a model needs both classes", source=str(path))
    to_raw = lambda items: [_raw_value(v, column.numeric) for v in items]  # noqa: E731
    return label, how, LabelSpec(column=label, positive=to_raw(chosen), negative=to_raw(negative)), positive_how


def _proposed_threshold(label: str, values: pd.Series, path: Path) -> tuple[LabelSpec, str]:
    """A numeric label that is not two-valued (a wage, a score) becomes '> its median': a cut init
    can defend (classes of about equal size) but not know, so the draft says to check it."""
    numbers = pd.to_numeric(values, errors="coerce").dropna()  # the texts init reads as 'no value' are left out
    median = float(numbers.median())
    # many rows at the median (a discrete score): '>' may leave no row above it, '>=' keeps both classes then
    comparison = ">" if (numbers > median).any() else ">="
    label_spec = LabelSpec(column=label, positive_if=f"{comparison} {canonical(median)}")
    positives = int(label_vector(label_spec, numbers, path).sum())
    if positives in (0, len(numbers)):
        raise BadInputError(f"label column '{label}': every value is {canonical(median)}; a model needs both classes",
                            source=str(path))
    where = "above" if comparison == ">" else "at or above"
    return label_spec, (f"proposed: {where} the median ({canonical(median)}), {positives:,} positive and "
                        f"{len(numbers) - positives:,} negative rows; check the cut and its direction")


def _choose_sensitive(profiles: dict[str, ColumnProfile], sensitive: list[str] | None, label: str, path: Path):
    if sensitive:
        for name in sensitive:
            if name not in profiles:
                raise BadInputError(f"--sensitive: no column '{name}' (columns: {list(profiles)[:30]})", source=str(path))
            if name == label:
                raise BadInputError(f"--sensitive: '{name}' is the label column", source=str(path))
            if not profiles[name].values:
                raise BadInputError(
                    f"--sensitive: column '{name}' has more than {MAX_GROUPS} distinct values, not a set of groups; "
                    "add a column of groups (e.g. age bands) to the file and name that", source=str(path),
                )
        return [(name, "given with --sensitive") for name in sensitive]
    guessed = []
    for name, column in profiles.items():
        words = set(re.split(r"[^a-z]+", name.lower()))
        if name != label and words & set(SENSITIVE_WORDS) and 2 <= len(column.values) <= MAX_GROUPS:
            guessed.append((name, "guessed from the column name: check it"))
    if not guessed:
        raise BadInputError(
            "found no sensitive column by name (sex, race, ethnicity, ...): pass --sensitive COLUMN "
            f"(columns with 2 to {MAX_GROUPS} values: {[p.name for p in profiles.values() if 2 <= len(p.values) <= MAX_GROUPS][:15]})",
            source=str(path),
        )
    return guessed


def _predicted(rule: LabelSpec) -> str:
    return rule.describe(True) if rule.threshold is not None else f"{rule.column} in {rule.positive}"


def _labelled(rule: LabelSpec, values: pd.Series) -> pd.Series:
    """Rows whose label is known: a raw value the rule names, or a number for a threshold (a text init
    reads as 'no value' is neither)."""
    if rule.threshold is not None:
        return pd.to_numeric(values, errors="coerce").notna()
    return canonical_series(values).isin([canonical(v) for v in [*rule.positive, *rule.negative]])


def _label_filter(rule: LabelSpec, labels: pd.Series) -> dict:
    """The filter keeping the rows with a label (``labels``: the known ones): its raw values, or the range of its numbers."""
    if rule.threshold is None:
        return {"column": rule.column, "in": [*rule.positive, *rule.negative]}
    numbers = pd.to_numeric(labels)
    return {"column": rule.column, "between": [_raw_value(canonical(bound), True) for bound in (numbers.min(), numbers.max())]}


def _without_leaks(features: list[ColumnProfile], rows: pd.DataFrame, y: pd.Series) -> list[ColumnProfile]:
    """``features`` with every candidate that alone predicts the label as well as the audit's leak
    check flags (a column derived from the label, e.g. logwage beside wage) marked excluded."""
    candidates = [p for p in features if p.kind in ("numeric", "categorical")]
    numeric = [p.name for p in candidates if p.kind == "numeric"]
    X = pd.DataFrame({p.name: pd.to_numeric(rows[p.name], errors="coerce") if p.kind == "numeric" else rows[p.name]
                      for p in candidates}, index=rows.index).reset_index(drop=True)
    defaults = AuditSpec()
    scores, _ = leak_scores(X, y.reset_index(drop=True), numeric, [p.name for p in candidates if p.kind == "categorical"],
                            threshold=defaults.label_leak_auc, sample_rows=defaults.proxy_sample_rows, seed=0)
    leaks = {s.feature: s for s in scores if s.flagged}
    return [p.model_copy(update={"kind": "excluded", "evidence": (
        f"predicts the label alone (AUC {leaks[p.name].auc:.3f}): derived from it or recorded after the outcome, a label "
        "leak the audit would block")}) if p.name in leaks else p for p in features]


def draft_spec(
    data_file: str | Path, *, label: str | None = None, positive: list[str] | None = None,
    sensitive: list[str] | None = None, name: str | None = None, output: str | Path | None = None,
    columns: list[str] | None = None, force: bool = False,
) -> Draft:
    """Draft ``datasets/NAME.yaml`` (or ``output``) for ``data_file``; the draft is loaded before it is written."""
    data_path = Path(data_file)
    if not data_path.is_file():
        raise BadInputError("data file not found", source=str(data_path))
    name, output_path = _draft_target(data_path, name, output, force)
    fmt, evidence = detect_format(data_path, columns)
    frame, _ = read_table(fmt, data_path, nrows=MAX_ROWS)  # only empty fields are missing here
    if frame.empty:
        raise BadInputError("file has no data rows", source=str(data_path))
    profiles_list, tokens = profile_columns(frame)
    profiles = {p.name: p for p in profiles_list}
    label, label_how, rule, positive_how = _choose_label(profiles, label, positive, data_path, frame)
    chosen_sensitive = _choose_sensitive(profiles, sensitive, label, data_path)
    sensitive_columns = {column for column, _ in chosen_sensitive}
    rows_note = f"{len(frame):,} rows" + (f" (the first {MAX_ROWS:,} read)" if len(frame) == MAX_ROWS else "")

    lines = [
        f"# Drafted by `fairloop init {data_path.name}` from {rows_note}. Comments give the evidence;",
        "# lines marked 'guessed' are guesses: check them. `fairloop init --check THIS_FILE` validates the spec.",
        f"name: {name}",
        "version: 1",
        f"description: {_yaml(f'{data_path.name}: predict {_predicted(rule)}.')}",
        'provenance: ""  # where the data comes from, and its licence',
        *_format_lines(fmt, evidence, tokens, sensitive_columns | {label}),
    ]
    relative = os.path.relpath(data_path.resolve(), output_path.resolve().parent)
    if relative.startswith(os.path.join("..", "..")):  # far away: an absolute path reads better
        relative = str(data_path.resolve())
    lines += ["files:", f"  - path: {_yaml(relative)}", "label:",
              f"  column: {_yaml(label)}  # {label_how}; {_counts(profiles[label].values) or profiles[label].evidence}"]
    if rule.threshold is None:
        lines += [f"  positive: {_yaml(rule.positive)}  # {positive_how}", f"  negative: {_yaml(rule.negative)}"]
    else:
        lines.append(f"  positive_if: {_yaml(rule.positive_if)}  # {positive_how}")
    lines += _sensitive_lines(profiles, chosen_sensitive)
    known = _labelled(rule, frame[label])
    features = _without_leaks([p for p in profiles_list if p.name != label and p.name not in sensitive_columns],
                              frame[known], label_vector(rule, frame.loc[known, label], data_path))
    lines += _feature_lines(features, data_path)
    if profiles[label].empty:
        lines += ["filters:  # rows with no label cannot be trained on",
                  f"  - {_yaml(_label_filter(rule, frame.loc[known, label]))}  # leaves out {profiles[label].empty:,} row(s) with no label"]
    lines += ["split:", "  test_size: 0.3", "  validation_size: 0.2", "  seed: 0"]
    text = "\n".join(lines) + "\n"
    loaded = _write_if_it_loads(text, output_path)
    return Draft(name=name, path=output_path, rows=len(loaded.all_rows()), text=text)


def _draft_target(data_path: Path, name: str | None, output: str | Path | None, force: bool) -> tuple[str, Path]:
    """The dataset's name (default: from the file's name) and the spec file to write."""
    stem = data_path.name.split(".")[0]
    name = name or _slug(stem)
    if not NAME_PATTERN.fullmatch(name):
        raise BadInputError(f"--name {name!r}: use 1 to 64 lower-case letters, digits, '_' or '-', starting with a "
                            "letter or digit", field="--name")
    output_path = Path(output) if output else Path("datasets") / f"{name}.yaml"
    if output_path.exists() and not force:
        raise BadInputError("already exists: choose another --output or pass --force to replace it", source=str(output_path))
    return name, output_path


def _format_lines(fmt: CsvFormat, evidence: dict[str, str], tokens: dict[str, dict[str, int]], named: set[str]) -> list[str]:
    """The draft's ``format:`` section; ``named``: the label and sensitive columns, warned about when they hold an na token."""
    lines = [
        "format:",
        f"  separator: {_yaml(fmt.separator)}  # {evidence['separator']}",
        f"  header: {str(fmt.header).lower()}  # {evidence['header']}",
    ]
    if fmt.skip_initial_space:
        lines.append(f"  skip_initial_space: true  # {evidence['skip_initial_space']}")
    if fmt.quote_char != '"':
        lines.append(f"  quote_char: {_yaml(fmt.quote_char)}  # {evidence['quote_char']}")
    lines.append(f"  encoding: {fmt.encoding}  # {evidence['encoding']}")
    if tokens:
        where = "; ".join(f"{t!r} in {', '.join(f'{c} ({n:,})' for c, n in list(cols.items())[:4])}" for t, cols in tokens.items())
        lines.append(f"  na_values: {_yaml(list(tokens))}  # read as 'no value': {where}")
        clash = sorted({c for cols in tokens.values() for c in cols} & named)
        if clash:
            lines.append(f"  # CHECK: {clash} hold(s) one of these texts: if it is a group or a label value there, not a missing")
            lines.append("  # value, remove it from na_values")
    else:
        lines.append("  na_values: []  # only empty fields are missing; no '?', 'NA', 'null' ... found")
    if not fmt.header:
        lines.append(f"  columns: {_yaml(fmt.columns)}")
    return lines


def _sensitive_lines(profiles: dict[str, ColumnProfile], chosen: list[tuple[str, str]]) -> list[str]:
    """The draft's ``sensitive:`` section: each chosen column with how it was chosen and its groups."""
    lines = ["sensitive:"]
    for column, how in chosen:
        profile = profiles[column]
        lines.append(f"  - name: {_slug(column)}  # {how}; groups: {_counts(profile.values)}")
        lines.append(f"    column: {_yaml(column)}")
        if profile.empty:
            lines.append(f"    missing: group  # {profile.empty:,} row(s) have no value: kept as the group 'missing' (or: fail)")
        lines.append("    use_as_feature: false  # true: also a model feature (list it under features too)")
    return lines


def _feature_lines(features: list[ColumnProfile], data_path: Path) -> list[str]:
    """The draft's ``features:`` section, with the columns left out and why."""
    numeric = [p for p in features if p.kind == "numeric"]
    categorical = [p for p in features if p.kind == "categorical"]
    excluded = [p for p in features if p.kind == "excluded"]
    if not numeric and not categorical:
        raise BadInputError("no column is left to be a feature (every other column is empty, constant or an identifier)",
                            source=str(data_path))
    lines = ["features:"]
    for title, group in (("numeric", numeric), ("categorical", categorical)):
        lines.append(f"  {title}:" + ("" if group else " []"))
        lines += [f"    - {_yaml(p.name)}  # {p.evidence}" for p in group]
    if excluded:
        lines.append("  # left out:")
        lines += [f"  #   {p.name}: {p.evidence}" for p in excluded]
    return lines


def _write_if_it_loads(text: str, output_path: Path) -> LoadedDataset:
    """Write the draft ``text`` to ``output_path`` only when it loads and reads the whole file."""
    try:  # what init writes always loads: validated and read as it will be, before anything is written
        spec = DatasetSpec.model_validate(yaml.safe_load(text))
        loaded = read_dataset(spec, output_path)
    except (BadInputError, ValidationError) as exc:
        raise BadInputError(f"not written: the whole file does not read with the draft: {exc}",
                            source=str(output_path)) from None
    check_unique_name(output_path, spec)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=output_path.parent, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        handle.write(text)
    os.replace(handle.name, output_path)
    return loaded


class GroupLine(BaseModel):
    group: str
    rows: int
    base_rate: float


class SensitiveLine(BaseModel):
    name: str
    column: str
    use_as_feature: bool
    groups: list[GroupLine]


class SpecSummary(BaseModel):
    """What ``fairloop init --check`` prints."""

    dataset: str
    spec: str
    rows: dict[str, int]
    raw_columns: int
    numeric: int
    categorical: int
    label: str
    positive_rate: float
    sensitive: list[SensitiveLine]
    sensitive_used_as_features: list[str]


def check_spec(spec_path: str | Path) -> SpecSummary:
    """Load the spec and all its files as a run would; summarise rows, columns, groups and base rates."""
    spec_path = Path(spec_path)
    loaded = load_dataset(spec_path)
    spec: DatasetSpec = loaded.spec
    rows = loaded.all_rows()
    first = next(iter(loaded.file_paths.values()))
    source = next(f for f in spec.files)
    raw, _ = read_table(spec.format, first, source.skip_rows, nrows=1)
    sensitive = []
    for item in spec.sensitive:
        rates = rows.y.groupby(rows.groups[item.name]).agg(["size", "mean"])
        sensitive.append(SensitiveLine(
            name=item.name, column=item.column, use_as_feature=item.use_as_feature,
            groups=[GroupLine(group=str(g), rows=int(r["size"]), base_rate=float(r["mean"])) for g, r in rates.iterrows()],
        ))
    return SpecSummary(
        dataset=spec.name, spec=str(spec_path), rows={role: len(split) for role, split in loaded.frames.items()},
        raw_columns=len(raw.columns), numeric=len(spec.features.numeric), categorical=len(spec.features.categorical),
        label=spec.label.column, positive_rate=float(rows.y.mean()), sensitive=sensitive,
        sensitive_used_as_features=spec.sensitive_used_as_features,
    )


PROJECT_FOLDERS = ("recipes", "constraints", "policies")


def bundled_root() -> Path:
    """The folder holding fairloop's own recipes/, constraints/ and policies/ (the checkout it is installed from)."""
    root = Path(__file__).resolve().parents[3]
    if not all((root / folder).is_dir() for folder in PROJECT_FOLDERS):
        raise BadInputError(f"fairloop's bundled {', '.join(PROJECT_FOLDERS)} are not beside this installation ({root}); "
                            "install fairloop from its source checkout (pip install -e)")
    return root


def lay_out_project(directory: str | Path) -> list[Path]:
    """Copy the bundled recipes, constraint templates (and sweeps) and policies into ``directory``
    and make an empty datasets/; refuses to write over any of them. No flow code is copied: the
    flows run from the installed package (``fairloop.flows``), so a project never forks them."""
    directory = Path(directory)
    root = bundled_root()
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise BadInputError(f"{existing} is a file, not a directory; lay out a project in a new or empty directory",
                            source=str(directory), field="--project")
    targets = [directory / folder for folder in (*PROJECT_FOLDERS, "datasets")]
    present = [str(t) for t in targets if t.exists()]
    if present:
        raise BadInputError(f"already there: {present}; lay out a project in a new or empty directory", source=str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in PROJECT_FOLDERS:
        shutil.copytree(root / folder, directory / folder, ignore=ignore)
    (directory / "datasets").mkdir()
    return targets
