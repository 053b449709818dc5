import numpy as np
import pytest

from cascade.calibration import best_accuracy_threshold, threshold_curve
from cascade.policy.routing import fall_through


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


def _two_points(only_neural_right: int, only_cheap_right: int, n: int = 1000):
    """1,000 texts in confidence order: the cheap stage is wrong on the 100 least confident (the neural
    stage right); among the next 100 it is also wrong on the last ``only_neural_right`` and right on
    ``only_cheap_right`` texts the neural stage gets wrong (at their start). So the most accurate
    threshold sends 20% on and a threshold sending 10% differs from it on just those texts."""
    conf = np.linspace(0.01, 0.99, n)
    neural_ok = np.ones(n, dtype=bool)
    cheap_ok = np.ones(n, dtype=bool)
    cheap_ok[:100] = False
    cheap_ok[200 - only_neural_right:200] = False
    neural_ok[100:100 + only_cheap_right] = False
    return conf, cheap_ok, neural_ok


def test_default_rule_prefers_the_cheaper_threshold_when_the_best_is_a_sliver_better():
    from cascade.calibration import cheapest_same_as_best

    # the best point is 0.2 points more accurate at twice the fall-through (3 discordant texts against 1:
    # one-sided exact McNemar p = 0.31), so the rule goes down to 10% and below, until the test rejects
    conf, cheap_ok, neural_ok = _two_points(3, 1)
    choice = cheapest_same_as_best(conf, cheap_ok, neural_ok)
    assert choice.best_fall_through_rate == pytest.approx(0.2) and choice.best_accuracy == pytest.approx(0.999)
    assert 0.09 <= choice.fall_through_rate <= 0.1 and choice.p_value >= 0.05
    assert choice.only_best_right > choice.only_chosen_right


def test_default_rule_keeps_near_the_best_when_it_is_clearly_better():
    from cascade.calibration import cheapest_same_as_best

    conf, cheap_ok, neural_ok = _two_points(30, 0)  # 3 points better at 20% than at 10%: p = 2**-30
    choice = cheapest_same_as_best(conf, cheap_ok, neural_ok)
    assert choice.fall_through_rate >= 0.19 and choice.best_accuracy - choice.accuracy <= 0.005
    t, acc, rate = best_accuracy_threshold(conf, cheap_ok, neural_ok)
    assert (choice.best_threshold, choice.best_accuracy, choice.best_fall_through_rate) == (t, acc, rate)


def test_default_rule_stops_at_the_first_threshold_the_test_rejects():
    from scipy.stats import binom

    from cascade.calibration import cheapest_same_as_best

    rng = np.random.default_rng(1)
    for _ in range(50):
        n = 300
        conf = rng.random(n)
        cheap_ok, neural_ok = rng.random(n) < 0.4 + 0.6 * conf, rng.random(n) < 0.9
        choice = cheapest_same_as_best(conf, cheap_ok, neural_ok, max_drop=1.0)
        assert choice.fall_through_rate <= choice.best_fall_through_rate and choice.p_value >= 0.05
        # one step cheaper, the test rejects (or there is no cheaper threshold)
        curve = threshold_curve(conf, cheap_ok, neural_ok)
        k = int(np.flatnonzero(curve.thresholds == choice.threshold)[0])
        if k > 0:
            lower = fall_through(conf, curve.thresholds[k - 1])
            best = fall_through(conf, choice.best_threshold)
            b = int(np.sum(best & ~lower & neural_ok & ~cheap_ok))
            c = int(np.sum(best & ~lower & cheap_ok & ~neural_ok))
            assert binom.sf(b - 1, b + c, 0.5) < 0.05


def test_default_rule_gives_up_at_most_max_drop_where_the_test_has_little_power():
    from cascade.calibration import cheapest_same_as_best

    rng = np.random.default_rng(2)
    capped = 0
    for _ in range(50):
        n = 200  # few texts: the test alone would walk far
        conf = rng.random(n)
        cheap_ok, neural_ok = rng.random(n) < 0.4 + 0.6 * conf, rng.random(n) < 0.9
        alone = cheapest_same_as_best(conf, cheap_ok, neural_ok, max_drop=1.0)
        choice = cheapest_same_as_best(conf, cheap_ok, neural_ok)
        assert choice.best_accuracy - choice.accuracy <= 0.005 + 1e-12
        assert alone.fall_through_rate <= choice.fall_through_rate <= choice.best_fall_through_rate
        capped += alone.best_accuracy - alone.accuracy > 0.005
    assert capped > 10  # the cap mattered in these draws
