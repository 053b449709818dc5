"""The fifth red-team pass (issues 13 and 14: serve, batch, tune, Ray). Each finding is reproduced here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import cascade


def _rows(path: Path) -> list[dict]:
    duckdb = pytest.importorskip("duckdb")
    rel = duckdb.connect().execute(f"SELECT * FROM '{path}'")
    names = [d[0] for d in rel.description]
    return [dict(zip(names, row)) for row in rel.fetchall()]


# batch 1: a user column named rowid hid DuckDB's own and scrambled the output
def test_a_rowid_column_is_refused_not_mixed_up(tmp_path, tiny_bundle):
    pytest.importorskip("duckdb")
    path = tmp_path / "rowid.csv"
    path.write_text("rowid,text\n5,my card has not arrived\n5,how do I top up\n1,I lost my card\n")
    with pytest.raises(ValueError, match="rowid"):
        cascade.batch(path, tmp_path / "o.csv", model=cascade.load(tiny_bundle, threads=1))


# batch 2: names that differ only in case from the added ones were renamed silently (label_1)
def test_added_column_names_clash_whatever_their_case(tmp_path, tiny_bundle):
    pytest.importorskip("duckdb")
    path = tmp_path / "c.csv"
    path.write_text("Label,text\nx,my card\n")
    with pytest.raises(ValueError, match="Label"):
        cascade.batch(path, tmp_path / "o.csv", model=cascade.load(tiny_bundle, threads=1))


# batch 3: one non-string JSON value marked every row as an error; whitespace-only texts slipped through
def test_non_string_json_texts_mark_only_their_row(tmp_path, tiny_bundle):
    pytest.importorskip("duckdb")
    path = tmp_path / "m.jsonl"
    path.write_text('{"text":"my card has not arrived"}\n{"text":42}\n{"text":"\\n\\t\\u00a0"}\n{"text":null}\n')
    cascade.batch(path, tmp_path / "o.jsonl", model=cascade.load(tiny_bundle, threads=1), progress=False)
    out = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert out[0]["error"] is None and out[0]["label"]
    assert [o["error"] for o in out[1:]] == ["not a string", "empty text", "no text (null)"]


# batch 4: a glob of CSVs with different columns dropped the extra ones
def test_a_glob_keeps_every_column_of_every_file(tmp_path, tiny_bundle):
    pytest.importorskip("duckdb")
    (tmp_path / "a.csv").write_text("id,text\n1,my card\n")
    (tmp_path / "c.csv").write_text("id,text,extra\n2,top up,yes\n")
    cascade.batch(str(tmp_path / "*.csv"), tmp_path / "o.parquet", model=cascade.load(tiny_bundle, threads=1),
                  progress=False)
    out = _rows(tmp_path / "o.parquet")
    assert "extra" in out[0] and [r["extra"] for r in out] == [None, "yes"]


def test_a_kill_after_the_output_was_renamed_is_finished_by_the_rerun(tmp_path, tiny_bundle, monkeypatch):
    pytest.importorskip("duckdb")
    batch_module = sys.modules["cascade.batch"]

    (tmp_path / "in.csv").write_text("text\nmy card\ntop up\n")
    model = cascade.load(tiny_bundle, threads=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed between the rename and the clean-up

    monkeypatch.setattr(batch_module.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        cascade.batch(tmp_path / "in.csv", tmp_path / "o.csv", model=model, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "o.csv").exists() and (tmp_path / "o.csv.cascade-work").exists()
    report = cascade.batch(tmp_path / "in.csv", tmp_path / "o.csv", model=model, progress=False)
    assert report.rows == 2 and not (tmp_path / "o.csv.cascade-work").exists()
    assert not list(tmp_path.glob(".o.csv.tmp-*"))


def test_a_bad_memory_limit_fails_before_any_work(tmp_path, tiny_bundle):
    pytest.importorskip("duckdb")
    (tmp_path / "in.csv").write_text("text\nmy card\n")
    with pytest.raises(ValueError, match="memory"):
        cascade.batch(tmp_path / "in.csv", tmp_path / "o.csv", model=cascade.load(tiny_bundle, threads=1),
                      memory_limit="lots")
    assert not list(tmp_path.glob("*.cascade-work"))


# serve 5 and 6: NaN/Infinity made 500s; booleans and strings passed as numbers (lone surrogates, 422 here
# once, are answered as classify() answers them since issue 22: test_adv_serve_clients.py)
@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    from serve_helpers import Server

    s = Server()
    yield s
    s.stop()


@pytest.mark.parametrize("raw", [b'{"texts": ["my card"], "threshold": NaN}', b'{"texts": ["my card"], "threshold": Infinity}',
                                 b'{"texts": ["a"], "threshold": true}',
                                 b'{"texts": ["a"], "threshold": "0.5"}', b'{"texts": ["a"], "top_k": "2"}',
                                 b'{"texts": ["a"], "top_k": true}'])
def test_odd_values_get_422_not_500_or_a_silent_cast(server, raw):
    status, _, body = server.request("POST", "/v1/classify", raw=raw)
    assert status == 422, body
    json.loads(body)  # valid JSON, whatever the input was
    assert not any("Traceback" in line for line in server.log)


def test_a_json_lookalike_content_type_is_refused(server):
    status, _, _ = server.request("POST", "/v1/classify", raw=b'{"texts": ["a"]}',
                                  headers={"content-type": "application/jsonx"})
    assert status == 415
    assert server.request("POST", "/v1/classify", raw=b'{"texts": ["a"]}',
                          headers={"content-type": "application/json; charset=utf-8"})[0] == 200


# tune 7: a study run on other data was joined silently
def test_a_study_made_on_other_data_is_not_joined(tmp_path, tiny_bundle, tiny_train, tiny_selection):
    optuna = pytest.importorskip("optuna")  # noqa: F841
    from cascade.tuning import tune

    storage = f"sqlite:///{tmp_path / 't.db'}"
    tune(tiny_train, tiny_selection, trials=1, base=tiny_bundle, storage=storage, study="s", progress=False)
    with pytest.raises(ValueError, match="other data"):
        tune(tiny_selection, tiny_train, trials=2, base=tiny_bundle, storage=storage, study="s", progress=False)


def test_tune_storage_problems_are_clear_and_early(tmp_path, tiny_train, tiny_selection):
    pytest.importorskip("optuna")
    from cascade.tuning import tune

    for url in ("sqlite:///", "bogus://x"):
        with pytest.raises(ValueError, match="storage"):
            tune(tiny_train, tiny_selection, trials=1, base=tmp_path / "no-bundle", storage=url)


# ray 8: existing columns were overwritten; a missing text column failed late, inside the actors
def test_ray_refuses_columns_it_would_overwrite_and_a_missing_text_column(tiny_bundle):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from cascade.integrations.ray import classify_dataset

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with pytest.raises(ValueError, match="label"):
            classify_dataset(ray.data.from_items([{"text": "my card", "label": "GOLD"}]), tiny_bundle)
        with pytest.raises(ValueError, match="body"):
            classify_dataset(ray.data.from_items([{"text": "my card"}]), tiny_bundle, text_col="body")
        with pytest.raises(ValueError, match="threshold"):
            classify_dataset(ray.data.from_items([{"text": "my card"}]), tiny_bundle, threshold=2.0)
    finally:
        ray.shutdown()
