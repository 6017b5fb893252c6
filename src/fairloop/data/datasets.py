"""A dataset read through its spec: the labelled rows of each file, with the files' hashes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fairloop.data.dataset_spec import DatasetSpec, SourceFile, load_dataset_spec
from fairloop.data.parsing import (
    MISSING_GROUP,
    filter_rows,
    group_columns,
    label_vector,
    parse_rows,
    require_columns,
    typed_features,
)
from fairloop.data.reading import read_raw_file
from fairloop.data.rows import Split
from fairloop.data.spec import check_allowed_path
from fairloop.errors import BadInputError


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset read through its spec: labelled rows per file role, plus provenance."""

    spec: DatasetSpec
    spec_path: Path
    frames: dict[str, Split]
    files_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def file_paths(self) -> dict[str, Path]:
        """Raw file of each role ('all', or 'train' and 'test'), resolved against the spec."""
        return {f.role: (self.spec_path.parent / f.path).resolve() for f in self.spec.files}

    @property
    def data_sha256(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.files_sha256):
            digest.update(f"{name}:{self.files_sha256[name]}\n".encode())
        return digest.hexdigest()

    def all_rows(self) -> Split:
        """Every labelled row, whatever its file role (what the audit looks at)."""
        parts = list(self.frames.values())
        return Split(
            X=pd.concat([p.X for p in parts], ignore_index=True),
            y=pd.concat([p.y for p in parts], ignore_index=True),
            groups=pd.concat([p.groups for p in parts], ignore_index=True),
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_dataset(spec_path: str | Path) -> LoadedDataset:
    """Read every file of the spec at ``spec_path`` into labelled splits by file role."""
    spec_path = Path(spec_path)
    return read_dataset(load_dataset_spec(spec_path), spec_path)


def read_dataset(spec: DatasetSpec, spec_path: Path) -> LoadedDataset:
    """Read the files of ``spec`` (a spec that is, or will be, written at ``spec_path``)."""
    for source in spec.files:
        check_allowed_path(spec_path.parent / source.path, spec_path, "files.path")
    try:
        frames, hashes = _read_labelled_files(spec, spec_path)
    except BadInputError as exc:
        raise BadInputError(f"{exc} [dataset spec {spec_path}]") from None
    return LoadedDataset(spec=spec, spec_path=spec_path, frames=frames, files_sha256=hashes)


def load_data_file(spec_path: str | Path, data_path: str | Path) -> tuple[DatasetSpec, Split]:
    """Read ``data_path`` (a new snapshot, a production window) with the parsing, label and
    sensitive rules of the spec at ``spec_path``; the spec itself is returned unchanged."""
    spec_path, data_path = Path(spec_path), Path(data_path).resolve()
    spec = load_dataset_spec(spec_path)
    one_file = spec.model_copy(update={"files": [SourceFile(path=str(data_path), role="all")]})
    try:
        frames, _ = _read_labelled_files(one_file, spec_path)
    except BadInputError as exc:
        raise BadInputError(f"{exc} [dataset spec {spec_path}]") from None
    return spec, frames["all"]


def _read_labelled_files(spec: DatasetSpec, spec_path: Path) -> tuple[dict[str, Split], dict[str, str]]:
    frames: dict[str, Split] = {}
    hashes: dict[str, str] = {}
    for source in spec.files:
        file_path = (spec_path.parent / source.path).resolve()
        raw = read_raw_file(spec, source, file_path)
        require_columns(
            raw,
            {
                "label.column": [spec.label.column],
                "sensitive[].column": [s.column for s in spec.sensitive],
                "features": spec.features.columns,
                "filters[].column": [f.column for f in spec.filters],
            },
            file_path,
        )
        # Rows with no sensitive value are never dropped unseen: 'fail' counts them before any
        # filter could remove them, 'group' keeps them through filters on that column.
        for sensitive in spec.sensitive:
            empty = raw[sensitive.column].isna()
            if empty.any() and sensitive.missing == "fail":
                raise BadInputError(
                    f"sensitive column '{sensitive.column}' has {int(empty.sum())} empty value(s) (first at data row "
                    f"{int(empty.to_numpy().argmax()) + 1}); set sensitive.missing: group to keep them as an explicit "
                    f"'{MISSING_GROUP}' group",
                    source=str(file_path),
                )
        raw = filter_rows(spec, raw, file_path)
        frames[source.role] = Split(
            X=typed_features(spec, raw, file_path),
            y=label_vector(spec.label, raw[spec.label.column], file_path),
            groups=group_columns(spec, raw, file_path),
        )
        hashes[source.role] = file_sha256(file_path)
    return frames, hashes


def read_extra_training_rows(spec: DatasetSpec, path: str | Path) -> Split:
    """The labelled rows of an extra file in the dataset's raw format (rows with no label are left out)."""
    file_path = Path(path)
    raw = read_raw_file(spec, SourceFile(path=str(path)), file_path)
    try:
        return parse_rows(spec, raw, file_path).labelled()
    except BadInputError as exc:
        raise BadInputError(f"{exc} (extra training data {file_path})") from None
