"""``cascade batch``: classify a file of any size through DuckDB, resumably.

INPUT is CSV, TSV, Parquet or JSON lines, or a glob of them; OUTPUT's suffix picks its format. The rows
are loaded once into a DuckDB database in a work folder beside OUTPUT; the distinct valid texts are
numbered (in text order) and classified chunk by chunk, each chunk's answers committed in one
transaction; then one query joins the answers back onto every row, in input order, and writes OUTPUT
(through a temporary file, renamed into place). Killed at any point (Ctrl-C or kill -9) and started
again with the same arguments, it resumes where the last commit left it, and OUTPUT holds every input
row exactly once. Memory is bounded by ``chunk_size`` and DuckDB's ``memory_limit`` (it spills to the
work folder), never by the file. Rows whose text is null, empty or not text are kept, with ``error`` set.
"""

from __future__ import annotations

import csv
import errno
import glob as globmod
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._optional import require
from .bundle.atomic import check_writable
from .model import Cascade
from .policy.routing import check_threshold
from .progress import progress_bar

log = logging.getLogger(__name__)

INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".json": "jsonl"}
OUTPUT_FORMATS = INPUT_FORMATS
WORK_SUFFIX = ".cascade-work"
MARKER = "CASCADE_BATCH_WORK"  # in a work folder: it is this module's, and only its files are in it
WRITTEN = "OUTPUT_WRITTEN"  # in a work folder: the output was renamed into place
ADDED = ("label", "score", "stage", "labels", "scores", "error")
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())  # what Python's str.strip() removes


@dataclass(frozen=True)
class BatchReport:
    """What one (possibly resumed) run of :func:`cascade.batch` did.

    Attributes
    ----------
    out : Path
        The output file.
    rows : int
        Input rows, each written exactly once.
    distinct_texts : int
        Distinct texts among them (each classified once).
    classified : int
        Distinct texts classified by this run (fewer when it resumed).
    errors : int
        Rows whose text could not be classified (their ``error`` column says why).
    seconds : float
        Wall time of this run.
    """

    out: Path
    rows: int
    distinct_texts: int
    classified: int  # distinct texts classified by this run (fewer when it resumed)
    errors: int  # rows whose text could not be classified
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _inputs(pattern: str) -> list[Path]:
    paths = sorted(Path(p) for p in globmod.glob(pattern)) if globmod.has_magic(pattern) else [Path(pattern)]
    if not paths:
        raise FileNotFoundError(f"no file matches {pattern}")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}") if not path.exists() else ValueError(
                f"{path} is not a regular file")
        if path.suffix.lower() not in INPUT_FORMATS:
            raise ValueError(f"{path}: unknown input format; use {', '.join(sorted(INPUT_FORMATS))}")
    kinds = {INPUT_FORMATS[p.suffix.lower()] for p in paths}
    if len(kinds) > 1:
        raise ValueError(f"{pattern} matches files of several formats ({', '.join(sorted(kinds))}); give one kind")
    return paths


def _reader(paths: list[Path]) -> str:
    files = "[" + ", ".join(_literal(str(p)) for p in paths) + "]"
    kind = INPUT_FORMATS[paths[0].suffix.lower()]
    if kind == "parquet":
        return f"read_parquet({files}, union_by_name=true)"
    if kind == "jsonl":
        return f"read_json({files}, format='newline_delimited', union_by_name=true)"
    delim = "\\t" if kind == "tsv" else ","
    return f"read_csv({files}, delim={_literal(delim)}, header=true, all_varchar=true, union_by_name=true)"


def _copy_options(out: Path) -> str:
    kind = OUTPUT_FORMATS.get(out.suffix.lower())
    if kind is None:
        raise ValueError(f"{out}: unknown output format; use {', '.join(sorted(OUTPUT_FORMATS))}")
    return {"parquet": "(FORMAT parquet)", "csv": "(FORMAT csv, HEADER true)",
            "tsv": "(FORMAT csv, HEADER true, DELIMITER '\\t')", "jsonl": "(FORMAT json)"}[kind]


def model_identity(model: Any) -> str:
    """What a resumed job must run on to be the same job: the bundle's digest, and the runtime when it is not
    onnxruntime (so a job's rows never mix two runtimes' answers, and older jobs still resume)."""
    identity = model.bundle.digest if model.bundle is not None else "in-memory model"
    runtime = getattr(model, "runtime", "onnxruntime")
    return identity if runtime == "onnxruntime" else f"{identity} on {runtime}"


def _signature(paths: list[Path], text_col: str, digest: str, threshold: float | None) -> str:
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha256(json.dumps([parts, text_col, digest, threshold]).encode()).hexdigest()


def _work_folder(out: Path, signature: str) -> Path:
    work = out.with_name(out.name + WORK_SUFFIX)
    if work.exists():
        marker = work / MARKER
        if not marker.is_file():
            raise ValueError(f"{work} exists and is not a cascade batch work folder; move it away")
        if marker.read_text().strip() != signature:
            raise ValueError(f"{work} holds an unfinished run with other inputs, bundle or settings; rerun that "
                             f"command to finish it, or remove {work} to start afresh")
        log.info("resuming from %s", work)
        return work
    work.mkdir(parents=True)
    (work / MARKER).write_text(signature)
    return work


def batch(input: str | Path, out: str | Path, *, text_col: str = "text", id_col: str | None = None,
          bundle: str | Path | None = None, model: Any = None, threshold: float | None = None,
          chunk_size: int = 4096, memory_limit: str = "512MB", overwrite: bool = False,
          progress: bool = True) -> BatchReport:
    """Classify every row of a big file into another, through DuckDB; resumable (needs the [batch] extra).

    Every column is kept, and ``label``, ``score``, ``stage`` (a tagger: ``labels`` and ``scores`` too) and
    ``error`` are added. Each distinct text is classified once. An interrupted run resumes when run again
    with the same arguments; ``out`` then holds every input row exactly once.

    Parameters
    ----------
    input : str or Path
        A CSV, TSV, Parquet or JSON-lines file, or a glob of them.
    out : str or Path
        The output file; its suffix picks the format (.parquet, .csv, .tsv, .jsonl).
    text_col : str, default "text"
        The text column.
    id_col : str, optional
        A column that must exist (every column is kept anyway).
    bundle : str or Path, optional
        The bundle to run; default the shipped one (ignored when ``model`` is given).
    model : Cascade, optional
        An already loaded model.
    threshold : float, optional
        The routing cut-off; None: the bundle's.
    chunk_size : int, default 4096
        Distinct texts classified per commit.
    memory_limit : str, default "512MB"
        DuckDB's memory limit; it spills to disk beyond it.
    overwrite : bool, default False
        Replace ``out`` if it exists (a folder is never replaced).
    progress : bool, default True
        A progress bar on a terminal, log lines elsewhere.

    Returns
    -------
    BatchReport
        Rows read and written, distinct texts, how many this run classified, errors and the time taken.
    """
    duckdb = require("duckdb", "batch")

    started = time.perf_counter()
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    t = check_threshold(threshold) if threshold is not None else None
    out = Path(out)
    if out.is_dir():  # even with overwrite: a folder is never replaced by a file
        raise ValueError(f"{out} is a folder; give the output a file name, such as "
                         f"{out / ('answers' + (out.suffix or '.parquet'))}")
    options = _copy_options(out)
    paths = _inputs(str(input))
    leftover = out.with_name(out.name + WORK_SUFFIX)
    if out.exists() and (leftover / WRITTEN).is_file() and (leftover / MARKER).is_file():
        shutil.rmtree(leftover)  # a run that wrote its output and was stopped before tidying up
        log.info("%s was finished by an earlier run; removed its work folder", out)
    elif out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if any(p.resolve() == out.resolve() for p in paths):
        raise ValueError(f"{out} is also an input; write elsewhere")
    check_writable(out, "file")  # a read-only or missing folder fails now, not after the classifying
    columns = _columns(duckdb, paths, text_col, id_col, memory_limit)
    model = model if model is not None else Cascade.load(bundle)
    work = _work_folder(out, _signature(paths, text_col, model_identity(model), t))
    try:
        con = duckdb.connect(str(work / "batch.duckdb"))
        try:
            con.execute(f"SET memory_limit = {_literal(memory_limit)}")
            con.execute(f"SET temp_directory = {_literal(str(work / 'spill'))}")
            con.execute("SET preserve_insertion_order = true")
            n_rows, n_distinct = _load(con, paths, text_col, columns[text_col])
            classified = _classify(con, model, t, chunk_size, n_distinct, progress)
            errors = _write(con, out, work, options, model.multi_label, getattr(model, "label_sep", None) or "|")
        finally:
            con.close()
    except duckdb.Error as exc:
        _raise_disk_full(exc, out, work)
        raise
    shutil.rmtree(work)  # ours: made by _work_folder, holding only this run's files
    report = BatchReport(out, n_rows, n_distinct, classified, errors, time.perf_counter() - started)
    log.info("wrote %s: %d rows, %d distinct texts (%d classified now), %d errors, %.1f s",
             out, n_rows, n_distinct, classified, errors, report.seconds)
    return report


def _raise_disk_full(exc: Exception, out: Path, work: Path) -> None:
    """A full disk is the user's condition, not an internal error: say so in plain words (an OSError, exit
    status 2 on the command line). The work folder stays, so a rerun with space resumes."""
    if "No space left on device" in str(exc) or "Disk full" in str(exc):
        raise OSError(errno.ENOSPC, f"no space left on the disk while writing {out} (work folder {work}, kept so "
                                    "a rerun resumes): free some space or write --out to another disk",
                      str(out)) from None


def _columns(duckdb: Any, paths: list[Path], text_col: str, id_col: str | None, memory_limit: str) -> dict[str, str]:
    """The input's columns and types, checked before any work: the text (and id) columns exist, and none
    of the columns batch adds is there already."""
    con = duckdb.connect()
    try:
        try:
            con.execute(f"SET memory_limit = {_literal(memory_limit)}")
        except duckdb.Error as exc:
            raise ValueError(f"memory limit {memory_limit!r}: {exc}; give e.g. 512MB or 2GB") from None
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {_reader(paths)}").fetchall()
        except duckdb.Error as exc:
            raise ValueError(f"DuckDB cannot read {paths[0] if len(paths) == 1 else 'the input files'}: "
                             f"{str(exc).splitlines()[0]}") from None
        columns = {row[0]: row[1] for row in described}
    finally:
        con.close()
    for path in paths:  # DuckDB would name a column with an empty header "column3": the output would not match
        if INPUT_FORMATS[path.suffix.lower()] in ("csv", "tsv"):
            _check_header(path, "\t" if INPUT_FORMATS[path.suffix.lower()] == "tsv" else ",")
    for col, flag in ((text_col, "--text-col"), (id_col, "--id-col")):
        if col is not None and col not in columns:
            raise ValueError(f"column {col!r} not found (columns: {list(columns)[:20]}); pass the right {flag}")
    reserved = {*ADDED, "rowid"}  # DuckDB's own row number, which keeps the rows in order
    clash = [c for c in columns if c.lower() in reserved]
    if clash:
        raise ValueError(f"the input has column(s) {clash}, a name cascade batch uses (in any case: "
                         f"{', '.join(sorted(reserved))}); rename them")
    return columns


def _check_header(path: Path, delimiter: str) -> None:

    with path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
        line = fh.readline(1_000_000)
    try:
        header = next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:  # a first field too long to be a header: DuckDB's own reading says what is wrong
        return
    empty = [i + 1 for i, name in enumerate(header) if not name.strip()]
    if empty:
        raise ValueError(f"{path}: column {empty[0]} has an empty header; name every column (the output keeps "
                         "the input's columns by name)")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise ValueError(f"{path}: column name(s) {twice} appear more than once; give every column its own name")


def _load(con: Any, paths: list[Path], text_col: str, kind: str) -> tuple[int, int]:
    """Rows into table ``input`` (in input order; one statement, so a kill leaves it whole or absent), then
    each row's text or error and the distinct valid texts, numbered in text order, in one transaction."""
    tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "input" not in tables:
        con.execute(f"CREATE TABLE input AS SELECT * FROM {_reader(paths)}")
    if "texts" not in tables:
        column = _ident(text_col)
        if kind == "JSON":  # JSON lines whose values are of several types: judged row by row
            text = f"(CASE WHEN json_type({column}) = 'VARCHAR' THEN {column} ->> '$' END)"
            not_text = f"{column} IS NOT NULL AND json_type({column}) NOT IN ('VARCHAR', 'NULL')"
        elif kind == "VARCHAR":
            text, not_text = column, "false"
        else:  # numbers, lists, structs: not text
            text, not_text = "NULL", f"{column} IS NOT NULL"
        blank = f"trim({text}, {_literal(WHITESPACE)}) = ''"
        # a CSV cell cannot tell null from empty: both are "empty text", as `cascade classify --input` says
        null = "empty text" if INPUT_FORMATS[paths[0].suffix.lower()] in ("csv", "tsv") else "no text (null)"
        error = (f"CASE WHEN {not_text} THEN 'not a string' WHEN {text} IS NULL THEN '{null}' "
                 f"WHEN {blank} THEN 'empty text' END")
        con.execute("BEGIN")
        con.execute(f"CREATE OR REPLACE TABLE rows AS SELECT rowid AS row_, {text} AS text_, {error} AS error_ "
                    "FROM input")
        con.execute("CREATE OR REPLACE TABLE texts AS SELECT text_ AS text, row_number() OVER (ORDER BY text_) AS k "
                    "FROM (SELECT DISTINCT text_ FROM rows WHERE error_ IS NULL) ORDER BY k")
        con.execute("CREATE OR REPLACE TABLE results (k BIGINT PRIMARY KEY, label VARCHAR, score DOUBLE, "
                    "stage VARCHAR, labels VARCHAR[], scores DOUBLE[])")
        con.execute("COMMIT")
    n_rows = con.execute("SELECT count(*) FROM rows").fetchone()[0]
    n_distinct = con.execute("SELECT count(*) FROM texts").fetchone()[0]
    return int(n_rows), int(n_distinct)


def _classify(con: Any, model: Any, threshold: float | None, chunk_size: int, total: int, progress: bool) -> int:
    """Classify the texts not yet answered, ``chunk_size`` at a time, each chunk committed whole."""
    pa = require("pyarrow", "batch")
    done = int(con.execute("SELECT coalesce(max(k), 0) FROM results").fetchone()[0])
    classified = 0
    with progress_bar(total=total, initial=done, desc="cascade batch", unit="text", progress=progress) as bar:
        while done < total:
            texts = [row[0] for row in con.execute("SELECT text FROM texts WHERE k > ? AND k <= ? ORDER BY k",
                                                   [done, done + chunk_size]).fetchall()]
            predictions = model.classify(texts, threshold=threshold, progress=False)
            answers = pa.table({
                "k": pa.array(range(done + 1, done + len(texts) + 1), pa.int64()),
                "label": [p.label for p in predictions], "score": [p.score for p in predictions],
                "stage": [p.stage for p in predictions],
                "labels": pa.array([list(p.labels) if p.labels is not None else None for p in predictions],
                                   pa.list_(pa.string())),
                "scores": pa.array([list(p.scores) if p.scores is not None else None for p in predictions],
                                   pa.list_(pa.float64()))})
            con.execute("BEGIN")
            con.register("answers_", answers)
            con.execute("INSERT INTO results SELECT * FROM answers_")
            con.unregister("answers_")
            con.execute("COMMIT")
            done += len(texts)
            classified += len(texts)
            bar.update(len(texts))
            log.debug("batch: %d of %d distinct texts answered", done, total)
    return classified


def _write(con: Any, out: Path, work: Path, options: str, multi_label: bool, sep: str) -> int:
    """Every input row, in input order, with its answer or its error, to ``out`` (written in the work
    folder, beside ``out``, then renamed into place; a marker says it was, for a rerun after a kill). A
    tagger's topics and scores are lists in Parquet and JSON, and cells joined by ``sep`` in CSV and TSV, as
    its training labels were."""
    tagger = ""
    if multi_label and OUTPUT_FORMATS[out.suffix.lower()] in ("csv", "tsv"):
        tagger = (f", array_to_string(r.labels, {_literal(sep)}) AS labels, "
                  f"array_to_string(CAST(r.scores AS VARCHAR[]), {_literal(sep)}) AS scores")
    elif multi_label:
        tagger = ", r.labels AS labels, r.scores AS scores"
    tmp = work / f"out{out.suffix}"
    query = (f"SELECT i.*, r.label AS label, r.score AS score, r.stage AS stage{tagger}, w.error_ AS error "
             "FROM input i JOIN rows w ON w.row_ = i.rowid LEFT JOIN texts t ON t.text = w.text_ AND w.error_ IS NULL "
             "LEFT JOIN results r ON r.k = t.k ORDER BY i.rowid")
    try:
        con.execute(f"COPY ({query}) TO {_literal(str(tmp))} {options}")
        (work / WRITTEN).write_text("the output was written; only this folder is left to remove\n")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return int(con.execute("SELECT count(*) FROM rows WHERE error_ IS NOT NULL").fetchone()[0])
