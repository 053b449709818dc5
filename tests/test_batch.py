"""`cascade batch`: files of every format through DuckDB, errors kept, taggers, and a real SIGKILL mid-run
followed by a rerun that resumes: every input row exactly once, identical to an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

import cascade
from cascade.banking77 import load_banking77


def _rows(path: Path) -> list[dict]:
    con = duckdb.connect()
    reader = {".parquet": "read_parquet", ".csv": "read_csv", ".tsv": "read_csv", ".jsonl": "read_json"}[path.suffix]
    rel = con.execute(f"SELECT * FROM {reader}('{path}')")
    names = [d[0] for d in rel.description]
    return [dict(zip(names, row)) for row in rel.fetchall()]


def _write_input(path: Path, rows: list[dict]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (id BIGINT, text VARCHAR, note VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(r["id"], r["text"], r["note"]) for r in rows])
    fmt = {".parquet": "(FORMAT parquet)", ".csv": "(FORMAT csv, HEADER true)",
           ".tsv": "(FORMAT csv, HEADER true, DELIMITER '\t')", ".jsonl": "(FORMAT json)"}[path.suffix]
    con.execute(f"COPY t TO '{path}' {fmt}")


def _data(n: int) -> list[dict]:
    texts = load_banking77("test").texts[:150]
    rows = []
    for i in range(n):
        text = None if i % 17 == 0 else ("   " if i % 23 == 0 else texts[i % len(texts)])
        rows.append({"id": i, "text": text, "note": f"n{i}"})
    return rows


@pytest.mark.parametrize("suffix_in, suffix_out", [(".parquet", ".csv"), (".csv", ".jsonl"), (".jsonl", ".parquet"),
                                                   (".tsv", ".tsv")])
def test_every_row_is_kept_with_its_answer_or_its_error(tmp_path, tiny_bundle, suffix_in, suffix_out):
    rows = _data(400)
    source = tmp_path / f"in{suffix_in}"
    _write_input(source, rows)
    model = cascade.load(tiny_bundle, threads=1)
    report = cascade.batch(source, tmp_path / f"out{suffix_out}", model=model, chunk_size=64, progress=False)
    assert report.rows == 400 and report.distinct_texts == 150 and report.classified == 150
    out = _rows(tmp_path / f"out{suffix_out}")
    assert [int(r["id"]) for r in out] == list(range(400))  # every row, once, in input order
    assert [r["note"] for r in out] == [r["note"] for r in rows]  # every input column kept
    for got, row in zip(out, rows):
        if row["text"] is None or not str(row["text"]).strip():
            assert got["error"] in ("no text (null)", "empty text") and got["label"] is None
        else:
            expected = model.classify(row["text"])
            assert got["error"] is None and (got["label"], got["stage"]) == (expected.label, expected.stage)
            assert abs(float(got["score"]) - expected.score) < 1e-9
    assert report.errors == sum(1 for r in rows if r["text"] is None or not r["text"].strip())
    assert not (tmp_path / f"out{suffix_out}.cascade-work").exists()


def test_a_tagger_gets_its_topic_lists(tmp_path, tagger):
    model = cascade.load(tagger, threads=1)
    rows = [{"id": i, "text": t, "note": ""} for i, t in enumerate(["wheat and corn exports", "oil prices", None])]
    _write_input(tmp_path / "in.parquet", rows)
    cascade.batch(tmp_path / "in.parquet", tmp_path / "out.parquet", model=model, progress=False)
    out = _rows(tmp_path / "out.parquet")
    assert list(out[0]["labels"]) == list(model.classify("wheat and corn exports").labels)
    assert out[2]["labels"] is None and out[2]["error"] == "no text (null)"


def test_bad_arguments_fail_before_any_work(tmp_path, tiny_bundle):
    _write_input(tmp_path / "in.parquet", _data(10))
    model = cascade.load(tiny_bundle, threads=1)
    with pytest.raises(ValueError, match="column 'body' not found"):
        cascade.batch(tmp_path / "in.parquet", tmp_path / "o.parquet", text_col="body", model=model)
    with pytest.raises(ValueError, match="unknown output format"):
        cascade.batch(tmp_path / "in.parquet", tmp_path / "o.xlsx", model=model)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        cascade.batch(tmp_path / "none-*.parquet", tmp_path / "o.parquet", model=model)
    (tmp_path / "o.parquet").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        cascade.batch(tmp_path / "in.parquet", tmp_path / "o.parquet", model=model)
    assert (tmp_path / "o.parquet").read_text() == "mine"
    assert not list(tmp_path.glob("*.cascade-work"))


def test_a_glob_of_files_is_one_input(tmp_path, tiny_bundle):
    rows = _data(60)
    _write_input(tmp_path / "part-1.parquet", rows[:30])
    _write_input(tmp_path / "part-2.parquet", rows[30:])
    report = cascade.batch(str(tmp_path / "part-*.parquet"), tmp_path / "all.csv",
                           model=cascade.load(tiny_bundle, threads=1), progress=False)
    assert report.rows == 60 and sorted(int(r["id"]) for r in _rows(tmp_path / "all.csv")) == list(range(60))


@pytest.mark.slow
def test_killed_with_sigkill_and_rerun_it_resumes_and_keeps_every_row_once(tmp_path, tiny_bundle):
    texts = load_banking77("train").texts
    rows = [{"id": i, "text": None if i % 97 == 0 else f"{texts[i % 3000]} #{i % 2500}", "note": str(i)}
            for i in range(6000)]
    _write_input(tmp_path / "in.parquet", rows)
    args = [sys.executable, "-m", "cascade.cli", "batch", str(tmp_path / "in.parquet"), "--bundle", str(tiny_bundle),
            "--chunk-size", "50", "--threads", "1", "-v"]
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole.parquet")], capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed.parquet"
    proc = subprocess.Popen([*args, "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    answered = 0
    assert proc.stderr is not None
    for line in proc.stderr:
        if "distinct texts answered" in line:
            answered += 1
            if answered == 5:
                proc.send_signal(signal.SIGKILL)  # mid-run: some chunks committed, others not
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert (tmp_path / "killed.parquet.cascade-work").is_dir()
    rerun = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert 0 < summary["classified_now"] < summary["distinct_texts"]  # it resumed rather than starting over
    assert _rows(out) == _rows(tmp_path / "whole.parquet")  # identical rows, each exactly once, same order
    assert not (tmp_path / "killed.parquet.cascade-work").exists()


def test_an_unfinished_run_with_other_arguments_is_not_mixed_in(tmp_path, tiny_bundle):
    _write_input(tmp_path / "in.parquet", _data(20))
    work = tmp_path / "o.parquet.cascade-work"
    work.mkdir()
    (work / "CASCADE_BATCH_WORK").write_text("another run")
    with pytest.raises(ValueError, match="unfinished run with other inputs"):
        cascade.batch(tmp_path / "in.parquet", tmp_path / "o.parquet", model=cascade.load(tiny_bundle, threads=1))
    (tmp_path / "x.parquet.cascade-work").mkdir()
    with pytest.raises(ValueError, match="not a cascade batch work folder"):
        cascade.batch(tmp_path / "in.parquet", tmp_path / "x.parquet", model=cascade.load(tiny_bundle, threads=1))
