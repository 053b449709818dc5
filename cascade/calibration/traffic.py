"""Promises checked against the texts users send next, without their labels.

A promise certified on held-out texts holds for texts drawn like them. Training files hold families of
paraphrases (one prompt rephrased by many crowd workers, templates, one customer writing twice), and texts
carved out of such a file are siblings of the training texts: the stages are surer and more often right on
them than on the next texts users send. The package checks this on a sample of recent *unlabelled* traffic:

* **Average Thresholded Confidence** (ATC; Garg et al., "Leveraging unlabeled data to predict
  out-of-distribution performance", ICLR 2022): on the certifying texts, find the cut on the confidence in
  the final answer above which the share of texts equals their accuracy; the share of traffic texts above
  the same cut estimates the accuracy on the traffic. For a tagger the confidence is in the whole set of
  topics, and the same cut estimates exact match (or mean per-text F1).
* A two-sample Kolmogorov-Smirnov test of the routing confidence, certifying texts against traffic: whether
  the traffic looks like the certifying texts at all.

The estimate is a heuristic, not a certificate. Its bound is a percentile bootstrap over both samples it
rests on, the certifying texts (which set the cut) and the traffic (whose share above it is counted), at
the promise's confidence; :func:`supported_bound` takes the lower of that and the certified bound, and a
promise is made only where it reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..policy.multilabel import set_confidence
from ..policy.routing import fall_through
from .statistics import clopper_pearson_lower


@dataclass(frozen=True)
class AnswerConfidence:
    """Per text: the routing confidence, and the confidence in the final answer when the cheap stage keeps
    the text and when it falls through (the stages' mix)."""

    route: np.ndarray
    cheap: np.ndarray
    fallen: np.ndarray

    def at(self, threshold: float) -> np.ndarray:
        """The confidence in each text's final answer when the cascade routes at ``threshold``."""
        return np.where(fall_through(self.route, threshold), self.fallen, self.cheap)

    def subset(self, mask: np.ndarray) -> AnswerConfidence:
        return AnswerConfidence(self.route[mask], self.cheap[mask], self.fallen[mask])


SCORES = ("negentropy", "max_prob")


def negentropy(probs: np.ndarray) -> np.ndarray:
    """Minus the entropy of each row of probabilities (0 for a certain answer, lower for a spread one)."""
    p = np.clip(probs, 1e-12, 1.0)
    return (p * np.log(p)).sum(axis=1)


def answer_confidence(cheap_p: np.ndarray, fallen_p: np.ndarray, route: np.ndarray,
                      decisions: Any | None = None, score: str = "negentropy") -> AnswerConfidence:
    """:class:`AnswerConfidence` from calibrated probabilities. Single-label: the answer's negative entropy
    (``score="negentropy"``: ATC-NE, the variant Garg et al. found most accurate) or its top probability
    (``"max_prob"``: what the "none of these" cut reads). A tagger: the probability that its whole set is
    right (its ``decisions``' cut-offs)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; use one of {SCORES}")
    if decisions is None:
        if score == "negentropy":
            return AnswerConfidence(route, negentropy(cheap_p), negentropy(fallen_p))
        return AnswerConfidence(route, cheap_p.max(axis=1), fallen_p.max(axis=1))

    return AnswerConfidence(route, set_confidence(cheap_p, decisions.cheap, "set_prob", decisions.at_least_one),
                            set_confidence(fallen_p, decisions.fallen, "set_prob", decisions.at_least_one))


def atc_cut(confidence: np.ndarray, outcome: np.ndarray) -> float:
    """The ATC cut: the confidence above which the share of these texts equals their mean outcome. When
    every outcome is perfect, the texts say only that answers as sure as their least sure one were right:
    the cut is that confidence (a traffic text must be surer than it to count), never below every text,
    which would count any traffic at all as right."""
    score = min(float(np.mean(outcome)), 1.0 - 1.0 / len(confidence))
    return float(np.quantile(confidence, 1.0 - score, method="lower"))


@dataclass(frozen=True)
class TrafficCheck:
    """What unlabelled traffic says of one routing: the ATC estimate of the figure promised (accuracy, exact
    match or mean F1) and its conservative bound, beside the figure on the certifying texts."""

    threshold: float
    n_traffic: int
    certify_figure: float  # measured on the certifying texts
    estimate: float  # ATC on the traffic
    bound: float  # lower bound of the estimate at ``confidence`` (bootstrap over certifying texts and traffic)
    confidence: float
    cut: float  # the ATC cut (kept in a bundle: the server's estimate on its own traffic uses it)
    fall_through_rate: float  # of the traffic, observed (no labels needed)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "n_traffic": self.n_traffic, "certify_figure": self.certify_figure,
                "estimate": self.estimate, "bound": self.bound, "confidence": self.confidence, "atc_cut": self.cut,
                "fall_through_rate": self.fall_through_rate}


BOOTSTRAP = 400  # resamples of each sample behind a bound (seeded: the same data give the same bound)


def check(certify: AnswerConfidence, outcome: np.ndarray, traffic: AnswerConfidence, threshold: float,
          confidence: float) -> TrafficCheck:
    """The traffic's ATC estimate at ``threshold`` (``outcome``: each certifying text's score in [0, 1] at
    that threshold), and its lower bound at ``confidence``: the lower of the ``1 - confidence`` quantile of
    the estimate over :data:`BOOTSTRAP` joint resamples of the certifying texts and the traffic, and the
    exact binomial bound on the traffic's share above the cut."""
    cert_conf, target_conf = certify.at(threshold), traffic.at(threshold)
    cut = atc_cut(cert_conf, outcome)
    above = int((target_conf > cut).sum())
    n = len(target_conf)
    rng = np.random.default_rng(0)
    estimates = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        c = rng.integers(0, len(cert_conf), len(cert_conf))
        t = rng.integers(0, n, n)
        estimates[b] = np.mean(target_conf[t] > atc_cut(cert_conf[c], outcome[c]))
    bound = min(float(np.quantile(estimates, 1.0 - confidence)), float(clopper_pearson_lower(above, n, confidence)))
    return TrafficCheck(threshold, n, float(np.mean(outcome)), above / n, bound, confidence, cut,
                        float(fall_through(traffic.route, threshold).mean()))


def supported_bound(certified_lower: float, traffic: TrafficCheck) -> float:
    """The figure a promise may claim at a threshold: the certified lower bound, lowered to the traffic's
    bound where the traffic supports less."""
    return min(certified_lower, traffic.bound)


def shift_test(certify_route: np.ndarray, traffic_route: np.ndarray) -> dict[str, float]:
    """Whether the traffic's routing confidences look drawn like the certifying texts': a two-sample
    Kolmogorov-Smirnov test (a small p-value says they do not)."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.stats import ks_2samp

    result = ks_2samp(certify_route, traffic_route)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue),
            "certify_mean_confidence": float(np.mean(certify_route)),
            "traffic_mean_confidence": float(np.mean(traffic_route))}


def served_score(probs: np.ndarray, to_neural: np.ndarray, decisions: Any | None = None) -> np.ndarray:
    """The score a bundle's ATC cut is read against, for answers as served (final probabilities, and which
    texts the neural stage answered): the negative entropy of a single-label answer, the probability that a
    tagger's set is exactly right under the cut-offs of the stage that answered."""
    if decisions is None:
        return negentropy(probs)

    out = set_confidence(probs, decisions.cheap, "set_prob", decisions.at_least_one)
    if to_neural.any():
        out[to_neural] = set_confidence(probs[to_neural], decisions.fallen, "set_prob", decisions.at_least_one)
    return out
