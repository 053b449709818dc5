"""Unlabelled rows to classify, streamed from a CSV, TSV or JSON-lines file (or stdin), each with its id.

A row whose text is missing, not a string or empty is kept, with an error saying so, so that answers
join back on the id and nothing is dropped silently. Memory per row is bounded by ``max_field_chars``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal

from .datasets import JSONL_SUFFIXES, TSV_SUFFIXES, utf8_lines
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


def read_rows(fh: BinaryIO, name: str, fmt: Format, text_col: str = "text", id_col: str | None = None, *,
              max_field_chars: int = DEFAULT_LIMITS.max_csv_field_chars) -> Iterator[Row]:
    """The rows of an open binary file (``name`` for messages), lazily. A missing column or a line that
    is not JSON is an error naming the line; a bad text only marks its row."""
    where = Path(name)
    if fmt == "jsonl":
        index = 0
        for lineno, line in enumerate(utf8_lines(fh, where, max_field_chars), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object, "
                                 f"e.g. {{\"{text_col}\": \"...\"}}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{name}:{lineno}: a JSON {type(obj).__name__}, not an object; write one object a "
                                 f"line, e.g. {{\"{text_col}\": \"...\"}}")
            if id_col is not None and id_col not in obj:
                raise ValueError(f"{name}:{lineno}: id field {id_col!r} not found (fields: {sorted(obj)[:10]}); pass "
                                 "the right --id-col")
            yield _checked(obj[id_col] if id_col is not None else index, obj.get(text_col))
            index += 1
        return
    limit = csv.field_size_limit()
    csv.field_size_limit(max_field_chars)
    try:
        reader = csv.DictReader(utf8_lines(fh, where, max_field_chars), delimiter="\t" if fmt == "tsv" else ",")
        try:
            fields = list(reader.fieldnames or [])
            for col in (text_col, id_col):
                if col is not None and col not in fields:
                    raise ValueError(f"{name}: column {col!r} not found (columns: {fields}); pass the right "
                                     "--text-col/--id-col")
            for index, row in enumerate(reader):
                yield _checked(row[id_col] if id_col is not None else index, row[text_col])
        except csv.Error as exc:
            raise ValueError(f"{name}:{max(reader.line_num, 1)}: {exc} (fields may hold at most "
                             f"{max_field_chars:,} characters)") from None
    finally:
        csv.field_size_limit(limit)
