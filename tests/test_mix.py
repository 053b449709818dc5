"""The answer of texts that fall through: the mixes, their manifest form and how the build picks one."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.bundle.manifest import _check_mix
from cascade.errors import BundleError
from cascade.policy.mix import Mix
from cascade.training.mixing import fit_mix


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _two_noisy_experts(n: int = 1200, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two stages that each see the true class through independent noise, both under-confident: their
    product (sharpened) beats any average of them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    signal = np.eye(k)[y] * 2.0
    cheap = _softmax(0.5 * (signal + rng.normal(0, 1.2, (n, k))))
    neural = _softmax(0.5 * (signal + rng.normal(0, 1.2, (n, k))))
    return cheap, neural, y


def test_a_product_is_a_normalized_tempered_product():
    rng = np.random.default_rng(1)
    cheap, neural = _softmax(rng.normal(size=(5, 4))), _softmax(rng.normal(size=(5, 4)))
    got = Mix("product", 0.4, 1.7).answer(cheap, neural)
    want = cheap ** 0.4 * neural ** 1.7
    np.testing.assert_allclose(got, want / want.sum(axis=1, keepdims=True))
    sig = Mix("product", 0.4, 1.7).answer(cheap, neural, multi_label=True)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-(0.4 * logit(cheap) + 1.7 * logit(neural)))))


def test_extreme_probabilities_stay_finite():
    cheap = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    neural = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for multi_label in (False, True):
        out = Mix("product", 10.0, 10.0).answer(cheap, neural, multi_label)
        assert np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


def test_the_linear_mix_and_the_neural_stage_alone():
    cheap, neural = np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]])
    np.testing.assert_allclose(Mix("linear", 0.25).answer(cheap, neural), [[0.375, 0.625]])
    assert Mix().answer(cheap, neural) is neural and Mix().neural_alone
    assert Mix("product", 0.0, 1.0).neural_alone and not Mix("product", 0.0, 1.1).neural_alone


def test_older_manifests_read_as_a_linear_mix():
    assert Mix.from_manifest({}) == Mix("linear", 0.0)
    assert Mix.from_manifest({"cheap_weight": 0.3, "rule": "log-loss"}) == Mix("linear", 0.3)
    product = Mix("product", 0.5, 1.25)
    assert Mix.from_manifest(product.to_manifest()) == product
    assert Mix("linear", 0.3).to_manifest() == {"cheap_weight": 0.3}  # older readers still read it


@pytest.mark.parametrize("mix, message", [
    ({"kind": "stacker", "cheap_weight": 0.1}, "mix.kind"),
    ({"kind": "product", "cheap_weight": 0.1}, "mix.neural_weight"),
    ({"kind": "product", "cheap_weight": 0.0, "neural_weight": 0.0}, "at least one stage"),
    ({"kind": "product", "cheap_weight": 11.0, "neural_weight": 1.0}, "mix.cheap_weight"),
    ({"kind": "product", "cheap_weight": True, "neural_weight": 1.0}, "mix.cheap_weight"),
    ({"kind": "product", "cheap_weight": float("nan"), "neural_weight": 1.0}, "mix.cheap_weight"),
    ({"cheap_weight": 1.5}, "mix.cheap_weight"),
    ({"cheap_weight": 0.5, "neural_weight": 0.5}, "mix.neural_weight"),
    ({"cheap_weight": 0.5, "weights": [1, 2]}, "unknown fields"),
])
def test_a_manifest_mix_is_checked(mix, message):
    with pytest.raises(BundleError, match=message):
        _check_mix(mix)


@pytest.mark.parametrize("kwargs", [{"kind": "mean"}, {"kind": "linear", "cheap_weight": 1.5},
                                    {"kind": "product", "cheap_weight": -1.0}, {"kind": "product",
                                                                                 "cheap_weight": np.nan}])
def test_a_mix_refuses_bad_weights(kwargs):
    with pytest.raises(ValueError):
        Mix(**kwargs)


def test_the_build_picks_the_product_when_two_weak_experts_agree():
    cheap, neural, y = _two_noisy_experts()
    choice = fit_mix(cheap, neural, y, cheap.max(axis=1))
    assert choice.mix.kind == "product" and choice.mix.cheap_weight + choice.mix.neural_weight > 1.2
    assert choice.cv_log_loss["product"] < min(choice.cv_log_loss["linear"], choice.cv_log_loss["neural"])
    chosen = choice.to_dict()
    assert chosen["chosen"] == "product" and set(chosen["cv_log_loss"]) == {"neural", "linear", "product"}


def test_the_build_keeps_the_neural_stage_alone_when_the_cheap_stage_only_guesses():
    rng = np.random.default_rng(3)
    _, neural, y = _two_noisy_experts(seed=3)
    guess = _softmax(rng.normal(size=neural.shape))
    choice = fit_mix(guess, neural, y, guess.max(axis=1))
    assert choice.mix.cheap_weight < 0.05  # the product may still re-temper the neural stage's answer
    assert choice.mix.neural_alone or choice.mix.kind == "product"


def test_a_tiny_selection_set_is_scored_in_sample():
    cheap, neural, y = _two_noisy_experts(n=12)
    choice = fit_mix(cheap, neural, y, cheap.max(axis=1))
    assert choice.n_texts == 6 and np.isfinite(list(choice.cv_log_loss.values())).all()
