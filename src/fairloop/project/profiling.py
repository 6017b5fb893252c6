"""What a data file is: its encoding, its CSV dialect (``csv.Sniffer``) and each column's kind, with the
evidence ``fairloop init`` writes into a draft spec."""

from __future__ import annotations

import codecs
import csv
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fairloop.data.dataset_spec import CsvFormat
from fairloop.data.values import canonical_series
from fairloop.errors import BadInputError

SAMPLE_BYTES = 1 << 20  # encoding and dialect are detected on the file's head
SNIFF_LINES = 100
SEPARATORS = ",;\t| "  # the field separators init recognises
NA_TOKENS = ("?", "NA", "N/A", "n/a", "na", "NaN", "nan", "null", "NULL", "None", "#N/A", "-", ".")
MAX_GROUPS = 20  # a sensitive column with more distinct values is not a set of groups
MAX_CATEGORIES = 200  # more distinct texts: an identifier or free text, left out of the features


class ColumnProfile(BaseModel):
    """What ``init`` found in one column, and what it made of it."""

    name: str
    kind: str  # numeric, categorical, excluded
    evidence: str
    values: dict[str, int] = {}  # distinct values (canonical text) and their counts, when few
    numeric: bool = False
    empty: int = 0


def _open_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise BadInputError("data file not found", source=str(path))
    with path.open("rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(SAMPLE_BYTES)
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise BadInputError(f"corrupt or truncated gzip file ({type(exc).__name__})", source=str(path)) from None


def detect_encoding(head: bytes) -> tuple[str, str]:
    """(encoding, evidence). UTF-8 when the head decodes as UTF-8 (a character cut at the end is fine)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "starts with a UTF-8 byte-order mark"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8", f"the first {len(head):,} bytes are valid UTF-8"
    except UnicodeDecodeError as exc:
        byte = head[exc.start:exc.start + 1]
        try:
            head.decode("cp1252")
            return "cp1252", f"not UTF-8 (byte {byte!r} at offset {exc.start:,}); cp1252 (Windows Western) decodes it: check accented values"
        except UnicodeDecodeError:
            return "latin-1", f"not UTF-8 (byte {byte!r} at offset {exc.start:,}); latin-1 decodes any byte: check accented values"


def detect_format(path: Path, columns: list[str] | None) -> tuple[CsvFormat, dict[str, str]]:
    """The file's format (csv.Sniffer on its head) and the evidence for each field."""
    head = _open_bytes(path)
    if not head.strip():
        raise BadInputError("file is empty", source=str(path))
    if b"\x00" in head:
        raise BadInputError(f"not a text file: NUL byte at offset {head.index(bytes(1)):,} (a binary file, or UTF-16 "
                            "text: save it as UTF-8); init drafts specs for delimited text such as CSV", source=str(path))
    encoding, encoding_evidence = detect_encoding(head)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)
    lines = [line for line in text.splitlines()[:SNIFF_LINES + 1] if line.strip()][:SNIFF_LINES]
    sample = "\n".join(lines)
    sniffer = csv.Sniffer()
    try:
        dialect = sniffer.sniff(sample, delimiters=SEPARATORS)
    except csv.Error:
        if not any(separator in line for line in lines for separator in SEPARATORS):
            raise BadInputError(
                f"each of the first {len(lines)} lines is a single field (none of , ; tab | space in them): a dataset "
                "needs a label column and a sensitive column at least; if another character separates the fields, "
                "write the spec's format.separator by hand", source=str(path),
            ) from None
        raise BadInputError(
            "cannot tell the field separator (csv.Sniffer found none of , ; tab | space used consistently in the "
            "first lines); write format.separator by hand", source=str(path),
        ) from None
    counts = {len(row) for row in csv.reader(lines[1:], dialect)}
    separator_evidence = f"csv.Sniffer; {'/'.join(map(str, sorted(counts)))} fields on each of the first {len(lines)} lines"
    header = sniffer.has_header(sample) if columns is None else False
    if columns is not None:
        header_evidence = "names given with --columns"
        first = next(csv.reader(lines[:1], dialect))
        if [f.strip() for f in first] == columns:
            header = True
            header_evidence = "the first line holds the names given with --columns"
    elif header:
        header_evidence = "csv.Sniffer.has_header: the first line differs in type or length from the lines below it"
    else:
        header_evidence = ("csv.Sniffer.has_header: the first line looks like data; columns are named column_1 ... "
                           "(rename them here, or pass --columns)")
    width = len(next(csv.reader(lines[:1], dialect)))
    if columns is not None and len(columns) != width:
        raise BadInputError(f"--columns gives {len(columns)} names but line 1 has {width} fields "
                            f"(separator {dialect.delimiter!r})", source=str(path))
    if not header and columns is None:
        columns = [f"column_{k}" for k in range(1, width + 1)]
    fmt = CsvFormat(
        separator=dialect.delimiter, header=header, columns=None if header else columns,
        skip_initial_space=bool(dialect.skipinitialspace), quote_char=dialect.quotechar or '"', encoding=encoding,
    )
    evidence = {"separator": separator_evidence, "header": header_evidence, "encoding": encoding_evidence}
    if dialect.skipinitialspace:
        evidence["skip_initial_space"] = "fields start with a blank after the separator"
    if fmt.quote_char != '"':
        evidence["quote_char"] = f"csv.Sniffer: fields are quoted with {fmt.quote_char}"
    return fmt, evidence


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"\d[-/:]\d", regex=True).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.95)


def profile_columns(frame: pd.DataFrame) -> tuple[list[ColumnProfile], dict[str, dict[str, int]]]:
    """Each column's kind with its evidence, and the missing-value texts found (text -> column -> rows).

    ``frame`` is read with only empty fields as missing, so 'NA', '?' and the like are still text here.
    """
    profiles, tokens = [], {}
    rows = len(frame)
    for name in frame.columns:
        values = frame[name]
        empty = int(values.isna().sum())
        present = values.dropna()
        found: dict[str, int] = {}
        if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
            real, numbers, numeric = present, present, bool(len(present))  # pandas read numbers: no text to look at
        else:
            as_text = present.astype(str).str.strip()
            is_token = as_text.isin(NA_TOKENS)
            found = {t: int(n) for t, n in as_text[is_token].value_counts().items()}
            real = as_text[~is_token]
            numbers = pd.to_numeric(real, errors="coerce")
            numeric = bool(len(real)) and bool(numbers.notna().all())
        for token, count in found.items():
            tokens.setdefault(token, {})[str(name)] = count
        # numbers by value (1 and 1.0 are one value), text as written; few values are listed with their counts
        distinct = real.value_counts()
        if len(distinct) <= MAX_GROUPS and numeric:
            distinct = canonical_series(real).value_counts()
        missing = empty + sum(found.values())
        missing_note = f"; {missing:,} empty" if missing else ""
        profile = dict(name=str(name), numeric=numeric, empty=missing)
        if len(distinct) <= MAX_GROUPS:
            profile["values"] = {str(k): int(v) for k, v in distinct.items()}
        if real.empty:
            profiles.append(ColumnProfile(**profile, kind="excluded", evidence="no value in any row"))
        elif len(distinct) == 1:
            profiles.append(ColumnProfile(**profile, kind="excluded", evidence=f"one value ({distinct.index[0]!r}) in every row"))
        elif numeric:
            sequence = np.arange(1, rows + 1)
            if str(name).startswith("Unnamed:") or (len(numbers) == rows and np.array_equal(numbers.to_numpy(), sequence)):
                profiles.append(ColumnProfile(**profile, kind="excluded", evidence="row numbers 1, 2, 3, ... (an index written with the data)"))
                continue
            integers = bool((numbers == numbers.round()).all())
            if integers and rows > 50 and len(distinct) == rows:
                profiles.append(ColumnProfile(**profile, kind="excluded", evidence="a different integer in every row: an identifier"))
                continue
            evidence = f"{len(distinct):,} distinct numbers, {numbers.min():g} to {numbers.max():g}{missing_note}"
            if integers and 2 < len(distinct) <= 10:
                evidence += "; few integers: if they are codes, not amounts, move this to categorical"
            profiles.append(ColumnProfile(**profile, kind="numeric", evidence=evidence))
        elif _looks_like_dates(real):
            profiles.append(ColumnProfile(**profile, kind="excluded", evidence="dates or times: not a feature (a time_column for monitoring?)"))
        elif len(distinct) > MAX_CATEGORIES:
            profiles.append(ColumnProfile(**profile, kind="excluded",
                                          evidence=f"{len(distinct):,} distinct texts in {rows:,} rows: an identifier or free text"))
        else:
            bad = real[numbers.isna()]
            shown = ", ".join(repr(v) for v in list(dict.fromkeys(bad.astype(str)))[:3])
            mixed = f" (text such as {shown} among {int(numbers.notna().sum()):,} numbers)" if numbers.notna().any() else ""
            profiles.append(ColumnProfile(**profile, kind="categorical",
                                          evidence=f"{len(distinct):,} distinct values{mixed}{missing_note}"))
    return profiles, tokens
