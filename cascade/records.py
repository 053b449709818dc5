"""Unlabelled rows to classify, streamed from a CSV, TSV or JSON-lines file (or stdin), each with its id.

A row whose text is missing, not a string or empty is kept, with an error saying so, so that answers
join back on the id and nothing is dropped silently. Memory per row is bounded by ``max_field_chars``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .datasets import JSONL_SUFFIXES, TSV_SUFFIXES, csv_rows, json_objects, utf8_lines
from .limits import DEFAULT_LIMITS

Format = Literal["csv", "tsv", "jsonl"]
FORMATS = ("csv", "tsv", "jsonl")


@dataclass(frozen=True)
class Row:
    """One input row: its id (the id column's value, or its 0-based index among the rows), its text, and
    why it cannot be classified ("" when it can)."""

    id: Any
    text: str | None
    error: str = ""


def format_of(path: Path | None, given: str | None) -> Format:
    """The file format: ``given``, else from the suffix (.tsv/.tab, .jsonl/.ndjson, else CSV); stdin
    (``path`` None) is JSON lines unless told."""
    if given is not None:
        if given not in FORMATS:
            raise ValueError(f"unknown format {given!r}; use one of {', '.join(FORMATS)}")
        return given  # type: ignore[return-value]
    if path is None:
        return "jsonl"
    suffix = path.suffix.lower()
    return "tsv" if suffix in TSV_SUFFIXES else "jsonl" if suffix in JSONL_SUFFIXES else "csv"


def _checked(row_id: Any, text: Any) -> Row:
    if text is None:
        return Row(row_id, None, "no text (missing or null)")
    if not isinstance(text, str):
        return Row(row_id, None, f"the text is not a string (got {type(text).__name__})")
    if not text.strip():
        return Row(row_id, text, "empty text")
    return Row(row_id, text)


def _json_id(value: Any, where: str) -> Any:
    """An id answers can carry: anything JSON writes as UTF-8 (not NaN, infinity or a lone surrogate)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"{where}: id {str(value)[:40]!r} cannot be written as JSON (NaN, infinity or a lone "
                         "surrogate); give each row a string or integer id") from None
    return value


def read_rows(fh: BinaryIO, name: str, fmt: Format, text_col: str = "text", id_col: str | None = None, *,
              max_field_chars: int = DEFAULT_LIMITS.max_csv_field_chars, text_flag: str = "--text-col") -> Iterator[Row]:
    """The rows of an open binary file (``name`` for messages), lazily. A malformed file (a missing column
    or field, a line that is not a JSON object, a row whose field count differs from the header's, an id
    JSON cannot hold) is an error naming the line; a missing, null, non-string or empty text only marks
    its row."""
    where = Path(name)
    if fmt == "jsonl":
        index = 0
        for lineno, obj in json_objects(fh, where, max_field_chars, f'{{"{text_col}": "..."}}'):
            for col, flag in ((text_col, text_flag), (id_col, "--id-col")):
                if col is not None and col not in obj:
                    raise ValueError(f"{name}:{lineno}: field {col!r} not found (fields: {sorted(obj)[:10]}); pass "
                                     f"the right {flag} (a null value marks only its row)")
            row_id = _json_id(obj[id_col], f"{name}:{lineno}") if id_col is not None else index
            yield _checked(row_id, obj[text_col])
            index += 1
        return
    rows = csv_rows(fh, where, "\t" if fmt == "tsv" else ",", max_field_chars)
    _, fields = next(rows)
    for col, flag in ((text_col, text_flag), (id_col, "--id-col")):
        if col is not None and col not in fields:
            raise ValueError(f"{name}: column {col!r} not found (columns: {fields}); pass the right {flag}")
    t = fields.index(text_col)
    i = fields.index(id_col) if id_col is not None else None
    for index, (lineno, row) in enumerate(rows):
        yield _checked(_json_id(row[i], f"{name}:{lineno}") if i is not None else index, row[t])


TEXT_FILE_SUFFIXES = (".txt", ".csv", *TSV_SUFFIXES, *JSONL_SUFFIXES)


def read_texts(path: Path, text_col: str = "text", *, text_flag: str = "--text-col",
               max_field_chars: int = DEFAULT_LIMITS.max_csv_field_chars) -> list[str]:
    """The non-empty texts of a file: a ``.txt`` file's lines (UTF-8), or a CSV, TSV or JSON-lines table's
    ``text_col`` (rows without a usable text skipped; ``text_flag`` names the option that sets it in
    messages); an error names the file when it holds none or is of another kind."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() not in TEXT_FILE_SUFFIXES:
        raise ValueError(f"{path}: read as text files are {', '.join(TEXT_FILE_SUFFIXES)} (a .txt file holds one text a "
                         "line); write the texts out in one of these (Parquet: `cascade batch` reads it)")
    with path.open("rb") as fh:
        if path.suffix.lower() == ".txt":
            texts = [line.rstrip("\r\n") for line in utf8_lines(fh, path, max_field_chars)]
        else:
            texts = [row.text for row in read_rows(fh, str(path), format_of(path, None), text_col, text_flag=text_flag,
                                                   max_field_chars=max_field_chars) if not row.error and row.text]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts")
    return texts
