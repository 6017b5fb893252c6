"""Loading of versioned data files (datasets, recipes, constraints, policies).

Every data file is YAML validated by a pydantic model; any problem is reported as a
:class:`BadInputError` naming the file and the field, never as a traceback.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fairloop.errors import BadInputError


class SpecModel(BaseModel):
    """Base of every data-file model: unknown fields are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionedSpec(SpecModel):
    """A data file with a name and a version; its content hash identifies it in lineage."""

    name: str
    version: int
    description: str = ""

    def content_hash(self) -> str:
        """sha256 of the validated content: any parameter change changes the hash."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def identity(self, path: Path | str | None = None) -> dict[str, Any]:
        """What lineage records about this file."""
        ident = {"name": self.name, "version": self.version, "sha256": self.content_hash()}
        if path is not None:
            ident["path"] = str(path)
        return ident


SpecT = TypeVar("SpecT", bound=SpecModel)


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"field '{field}': {item['msg']}{shown}")
    return "; ".join(lines)


def load_spec(path: str | Path, model: type[SpecT]) -> SpecT:
    """Read ``path`` as YAML and validate it with ``model``.

    Raises BadInputError naming the file (and the field) for a missing file, a YAML syntax
    error or a validation error.
    """
    path = Path(path)
    kind = model.__name__
    if not path.is_file():
        raise BadInputError(f"{kind} file not found", source=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BadInputError(f"not valid YAML: {exc}", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise BadInputError(f"not UTF-8 text: {exc}", source=str(path)) from None
    if not isinstance(raw, dict):
        raise BadInputError(f"expected a YAML mapping for a {kind}, got {type(raw).__name__}", source=str(path))
    try:
        return model.model_validate(raw, context={"spec_dir": path.parent})
    except ValidationError as exc:
        raise BadInputError(f"invalid {kind}: {_format_validation_error(exc)}", source=str(path)) from None
