"""Reading a raw data file as the spec's format says; every problem pandas would read past
(wrong separator, shifted columns, a header that is data, NUL bytes, a false .gz) is named."""

from __future__ import annotations

import csv
import gzip
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

from fairloop.data.dataset_spec import CsvFormat, DatasetSpec, SourceFile
from fairloop.errors import BadInputError

HEAD_LINES = 20  # first lines of a file checked for layout (field counts, header, separator)


def read_raw_file(spec: DatasetSpec, source: SourceFile, file_path: Path) -> pd.DataFrame:
    """Parse one raw file as the spec's format says; raise BadInputError naming the file."""
    if not file_path.is_file():
        what = "is a directory, not a data file" if file_path.is_dir() else "data file not found"
        raise BadInputError(f"{what} (spec field files.path = '{source.path}')", source=str(file_path))
    frame, head = read_table(spec.format, file_path, source.skip_rows)
    if frame.empty:
        raise BadInputError("file has a header but no data rows", source=str(file_path))
    _check_layout(spec, frame, [text for _, text in head], file_path)
    return frame


def read_table(fmt: CsvFormat, file_path: Path, skip_rows: int = 0, nrows: int | None = None
               ) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """The file as ``fmt`` reads it (every column as pandas types it), and its first lines with their
    numbers; every problem is a BadInputError naming the file and the cause."""
    _check_compression(file_path)
    head = _head(file_path, fmt.encoding, skip_rows)
    _check_no_nul(file_path, fmt.encoding)
    _check_field_counts(fmt, head, file_path)
    separator = fmt.read_separator
    options: dict[str, Any] = {"engine": "c", "low_memory": False}
    if len(separator) > 1:  # pandas reads a longer separator as a regex, with its python engine
        options = {"engine": "python"}
        separator = re.escape(separator)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(
                file_path,
                sep=separator,
                header=0 if fmt.header else None,
                names=fmt.columns if not fmt.header else None,
                index_col=False,  # never take a first column as the row index (it would shift every name)
                # Only empty fields and the spec's own na_values are missing: pandas' default list would
                # silently turn a group called "NA" or a value "n/a" into a missing value.
                keep_default_na=False,
                na_values=["", *fmt.na_values],
                skipinitialspace=fmt.read_skip_initial_space,
                quotechar=fmt.quote_char,
                skiprows=skip_rows or None,
                nrows=nrows,
                encoding=fmt.encoding,
                **options,
            )
        parser_warnings = [w for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
        if parser_warnings:
            raise BadInputError(
                f"lines of the file have different numbers of fields with separator {fmt.separator!r}"
                f"{_separator_hint(fmt, [text for _, text in head])}",
                source=str(file_path),
            )
    except pd.errors.EmptyDataError:
        lines = _count_lines(file_path, fmt.encoding) if skip_rows else 0
        if lines:
            raise BadInputError(f"skip_rows = {skip_rows} skips every line: the file has {lines:,} lines",
                                source=str(file_path), field="files[].skip_rows") from None
        raise BadInputError("file is empty", source=str(file_path)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInputError(
            f"corrupt or truncated gzip file ({type(exc).__name__}); compress the data again or use the plain file",
            source=str(file_path),
        ) from None
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"not {exc.encoding} text (spec field format.encoding = '{fmt.encoding}'): byte "
            f"{exc.object[exc.start:exc.start + 1]!r} at offset {exc.start} cannot be decoded; "
            f"set format.encoding to the file's encoding (e.g. latin-1)",
            source=str(file_path),
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        hint = _separator_hint(fmt, [text for _, text in head])
        counts = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if counts:
            expected, line, saw = counts.groups()
            raise BadInputError(
                f"line {int(line) + skip_rows} has {saw} fields, the lines before it {expected} "
                f"(separator {fmt.separator!r}){hint}", source=str(file_path),
            ) from None
        detail = " ".join(str(exc).split())[:200]
        raise BadInputError(
            f"cannot parse as {fmt.separator!r}-separated text ({detail}){hint}", source=str(file_path)
        ) from None
    return frame, head


def _open_text(file_path: Path, encoding: str):
    opener = gzip.open if file_path.suffix == ".gz" else open
    return opener(file_path, "rt", encoding=encoding, errors="replace", newline="")


def _count_lines(file_path: Path, encoding: str) -> int:
    with _open_text(file_path, encoding) as handle:
        return sum(1 for _ in handle)


def _check_no_nul(file_path: Path, encoding: str) -> None:
    """Delimited text never holds a NUL character: it means a binary or corrupt file, or the wrong
    encoding. pandas keeps one inside a value, where no later check would notice it."""
    line = 1
    try:
        with _open_text(file_path, encoding) as handle:
            for chunk in iter(lambda: handle.read(1 << 22), ""):
                at = chunk.find("\x00")
                if at >= 0:
                    raise BadInputError(
                        f"NUL character (\\x00) on line {line + chunk.count(chr(10), 0, at):,}: this is not delimited "
                        f"text (a binary or corrupt file, or not {encoding} as spec field format.encoding says)",
                        source=str(file_path),
                    )
                line += chunk.count("\n")
    except (gzip.BadGzipFile, EOFError, zlib.error):
        return  # a corrupt archive: the parse in read_table reports it


def _check_compression(file_path: Path) -> None:
    """A '.gz' name must hold gzip data (pandas chooses the decompression by the name)."""
    if file_path.suffix != ".gz":
        return
    with file_path.open("rb") as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        raise BadInputError(
            "the file is named .gz but is not gzip-compressed: compress it (gzip -n) or drop the .gz from its name",
            source=str(file_path),
        )


def _head(file_path: Path, encoding: str, skip_rows: int, count: int = HEAD_LINES) -> list[tuple[int, str]]:
    """The first non-blank lines after the skipped ones with their 1-based line numbers (for
    diagnosing a file pandas would misread)."""
    lines: list[tuple[int, str]] = []
    try:
        with _open_text(file_path, encoding) as handle:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if number > skip_rows and text.strip():
                    lines.append((number, text))
                if len(lines) >= count:
                    break
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInputError(
            f"corrupt or truncated gzip file ({type(exc).__name__}); compress the data again or use the plain file",
            source=str(file_path),
        ) from None
    return lines


def split_records(fmt: CsvFormat, head: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """The head's records as the spec's format reads them, each with the line it starts on (the csv
    module: a quoted field may span lines; a longer separator is split as plain text)."""
    separator = fmt.read_separator
    if len(separator) > 1:
        return [(number, text.split(separator)) for number, text in head]
    reader = csv.reader((text for _, text in head), delimiter=separator, quotechar=fmt.quote_char,
                        skipinitialspace=fmt.read_skip_initial_space)
    records, start = [], 0
    try:
        for fields in reader:
            records.append((head[start][0], fields))
            start = reader.line_num
    except csv.Error:  # a quote left open at the end of the head: the records before it still count
        pass
    return records


def split_fields(fmt: CsvFormat, line: str) -> list[str]:
    """One line's fields as the spec's format reads them."""
    records = split_records(fmt, [(1, line)])
    return records[0][1] if records else []


def _check_field_counts(fmt: CsvFormat, head: list[tuple[int, str]], file_path: Path) -> None:
    """Names and fields must match in number: pandas otherwise shifts every column silently
    (41 names for 42 fields: the first field becomes the index, every name moves one to the right)."""
    records = split_records(fmt, head)
    if not records:
        return
    if len(head) >= HEAD_LINES and len(records) > 1:
        records = records[:-1]  # the head's end may cut the last record
    if fmt.header:
        (header_line, header_fields), data = records[0], records[1:]
        expected = len(header_fields)
        named = f"the header (line {header_line}) has {expected} names"
    else:
        data, expected = records, len(fmt.columns)
        named = f"format.columns lists {expected} names"
    for number, record in data:
        fields = len(record)
        if fields != expected:
            fix = ("add the missing name(s) to format.columns" if not fmt.header and fields > expected
                   else "remove the extra name(s) from format.columns" if not fmt.header
                   else "every line needs one field per header name")
            raise BadInputError(
                f"{named} but line {number} has {fields} fields (separator {fmt.separator!r}): {fix}"
                f"{_separator_hint(fmt, [t for _, t in head])}",
                source=str(file_path),
            )


def _separator_hint(fmt: CsvFormat, head: list[str]) -> str:
    """'; the file looks ';'-separated ...' when the sniffer finds another separator, else ''."""
    try:
        found = csv.Sniffer().sniff("\n".join(head), delimiters=",;\t|: ").delimiter
    except csv.Error:
        return ""
    if found in (fmt.separator, fmt.read_separator):
        return ""
    return f"; the file looks {found!r}-separated: set format.separator to {found!r} (it is {fmt.separator!r})"


def _spec_columns(spec: DatasetSpec) -> list[str]:
    return [spec.label.column, *(s.column for s in spec.sensitive), *spec.features.columns, *(f.column for f in spec.filters)]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_layout(spec: DatasetSpec, frame: pd.DataFrame, head: list[str], file_path: Path) -> None:
    """Catch a wrong separator, a missing or an unexpected header and duplicated column names,
    which pandas reads without complaint and which would otherwise surface as a confusing
    'column not found' or non-numeric-value error."""
    fmt = spec.format
    wanted = list(dict.fromkeys(_spec_columns(spec)))
    if len(frame.columns) == 1 and len(wanted) > 1:
        hint = _separator_hint(fmt, head) or (f"; first line: {head[0][:80]!r}" if head else "")
        raise BadInputError(f"every line reads as one column with separator {fmt.separator!r}{hint}", source=str(file_path))
    if fmt.header:
        names = [str(c) for c in frame.columns]
        # Only when no column the spec names is there (an error anyway): a header made of numbers is data.
        if not set(wanted) & set(names) and any(_looks_numeric(n) for n in names):
            raise BadInputError(
                f"the first line looks like data, not a header (columns read: {names[:6]}); if the file has no "
                "header, set format.header: false and list format.columns",
                source=str(file_path),
            )
        if head:
            _check_duplicated_columns(split_fields(fmt, head[0]), frame, wanted, file_path)
    elif fmt.columns:
        first = [str(v).strip() for v in frame.iloc[0].tolist()]
        repeated = sum(a == b for a, b in zip(first, fmt.columns))
        if repeated * 2 >= len(fmt.columns):
            raise BadInputError(
                f"the first line repeats the column names ({first[:6]}) but format.header is false: "
                "set format.header: true (and drop format.columns) or remove the header line",
                source=str(file_path),
            )


def _check_duplicated_columns(header: list[str], frame: pd.DataFrame, wanted: list[str], file_path: Path) -> None:
    """pandas renames a repeated column 'x' to 'x.1': harmless unless the spec uses 'x' and the copies differ."""
    counts = pd.Series(header).value_counts()
    for name, times in counts[counts > 1].items():
        if name not in wanted:
            continue
        copies = [name, *(f"{name}.{k}" for k in range(1, times))]
        if not all(c in frame.columns for c in copies):
            continue
        differing = int(sum((frame[c] != frame[name]) & ~(frame[c].isna() & frame[name].isna()) for c in copies[1:]).astype(bool).sum())
        if differing:
            raise BadInputError(
                f"column '{name}' appears {times} times in the header, the spec uses it, and the copies differ in "
                f"{differing} row(s): rename one of them so the spec can say which it means",
                source=str(file_path),
            )
