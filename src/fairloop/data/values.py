"""How raw values are compared: a spec's ``1``, ``1.0`` and ``"1"`` are the value a file holds as ``1``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

YAML_BOOLEANS = {word: "true" for word in ("yes", "true", "on")} | {word: "false" for word in ("no", "false", "off")}


def canonical(value: Any) -> str:
    """The text a raw value is compared by: numbers by their value, everything else by its text.

    A spec says ``1``, ``1.0`` or ``"1"`` and a file holds ``1`` (read as a number) or ``"1"`` (read
    as text, e.g. because the column also holds ``"n/a"``): all are the same value. YAML reads
    ``yes``/``no``/``on``/``off`` as true/false, so those words match true/false. Other text is
    compared as written, leading and trailing blanks removed.
    """
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    text = str(value).strip()
    if text.lower() in YAML_BOOLEANS:
        return YAML_BOOLEANS[text.lower()]
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isnan(number) or math.isinf(number):
        return text
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def canonical_series(values: pd.Series) -> pd.Series:
    """``canonical`` of every non-empty value (computed once per distinct value); empty stays empty."""
    present = values.dropna()
    mapping = {v: canonical(v) for v in pd.unique(present)}
    return values.map(mapping, na_action="ignore")


def read_as(values: pd.Series) -> str:
    """How pandas read a column, in words for a message."""
    return "numbers" if pd.api.types.is_numeric_dtype(values) else "text"


def written_as(values: list) -> str:
    kinds = {"numbers" if isinstance(v, int | float) and not isinstance(v, bool) else "text" for v in values}
    return " and ".join(sorted(kinds))
