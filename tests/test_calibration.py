import numpy as np
import pytest

from cascade.calibration import best_accuracy_threshold, threshold_curve
from cascade.router import fall_through


def test_curve_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        conf = np.round(rng.random(n), 1)  # many ties
        cheap_ok, neural_ok = rng.random(n) < 0.7, rng.random(n) < 0.8
        curve = threshold_curve(conf, cheap_ok, neural_ok)
        assert curve.thresholds[0] == 0.0 and np.all(np.diff(curve.thresholds) > 0)
        for t, rate, acc in zip(curve.thresholds, curve.fall_through_rate, curve.accuracy):
            mask = fall_through(conf, t)
            assert mask.mean() == pytest.approx(rate)
            assert np.where(mask, neural_ok, cheap_ok).mean() == pytest.approx(acc)


def test_confidence_of_one_cannot_fall_through():
    curve = threshold_curve(np.array([0.2, 1.0]), np.array([True, True]), np.array([True, True]))
    assert curve.fall_through_rate.tolist() == [0.0, 0.5]


def test_best_threshold_prefers_lower_fall_through_on_ties():
    conf = np.array([0.1, 0.2, 0.3, 0.9])
    cheap_ok = np.array([False, True, True, True])
    neural_ok = np.array([True, True, True, True])
    t, acc, rate = best_accuracy_threshold(conf, cheap_ok, neural_ok)
    assert acc == 1.0 and rate == 0.25 and 0.1 < t <= 0.2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="equal length"):
        threshold_curve(np.array([0.5]), np.array([True, False]), np.array([True]))


def test_negative_confidence_always_falls_through():
    conf = np.array([-1.0, -1.0, 0.3, 0.8])
    cheap_ok, neural_ok = np.array([False, True, True, True]), np.array([True, True, False, True])
    curve = threshold_curve(conf, cheap_ok, neural_ok)
    assert curve.thresholds[0] == 0.0 and curve.fall_through_rate[0] == 0.5
    for t, rate, acc in zip(curve.thresholds, curve.fall_through_rate, curve.accuracy):
        mask = fall_through(conf, t)
        assert mask.mean() == pytest.approx(rate) and np.where(mask, neural_ok, cheap_ok).mean() == pytest.approx(acc)
