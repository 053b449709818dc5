"""The second red-team pass over the hardened package: each case that misbehaved, reproduced."""

from __future__ import annotations

import errno
import io
import json
import os
import sys
import tracemalloc
import unicodedata

import numpy as np
import pytest
from adv_helpers import cascade_cli, copy_bundle, dead_pid, edit_manifest, replace_file

import cascade
from cascade.bundle import atomic, read_bundle, update_manifest
from cascade.errors import BundleError


# 1. a file added to the target while it is being replaced is kept, not deleted
def test_a_file_added_during_a_save_is_kept(b, monkeypatch, caplog):
    real = atomic._exchange

    def exchange_after_user_writes(a, target):
        (target / "notes.txt").write_text("mine")  # lands after the checks, before the swap
        return real(a, target)

    monkeypatch.setattr(atomic, "_exchange", exchange_after_user_writes)
    update_manifest(b, {"threshold": 0.42})
    assert read_bundle(b).threshold == 0.42
    kept = [p for p in b.parent.rglob("notes.txt")]
    assert len(kept) == 1 and kept[0].read_text() == "mine"
    assert "not part of the bundle" in caplog.text and str(kept[0].parent) in caplog.text


# 2. a FIFO where a file should be: an error, not a hang
@pytest.mark.parametrize("name", ["train_hashes.json", "manifest.json"])
def test_a_fifo_in_a_bundle_is_refused_without_hanging(b, name):
    digest = read_bundle(b).digest
    (b / name).unlink()
    os.mkfifo(b / name)
    args = ["classify", "hi", "--bundle", str(b), "--threads", "1"]
    if name != "manifest.json":
        args += ["--digest", digest]
    run = cascade_cli(*args, timeout=60)
    assert run.returncode == 2 and b"not a regular file" in run.stderr and b"Traceback" not in run.stderr


# 3. a tampered size cannot make a load read gigabytes
def test_a_pinned_digest_is_checked_before_any_file_is_read(b):
    digest = read_bundle(b).digest
    with (b / "train_hashes.json").open("r+b") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB of nothing
    edit_manifest(b, lambda m: m["files"]["train_hashes.json"].__setitem__("bytes", 1 << 30))
    with pytest.raises(BundleError, match="is not the pinned"):
        cascade.load(b, digest=digest)


def test_verifying_a_large_file_streams_it(b):
    with (b / "train_hashes.json").open("r+b") as fh:
        fh.truncate(256 << 20)
    edit_manifest(b, lambda m: m["files"]["train_hashes.json"].__setitem__("bytes", 256 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="train_hashes.json does not match"):
            read_bundle(b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20


# 4. scratch-like sibling folders are never parsed into a crash or read whole
@pytest.mark.parametrize("content", [b"[" * 100_000, b"{" + b" " * (20 << 20) + b"}"])
def test_sibling_folders_with_scratch_names_cannot_break_a_load(b, content):
    sibling = b.parent / f".b.tmp-{dead_pid()}-abcd"
    sibling.mkdir()
    (sibling / "manifest.json").write_bytes(content)
    assert cascade.load(b, threads=1).classify("card").label
    assert sibling.is_dir()  # not provably cascade's: left alone


# 5. tampered values end in one clear error, never a traceback
BIG = 10 ** 400


@pytest.mark.parametrize("change,field", [
    (lambda m: m.__setitem__("threshold", BIG), "threshold"),
    (lambda m: m.setdefault("calibration", {}).__setitem__("cheap_temperature", BIG), "cheap_temperature"),
    (lambda m: m.__setitem__("metrics", {"x": float("nan")}), "metrics"),
    (lambda m: m["labels"].__setitem__(0, "\ud800"), "labels"),
])
def test_overflowing_or_non_json_values_are_refused(b, change, field):
    manifest = json.loads((b / "manifest.json").read_text())
    change(manifest)
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=field):
        cascade.load(b)


def test_deeply_nested_json_is_refused_cleanly(b):
    (b / "manifest.json").write_bytes(b"[" * 100_000)
    with pytest.raises(BundleError, match="not valid JSON"):
        cascade.load(b)
    run = cascade_cli("info", "--bundle", str(b))
    assert run.returncode == 2 and b"Traceback" not in run.stderr


@pytest.mark.parametrize("change", [
    lambda s: s["blocks"][0].__setitem__("analyzer", ["word"]),
    lambda s: s["blocks"][0].__setitem__("analyzer", {}),
    lambda s: s["blocks"][0]["idf"].__setitem__(0, BIG),
    lambda s: s["blocks"][0].__setitem__("token_pattern", 5),
])
def test_featurizer_spec_types_are_checked(b, change):
    spec = json.loads((b / "cheap_features.json").read_text())
    change(spec)
    replace_file(b, "cheap_features.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="cheap_features.json: blocks\\[0\\]"):
        cascade.load(b)


def test_nested_featurizer_spec_is_refused(b):
    replace_file(b, "cheap_features.json", b"[" * 100_000)
    with pytest.raises(BundleError, match="cheap_features.json"):
        cascade.load(b)


def test_a_model_whose_output_is_not_logits_is_refused(b, tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["attention_mask"], ["s"], keepdims=0),
         helper.make_node("Cast", ["s"], ["logits"], to=TensorProto.FLOAT)], "scalar",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    replace_file(b, "neural.onnx", model.SerializeToString())
    with pytest.raises(BundleError, match="must be logits"):
        cascade.load(b)


# 6. a tokenizer that multiplies text is refused
def test_expanding_tokenizer_normalizers_are_refused(b):
    spec = json.loads((b / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        spec["normalizer"], {"type": "Replace", "pattern": {"String": "a"}, "content": "b" * 4000}]}
    replace_file(b, "tokenizer.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="tokenizer.json: normalizer 'Replace' is not supported"):
        cascade.load(b)


# 8. a folder in use by a process this one cannot see (another PID namespace) is not removed
def test_a_locked_scratch_folder_is_never_cleaned(tmp_path):
    busy = tmp_path / f".b.tmp-{dead_pid()}-0000aaaa"  # its pid looks dead from here
    busy.mkdir()
    (busy / atomic.MARKER).write_bytes(b"")
    lock = atomic.FolderLock(busy)  # ...but its writer holds the lock
    try:
        assert atomic.clean_stale(tmp_path, ".b.tmp-") == []
        assert busy.is_dir()
    finally:
        lock.release()
    assert atomic.clean_stale(tmp_path, ".b.tmp-") == [busy]


# 9. a choice that sends every text on prints valid JSON and saves
def test_all_falling_through_prints_json_and_saves(tmp_path, tiny_bundle, tiny_val):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    val = tmp_path / "val.csv"
    import csv

    with val.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "category"), *zip(tiny_val.texts, tiny_val.labels)])
    run = cascade_cli("calibrate", "--bundle", str(b), "--val", str(val), "--fallthrough", "1", "--save",
                      "--threads", "1")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["choice"]["expected"]["cheap_kept_accuracy"] is None and "saved" in out


# 10. labels the bundle knows must reach both parts of the validation set
def test_no_known_label_in_one_part_is_a_clear_error(tiny_model, tiny_val):
    from cascade.calibration.calibrator import _fit_part

    texts = tiny_val.texts
    fit = _fit_part(texts)
    labels = [label if f else "not_a_label" for label, f in zip(tiny_val.labels, fit)]
    with pytest.raises(ValueError, match="both the fit part .* and the certify part need some"):
        cascade.calibrate(tiny_model, texts, labels)


# 11. the line an encoding error names is the line it is on
def test_encoding_errors_name_the_exact_line(tmp_path):
    path = tmp_path / "bad.csv"
    rows = ["text,category"] + [f"text number {i},a" for i in range(2, 300)] + ["caf\xe9,a"]
    path.write_bytes("\n".join(rows[:-1]).encode() + b"\n" + rows[-1].encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=r"bad.csv:300: not UTF-8"):
        cascade.read_csv(path)


# 12. one huge line costs memory bounded by the settings
def test_a_huge_csv_line_is_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_bytes(b"text,category\n" + b"x" * (20 << 20) + b",a\n")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"huge.csv:2: line longer than"):
            cascade.read_csv(path, max_field_chars=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_a_huge_stdin_line_is_cut_with_bounded_memory(monkeypatch):
    from cascade.cli.streams import read_stdin_chunks as _read_stdin_chunks

    data = "é".encode() * (10 << 20) + b"\nnext\n" + b" " * 500_000 + "\u200b".encode() * 1000 + b"hidden at the end\n"

    class Stdin:
        buffer = io.BytesIO(data)

    monkeypatch.setattr(sys, "stdin", Stdin)
    tracemalloc.start()
    try:
        chunks = list(_read_stdin_chunks(1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # what cascade reads of each line (1,000 characters after leading whitespace), the rest skipped
    assert chunks == [["é" * 1000, "next", "hidden at the end"]]
    assert peak < 16 << 20


# 13. a full disk names the bundle
def test_a_full_disk_names_the_bundle(b, monkeypatch):
    import cascade.bundle.store as store

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "copy_synced", full)
    with pytest.raises(OSError) as info:
        update_manifest(b, {"threshold": 0.4})
    assert str(b) in str(info.value) and "No space left" in str(info.value)


# 14. paths that would fail at the end fail (or are made) at the start
def test_a_plot_in_a_missing_folder_is_written_there(tmp_path, tiny_model, tiny_val):
    pytest.importorskip("matplotlib")
    cal = cascade.calibrate(tiny_model, tiny_val.texts, tiny_val.labels)
    cal.choose(fallthrough=0.3)
    assert cal.plot(tmp_path / "new" / "deeper" / "curve").is_file()


def test_an_output_name_too_long_is_refused_before_work(tmp_path, tiny_bundle):
    from cascade.bundle import check_output_folder

    with pytest.raises(OSError, match="longer than 200 bytes"):
        check_output_folder(tmp_path / ("x" * 245))


# 15. near duplicates: apostrophes, direction marks; texts without words stay distinct
def test_more_near_duplicates_are_spotted_and_wordless_texts_are_not_merged(tiny_model, tiny_train, tiny_val):
    from cascade.text import dedup_key

    assert dedup_key("It hasn't arrived?") == dedup_key("it hasnt\u200e arrived")
    assert len({dedup_key(t) for t in ["???", "!!!", "👍", "€€€", "..."]}) == 5
    texts = [t.replace("'", "").replace(" ", " \u200e") for t in tiny_train.texts[:10]] + tiny_val.texts
    with pytest.warns(cascade.CalibrationWarning, match="10 of .* are training texts"):
        cascade.calibrate(tiny_model, texts, tiny_train.labels[:10] + tiny_val.labels)


# 16. every invisible character is dropped, wherever it is
def test_every_unicode_format_character_is_dropped():
    from cascade.text import normalize

    cf = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert normalize("a" + "".join(cf) + "b") == "ab"
    for ch in "\u034f\ufe0f\u3164\u115f\U000e0041\u200e\u061c":
        assert normalize(ch * 100_000 + "my card") == "my card"
        assert normalize(f"my{ch}card") == "mycard"


def test_invisible_characters_do_not_move_the_cheap_stage(tiny_model):
    plain = tiny_model.cheap.logits(["my card has not arrived"])
    for ch in "\u200e\u200f\u202a\u2066\u034f\ufe0f\U000e0041\u3164\u115f\u061c":
        np.testing.assert_array_equal(tiny_model.cheap.logits([f"my{ch} card {ch}has not arrived{ch}"]), plain)


# 17. caller arguments: errors blame the caller, numpy types welcome
def test_caller_arguments_are_checked_as_such(b):
    assert cascade.load(b, batch_size=np.int64(4), threads=1).neural.batch_size in (1, 4)
    with pytest.raises(ValueError, match="batch_size"):
        cascade.load(b, batch_size=0)
    model = cascade.load(b, threads=1)
    with pytest.raises(ValueError, match="threshold"):
        model.classify("card", threshold=BIG)
    for bad in ({"a": 1}, {"a", "b"}):
        with pytest.raises(TypeError, match="pass a list"):
            model.classify(bad)


# 18. a bundle is never written inside another bundle
def test_out_inside_a_bundle_is_refused(b, tiny_model, tiny_val):
    cal = cascade.calibrate(tiny_model, tiny_val.texts, tiny_val.labels)
    choice = cal.choose(fallthrough=0.3)
    with pytest.raises(BundleError, match="is inside the bundle"):
        cal.save(b / "sub", choice)
    assert not (b / "sub").exists()
