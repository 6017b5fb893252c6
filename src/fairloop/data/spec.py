"""Loading of versioned data files (datasets, recipes, constraints, policies).

Every data file is YAML validated by a pydantic model; any problem is reported as a
:class:`BadInputError` naming the file and the field, never as a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from fairloop.config import get_settings
from fairloop.errors import BadInputError


class SpecModel(BaseModel):
    """Base of every data-file model: unknown fields are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionedSpec(SpecModel):
    """A data file with a name and a version; its content hash identifies it in lineage."""

    name: str
    version: int
    description: str = ""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name)

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

# Names reach git (tags, paths), DVC and the file system: lower-case letters, digits, '_' and '-',
# never a leading '-' (read as an option). No '.': the registry refuses it in a dataset's name (a
# '..' inside a git tag is invalid), and a name the spec allows must be allowed everywhere.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_SPEC_BYTES = 1 << 20  # a data file is a few kB; anything near this is not one
MAX_YAML_NODES = 100_000  # nodes after aliases are expanded: an anchor bomb stops here, before it is built


def check_name(name: str) -> str:
    """``name`` if it is safe as a git ref, a DVC path and a file name; else a ValueError saying why."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"name {name!r} is not allowed: use 1 to 64 lower-case letters, digits, '_' or '-', starting "
            "with a letter or digit (it names git tags, DVC paths and files)"
        )
    return name


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """How many nodes ``node`` becomes once every alias is expanded; stops counting past ``limit``.

    An alias is the same node object as its anchor, so a size is computed once per node and a
    billion-laughs document costs a few hundred steps to measure. A node reached again while
    it is being measured is a recursive alias, refused.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(current: yaml.Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ValueError("a recursive alias (an anchor that contains itself)")
        open_nodes.add(key)
        total = 1
        if isinstance(current, yaml.SequenceNode):
            children = current.value
        elif isinstance(current, yaml.MappingNode):
            children = [child for pair in current.value for child in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(node)


def read_yaml(path: Path) -> Any:
    """Parse one YAML data file with bounds: at most MAX_SPEC_BYTES, at most MAX_YAML_NODES nodes with
    aliases expanded. Raises BadInputError naming the file."""
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise BadInputError(f"{size:,} bytes is too large for a data file (limit {MAX_SPEC_BYTES:,})", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"not UTF-8 text: {exc}", source=str(path)) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            nodes = _expanded_size(node, MAX_YAML_NODES)
        except ValueError as exc:
            raise BadInputError(f"refused YAML: {exc}", source=str(path)) from None
        if nodes > MAX_YAML_NODES:
            raise BadInputError(
                f"refused YAML: its anchors and aliases expand to more than {MAX_YAML_NODES:,} nodes "
                "(an alias bomb?); write the values out instead of nesting aliases", source=str(path),
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        # '> 120' unquoted starts a folded block, '!= 3' a tag: PyYAML's message names neither
        syntax = "block scalar" in str(exc) or "for the tag" in str(exc)
        hint = ("; a value starting with '>', '|' or '!' is YAML syntax: quote it, e.g. positive_if: \"> 120\""
                if syntax else "")
        raise BadInputError(f"not valid YAML: {exc}{hint}", source=str(path)) from None
    finally:
        loader.dispose()


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        message = item["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        lines.append(f"field '{field}': {message}{shown}")
    return "; ".join(lines)


def check_allowed_path(path: str | Path, naming_file: Path, field: str) -> Path:
    """``path`` (relative to the working directory, or absolute) resolved, if it lies in a folder that
    ``naming_file`` may name files in (``Settings.file_roots``); else a BadInputError naming that file and field."""
    resolved = Path(path).resolve()
    roots = get_settings().file_roots(naming_file)
    if not any(resolved.is_relative_to(root) for root in roots):
        raise BadInputError(
            f"'{path}' is outside the folders a spec or sweep may name files in ({', '.join(map(str, roots))}): "
            f"move the file there, or add its folder to FAIRLOOP_ALLOWED_ROOTS (folders separated by '{os.pathsep}')",
            source=str(naming_file), field=field,
        )
    return resolved


def load_spec(path: str | Path, model: type[SpecT]) -> SpecT:
    """Read ``path`` as YAML and validate it with ``model``.

    Raises BadInputError naming the file (and the field) for a missing file, a YAML syntax
    error or a validation error.
    """
    path = Path(path)
    kind = model.__name__
    if not path.is_file():
        raise BadInputError(f"{kind} file not found", source=str(path))
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise BadInputError(f"expected a YAML mapping for a {kind}, got {type(raw).__name__}", source=str(path))
    try:
        return model.model_validate(raw, context={"spec_dir": path.parent})
    except ValidationError as exc:
        raise BadInputError(f"invalid {kind}: {_format_validation_error(exc)}", source=str(path)) from None
