"""The statistics behind calibration: temperatures, calibration error, AURC, exact binomial bounds, the
Hoeffding-Bentkus bound for bounded scores, and Learn-then-Test fixed-sequence testing over a grid of
thresholds fixed in advance."""

from __future__ import annotations

import numpy as np

from ..evaluation import risk_coverage

GRID = np.round(np.linspace(0.0, 1.0, 201), 6)  # thresholds tested by target_accuracy: fixed in advance


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 probability: the bin-size-weighted mean |accuracy - confidence| over equal-width bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(total / len(y))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the log-loss of softmax(logits / T)."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(logsumexp(z, axis=1) - z[rows, y]))

    return float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))


def aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean error rate of the k most confident answers, over k."""
    _, accuracy = risk_coverage(conf, correct)
    return float(np.mean(1.0 - accuracy))


def clopper_pearson_lower(k: np.ndarray | int, n: int, confidence: float) -> np.ndarray:
    """Exact one-sided lower confidence bound for a binomial proportion with k successes in n."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lower = beta.ppf(1.0 - confidence, k, n - k + 1.0)
    return np.where(k <= 0, 0.0, lower)


def samples_needed(accuracy: float, target: float, confidence: float, limit: int = 1_000_000) -> int | None:
    """About how many labelled texts, at this observed accuracy, make the lower bound reach the target
    (None when the accuracy itself is not above the target)."""
    if accuracy <= target:
        return None
    lo, hi = 1, 1
    while clopper_pearson_lower(np.floor(accuracy * hi), hi, confidence) < target:
        hi *= 2
        if hi > limit:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if clopper_pearson_lower(np.floor(accuracy * mid), mid, confidence) >= target:
            hi = mid
        else:
            lo = mid + 1
    return int(lo)


def grid_correct_counts(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray,
                        grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(texts falling through, texts answered correctly) of the cascade at each threshold of ``grid``;
    with scores in [0, 1] instead of right/wrong (a text's F1), the sum of the scores."""
    order = np.argsort(conf, kind="stable")
    c = conf[order]
    cum_neural = np.concatenate([[0.0], np.cumsum(np.asarray(neural_ok, dtype=np.float64)[order])])
    cum_cheap = np.concatenate([[0.0], np.cumsum(np.asarray(cheap_ok, dtype=np.float64)[order])])
    fall = np.searchsorted(c, grid, side="left")  # texts with confidence < threshold
    return fall, cum_neural[fall] + cum_cheap[-1] - cum_cheap[fall]


def fixed_sequence_threshold(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray, target: float,
                             confidence: float, grid: np.ndarray,
                             order: np.ndarray | None = None) -> tuple[int | None, np.ndarray]:
    """Learn-then-Test fixed-sequence testing over ``grid``: the index of the lowest threshold certified
    to reach ``target`` accuracy at ``confidence`` (None if none is), and every threshold's lower bound.

    Thresholds are tested in ``order`` (default: highest first), which must not depend on these data;
    testing stops at the first whose bound falls short. All thresholds rejected before that hold their
    promise together with probability >= ``confidence``, so the lowest of them may be taken."""
    n = len(conf)
    _, correct = grid_correct_counts(conf, cheap_ok, neural_ok, grid)
    lower = clopper_pearson_lower(correct, n, confidence)
    rejected = []
    for i in (np.arange(len(grid))[::-1] if order is None else order):
        if lower[i] < target:
            break
        rejected.append(int(i))
    return (min(rejected) if rejected else None), lower


def plug_in_threshold(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray, target: float,
                      grid: np.ndarray) -> int | None:
    """The naive rule, for comparison: the lowest grid threshold whose validation accuracy reaches the
    target (no allowance for the validation set being a sample)."""
    _, correct = grid_correct_counts(conf, cheap_ok, neural_ok, grid)
    ok = np.flatnonzero(correct / len(conf) >= target)
    return int(ok[0]) if len(ok) else None


def fit_sigmoid_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the binary log-loss of sigmoid(logits / T) against the 0/1 matrix ``y``
    (a multi-label stage: one sigmoid per topic)."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=np.float64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    return float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))


def marginal_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of every (text, topic) probability of a multi-label stage against whether the topic is on the
    text, over the bins of probability that hold at least one positive or a probability above 0.05 (the
    mass of near-zero negatives would otherwise hide everything)."""
    p, t = probs.ravel(), np.asarray(y, dtype=np.float64).ravel()
    keep = (p > 0.05) | (t > 0)
    p, t = p[keep], t[keep]
    if not len(p):
        return 0.0
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = sum(abs(t[which == b].mean() - p[which == b].mean()) * (which == b).sum()
                for b in range(bins) if (which == b).any())
    return float(total / len(p))


def hoeffding_bentkus_p(mean_loss: np.ndarray | float, n: int, risk: float) -> np.ndarray:
    """The Hoeffding-Bentkus p-value for "the expected loss exceeds ``risk``" from ``n`` losses in [0, 1]
    averaging ``mean_loss`` (Bates et al., "Distribution-free, risk-controlling prediction sets", JACM
    2021, Proposition 3; used by Learn-then-Test, Angelopoulos et al. 2021). Valid for any bounded loss:
    here 1 minus a text's F1."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.stats import binom

    r = np.minimum(np.asarray(mean_loss, dtype=np.float64), risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(r > 0, r * np.log(r / risk), 0.0) + (1 - r) * np.log((1 - r) / (1 - risk))
    hoeffding = np.exp(-n * kl)
    bentkus = np.e * binom.cdf(np.ceil(n * np.asarray(mean_loss, dtype=np.float64)), n, risk)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def hoeffding_bentkus_lower(mean_score: float, n: int, confidence: float) -> float:
    """The largest mean score (in [0, 1]) that :func:`hoeffding_bentkus_p` still rejects falling short of,
    at ``confidence``: a one-sided lower confidence bound on the expected score (found by bisection)."""
    lo, hi = 0.0, float(mean_score)
    if hi <= 0 or hoeffding_bentkus_p(1.0 - hi, n, 1.0 - 1e-12) > 1.0 - confidence:
        return 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if hoeffding_bentkus_p(1.0 - mean_score, n, 1.0 - mid) <= 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return lo


def fixed_sequence(passes: np.ndarray, order: np.ndarray) -> int | None:
    """Fixed-sequence testing: walk ``order`` (grid indices fixed before seeing the data) while each
    threshold passes its test; the lowest index passed, or None."""
    passed = []
    for i in order:
        if not passes[i]:
            break
        passed.append(int(i))
    return min(passed) if passed else None
