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
