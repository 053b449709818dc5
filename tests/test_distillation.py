import numpy as np
import pytest

import cascade
from cascade.evaluation import coverage_at_accuracy, risk_coverage


def test_risk_coverage():
    conf = np.array([0.9, 0.1, 0.8, 0.5])
    correct = np.array([True, False, True, False])
    coverage, acc = risk_coverage(conf, correct)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(acc, [1.0, 1.0, 2 / 3, 0.5])
    assert coverage_at_accuracy(conf, correct, 0.9) == 0.5
    assert coverage_at_accuracy(conf, correct, 0.5) == 1.0
    assert coverage_at_accuracy(np.array([0.9]), np.array([False]), 0.5) == 0.0


def test_pseudo_label_keeps_confident_neural_answers(tiny_model, tiny_val):
    pool = tiny_val.texts
    probs = tiny_model.neural.predict_proba(pool)
    cut = float(np.median(probs.max(1)))
    pseudo, conf = cascade.pseudo_label(tiny_model, pool, min_confidence=cut)
    assert len(conf) == len(pool) and len(pseudo) == int((probs.max(1) >= cut).sum())
    for text, label in zip(pseudo.texts, pseudo.labels):
        assert label == tiny_model.labels[int(probs[pool.index(text)].argmax())]
    with pytest.raises(ValueError, match="min_confidence"):
        cascade.pseudo_label(tiny_model, pool, min_confidence=1.5)


def test_distill_writes_a_bundle_with_the_same_neural_stage(tiny_model, tiny_train, tiny_val, tmp_path):
    pool = cascade.load_banking77("test").texts[:300]
    bundle = cascade.distill(tiny_model, tiny_train, pool, tiny_val, tmp_path / "distilled", min_confidence=0.0,
                             progress=False)
    info = bundle.manifest["training"]["distillation"]
    assert info["n_labelled"] == len(tiny_train) and info["n_pool"] == 300
    assert info["n_pseudo_labelled"] == 300 and info["min_confidence"] == 0.0
    assert bundle.manifest["training"]["cheap"]["n_train"] == len(tiny_train) + 300
    base = tiny_model.bundle.manifest["files"]["neural.onnx"]["sha256"]
    assert bundle.manifest["files"]["neural.onnx"]["sha256"] == base
    hashes = set(__import__("json").loads((bundle.path / "train_hashes.json").read_text())["hashes"])
    from cascade.bundle import text_hash

    assert all(text_hash(t) in hashes for t in pool)  # pseudo-labelled texts are training texts now
    assert cascade.load(bundle.path, threads=1).classify("card arrived?").label in tiny_model.labels


def test_min_confidence_is_chosen_on_validation(tiny_model, tiny_val):
    from cascade.distillation import choose_min_confidence

    probs = tiny_model.neural.predict_proba(tiny_val.texts)
    y = np.array([tiny_model.labels.index(label) for label in tiny_val.labels])
    conf, ok = probs.max(1), probs.argmax(1) == y
    target = float(ok.mean())  # reachable: keeping every text gives exactly this
    cut = choose_min_confidence(tiny_model, tiny_val, accuracy=target)
    assert ok[conf >= cut].mean() >= target
    assert choose_min_confidence(tiny_model, tiny_val, accuracy=1.01) == 1.0
