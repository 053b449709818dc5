"""The answer cache: same answers as without it, bounded, thread-safe, emptied when the settings change."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cascade
from cascade.cache import ResultCache


def test_cached_answers_are_the_uncached_answers(tiny_bundle, tiny_val):
    texts = tiny_val.texts * 3 + [t.upper() for t in tiny_val.texts[:20]] + ["  " + tiny_val.texts[0] + "\u200b"]
    cold = cascade.load(tiny_bundle, threads=1, cache_size=0)
    warm = cascade.load(tiny_bundle, threads=1)
    assert warm.classify(texts) == cold.classify(texts) == warm.classify(texts)
    assert warm.cache.hits > 0 and warm.cache.hit_rate >= 0.5
    # a text and its invisible-character variant share a key: both stages read them the same
    assert warm.classify("  " + tiny_val.texts[0] + "\u200b") == cold.classify(tiny_val.texts[0])


def test_the_cache_is_bounded_in_entries_and_key_length(tiny_bundle, tiny_val):
    model = cascade.load(tiny_bundle, threads=1, cache_size=10)
    model.classify(tiny_val.texts[:50])
    assert len(model.cache) == 10
    long_text = "card " * 1000  # 5,000 characters: answered, not kept
    model.classify(long_text)
    assert all(len(k) <= model.cache.max_key_chars for k in model.cache._entries)


def test_changing_the_settings_empties_it_and_a_call_threshold_bypasses_it(tiny_bundle, tiny_val):
    model = cascade.load(tiny_bundle, threads=1)
    texts = tiny_val.texts[:40]
    first = model.classify(texts)
    assert len(model.cache) == 40
    model.threshold = 1.0  # every text to the neural stage now
    assert [p.stage for p in model.classify(texts)] == ["neural"] * 40
    model.threshold = 0.0
    assert [p.stage for p in model.classify(texts)] == ["cheap"] * 40
    hits = model.cache.hits
    bypass = model.classify(texts, threshold=1.0)
    assert model.cache.hits == hits and {p.stage for p in bypass} == {"neural"}
    model.neural.temperature = 2.0  # calibration changes probabilities: nothing stale may come back
    fresh = cascade.load(tiny_bundle, threads=1, cache_size=0)
    fresh.threshold, fresh.neural.temperature = 0.0, 2.0
    assert model.classify(texts, threshold=None) == fresh.classify(texts)
    assert first == cascade.load(tiny_bundle, threads=1, cache_size=0).classify(texts)


def test_many_threads_share_it_safely(tiny_bundle, tiny_val):
    model = cascade.load(tiny_bundle, threads=1, cache_size=50)
    expected = {t: p for t, p in zip(tiny_val.texts, cascade.load(tiny_bundle, threads=1, cache_size=0)
                                     .classify(tiny_val.texts))}
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(20):
            picked = [tiny_val.texts[i] for i in rng.integers(0, len(tiny_val), 8)]
            for text, p in zip(picked, model.classify(picked)):
                if p != expected[text]:
                    errors.append(text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(model.cache) <= 50


def test_result_cache_refuses_bad_sizes():
    import pytest

    with pytest.raises(ValueError, match="non-negative"):
        ResultCache(-1)
    assert ResultCache(0).cacheable("x") is False


def test_a_call_at_the_models_own_threshold_is_answered_from_the_cache(tiny_bundle, tiny_val):
    """Issue 26: the cache rule is one method (Cascade.uses_cache): a call whose threshold equals the model's own
    is answered from the cache (the cached answers are the answers at it); any other threshold bypasses it."""
    model = cascade.load(tiny_bundle, threads=1)
    texts = tiny_val.texts[:20]
    first = model.classify(texts)
    hits = model.cache.hits
    assert model.uses_cache(None) and model.uses_cache(model.threshold) and not model.uses_cache(1.0)
    assert model.classify(texts, threshold=model.threshold) == first and model.cache.hits == hits + 20
    with pytest.raises(ValueError, match="threshold must be a number"):
        model.uses_cache(float("nan"))
