"""Labelled texts: the :class:`TextDataset` record and the readers of labelled CSV, TSV and JSON-lines files
(every cell checked, errors naming the file, line and column)."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from .limits import DEFAULT_LIMITS
from .text import control_char

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextDataset:
    """Parallel lists of texts and their string labels, and optionally each text's group and time.

    Attributes
    ----------
    texts, labels : list of str
        A tagger's label cells hold its topics joined by a separator (``"|"`` by default).
    groups : list of str, optional
        Each text's author, customer or source: a group never straddles two splits.
    times : list of float, optional
        Each text's time: the newest texts select and certify.
    group_col, time_col : str, optional
        The columns they were read from, recorded by a build.

    Examples
    --------
    >>> import cascade
    >>> data = cascade.TextDataset(["refund please", "card lost", "where is my refund"], ["refund", "card", "refund"])
    >>> len(data), data.per_label(1).labels
    (3, ['refund', 'card'])
    """

    texts: list[str]
    labels: list[str]
    groups: list[str] | None = None
    times: list[float] | None = None
    group_col: str | None = None  # the columns they were read from (recorded by a build)
    time_col: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> TextDataset:
        """The first ``n`` rows (used by small-data switches in tests and notebooks)."""
        return TextDataset(self.texts[:n], self.labels[:n])

    def per_label(self, n: int) -> TextDataset:
        """At most ``n`` rows of each label, in the original order (a small stratified sample)."""
        seen: dict[str, int] = defaultdict(int)
        keep = []
        for i, label in enumerate(self.labels):
            if seen[label] < n:
                seen[label] += 1
                keep.append(i)
        return TextDataset([self.texts[i] for i in keep], [self.labels[i] for i in keep])

LABEL_COLUMNS = ("category", "label", "labels")  # looked for, in this order, when no label column is named


def pick_label_col(fields: list[str], label_col: str | None, where: str | Path) -> str:
    """``label_col`` if given; else ``category`` if the file has it, else whichever one of ``label`` and
    ``labels`` it has (a ValueError when it has neither or both: the user names it)."""
    if label_col is not None:
        return label_col
    if LABEL_COLUMNS[0] in fields:
        return LABEL_COLUMNS[0]
    found = [c for c in LABEL_COLUMNS[1:] if c in fields]
    if len(found) == 1:
        log.info("%s: no 'category' column; labels read from %r", where, found[0])
        return found[0]
    if not found:
        raise ValueError(f"{where}: no label column (looked for {', '.join(map(repr, LABEL_COLUMNS))}; columns: "
                         f"{list(fields)[:20]}); pass --label-col")
    raise ValueError(f"{where}: both 'label' and 'labels' columns; pass --label-col to say which holds the labels")


class _LabelCells:
    """Reads label cells: spaces around a label are dropped (and reported once per file, with the first
    example, since " refund" and "refund" then become one label); a label holding a line break or another
    control character is refused (it would break every report that lists labels)."""

    def __init__(self, path: Path) -> None:
        self.path, self.stripped, self.first = path, 0, ""

    def read(self, cell: str, where: str) -> str:
        label = cell.strip()
        bad = control_char(label)
        if bad is not None:
            raise ValueError(f"{where}: the label {label[:40]!r} holds the control character {bad!r} (a line "
                             "break, a tab or another); a label is a one-line name: fix that cell")
        if label != cell:
            self.stripped += 1
            self.first = self.first or f"{where}: {cell!r} read as {label!r}"
        return label

    def report(self) -> None:
        if self.stripped:
            log.warning("%s: %d label cell(s) had spaces around them, dropped so that they join the label "
                        "without (first: %s)", self.path, self.stripped, self.first)


def read_csv(path: str | Path, text_col: str = "text", label_col: str | None = None, *,
             group_col: str | None = None, time_col: str | None = None,
             max_field_chars: int = DEFAULT_LIMITS.max_csv_field_chars) -> TextDataset:
    r"""Read a labelled UTF-8 file: CSV, TSV (``.tsv``/``.tab``) or JSON lines (``.jsonl``/``.ndjson``).

    Errors name the file, the line and the fix (wrong encoding, missing column, missing value, a field
    longer than ``max_field_chars``); memory per line is bounded by ``max_field_chars``, whatever the file
    holds. A UTF-8 byte-order mark is skipped.

    Parameters
    ----------
    path : str or Path
        The file.
    text_col : str, default "text"
        The text column (a JSON-lines file: field).
    label_col : str, optional
        The label column; None: ``category``, else the one of ``label`` / ``labels`` the file has.
    group_col, time_col : str, optional
        Also read each row's group (kept together by :func:`carve_splits`) and time (a number, or an ISO
        8601 date or time: the newest texts select and certify).
    max_field_chars : int
        The longest field accepted.

    Returns
    -------
    TextDataset

    Examples
    --------
    >>> import pathlib, tempfile, cascade
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mine.csv"
    >>> _ = path.write_text("text,category\nI was charged twice,billing\nThe app crashes,bug\n")
    >>> cascade.read_csv(path).labels
    ['billing', 'bug']
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ValueError(f"{path} is not a regular file; give a CSV, TSV or JSON-lines file")
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, text_col, label_col, max_field_chars, group_col, time_col)
    texts: list[str] = []
    labels: list[str] = []
    groups: list[str] = []
    times = TimeColumn(time_col)
    with path.open("rb") as fh:
        rows = csv_rows(fh, path, "\t" if suffix in TSV_SUFFIXES else ",", max_field_chars)
        _, fields = next(rows)
        if text_col not in fields:
            raise ValueError(f"{path}: column {text_col!r} not found (columns: {fields}); pass the right --text-col")
        label_col = pick_label_col(fields, label_col, path)
        for col, flag in ((text_col, "--text-col"), (label_col, "--label-col"), (group_col, "--group-col"),
                          (time_col, "--time-col")):
            if col is not None and col not in fields:
                raise ValueError(f"{path}: column {col!r} not found (columns: {fields}); pass the right {flag}"
                                 f"{_RECORDED if flag in ('--group-col', '--time-col') else ''}")
        t, c = fields.index(text_col), fields.index(label_col)
        g = fields.index(group_col) if group_col is not None else None
        w = fields.index(time_col) if time_col is not None else None
        cells = _LabelCells(path)
        for line, row in rows:
            if row[c].strip() == "":
                raise ValueError(f"{path}:{line}: missing text or label (the label is empty)")
            texts.append(row[t])
            labels.append(cells.read(row[c], f"{path}:{line}"))
            if g is not None:
                groups.append(_group_value(row[g], f"{path}:{line}", group_col))
            if w is not None:
                times.add(row[w], f"{path}:{line}")
    if not texts:
        raise ValueError(f"{path}: no rows")
    cells.report()
    return TextDataset(texts, labels, groups if group_col is not None else None,
                       times.times if time_col is not None else None, group_col, time_col)


_RECORDED = " (cascade calibrate --data looks for the column the bundle's build carved by)"


def _group_value(value: Any, where: str, col: str | None) -> str:
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, (dict, list)):
        raise ValueError(f"{where}: the group {col!r} is empty or not a single value; give every row its group")
    return str(value).strip()


def parse_time(value: Any, where: str, col: str | None) -> tuple[float, str]:
    """A time cell as a number (seconds, or any increasing count) and its kind ("number" or "date"): a
    number, or an ISO 8601 date or time (a time without a zone is read as UTC)."""

    kind = "number"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{where}: the time {col!r} is {text[:40]!r}: give a number or an ISO 8601 date "
                                 "(2026-11-30, 2026-11-30T14:05:00Z)") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            number, kind = moment.timestamp(), "date"
    else:
        raise ValueError(f"{where}: the time {col!r} is missing; give every row its time")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{where}: the time {col!r} must be a finite number or a date")
    return number, kind


class TimeColumn:
    """The times of one column, read with :func:`parse_time`; numbers and dates in one column are refused
    (their orders do not compare: a date written 20251231 reads as a number far below any date's)."""

    def __init__(self, col: str | None) -> None:
        self.col = col
        self.times: list[float] = []
        self._kind: tuple[str, str] | None = None  # (kind, where first seen)

    def add(self, value: Any, where: str) -> None:
        number, kind = parse_time(value, where, self.col)
        if self._kind is None:
            self._kind = (kind, where)
        elif kind != self._kind[0]:
            raise ValueError(f"{where}: the time {self.col!r} is a {kind}, but {self._kind[1]} holds a "
                             f"{self._kind[0]}: give every row the same kind, all numbers or all ISO 8601 dates "
                             "(2026-11-30; a date written 20261130 reads as a number)")
        self.times.append(number)


def csv_rows(fh: BinaryIO, path: Path, delimiter: str, max_field_chars: int) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of a UTF-8 CSV or TSV file, the header first, blank lines skipped. Refused, naming the
    line: a header naming a column twice, a row whose field count differs from the header's (an unquoted
    comma, usually), a quote never closed, a field over ``max_field_chars``, bare carriage returns."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max_field_chars)
    reader = csv.reader(utf8_lines(fh, path, max_field_chars), delimiter=delimiter, strict=True)
    start = 1
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not row:
                continue
            if header is None:
                header = row
                twice = sorted({col for col in row if row.count(col) > 1})
                if twice:
                    raise ValueError(f"{path}: column {twice[0]!r} appears {row.count(twice[0])} times in the "
                                     "header; rename the others")
            elif len(row) != len(header):
                name = "commas" if delimiter == "," else "tabs"
                raise ValueError(f"{path}:{start}: {len(row)} fields, the header has {len(header)}; quote fields "
                                 f"that contain {name} (\"a{delimiter} b\")")
            yield start, row
    except csv.Error as exc:
        message = str(exc)
        if "new-line character" in message:
            raise ValueError(f"{path}: lines end in a bare carriage return (old Mac style); convert the file to "
                             "\\n line endings (e.g. `tr '\\r' '\\n'`)") from None
        if "unexpected end of data" in message:
            raise ValueError(f"{path}:{start}: a quote opened in this row is never closed") from None
        if "field larger than field limit" in message:
            raise ValueError(f"{path}:{start}: a field longer than {max_field_chars:,} characters") from None
        raise ValueError(f"{path}:{start}: {message}") from None
    finally:
        csv.field_size_limit(limit)
    if header is None:
        raise ValueError(f"{path}: the file is empty (no header row)")


TSV_SUFFIXES = (".tsv", ".tab")
JSON_BYTES_PER_CHAR = 6  # a character JSON escapes as \\uXXXX
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _read_jsonl(path: Path, text_col: str, label_col: str | None, max_field_chars: int, group_col: str | None = None,
                time_col: str | None = None) -> TextDataset:
    """JSON lines: one object a line holding ``text_col`` and ``label_col`` strings; blank lines skipped."""
    texts: list[str] = []
    labels: list[str] = []
    groups: list[str] = []
    times = TimeColumn(time_col)
    example = f'{{"{text_col}": "...", "{label_col or LABEL_COLUMNS[0]}": "..."}}'
    cells = _LabelCells(path)
    with path.open("rb") as fh:
        for lineno, row in json_objects(fh, path, max_field_chars, example):
            label_col = pick_label_col(list(row), label_col, f"{path}:{lineno}")
            for col in (text_col, label_col, group_col, time_col):
                if col is not None and col not in row:
                    raise ValueError(f"{path}:{lineno}: field {col!r} not found (fields: {sorted(row)[:10]}); pass "
                                     "the right --text-col/--label-col/--group-col/--time-col")
            text, label = row[text_col], row[label_col]
            if isinstance(label, list):
                raise ValueError(f"{path}:{lineno}: {label_col!r} is a list; give the topics as one string joined "
                                 "by the separator (e.g. \"grain|wheat\") and pass --multi-label")
            if not isinstance(text, str) or not isinstance(label, str) or not label.strip():
                raise ValueError(f"{path}:{lineno}: {text_col!r} and {label_col!r} must be non-empty strings, got "
                                 f"{type(text).__name__} and {type(label).__name__}")
            if len(text) > max_field_chars:
                raise ValueError(f"{path}:{lineno}: text longer than {max_field_chars:,} characters")
            texts.append(text)
            labels.append(cells.read(label, f"{path}:{lineno}"))
            if group_col is not None:
                groups.append(_group_value(row[group_col], f"{path}:{lineno}", group_col))
            if time_col is not None:
                times.add(row[time_col], f"{path}:{lineno}")
    if not texts:
        raise ValueError(f"{path}: no rows")
    cells.report()
    return TextDataset(texts, labels, groups if group_col is not None else None,
                       times.times if time_col is not None else None, group_col, time_col)


def json_objects(fh: BinaryIO, path: Path, max_field_chars: int, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSON-lines file, blank lines skipped; a line that is not one JSON object is an
    error naming it (``example``: what a line should look like)."""
    for lineno, line in enumerate(utf8_lines(fh, path, max_field_chars, JSON_BYTES_PER_CHAR), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object, "
                             f"e.g. {example}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: a JSON {type(obj).__name__}, not an object; write one object a line, "
                             f"e.g. {example}")
        yield lineno, obj


def utf8_lines(fh: BinaryIO, path: Path, max_field_chars: int, bytes_per_char: int = 4) -> Iterator[str]:
    """The file's lines, decoded as UTF-8 one by one (so an error names its line), none longer than a
    field may be (``bytes_per_char`` a character: 4 in UTF-8, 6 for JSON's \\uXXXX escapes, plus room for
    the other fields)."""
    max_bytes = bytes_per_char * max_field_chars + (1 << 16)
    for lineno, raw in enumerate(iter(lambda: fh.readline(max_bytes + 1), b""), start=1):
        if lineno == 1 and (raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw):
            raise ValueError(f"{path}: the file is UTF-16 (or holds NUL bytes); save it as UTF-8 (e.g. "
                             "`iconv -f UTF-16 -t UTF-8`)")
        if len(raw) > max_bytes:
            raise ValueError(f"{path}:{lineno}: line longer than {max_bytes:,} bytes; fields may hold at most "
                             f"{max_field_chars:,} characters")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not UTF-8 (byte {raw[exc.start:exc.start + 1]!r}); save the file as "
                             "UTF-8 (e.g. `iconv -f latin1 -t UTF-8`)") from None
        yield line[1:] if lineno == 1 and line.startswith("\ufeff") else line
