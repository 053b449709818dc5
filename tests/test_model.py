"""Routing, the Prediction contract, and bad input."""

import math

import numpy as np
import pytest

import cascade
from cascade.model import Prediction


def test_str_in_prediction_out(tiny_model):
    p = tiny_model.classify("I still have not received my new card")
    assert isinstance(p, Prediction)
    assert p.label in tiny_model.labels and 0.0 < p.score <= 1.0 and p.stage in ("cheap", "neural")
    assert p.top_k == ((p.label, p.score),)


def test_list_in_list_out_same_order(tiny_model, tiny_val):
    texts = tiny_val.texts[:40]
    preds = tiny_model.classify(texts)
    assert [p.label for p in preds] == [tiny_model.classify(t).label for t in texts]
    assert tiny_model.classify([]) == []
    assert tiny_model.classify(iter(texts[:2])) == preds[:2]


def test_threshold_zero_keeps_all_in_cheap_and_one_sends_all_to_neural(tiny_model, tiny_val):
    texts = tiny_val.texts[:30]
    assert {p.stage for p in tiny_model.classify(texts, threshold=0.0)} == {"cheap"}
    neural = tiny_model.classify(texts, threshold=1.0)
    assert {p.stage for p in neural} == {"neural"}
    from cascade.policy.routing import fallthrough_answer

    # a text that falls through gets the neural stage's vote mixed with the cheap stage's
    want = fallthrough_answer(tiny_model.cheap.predict_proba(texts), tiny_model.neural.predict_proba(texts),
                              tiny_model.mix)
    assert [p.label for p in neural] == [tiny_model.labels[i] for i in want.argmax(1)]
    np.testing.assert_allclose([p.score for p in neural], want.max(1))


def test_routing_follows_cheap_confidence(tiny_model, tiny_val):
    texts = tiny_val.texts[:60]
    conf = tiny_model.cheap.predict_proba(texts).max(1)
    t = float(np.median(conf))
    stages = [p.stage for p in tiny_model.classify(texts, threshold=t)]
    assert stages == ["neural" if c < t else "cheap" for c in conf]


def test_top_k(tiny_model):
    p = tiny_model.classify("card arrival", top_k=5)
    scores = [s for _, s in p.top_k]
    assert len(p.top_k) == 5 and scores == sorted(scores, reverse=True) and p.top_k[0] == (p.label, p.score)
    assert len(p.to_dict()["top_k"]) == 5
    for bad in (0, 78, 1.5, True):
        with pytest.raises(ValueError, match="top_k must be an integer"):
            tiny_model.classify("x", top_k=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_threshold(tiny_model, bad):
    with pytest.raises(ValueError, match="threshold must be a number between 0 and 1"):
        tiny_model.classify("x", threshold=bad)


@pytest.mark.parametrize("bad,match", [
    (None, "got None"), (b"bytes", "got bytes; decode"), (42, "got int"),
    (["ok", None], r"texts\[1\] is NoneType \(a missing value\?\)"),
    (["ok", "fine", math.nan], r"texts\[2\] is float \(a missing value\?\)"),
    ([b"x"], r"texts\[0\] is bytes"), (["a", 3], r"texts\[1\] is int, not str"),
])
def test_bad_input_names_the_item(tiny_model, bad, match):
    with pytest.raises(TypeError, match=match):
        tiny_model.classify(bad)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_odd_texts_are_answered_by_both_stages(tiny_model, threshold):
    odd = ["", "   \n\t", "🙂🙂🙂", "مرحبا بالعالم", "zero\u200bwidth\u202eRTL", "ctrl\x00\x1b[31m", "\ud800 lone surrogate",
           "x" * 5000, "İstanbul ǅ ß"]
    preds = tiny_model.classify(odd, threshold=threshold)
    assert len(preds) == len(odd) and all(p.label in tiny_model.labels for p in preds)


def test_one_megabyte_text_is_answered_and_truncated(tiny_model):
    text = "my card has not arrived yet " * 40_000  # ~1.1 MB
    assert tiny_model.classify(text, threshold=1.0).stage == "neural"
    rows = tiny_model.neural.encoder.token_ids([text])
    assert len(rows[0]) == tiny_model.neural.encoder.max_length


def test_empty_text_is_defined(tiny_model):
    """An empty text has no features: the cheap stage answers from its intercepts alone."""
    p = tiny_model.classify("", threshold=0.0)
    intercept_only = tiny_model.cheap.intercept
    assert p.label == tiny_model.labels[int(np.argmax(intercept_only))]


def test_module_level_classify_uses_default_bundle(monkeypatch, tiny_bundle):
    monkeypatch.setenv("CASCADE_BUNDLE", str(tiny_bundle))
    monkeypatch.setattr(cascade, "_default_model", None)
    assert cascade.classify(["a", "b"])[0].label in cascade.load(tiny_bundle).labels


def test_missing_default_bundle_says_where_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("CASCADE_BUNDLE", str(tmp_path / "absent"))
    with pytest.raises(cascade.BundleError, match="set CASCADE_BUNDLE"):
        cascade.load()


def test_to_dict_is_json_ready_and_shaped_like_a_hugging_face_answer(tiny_model):
    """Issue 12: the documented output: label and score at the top, top_k as HF's [{label, score}] list."""
    import json

    one = tiny_model.classify("my card is lost").to_dict()
    assert set(one) == {"label", "score", "stage"} and isinstance(one["score"], float)
    many = tiny_model.classify("my card is lost", top_k=None).to_dict()
    assert [set(d) for d in many["top_k"]] == [{"label", "score"}] * len(tiny_model.labels)
    assert many["top_k"][0] == {"label": many["label"], "score": many["score"]}
    scores = [d["score"] for d in many["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert json.loads(json.dumps(many, allow_nan=False)) == many


def test_a_progress_bar_only_for_many_texts_and_only_on_a_terminal(tiny_model, tiny_val, monkeypatch, capsys):
    """Issue 12: bars with rate and ETA on classify over thousands of texts; quiet in pipes and logs."""
    import cascade.model as router

    opened = []
    real = router.progress_bar

    def spy(*args, **kwargs):
        opened.append(kwargs.get("total"))
        return real(*args, **kwargs)

    monkeypatch.setattr(router, "progress_bar", spy)
    many = (tiny_val.texts * (router.MIN_TEXTS // len(tiny_val) + 1))[: router.MIN_TEXTS]
    assert tiny_model.classify(many, threshold=0.0)[:100] == tiny_model.classify(many[:100], threshold=0.0)
    assert opened == []  # stderr is not a terminal here: no bar, and the list is not split for one
    monkeypatch.setattr(router, "stderr_is_terminal", lambda: True)
    small = tiny_model.classify(many[:100])
    assert opened == []
    assert tiny_model.classify(many, threshold=0.0)[:100] == tiny_model.classify(many[:100], threshold=0.0)
    assert opened == [router.MIN_TEXTS] and small
    tiny_model.classify(many, threshold=0.0, progress=False)
    assert opened == [router.MIN_TEXTS]
    assert "\r" not in capsys.readouterr().err  # stderr is not a terminal here: the bar stays silent


def test_an_unavailable_execution_provider_is_an_error_listing_the_available_ones(tiny_bundle):
    """Issue 15: CUDA/OpenVINO used to fall back to the CPU with only onnxruntime's warning."""
    import onnxruntime as ort
    import pytest

    import cascade
    from cascade.cli import main

    with pytest.raises(ValueError, match=r"not available in this onnxruntime build; available: \[.*CPUExecutionProvider"):
        cascade.load(tiny_bundle, providers=["NoSuchExecutionProvider"])
    assert cascade.load(tiny_bundle, providers=["CPUExecutionProvider"]).neural.session.get_providers() == [
        "CPUExecutionProvider"]
    assert main(["classify", "x", "--bundle", str(tiny_bundle), "--provider", "NoSuchExecutionProvider"]) == 2
    assert "CPUExecutionProvider" in ort.get_available_providers()


def test_both_stages_are_stages(tiny_bundle):
    """Issue 26: the stages were duck-typed; both satisfy the one Stage protocol the rest of the package uses."""
    from cascade.stages.protocol import Stage

    model = cascade.load(tiny_bundle, threads=1)
    assert isinstance(model.cheap, Stage) and isinstance(model.neural, Stage)
    assert not isinstance(object(), Stage)
