"""Golden test: the shipped bundle loads, its hashes hold, and its test-split figures are what its
manifest says (recomputed here)."""

import pytest

import cascade
from cascade.bundle import default_bundle_path, read_bundle
from cascade.evaluation import evaluate

MAX_BUNDLE_BYTES = 60_000_000  # the two stages, and the frozen encoder `cascade train` reuses


@pytest.fixture(scope="module")
def shipped():
    return cascade.load()


def test_loads_from_artifacts_with_verified_hashes():
    bundle = read_bundle(default_bundle_path())
    assert len(bundle.labels) == 77
    assert sum(p.stat().st_size for p in bundle.path.iterdir()) <= MAX_BUNDLE_BYTES


def test_the_readme_example(shipped):
    p = shipped.classify("I still have not received my new card")
    assert p.label == "card_arrival"


def test_test_split_figures_match_the_manifest(shipped):
    recorded = shipped.bundle.manifest["metrics"]["test"]
    got = evaluate(shipped, cascade.load_banking77("test"))
    assert got["n_texts"] == recorded["n_texts"] == 3080
    assert got["threshold"] == recorded["threshold"]
    # The cheap stage is float64 numpy: the same everywhere. INT8 kernels differ a little between CPU
    # instruction sets, so the neural figures get a few texts' slack.
    assert got["cheap_accuracy"] == pytest.approx(recorded["cheap_accuracy"], abs=1e-9)
    assert got["fall_through_rate"] == pytest.approx(recorded["fall_through_rate"], abs=1e-9)
    assert got["neural_accuracy"] == pytest.approx(recorded["neural_accuracy"], abs=0.003)
    assert got["cascade_accuracy"] == pytest.approx(recorded["cascade_accuracy"], abs=0.003)


def test_cascade_beats_the_cheap_stage_and_nears_the_neural_one_with_a_tenth_falling_through(shipped):
    """The build's rule (the cheapest threshold McNemar cannot tell from the most accurate) trades a
    fraction of a point for half the traffic: within half a point of the neural stage alone."""
    recorded = shipped.bundle.manifest["metrics"]["test"]
    assert recorded["cascade_accuracy"] > recorded["cheap_accuracy"]
    assert recorded["cascade_accuracy"] >= recorded["neural_accuracy"] - 0.005
    assert recorded["fall_through_rate"] <= 0.1


@pytest.mark.slow
def test_same_text_same_answer_on_the_whole_test_split(shipped):
    """A text's answer never depends on its batch-mates: one call, one text at a time and shuffled
    batches of varied sizes agree on every test text (labels, stages and scores bit for bit)."""
    import numpy as np

    texts = cascade.load_banking77("test").texts
    one_call = [p.to_dict() for p in shipped.classify(texts)]
    one_by_one = [shipped.classify(t).to_dict() for t in texts]
    assert one_by_one == one_call
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    shuffled: dict[int, dict] = {}
    start = 0
    while start < len(order):
        size = int(rng.integers(1, 200))
        idx = order[start : start + size]
        for i, p in zip(idx, shipped.classify([texts[i] for i in idx])):
            shuffled[int(i)] = p.to_dict()
        start += size
    assert [shuffled[i] for i in range(len(texts))] == one_call
    # the neural stage alone, on every text (the cascade sends it only the unsure ones)
    batched = shipped.neural.predict_proba(texts)
    single = np.vstack([shipped.neural.predict_proba([t]) for t in texts])
    assert (batched.argmax(1) == single.argmax(1)).all()
    assert np.abs(batched - single).max() < 1e-5


def test_shipped_neural_stage_has_fixed_activation_scales(shipped):
    assert shipped.bundle.manifest["neural"]["activation_scales"].startswith("static")
    assert not shipped.neural.per_text and shipped.neural.batch_size > 1


def test_the_shipped_bundle_carries_its_model_card():
    bundle = read_bundle(default_bundle_path())
    card = bundle.file("MODEL_CARD.md").read_text(encoding="utf-8")
    assert "BANKING77, CC-BY-4.0" in card and f"{bundle.threshold:.4f}" in card
