"""Multi-label tagging (issue 11): decisions, the cheap stage's export, windows, a whole bundle, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from builders import TOPIC_WORDS, tagging_data

import cascade
from cascade.datasets import TextDataset
from cascade.policy.mix import Mix
from cascade.policy.multilabel import (
    assign,
    choose_cutoffs,
    label_matrix,
    per_text_f1,
    set_confidence,
    split_labels,
    tagging_figures,
)


def test_labels_split_and_matrix():
    assert split_labels("a| b |a||c") == ["a", "b", "c"]
    y = label_matrix(["a|b", "c", "b"], ["a", "b", "c"])
    assert y.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="not the model's topics"):
        label_matrix(["a|zzz"], ["a", "b"])


def test_assign_uses_each_cut_off_and_at_least_one():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.2, 0.3]])
    cut = np.array([0.5, 0.5, 0.7])
    assert assign(probs, cut, at_least_one=False).tolist() == [[True, False, False], [False, False, False]]
    # the empty row gets the topic nearest its cut-off in log-odds: logit(0.2) - logit(0.5) = -1.39 beats
    # logit(0.3) - logit(0.7) = -1.69 and logit(0.1) - logit(0.5) = -2.20
    assert assign(probs, cut, at_least_one=True)[1].tolist() == [False, True, False]
    per_row = np.array([[0.95, 0.5, 0.5], [0.05, 0.5, 0.5]])  # one cut-off per text and topic
    assert assign(probs, per_row, at_least_one=False).tolist() == [[False, False, True], [True, False, False]]


def test_set_confidence_measures_are_in_range_and_order_sure_sets_first():
    cut = np.array([0.5, 0.5])
    probs = np.array([[0.99, 0.01], [0.6, 0.45], [0.5, 0.5]])
    for measure in ("set_prob", "min_margin"):
        conf = set_confidence(probs, cut, measure, at_least_one=True)
        assert ((0 <= conf) & (conf <= 1)).all() and conf[0] > conf[1] > conf[2] - 1e-12
    with pytest.raises(ValueError, match="unknown set confidence measure"):
        set_confidence(probs, cut, "max_prob", True)


def test_cut_offs_per_topic_with_support_and_shared_otherwise():
    rng = np.random.default_rng(0)
    y = np.zeros((400, 3), dtype=np.int8)
    y[:200, 0] = 1
    y[:3, 2] = 1  # too few positives for a cut-off of its own
    probs = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.05, y.shape), 0, 1)
    probs[:, 1] = 0.3 + 0.4 * (np.arange(400) < 100)
    y[:100, 1] = 1
    cutoffs, info = choose_cutoffs(probs, y, min_support=5)
    assert 0.3 < cutoffs[0] < 0.75 and 0.3 < cutoffs[1] <= 0.7 and info["own"] == 2
    assert cutoffs[2] == info["shared"]


def test_tagging_figures_by_hand():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    pred = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]])
    f = tagging_figures(y, pred)
    assert f["exact_match"] == pytest.approx(1 / 3)
    assert f["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert f["hamming_loss"] == pytest.approx(2 / 9)
    assert per_text_f1(y, pred).tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])


def test_multi_label_cheap_stage_export_equals_scikit_learn(tmp_path):
    from cascade.stages.cheap import CheapStage
    from cascade.training.cheap import (
        CheapConfig,
        check_parity,
        export_cheap,
        fit_cheap,
    )

    data = tagging_data()
    topics = sorted(TOPIC_WORDS)
    pipeline = fit_cheap(data, topics, CheapConfig(min_df=1), label_sep="|", jobs=1)
    export_cheap(pipeline, tmp_path)
    stage = CheapStage.load(tmp_path)
    assert stage.multi_label
    report = check_parity(pipeline, stage, tagging_data(seed=1).texts)
    assert report.ok, report
    probs = stage.predict_proba(data.texts[:5])
    assert not np.allclose(probs.sum(axis=1), 1.0)  # one sigmoid per topic, not a softmax
    with pytest.raises(ValueError, match="with and without it"):
        fit_cheap(TextDataset(data.texts, ["grain|oil"] * len(data)), ["grain", "oil"], CheapConfig(min_df=1),
                  label_sep="|", jobs=1)


def test_windows_cover_a_long_text_and_stay_batch_independent(tiny_encoder_bundle):
    from cascade.stages.neural import NeuralStage

    bundle = cascade.read_bundle(tiny_encoder_bundle)
    model, tok = bundle.read_bytes("neural.onnx"), bundle.read_bytes("tokenizer.json")
    head_only = NeuralStage(model, tok, 16, threads=1)
    windowed = NeuralStage(model, tok, 16, threads=1, windows=4)
    rows = windowed.encoder.token_ids(["card " * 60])
    pieces = windowed.encoder.windows_of(rows[0])
    assert len(pieces) == 4 and all(len(p) <= 16 and p[0] == rows[0][0] and p[-1] == rows[0][-1] for p in pieces)
    texts = ["card " * 60, "my card is late", "pin " * 40 + "my card is late", "pin"]
    batch = windowed.embed(texts)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(batch[2], head_only.embed([texts[2]])[0])  # the tail of the text counts
    assert np.allclose(batch[1], head_only.embed([texts[1]])[0])  # a short text: one window, the same
    with pytest.raises(ValueError, match="windows must be an integer"):
        NeuralStage(model, tok, 16, windows=17)
    # the shipped INT8 encoder (fixed activation scales) gives every text the same bits in any batch;
    # windows keep that: a text's windows are pooled in their own order, from their own rows
    shipped = cascade.read_bundle(cascade.bundle.default_bundle_path())
    real = NeuralStage(shipped.read_bytes("neural.onnx"), shipped.read_bytes("tokenizer.json"), 24, threads=1,
                       windows=4)
    batch = real.embed(texts)
    assert np.array_equal(batch, np.vstack([real.embed([t]) for t in texts]))
    assert np.array_equal(batch[::-1], real.embed(texts[::-1]))


def test_a_multi_label_bundle_records_its_task_and_cut_offs(tagger):
    m = cascade.read_bundle(tagger).manifest
    assert m["task"] == "multi-label" and m["labels"] == sorted(TOPIC_WORDS)
    assert len(m["decisions"]["cheap"]) == len(m["decisions"]["fallen"]) == 4 and m["decisions"]["at_least_one"]
    assert m["neural"]["windows"] == 2 and "rule" in m["metrics"]["selection"]
    assert {"cheap_micro_f1", "neural_micro_f1", "cascade_exact_match"} <= set(m["metrics"]["selection"])


def test_a_tagger_answers_sets_with_scores_and_the_same_text_the_same_way(tagger):
    model = cascade.load(tagger, threads=1)
    data = tagging_data(60, seed=3)
    preds = model.classify(data.texts, top_k=2)
    assert all(p.labels and p.label == p.labels[0] and len(p.scores) == len(p.labels) for p in preds)
    assert all(list(p.scores) == sorted(p.scores, reverse=True) for p in preds)
    d = preds[0].to_dict()
    assert d["labels"] == list(preds[0].labels) and len(d["top_k"]) == 2
    json.dumps(d)
    assert [model.classify(t, top_k=2).to_dict() for t in data.texts] == [p.to_dict() for p in preds]
    right = np.mean([set(p.labels) == set(y.split("|")) for p, y in zip(preds, data.labels)])
    assert right > 0.5


def test_evaluate_a_tagger(tagger):
    model = cascade.load(tagger, threads=1)
    figures = cascade.evaluate(model, tagging_data(80, seed=4))
    assert {"cheap_micro_f1", "neural_macro_f1", "cascade_exact_match", "cascade_hamming_loss",
            "fall_through_rate"} <= set(figures)
    assert figures["cheap_micro_f1"] > 0.6


def test_cli_train_and_evaluate_multi_label(tmp_path, tiny_encoder_bundle, capsys):
    from cascade.cli import main

    def write(path: Path, data: TextDataset) -> Path:
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows([("text", "topics"), *zip(data.texts, data.labels)])
        return path

    train = write(tmp_path / "train.csv", tagging_data(200))
    test = write(tmp_path / "test.csv", tagging_data(60, seed=5))
    assert main(["train", "--data", str(train), "--label-col", "topics", "--multi-label", "--out",
                 str(tmp_path / "b"), "--encoder-from", str(tiny_encoder_bundle), "--C", "5"]) == 0
    assert "micro-F1 on the selection texts" in capsys.readouterr().out
    assert main(["evaluate", "--bundle", str(tmp_path / "b"), "--data", str(test), "--label-col", "topics"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "multi-label" and 0 <= out["cascade_micro_f1"] <= 1
    assert main(["classify", "--bundle", str(tmp_path / "b"), "wheat corn barley harvest and a tanker"]) == 0
    assert "labels" in json.loads(capsys.readouterr().out)
    assert main(["info", "--json", "--bundle", str(tmp_path / "b")]) == 0  # cut-offs named by topic (they were a bare list)
    cuts = json.loads(capsys.readouterr().out)["decisions"]
    assert set(cuts["cheap"]) == set(cuts["fallen"]) == set(cuts.get("neural", TOPIC_WORDS)) == set(TOPIC_WORDS)


def test_bad_multi_label_settings_fail_before_work(tmp_path, tiny_encoder_bundle):
    with pytest.raises(ValueError, match="abstain"):
        cascade.train(tagging_data(), None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False,
                      label_sep="|", abstain=0.05)
    with pytest.raises(ValueError, match="label_sep must be"):
        cascade.train(tagging_data(), None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False,
                      label_sep=" ")
    one = TextDataset(tagging_data().texts, ["grain"] * 160)
    with pytest.raises(ValueError, match="is --label-sep right"):
        cascade.train(one, None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False, label_sep="|")


def test_a_tagger_calibrates_and_promises_exact_match_and_f1(tagger, tmp_path):
    model = cascade.load(tagger, threads=1)
    data = tagging_data(400, seed=6)
    cal = cascade.calibrate(model, data.texts, data.labels)
    assert cal.measure_ in ("set_prob", "min_margin") and set(cal.aurc_) == {"set_prob", "min_margin"}
    f1 = cal.choose(target_f1=0.5)
    assert f1.certified and f1.expected["f1_lower_bound"] >= 0.5 and "accuracy_lower_bound" not in f1.expected
    exact = cal.choose(target_accuracy=0.3)
    assert exact.certified and exact.expected["accuracy_lower_bound"] >= 0.3
    est = cal.choose(fallthrough=0.2)
    assert not est.certified and "mean_text_f1" in est.expected and "f1_lower_bound" not in est.expected
    impossible = cal.choose(target_f1=0.999)
    assert not impossible.feasible and "cannot be promised" in impossible.reason
    with pytest.raises(ValueError, match="per-class"):
        cal.choose(fallthrough=0.2, per_class=True)
    saved = cal.save(tmp_path / "cal", f1)
    reloaded = cascade.load(saved.path, threads=1)
    assert reloaded.measure == cal.measure_ and reloaded.threshold == f1.threshold
    assert saved.manifest["decisions"]["moved_by"].startswith("cascade calibrate")
    assert [p.to_dict() for p in reloaded.classify(data.texts[:50])] == [p.to_dict() for p in model.classify(data.texts[:50])]


def test_moved_cut_offs_keep_every_set():
    from cascade.calibration.scoring import moved_cutoffs
    from cascade.policy.multilabel import sigmoid

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (500, 6))
    cut = rng.uniform(0.1, 0.9, 6)
    for t in (0.3, 1.0, 2.5):
        assert np.array_equal(assign(sigmoid(logits), cut, True), assign(sigmoid(logits / t), moved_cutoffs(cut, t), True))


def test_target_f1_is_for_taggers(tiny_model, tiny_val):
    cal = cascade.calibrate(tiny_model, tiny_val.texts, tiny_val.labels)
    with pytest.raises(ValueError, match="target_f1 is for multi-label"):
        cal.choose(target_f1=0.5)


def test_train_cheap_refreshes_a_tagger(tagger, tmp_path):
    from cascade.training.cheap import CheapConfig

    out = cascade.train_cheap(tagging_data(200, seed=7), None, tmp_path / "c", base=tagger, progress=False,
                              config=CheapConfig(min_df=1), label_sep="|")
    m = out.manifest
    assert m["task"] == "multi-label" and m["neural"]["windows"] == 2 and m["training"]["command"] == "cascade train-cheap"
    assert cascade.load(out.path, threads=1).classify("wheat and barley harvest").labels
    with pytest.raises(ValueError, match="is multi-label: pass --multi-label"):
        cascade.train_cheap(tagging_data(200, seed=7), None, tmp_path / "d", base=tagger, progress=False)


def test_topic_mix_follows_the_better_stage():
    """The answer of a tagger's fall-through texts: the neural stage's sets when it is right and the cheap
    stage guesses; the cheap stage's sets in the opposite case (whichever mix wins)."""
    from cascade.training.mixing import fit_mix

    rng = np.random.default_rng(0)
    y = (rng.random((400, 6)) < 0.3).astype(np.int8)
    sure, guess = np.where(y == 1, 0.95, 0.05), rng.random(y.shape)
    conf = rng.random(400)
    for cheap, neural in ((guess, sure), (sure, guess)):
        mix = fit_mix(cheap, neural, y, conf, multi_label=True).mix
        assert ((mix.answer(cheap, neural, True) >= 0.5) == y.astype(bool)).all(), mix


def test_a_taggers_fall_through_texts_get_the_mixed_answer(tagger):
    """Texts that fall through are answered with w * cheap + (1 - w) * neural at the fall-through cut-offs,
    the figures of the neural stage alone use its own cut-offs, and both are recorded."""
    from cascade.policy.multilabel import Decisions, assign

    model = cascade.load(tagger, threads=1)
    m = model.bundle.manifest
    mix = Mix.from_manifest(m["mix"])
    assert not mix.neural_alone and "binary log-loss" in m["mix"]["rule"]  # the tiny stages both know something
    assert model.mix == mix and m["metrics"]["selection"]["mix"] == mix.to_manifest()
    decisions = Decisions.from_dict(m["decisions"])
    assert decisions.neural is not None
    texts = tagging_data(40, seed=31).texts
    mixed = mix.answer(model.cheap.predict_proba(texts), model.neural.predict_proba(texts), multi_label=True)
    want = assign(mixed, decisions.fallen, decisions.at_least_one)
    got = model.classify(texts, threshold=1.0)
    assert all(p.stage == "neural" for p in got)
    assert [sorted(p.labels) for p in got] == [sorted(np.array(model.labels)[row].tolist()) for row in want]


def test_a_taggers_topic_weighting_is_chosen_on_selection_and_recorded(tmp_path, tiny_encoder_bundle, caplog,
                                                                      monkeypatch):
    """Issue 24 (rare topics): the cheap stage and the head are each fitted unweighted and with balanced topic
    weights, and the one with the better micro- plus macro-F1 on the selection texts is kept, with both scores
    in the manifest; a long topic fit says how far it is in the log."""
    import logging

    import cascade.training.cheap as cheap_module
    from cascade.training.cheap import CheapConfig

    monkeypatch.setattr(cheap_module, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="cascade.training.cheap"):
        out = cascade.train(tagging_data(240), None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False,
                            label_sep="|", cheap=CheapConfig(min_df=1, class_weight="choose"))
    assert any("topic fits done" in r.getMessage() for r in caplog.records)
    training = out.manifest["training"]
    for choice in (training["cheap"]["class_weight_choice"], training["head"]["class_weight_choice"]):
        assert set(choice["selection"]) == {"None", "balanced"}
        best = max(choice["selection"], key=lambda w: sum(choice["selection"][w].values()))
        assert str(choice["class_weight"]) == best
    model = cascade.load(out.path, threads=1)
    assert model.classify("wheat and barley harvest").labels


@pytest.mark.parametrize("weight", ["auto", "Balanced", 3])
def test_an_unknown_topic_weighting_is_refused(weight):
    from cascade.training.cheap import CheapConfig

    with pytest.raises(ValueError, match="class_weight must be None, 'balanced' or 'choose'"):
        CheapConfig(class_weight=weight)


def test_choosing_the_weighting_is_for_taggers(tmp_path):
    from cascade.training.cheap import CheapConfig, fit_cheap

    data = TextDataset(["good day", "bad day", "good night", "bad night"] * 3, ["g", "b", "g", "b"] * 3)
    with pytest.raises(ValueError, match="'choose' is for multi-label cheap stages"):
        fit_cheap(data, ["b", "g"], CheapConfig(min_df=1, class_weight="choose"))


def test_a_tagger_can_answer_no_topic_when_asked(tmp_path, tiny_encoder_bundle, caplog):
    """Issue 25: a tagger always gave at least one topic ("Customer cannot log in ..." -> money-fx); with
    min_topics=0 an empty set is a valid answer, and the build says which it chose."""
    import logging

    with caplog.at_level(logging.INFO, logger="cascade.training.checks"):
        out = cascade.train(tagging_data(), None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False,
                            label_sep="|", min_topics=0)
    assert any("topics per answer: at least 0, as asked" in r.getMessage() for r in caplog.records)
    assert out.manifest["decisions"]["at_least_one"] is False
    answers = cascade.load(out.path, threads=1).classify(["zzz qqq", "lorem ipsum dolor", "the a of said in"])
    assert any(answer.labels == () for answer in answers)


def test_min_topics_is_checked():
    from cascade.training.recipes.frozen import TrainConfig

    with pytest.raises(ValueError, match="min_topics must be 0"):
        TrainConfig(label_sep="|", min_topics=2)
    with pytest.raises(ValueError, match="min_topics is for multi-label bundles"):
        TrainConfig(min_topics=0)
