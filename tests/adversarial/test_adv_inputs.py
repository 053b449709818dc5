"""Inputs and resources: every bad input a clear error, memory bounded by settings, same text same answer."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc

import numpy as np
import pytest
from adv_helpers import cascade_cli

import cascade
from cascade import Limits
from cascade.errors import BundleError
from cascade.text import normalize

# --- shapes of input --------------------------------------------------------------------------------

def test_two_dimensional_arrays_are_refused(tiny_model):
    with pytest.raises(TypeError, match="one-dimensional"):
        tiny_model.classify(np.array([["a", "b"], ["c", "d"]]))


def test_missing_values_are_named(tiny_model):
    pd = pytest.importorskip("pandas")
    for missing in (pd.NA, None, float("nan"), np.nan):
        with pytest.raises(TypeError, match=r"texts\[1\] .*missing value"):
            tiny_model.classify(["ok", missing])


def test_numpy_integers_and_floats_are_accepted(tiny_model):
    p = tiny_model.classify(["card"], top_k=np.int64(2), threshold=np.float32(0.5))[0]
    assert len(p.top_k) == 2
    with pytest.raises(ValueError, match="top_k"):
        tiny_model.classify("card", top_k=True)
    with pytest.raises(ValueError, match="threshold"):
        tiny_model.classify("card", threshold=np.nan)


@pytest.mark.parametrize("threads", [0, -1, 1000, 2.5, True])
def test_thread_counts_are_validated(tiny_bundle, threads):
    with pytest.raises(ValueError, match="threads must be an integer from 1 to"):
        cascade.load(tiny_bundle, threads=threads)


@pytest.mark.parametrize("threads", ["0", "-1", "1000"])
def test_cli_thread_counts_are_validated_at_once(tiny_bundle, threads):
    run = cascade_cli("classify", "card", "--bundle", str(tiny_bundle), "--threads", threads, timeout=60)
    assert run.returncode == 2 and b"threads must be" in run.stderr and b"Traceback" not in run.stderr


def test_cascade_bundle_pointing_at_a_file_says_so(tmp_path, monkeypatch):
    f = tmp_path / "bundle.tar"
    f.write_text("x")
    monkeypatch.setenv("CASCADE_BUNDLE", str(f))
    with pytest.raises(BundleError, match="CASCADE_BUNDLE points at .* which is a file, not a bundle folder"):
        cascade.load()
    with pytest.raises(BundleError, match="is a file, not a bundle folder"):
        cascade.load(f)


def test_the_default_bundle_is_loaded_once_by_many_threads(monkeypatch, tiny_bundle):
    monkeypatch.setenv("CASCADE_BUNDLE", str(tiny_bundle))
    monkeypatch.setattr(cascade, "_default_model", None)
    calls = []
    real = cascade.Cascade.load.__func__

    def counting(cls, *args, **kwargs):
        calls.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(cascade.Cascade, "load", classmethod(counting))
    barrier = threading.Barrier(8)
    results = []

    def worker():
        barrier.wait()
        results.append(cascade.classify("card").label)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 8


# --- huge and strange texts ----------------------------------------------------------------------------

def test_text_and_word_limits_bound_what_is_read():
    limits = Limits(max_text_chars=1000, max_word_chars=50)
    out = normalize("x" * 20_000_000, limits)
    assert out == "x" * 50
    out = normalize(("word " * 1_000_000), limits)
    assert len(out) <= 1000
    assert normalize(" " * 13_000 + "\u200b" * 500 + "my  card\u200b  is\u00a0lost ") == "my card is lost"


def test_a_20mb_text_without_spaces_costs_little_memory(tiny_model):
    text = "a" * 20_000_000
    tracemalloc.start()
    try:
        tiny_model.classify(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_the_word_cache_is_bounded_in_bytes(tiny_bundle):
    model = cascade.load(tiny_bundle, threads=1, limits=Limits(word_cache_bytes=1 << 20, max_word_chars=100_000))
    rng = np.random.default_rng(0)
    for _ in range(40):  # 40 distinct 100 KB words
        model.cheap.predict_proba(["".join(rng.choice(list("abcdefgh"), 100_000))])
        assert model.cheap.featurizer._cached_bytes <= 1 << 20


def test_leading_invisible_whitespace_does_not_hide_the_text_from_the_neural_stage(tiny_model):
    plain = "my card has not arrived"
    for prefix in (" " * 13_000, "\u200b" * 13_000, "\u00a0\n\t" * 5000):
        assert tiny_model.neural.encoder.token_ids([prefix + plain]) == tiny_model.neural.encoder.token_ids([plain])
        np.testing.assert_array_equal(tiny_model.cheap.logits([prefix + plain]), tiny_model.cheap.logits([plain]))


def test_large_inputs_are_processed_in_chunks(tiny_bundle, monkeypatch):
    model = cascade.load(tiny_bundle, threads=1, limits=Limits(chunk_size=7))
    seen = []
    f = model.cheap.featurizer
    real, real_one = f.transform, f.transform_one
    monkeypatch.setattr(f, "transform", lambda texts: seen.append(len(texts)) or real(texts))
    monkeypatch.setattr(f, "transform_one", lambda text: seen.append(1) or real_one(text))
    model.classify([f"text {i}" for i in range(50)], threshold=0.0)
    assert max(seen) <= 7 and sum(seen) == 50


# --- same text, same answer ----------------------------------------------------------------------------

def test_answers_do_not_depend_on_batch_mates_or_order(tiny_model, tiny_val):
    texts = tiny_val.texts
    together = [p.to_dict() for p in tiny_model.classify(texts)]
    alone = [tiny_model.classify(t).to_dict() for t in texts]
    assert alone == together
    order = np.random.default_rng(1).permutation(len(texts))
    shuffled = tiny_model.classify([texts[i] for i in order])
    assert [shuffled[list(order).index(i)].to_dict() for i in range(len(texts))] == together
    # the cheap stage: bit-for-bit the same logits alone and in any batch
    np.testing.assert_array_equal(np.vstack([tiny_model.cheap.logits([t]) for t in texts]),
                                  tiny_model.cheap.logits(texts))


def test_dynamic_quantization_is_made_batch_independent(tmp_path, tiny_parts, tiny_train, tiny_val):
    """A per-batch (dynamic) INT8 model is run one text at a time; fixing its scales lets it batch again,
    and then a text's scores are the same alone and in any batch."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from cascade.stages.neural import NeuralStage
    from cascade.training.activation_scales import activation_ranges, freeze_activation_scales

    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(tiny_parts["neural"]), str(dynamic), weight_type=QuantType.QInt8)
    assert any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(dynamic)).graph.node)
    stage = NeuralStage(dynamic, tiny_parts["tokenizer"], 16, threads=1, batch_size=32)
    assert stage.per_text and stage.batch_size == 1
    texts = tiny_val.texts
    np.testing.assert_array_equal(stage.predict_proba(texts), np.vstack([stage.predict_proba([t]) for t in texts]))

    ranges = activation_ranges(dynamic, tiny_parts["tokenizer"], 16, tiny_train.texts[:200], threads=1)
    fixed = freeze_activation_scales(dynamic, tmp_path / "fixed.onnx", ranges, 99.9)
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(fixed)).graph.node)
    stage = NeuralStage(fixed, tiny_parts["tokenizer"], 16, threads=1, batch_size=32)
    assert not stage.per_text and stage.batch_size == 32
    batched = stage.predict_proba(texts)
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = np.empty_like(batched)
    shuffled[order] = stage.predict_proba([texts[i] for i in order])
    single = np.vstack([stage.predict_proba([t]) for t in texts])
    assert np.abs(batched - single).max() < 1e-6 and np.abs(batched - shuffled).max() < 1e-6
    assert (batched.argmax(1) == single.argmax(1)).all()


# --- files and streams ----------------------------------------------------------------------------

def test_csv_fields_longer_than_the_csv_module_default_are_read(tmp_path):
    path = tmp_path / "long.csv"
    long = "word " * 40_000  # 200,000 characters: over csv's default 131,072
    path.write_text(f'text,category\n"{long}",card_arrival\n', encoding="utf-8")
    assert cascade.read_csv(path).texts[0] == long


def test_a_csv_field_over_the_limit_names_file_and_line(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text('text,category\nok,a\n"' + "x" * 2000 + '",b\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"huge.csv:3: a field longer than 1,000 characters"):
        cascade.read_csv(path, max_field_chars=1000)


@pytest.mark.parametrize("encoding,hint", [("latin-1", "not UTF-8"), ("utf-16", "UTF-16")])
def test_files_in_other_encodings_name_the_file_and_the_fix(tmp_path, encoding, hint):
    path = tmp_path / "data.csv"
    path.write_text("text,category\ncafé crème,a\n", encoding=encoding)
    with pytest.raises(ValueError, match=hint) as info:
        cascade.read_csv(path)
    assert "data.csv" in str(info.value) and "UTF-8" in str(info.value)


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("text,category\nhello,a\n", encoding="utf-8-sig")
    assert cascade.read_csv(path).texts == ["hello"]


def test_stdin_is_read_as_utf8_whatever_the_locale(tiny_bundle):
    texts = "café crème\nnaïve façade\n日本語のテキスト\n".encode()
    want = cascade_cli("classify", "-", "--bundle", str(tiny_bundle), "--threads", "1", stdin=texts)
    env = {**os.environ, "PYTHONIOENCODING": "latin-1", "LC_ALL": "C"}
    got = cascade_cli("classify", "-", "--bundle", str(tiny_bundle), "--threads", "1", stdin=texts, env=env)
    assert want.returncode == got.returncode == 0, got.stderr
    assert got.stdout == want.stdout and len(got.stdout.splitlines()) == 3


def test_stdin_that_is_not_utf8_is_a_clear_error(tiny_bundle):
    run = cascade_cli("classify", "-", "--bundle", str(tiny_bundle), "--threads", "1", stdin="ok\ncafé\n".encode("latin-1"))
    assert run.returncode == 2 and b"line 2 is not UTF-8" in run.stderr


# --- calibration inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_labels,error,match", [
    (["no_such_label"] * 40, ValueError, "none of the calibration labels"),
    ([1.5] * 40, TypeError, r"labels\[0\]"),
    ([None] * 40, TypeError, r"labels\[0\] is None"),
])
def test_bad_calibration_labels_are_clear_errors(tiny_model, tiny_val, bad_labels, error, match):
    with pytest.raises(error, match=match):
        cascade.calibrate(tiny_model, tiny_val.texts[:40], bad_labels)


def test_integer_labels_are_read_as_their_names(tiny_model, tiny_val):
    with pytest.raises(ValueError, match="none of the calibration labels"):  # the bundle's labels are names
        cascade.calibrate(tiny_model, tiny_val.texts[:40], list(range(40)))


def test_duplicates_do_not_count_twice_in_a_promise(tiny_model, tiny_val):
    once = cascade.calibrate(tiny_model, tiny_val.texts, tiny_val.labels)
    texts = tiny_val.texts + [t.upper() + " ?" for t in tiny_val.texts]
    with pytest.warns(cascade.CalibrationWarning, match="repeat an earlier one"):
        twice = cascade.calibrate(tiny_model, texts, tiny_val.labels * 2)
    assert twice.n_duplicates_ == len(tiny_val) and twice.n_certify_ == once.n_certify_
    a = once.choose(target_accuracy=0.05, confidence=0.9).expected["accuracy_lower_bound"]
    b = twice.choose(target_accuracy=0.05, confidence=0.9).expected["accuracy_lower_bound"]
    assert a == b


@pytest.mark.parametrize("variant", [lambda t: t + "  ", lambda t: t.replace(" ", "\u00a0"), lambda t: t + "?",
                                     lambda t: "  " + t.upper(), lambda t: t.replace(" ", "  \u200b")])
def test_near_duplicates_of_training_texts_are_spotted(tiny_model, tiny_train, tiny_val, variant):
    texts = [variant(t) for t in tiny_train.texts[:20]] + tiny_val.texts
    with pytest.warns(cascade.CalibrationWarning, match="20 of .* are training texts"):
        cascade.calibrate(tiny_model, texts, tiny_train.labels[:20] + tiny_val.labels)


def test_a_generator_is_classified_lazily_in_bounded_chunks(tiny_model, tiny_val):
    """Issue 12: a generator was materialised and featurised at once; it is pulled a chunk at a time."""
    pulled = 0

    def texts():
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield tiny_val.texts[i % len(tiny_val)]

    stream = tiny_model.classify_iter(texts())
    first = next(stream)
    assert pulled <= tiny_model.cheap.limits.chunk_size
    assert first == tiny_model.classify(tiny_val.texts[0])
    gen = (t for t in tiny_val.texts)
    assert tiny_model.classify(gen) == tiny_model.classify(tiny_val.texts)


def test_a_bad_item_deep_in_a_stream_is_named_by_its_position(tiny_model):
    def texts():
        yield from ["fine"] * 2500
        yield None

    with pytest.raises(TypeError, match=r"texts\[2500\] is NoneType \(a missing value\?\)"):
        tiny_model.classify(texts())
    with pytest.raises(TypeError, match="DataFrame|dict"):
        list(tiny_model.classify_iter({"a": 1}))
    with pytest.raises(ValueError, match="top_k"):
        tiny_model.classify_iter(iter(["x"]), top_k=0)  # checked at the call, not at the first answer


def test_classify_input_keeps_every_row_and_its_id(tiny_bundle, tmp_path, capsys):
    """Issue 12: `cascade classify -` split texts holding newlines and gave no id; --input reads rows. (Issue 26:
    the wrong-argument cases checked the exit code only; lint found the message they listed unused.)"""
    from cascade.cli import main as cli

    rows = [("a1", "my card is lost"), ("a2", ""), ("a3", "two\nlines of a top up question"), ("a4", "refund")]
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in rows), encoding="utf-8")
    (tmp_path / "in.tsv").write_text("text\tid\n" + "".join(f"{t.replace(chr(10), ' ')}\t{i}\n" for i, t in rows))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows)
                                       + json.dumps({"id": "a5", "text": None}) + "\n")
    for name in ("in.csv", "in.tsv", "in.jsonl"):
        run = _cli("classify", "--input", str(tmp_path / name), "--id-col", "id", "--bundle",
                                  str(tiny_bundle))
        assert run.returncode == 0, run.stderr
        out = [json.loads(line) for line in run.stdout.splitlines()]
        assert [d["id"] for d in out][:4] == ["a1", "a2", "a3", "a4"]
        assert out[1] == {"id": "a2", "error": "empty text"} and "row(s) could not be classified" in run.stderr
        assert out[0]["label"] == cli_free_label(tiny_bundle, "my card is lost")
    run = _cli("classify", "--input", "-", "--bundle", str(tiny_bundle),
                              stdin='{"text": "refund"}\n\n{"text": 5}\n')
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert [d["id"] for d in out] == [0, 1] and out[1]["error"].startswith("the text is not a string")
    for bad, message in ((["x", "--input", "f.csv"], "not both"), ([], "nothing to classify"),
                         (["x", "--id-col", "id"], "apply to --input"),
                         (["--input", str(tmp_path / "in.csv"), "--text-col", "body"], "column 'body' not found")):
        capsys.readouterr()
        assert cli(["classify", *bad, "--bundle", str(tiny_bundle)]) == 2, bad
        assert message in capsys.readouterr().err, bad
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n[1, 2]\n')
    run = _cli("classify", "--input", str(bad_json), "--bundle", str(tiny_bundle))
    assert run.returncode == 2 and "bad.jsonl:2: a JSON list, not an object" in run.stderr


def _cli(*args: str, stdin: str | None = None):
    run = cascade_cli(*args, stdin=stdin.encode() if stdin is not None else None)
    return type("Run", (), {"returncode": run.returncode, "stdout": run.stdout.decode(), "stderr": run.stderr.decode()})


def cli_free_label(bundle, text):
    import cascade

    return cascade.load(bundle).classify(text).label
