"""The fourth red-team pass (issue 12's new surface: the wheel, `classify --input`, streams, the
scikit-learn estimator, model cards, progress bars). Each finding is reproduced here."""

from __future__ import annotations

import gc
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from adv_helpers import cascade_cli

import cascade
from cascade.banking77 import load_banking77
from cascade.datasets import TextDataset


def _run(*args: str, stdin: str | None = None) -> tuple[int, list, str]:
    run = cascade_cli(*args, stdin=stdin.encode() if stdin is not None else None)
    out = [json.loads(line) for line in run.stdout.decode().splitlines()]
    return run.returncode, out, run.stderr.decode()


def _two_labels(n: int = 12) -> TextDataset:
    data = load_banking77("train")
    keep = [i for i, label in enumerate(data.labels) if label in ("card_arrival", "exchange_rate")]
    picked = TextDataset([data.texts[i] for i in keep], [data.labels[i] for i in keep])
    return picked.per_label(n)


# 1: two classes could not be trained (scikit-learn gives one row of weights for a binary problem)
def test_two_label_bundles_train_and_answer(tmp_path, tiny_encoder_bundle):
    data = _two_labels(40)
    bundle = cascade.train(data, None, tmp_path / "two", encoder_from=tiny_encoder_bundle, progress=False)
    model = cascade.load(bundle.path, threads=1)
    assert model.labels == ["card_arrival", "exchange_rate"]
    preds = model.classify(data.texts[:20], threshold=0.0) + model.classify(data.texts[:20], threshold=1.0)
    assert {p.label for p in preds} <= set(model.labels) and {p.stage for p in preds} == {"cheap", "neural"}
    assert np.allclose(model.cheap.predict_proba(data.texts[:5]), model.cheap.predict_proba_onnx(data.texts[:5]),
                       atol=1e-5)
    est = cascade.CascadeClassifier(encoder_from=tiny_encoder_bundle, threads=1).fit(data.texts, [1, 0] * 40)
    assert est.predict_proba(data.texts[:3]).shape == (3, 2)


# 2: a pickled estimator broke once the original (and its temporary bundle folder) was gone
def test_a_pickled_estimator_carries_its_bundle(tiny_encoder_bundle, tmp_path):
    data = _two_labels(20)
    est = cascade.CascadeClassifier(encoder_from=tiny_encoder_bundle, threads=1).fit(data.texts, data.labels)
    expected = est.predict(data.texts[:10]).tolist()
    blob = pickle.dumps(est)
    folder = est.bundle_path_.parent
    del est
    gc.collect()
    assert not folder.exists()  # the original's folder went with it...
    copy = pickle.loads(blob)  # ...and the copy brought its own
    assert copy.predict(data.texts[:10]).tolist() == expected and copy.bundle_path_.is_dir()
    code = ("import pickle, sys; est = pickle.load(open(sys.argv[1], 'rb')); "
            "print(est.predict(sys.argv[2:]).tolist())")
    (tmp_path / "est.pkl").write_bytes(blob)
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "est.pkl"), *data.texts[:10]],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == str(expected), run.stderr


# 3: CSV rows with more (or fewer) fields than the header were read silently, text or id wrong
@pytest.mark.parametrize("content, line", [
    ("id,text\n1,I lost my card, please help\n", 2),
    ("text,id\nI lost my card, please help,1\n", 2),
    ("text,id\nfine,1\nshort\n", 3),
])
def test_rows_whose_field_count_differs_from_the_header_are_refused(tmp_path, tiny_bundle, content, line):
    path = tmp_path / "c.csv"
    path.write_text(content)
    status, out, err = _run("classify", "--input", str(path), "--id-col", "id", "--bundle", str(tiny_bundle))
    assert status == 2 and f"c.csv:{line}:" in err and "fields" in err and "quote" in err, err


def test_read_csv_refuses_a_row_with_extra_fields(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("text,category\nI lost my card, please help,lost_or_stolen_card\n")
    with pytest.raises(ValueError, match=r"l.csv:2: 3 fields, the header has 2"):
        cascade.read_csv(path)


# 4: an unclosed quote swallowed the rest of the file
def test_an_unclosed_quote_is_an_error_not_one_long_text(tmp_path, tiny_bundle):
    path = tmp_path / "u.csv"
    path.write_text('text\n"unterminated\nrow two\nrow three\n')
    status, out, err = _run("classify", "--input", str(path), "--bundle", str(tiny_bundle))
    assert status == 2 and "u.csv:2" in err and "never closed" in err, err


# 5: ids that cannot be written as JSON crashed the run after some output, naming no line
@pytest.mark.parametrize("line", ['{"id": NaN, "text": "x"}', '{"id": 1e400, "text": "x"}',
                                  '{"id": "\\udc80x", "text": "x"}'])
def test_ids_that_json_cannot_hold_are_named_with_their_line(tiny_bundle, line):
    stdin = '{"id": 1, "text": "card"}\n' + line + '\n{"id": 3, "text": "y"}\n'
    status, out, err = _run("classify", "--input", "-", "--id-col", "id", "--bundle", str(tiny_bundle), stdin=stdin)
    assert status == 2 and "stdin:2:" in err and "id" in err, err
    assert [d["id"] for d in out] == [1]  # what came before the bad line is answered, once


# 6: duplicate header columns were accepted
def test_duplicate_columns_are_refused(tmp_path, tiny_bundle):
    path = tmp_path / "d.csv"
    path.write_text("text,id,text\na,1,b\n")
    status, _, err = _run("classify", "--input", str(path), "--bundle", str(tiny_bundle))
    assert status == 2 and "appears 2 times" in err, err


# 7: progress bars with no stderr at all
def test_no_stderr_means_no_bar_not_a_crash(tiny_model, monkeypatch):
    from cascade.progress import MIN_TEXTS

    monkeypatch.setattr(sys, "stderr", None)
    assert len(tiny_model.classify(["my card"] * MIN_TEXTS, threshold=0.0)) == MIN_TEXTS


def test_classify_input_with_stderr_closed(tmp_path, tiny_bundle):
    path = tmp_path / "one.jsonl"
    path.write_text('{"text": "card"}\n')
    run = subprocess.run(f"{sys.executable} -m cascade.cli classify --input {path} --bundle {tiny_bundle} 2>&-",
                         shell=True, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and json.loads(run.stdout)["id"] == 0


# smaller findings
def test_a_json_lines_file_without_the_text_field_is_refused_like_a_csv(tiny_bundle):
    status, _, err = _run("classify", "--input", "-", "--text-col", "body", "--bundle", str(tiny_bundle),
                          stdin='{"text": "card"}\n')
    assert status == 2 and "stdin:1: field 'body' not found" in err, err


def test_rows_before_a_bad_line_are_answered_whatever_the_chunking(tiny_bundle):
    stdin = "".join(json.dumps({"text": f"card {i}"}) + "\n" for i in range(5)) + "[1]\n"
    status, out, err = _run("classify", "--input", "-", "--bundle", str(tiny_bundle), stdin=stdin)
    assert status == 2 and [d["id"] for d in out] == [0, 1, 2, 3, 4]


def test_estimator_labels_are_checked_before_any_work(tiny_encoder_bundle):
    data = _two_labels(6)
    est = cascade.CascadeClassifier(encoder_from=tiny_encoder_bundle, threads=1)
    for y, match in (([1, "1"] * 6, "Mix of label input types|distinct"), ([None, "a"] * 6, r"y\[0\]"),
                     (["", "a"] * 6, r"y\[0\]")):
        with pytest.raises(ValueError, match=match):
            est.fit(data.texts, y)


def test_classify_iter_refuses_bad_input_at_the_call(tiny_model):
    for bad in (None, 5, {"a": 1}):
        with pytest.raises(TypeError):
            tiny_model.classify_iter(bad)
    with pytest.raises(ValueError, match="'0.5'"):
        tiny_model.classify(["x"], threshold="0.5")


def test_utf16_without_a_byte_order_mark_is_named(tmp_path, tiny_bundle):
    path = tmp_path / "w.csv"
    path.write_bytes("text\nhello\n".encode("utf-16-le"))
    status, _, err = _run("classify", "--input", str(path), "--bundle", str(tiny_bundle))
    assert status == 2 and "UTF-16" in err, err


def test_an_empty_csv_says_it_is_empty(tmp_path, tiny_bundle):
    path = tmp_path / "e.csv"
    path.write_text("")
    status, _, err = _run("classify", "--input", str(path), "--bundle", str(tiny_bundle))
    assert status == 2 and "empty" in err, err


def test_a_long_json_escaped_text_within_the_field_limit_is_read(tiny_bundle, tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": "é" * 900_000}) + "\n")  # 5.4 MB of \\u00e9 escapes
    status, out, err = _run("classify", "--input", str(path), "--bundle", str(tiny_bundle))
    assert status == 0 and out[0]["id"] == 0, err


def test_the_model_card_reads_as_prose(tiny_bundle, tiny_val, tmp_path):
    model = cascade.load(tiny_bundle, threads=1)
    cal = cascade.calibrate(model, tiny_val.texts, tiny_val.labels)
    saved = cal.save(tmp_path / "c", cal.choose(fallthrough=0.4))
    card = saved.file("MODEL_CARD.md").read_text()
    assert "{" not in card and "fallthrough 0.4" in card
