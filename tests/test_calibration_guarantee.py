"""The target_accuracy promise holds on unseen data; the naive plug-in threshold's does not.

Synthetic world: a text's cheap-stage confidence c is uniform on [0, 1]; the cheap stage is right with
probability 0.5 + 0.5c, the neural stage with probability 0.95, independently. Routing at threshold t
then has true accuracy A(t) = 0.95 t + 0.5 (1 - t) + 0.25 (1 - t^2), which we compute exactly: that is
the accuracy on unseen data from the same distribution. Each of the 600 simulated validation sets has
800 texts. The promise is P(A(chosen) < target) <= 1 - confidence = 0.05; the sampling slack of the
observed failure rate over 600 draws is 3 standard errors, 3 * sqrt(0.05 * 0.95 / 600) = 0.027.
"""

import numpy as np

from cascade.calibration import GRID, fixed_sequence_threshold, plug_in_threshold

DRAWS, N, TARGET, CONFIDENCE = 600, 800, 0.90, 0.95
SLACK = 3 * np.sqrt(0.05 * 0.95 / DRAWS)


def true_accuracy(t: float) -> float:
    return 0.95 * t + 0.5 * (1 - t) + 0.25 * (1 - t * t)


def simulate(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conf = rng.random(N)
    return conf, rng.random(N) < 0.5 + 0.5 * conf, rng.random(N) < 0.95


def test_fixed_sequence_testing_keeps_its_promise_and_plug_in_does_not():
    rng = np.random.default_rng(2026)
    ltt_failures = plug_failures = ltt_chosen = 0
    for _ in range(DRAWS):
        conf, cheap_ok, neural_ok = simulate(rng)
        chosen, _ = fixed_sequence_threshold(conf, cheap_ok, neural_ok, TARGET, CONFIDENCE, GRID)
        if chosen is not None:
            ltt_chosen += 1
            ltt_failures += true_accuracy(GRID[chosen]) < TARGET
        naive = plug_in_threshold(conf, cheap_ok, neural_ok, TARGET, GRID)
        plug_failures += naive is not None and true_accuracy(GRID[naive]) < TARGET
    assert ltt_chosen > 0.9 * DRAWS  # the target is reachable: the test is not passing by abstaining
    assert ltt_failures / DRAWS <= (1 - CONFIDENCE) + SLACK
    assert plug_failures / DRAWS > 0.3  # the plug-in threshold sits at the boundary: wrong about half the time


def test_lower_bounds_are_exact_clopper_pearson():
    from scipy.stats import binom

    from cascade.calibration import clopper_pearson_lower

    for k, n in [(90, 100), (1, 10), (10, 10), (700, 800)]:
        lb = float(clopper_pearson_lower(k, n, 0.95))
        assert abs(binom.sf(k - 1, n, lb) - 0.05) < 1e-6  # P(X >= k | p = lb) = 1 - confidence
    assert float(clopper_pearson_lower(0, 10, 0.95)) == 0.0


def true_mean_f1(t: float) -> float:
    """The F1 world: the cheap stage's text F1 is 1 with probability 0.5 + 0.5c, else uniform on [0, 0.8]
    (mean 0.7 + 0.3c given c); the neural stage's is 1 with probability 0.95, else uniform on [0, 0.8]
    (mean 0.97). Routing at t: the exact mean F1 on unseen data."""
    return 0.97 * t + 0.7 * (1 - t) + 0.15 * (1 - t * t)


def simulate_f1(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conf = rng.random(N)
    cheap = np.where(rng.random(N) < 0.5 + 0.5 * conf, 1.0, rng.uniform(0, 0.8, N))
    neural = np.where(rng.random(N) < 0.95, 1.0, rng.uniform(0, 0.8, N))
    return conf, cheap, neural


def test_target_f1_keeps_its_promise_and_plug_in_does_not():
    """target_f1 (multi-label): Hoeffding-Bentkus p-values in the same fixed sequence; over 600 simulated
    certification sets of 800 texts the promise "mean F1 >= 0.92" fails at most 5% (+ slack) of the time."""
    from cascade.calibration.statistics import (
        fixed_sequence,
        grid_correct_counts,
        hoeffding_bentkus_p,
    )

    target = 0.92
    rng = np.random.default_rng(11)
    failures = chosen_count = plug_failures = 0
    for _ in range(DRAWS):
        conf, cheap, neural = simulate_f1(rng)
        _, sums = grid_correct_counts(conf, cheap, neural, GRID)
        p = hoeffding_bentkus_p(1 - sums / N, N, 1 - target)
        chosen = fixed_sequence(p <= 1 - CONFIDENCE, np.arange(len(GRID) - 1, -1, -1))
        if chosen is not None:
            chosen_count += 1
            failures += true_mean_f1(GRID[chosen]) < target
        naive = np.flatnonzero(sums / N >= target)
        plug_failures += len(naive) > 0 and true_mean_f1(GRID[naive[0]]) < target
    assert chosen_count > 0.9 * DRAWS
    assert failures / DRAWS <= (1 - CONFIDENCE) + SLACK
    assert plug_failures / DRAWS > 0.3


def test_hoeffding_bentkus_p_values_are_valid_and_the_bound_inverts_them():
    from cascade.calibration.statistics import (
        hoeffding_bentkus_lower,
        hoeffding_bentkus_p,
    )

    rng = np.random.default_rng(3)
    risk, n = 0.1, 300
    means = rng.binomial(n, risk, 20000) / n  # losses at exactly the null's boundary: the worst case
    assert np.mean(hoeffding_bentkus_p(means, n, risk) <= 0.05) <= 0.05
    lb = hoeffding_bentkus_lower(0.9, n, 0.95)
    assert 0.8 < lb < 0.9
    assert hoeffding_bentkus_p(0.1, n, 1 - lb) <= 0.05 + 1e-9 and hoeffding_bentkus_p(0.1, n, 1 - lb - 0.01) > 0.05
