"""Fit the linear head of a frozen-encoder neural stage on sentence embeddings (scikit-learn, no torch)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..policy.multilabel import assign, choose_cutoffs, sigmoid, tagging_figures
from ..stages.head import LinearHead
from .cheap import binary_as_two_rows

log = logging.getLogger(__name__)

DEFAULT_C = 10.0


def fit_head(embeddings: np.ndarray, y: np.ndarray, n_classes: int, C: float = DEFAULT_C,
             max_iter: int = 2000) -> LinearHead:
    """Multinomial logistic regression on (L2-normalised) embeddings; classes are 0..n_classes-1, and
    every one must have a training text."""

    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(f"{len(missing)} class(es) have no training text: {missing[:5]}")
    started = time.perf_counter()
    clf = LogisticRegression(C=C, max_iter=max_iter).fit(embeddings, y)
    log.info("head fitted on %d embeddings in %.1fs", len(y), time.perf_counter() - started)
    coef, intercept = binary_as_two_rows(clf.coef_, clf.intercept_)
    return LinearHead(coef.T.astype(np.float32), intercept.astype(np.float32))


def fit_multi_label_head(embeddings: np.ndarray, y: np.ndarray, C: float = DEFAULT_C, max_iter: int = 2000,
                         class_weight: str | None = None) -> LinearHead:
    """One binary logistic regression per topic (columns of the 0/1 matrix ``y``) on the embeddings: a
    head whose logits go through a sigmoid each (``class_weight="balanced"``: a topic's texts weigh as much
    as the rest together)."""

    counts = y.sum(axis=0)
    if ((counts == 0) | (counts == len(y))).any():
        raise ValueError("every topic needs training texts with and without it")
    started = time.perf_counter()
    weight = np.empty((embeddings.shape[1], y.shape[1]), dtype=np.float32)
    bias = np.empty(y.shape[1], dtype=np.float32)
    for k in range(y.shape[1]):
        clf = LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight).fit(embeddings, y[:, k])
        weight[:, k], bias[k] = clf.coef_[0], clf.intercept_[0]
    log.info("multi-label head (%d topics) fitted on %d embeddings in %.1fs", y.shape[1], len(y),
             time.perf_counter() - started)
    return LinearHead(weight, bias)


def choose_topic_head(embeddings: np.ndarray, y: np.ndarray, held: np.ndarray, held_y: np.ndarray,
                      C: float = DEFAULT_C, weights: tuple[str | None, ...] = (None, "balanced"),
                      ) -> tuple[LinearHead, dict[str, Any]]:
    """A tagger's head for each topic weighting in ``weights``, scored on the selection texts' embeddings
    ``held`` (cut-offs chosen there): the one with the higher mean of micro- and macro-F1, and the scores."""
    heads, scores = [], {}
    for w in weights:
        head = fit_multi_label_head(embeddings, y, C=C, class_weight=w)
        probs = sigmoid(held.astype(np.float64) @ head.weight + head.bias)
        figures = tagging_figures(held_y, assign(probs, choose_cutoffs(probs, held_y)[0], True))
        heads.append(head)
        scores[str(w)] = {k: round(figures[k], 6) for k in ("micro_f1", "macro_f1")}
    best = max(range(len(weights)), key=lambda i: (sum(scores[str(weights[i])].values()), -i))
    log.info("head: topic weighting %s chosen on the selection texts (%s)", weights[best], scores)
    return heads[best], {"class_weight": weights[best], "selection": scores,
                         "rule": "the higher mean of micro- and macro-F1 on the selection texts, cut-offs chosen there"}
