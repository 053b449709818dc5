"""The third red-team pass: kills and races that could still lose a file, tokenizer specs that slipped
through, and costs that inputs could still inflate. Each case is reproduced here."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from adv_helpers import cascade_cli, edit_manifest, replace_file, run_killed

import cascade
from cascade.bundle import atomic, check_output_folder, read_bundle, update_manifest
from cascade.errors import BundleError, CascadeError


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name == "notes.txt"}


# 1
@pytest.mark.parametrize("pid", ["4294967296", "99999999999999999999"])
def test_scratch_like_names_with_huge_numbers_are_ignored(b, pid):
    (b.parent / f".b.tmp-{pid}-ab").mkdir()
    assert cascade.load(b, threads=1).classify("card").label
    run = cascade_cli("info", "--bundle", str(b))
    assert run.returncode == 0, run.stderr


# 2
def test_a_kill_while_emptying_the_replaced_folder_never_deletes_a_user_file(b):
    run_killed("""
        import os, signal
        from pathlib import Path
        import cascade.bundle.atomic as atomic
        from cascade.bundle import update_manifest
        real_exchange = atomic._exchange
        def exchange(a, target):
            (target / "notes.txt").write_text("mine")
            return real_exchange(a, target)
        atomic._exchange = exchange
        real_unlink, count = Path.unlink, []
        def unlink(self, missing_ok=False):
            if self.name != atomic.MARKER and self.parent.name.startswith(".b.tmp-"):
                if count:
                    os.kill(os.getpid(), signal.SIGKILL)
                count.append(1)
            real_unlink(self, missing_ok=missing_ok)
        Path.unlink = unlink
        update_manifest(BUNDLE, {"threshold": 0.42})
    """, b)
    read_bundle(b)  # the next load tidies up
    notes = [p for p in b.parent.rglob("notes.txt")]
    assert len(notes) == 1 and notes[0].read_text() == "mine"


# 3
def test_fallback_kill_between_renames_with_a_user_file_restores_the_old_bundle_with_it(b):
    run_killed("""
        import os, signal
        import cascade.bundle.atomic as atomic
        atomic._exchange = lambda a, b: False
        real_rename, calls = os.rename, []
        def rename(src, dst):
            calls.append(src)
            if len(calls) == 1:
                open(os.path.join(src, "notes.txt"), "w").write("mine")
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real_rename(src, dst)
        atomic.os.rename = rename
        from cascade.bundle import update_manifest
        update_manifest(BUNDLE, {"threshold": 0.42})
    """, b)
    assert not b.exists()
    bundle = read_bundle(b)  # restored, with the file that was in it
    assert bundle.threshold != 0.42 and (b / "notes.txt").read_text() == "mine"


# 4
def test_a_folder_that_replaces_the_target_during_the_save_is_not_swapped_out(b, monkeypatch):
    import shutil

    import cascade.bundle.store as store

    real_fill = store._fill

    def fill_then_race(tmp, files, manifest, expected):
        real_fill(tmp, files, manifest, expected)
        shutil.rmtree(b)
        b.mkdir()
        (b / "thesis.tex").write_text("years of work")

    monkeypatch.setattr(store, "_fill", fill_then_race)
    with pytest.raises(OSError, match="no longer a cascade bundle"):
        update_manifest(b, {"threshold": 0.4})
    assert (b / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in b.iterdir()) == ["thesis.tex"]
    assert [p for p in b.parent.iterdir() if p.name.startswith(".")] == []


# 5-7: tokenizer specs
def _tok(b: Path, change) -> None:
    spec = json.loads((b / "tokenizer.json").read_text())
    change(spec)
    replace_file(b, "tokenizer.json", json.dumps(spec).encode())


@pytest.mark.parametrize("change,match", [
    (lambda t: t["model"].pop("type"), "model None is not supported"),
    (lambda t: t["model"].__setitem__("type", "BPE"), "model 'BPE' is not supported"),
    (lambda t: t["normalizer"].pop("type"), "normalizer None is not supported"),
    (lambda t: t["model"].__setitem__("continuing_subword_prefix", "#" * 1_000_000), "continuing_subword_prefix"),
    (lambda t: t.__setitem__("normalizer", {"type": "Sequence", "normalizers": [{"type": "NFKC"}] * 100}),
     "at most 8 steps"),
    (lambda t: t["model"].__setitem__("unk_token", "[NOPE]"), "unknown token"),
    (lambda t: t["model"]["vocab"].__setitem__("zzz-extra", 10_000_000), "ids must be 0 to n-1"),
    (lambda t: t["post_processor"].__setitem__("single", [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}] * 600
                                               + [{"Sequence": {"id": "A", "type_id": 0}}]), "at most 4 tokens"),
])
def test_tokenizer_specs_outside_bert_wordpiece_are_refused(b, change, match):
    _tok(b, change)
    with pytest.raises(BundleError, match=match):
        cascade.load(b)


def test_a_tokenizer_that_does_not_fit_the_model_is_a_clear_error(tmp_path, tiny_parts, tiny_train):
    from builders import make_neural_onnx

    from cascade.stages.neural import NeuralStage

    small = make_neural_onnx(tmp_path / "small.onnx", 5, 3)  # an embedding of 5 rows; the tokenizer has more ids
    stage = NeuralStage(small, tiny_parts["tokenizer"], 16, threads=1)
    with pytest.raises(CascadeError, match="tokenizer and model do not fit together"):
        stage.predict_proba(tiny_train.texts[:3])


# 8
def test_a_huge_always_neural_list_is_refused_quickly(b):
    edit_manifest(b, lambda m: m.setdefault("calibration", {}).__setitem__("always_neural", m["labels"] * 1000))
    with pytest.raises(BundleError, match="always_neural"):
        read_bundle(b)


# 9
def test_characters_the_tokenizer_deletes_cannot_hide_a_text(tiny_model):
    plain = "my card has not arrived"
    for junk in ("\x01" * 100 + " ", "\u0301" * 100 + " "):
        hidden = junk * 130 + plain
        assert tiny_model.neural.encoder.token_ids([hidden]) == tiny_model.neural.encoder.token_ids([plain])


# 10
def test_stdin_answers_like_the_api_whatever_leads_the_line(tiny_bundle, tmp_path):
    text = " " * 500_000 + "\u200b" * 1000 + "my card has not arrived"
    model = cascade.load(tiny_bundle, threads=1)
    want = json.dumps(model.classify(text).to_dict(), ensure_ascii=False)
    run = cascade_cli("classify", "-", "--bundle", str(tiny_bundle), "--threads", "1", stdin=(text + "\n").encode())
    assert run.returncode == 0 and run.stdout.decode().strip() == want


# 11
def test_chunks_respect_the_character_budget():
    from cascade.limits import Limits, chunks

    limits = Limits(chunk_size=100, chunk_chars=1000, max_text_chars=600)
    spans = chunks(["x" * 300] * 10 + ["y" * 5000], limits)
    assert spans == [(0, 3), (3, 6), (6, 9), (9, 11)]  # the last text counts as 600 characters


# 12-13: CSV files
def test_a_row_of_a_million_commas_costs_bounded_memory(tmp_path):
    path = tmp_path / "commas.csv"
    path.write_bytes(b"text,category\nhi,card" + b"," * (8 << 20) + b"\n")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="commas.csv:2: line longer than"):
            cascade.read_csv(path, max_field_chars=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("content,match", [
    (b"text,text,category\na,b,c\n", "column 'text' appears 2 times"),
    (b"text,category\rhi,card\rho,cash\r", "bare carriage return"),
    (b"text,category\nok,card\n\"unclosed,card\nmore,card\n", ":3: a quote opened in this row is never closed"),
])
def test_csv_shapes_get_errors_that_say_where_and_what(tmp_path, content, match):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        cascade.read_csv(path)


def test_a_fifo_given_as_csv_says_so(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(ValueError, match="not a regular file"):
        cascade.read_csv(tmp_path / "pipe.csv")


# 14
def test_zero_idf_is_refused_and_an_empty_block_stays_zero(b):
    from cascade.stages.featurizer import FeatureBlock, Featurizer

    spec = json.loads((b / "cheap_features.json").read_text())
    spec["blocks"][0]["idf"] = [0.0] * len(spec["blocks"][0]["idf"])
    replace_file(b, "cheap_features.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="idf"):
        cascade.load(b)
    f = Featurizer([FeatureBlock("word", (1, 1), ["card"], np.ones(1)), FeatureBlock("char_wb", (2, 2), ["zz"], np.ones(1))])
    assert np.isfinite(f.transform(["card", "nothing"]).toarray()).all()


# 15
def test_output_paths_are_judged_where_they_really_land(b, tmp_path):
    (b.parent / "c").mkdir()
    assert check_output_folder(b / ".." / "c" / "new") == (b / ".." / "c" / "new").absolute()
    (tmp_path / "link").symlink_to(b)
    with pytest.raises(BundleError, match="is inside the bundle"):
        check_output_folder(tmp_path / "link" / "sub")


def test_info_on_a_folder_whose_name_is_not_utf8(b, tmp_path):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xff"))
    b.rename(odd)
    run = cascade_cli("info", "--bundle", os.fsdecode(os.fsencode(odd)))
    assert run.returncode == 0, run.stderr


def test_a_held_lock_times_out_with_a_clear_error(b, monkeypatch):
    monkeypatch.setattr(atomic, "LOCK_WAIT_SECONDS", 0.3)
    holder = atomic.FolderLock(b)
    try:
        with pytest.raises(TimeoutError, match="locked by another process"):
            update_manifest(b, {"threshold": 0.4})
    finally:
        holder.release()
    update_manifest(b, {"threshold": 0.4})


def test_a_kill_right_after_the_swap_keeps_user_files_and_says_where(b, caplog):
    run_killed("""
        import os, signal
        import cascade.bundle.atomic as atomic
        from cascade.bundle import update_manifest
        real_exchange = atomic._exchange
        def exchange(a, target):
            (target / "notes.txt").write_text("mine")
            ok = real_exchange(a, target)
            os.kill(os.getpid(), signal.SIGKILL)
        atomic._exchange = exchange
        update_manifest(BUNDLE, {"threshold": 0.42})
    """, b)
    import logging

    with caplog.at_level(logging.WARNING):
        assert read_bundle(b).threshold == 0.42
    notes = list(b.parent.rglob("notes.txt"))
    assert len(notes) == 1 and notes[0].read_text() == "mine" and str(notes[0].parent) in caplog.text
    assert sorted(p.name for p in notes[0].parent.iterdir()) == ["notes.txt"]


def test_macro_f1_is_scikit_learns(tiny_bundle, tiny_val):
    """Issue 12: the hand-written macro-F1 averaged only the classes present in the true labels, so a
    slice of texts from a few classes scored 0.957 where scikit-learn gives 0.589 (classes predicted but
    never true count, with F1 0). Every macro-F1 now comes from sklearn.metrics."""
    from sklearn.metrics import f1_score

    import cascade
    from cascade.evaluation import macro_f1
    from cascade.policy.multilabel import tagging_figures

    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 3])
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro")) == pytest.approx(1 / 3)
    model = cascade.load(tiny_bundle, threads=1)
    order = np.argsort(tiny_val.labels, kind="stable")[:30]  # a slice of a few classes, as "the first 300 test texts"
    part = cascade.TextDataset([tiny_val.texts[i] for i in order], [tiny_val.labels[i] for i in order])
    got = cascade.evaluate(model, part)
    pred = [p.label for p in model.classify(part.texts)]
    assert got["cascade_macro_f1"] == pytest.approx(f1_score(part.labels, pred, average="macro", zero_division=0))
    y = np.array([[1, 0, 0], [0, 1, 0]], dtype=bool)  # topic 2 neither true nor assigned: not averaged
    guess = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    assert tagging_figures(y, guess)["macro_f1"] == pytest.approx(f1_score(y[:, :2], guess[:, :2], average="macro",
                                                                           zero_division=0))


def test_a_model_says_what_it_is_and_load_shows_its_arguments(tiny_bundle, tagger):
    """Issue 12: repr(model) was `<cascade.router.Cascade object at 0x...>` and help(cascade.load) showed
    only `**options`."""
    import inspect

    import cascade

    text = repr(cascade.load(tiny_bundle, threads=1))
    assert text.startswith("Cascade(single-label, ") and str(tiny_bundle) in text and "threshold=" in text
    assert "fine-tuned transformer" in text or "frozen encoder + head" in text
    assert repr(cascade.load(tagger, threads=1)).startswith("Cascade(multi-label, 4 labels ['grain', 'money', 'oil', ...]")
    params = inspect.signature(cascade.load).parameters
    assert {"threads", "batch_size", "providers", "verify", "digest", "limits"} <= set(params)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_top_k_none_gives_every_label_as_in_hf_pipelines(tiny_bundle, capsys):
    """Issue 12: `top_k=None` (every label, as Hugging Face pipelines read it) was refused."""
    import cascade

    model = cascade.load(tiny_bundle, threads=1)
    got = model.classify("card not arrived", top_k=None)
    assert [label for label, _ in got.top_k] == [label for label, _ in model.classify("card not arrived",
                                                                                       top_k=len(model.labels)).top_k]
    assert len(got.top_k) == len(model.labels) and got.top_k[0][0] == got.label
    with pytest.raises(ValueError, match="top_k must be"):
        model.classify("x", top_k=0)
