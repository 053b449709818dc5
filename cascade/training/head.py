"""Fit the linear head of a frozen-encoder neural stage on sentence embeddings (scikit-learn, no torch)."""

from __future__ import annotations

import logging
import time

import numpy as np

from ..stages.head import LinearHead

log = logging.getLogger(__name__)

DEFAULT_C = 10.0


def fit_head(embeddings: np.ndarray, y: np.ndarray, n_classes: int, C: float = DEFAULT_C,
             max_iter: int = 2000) -> LinearHead:
    """Multinomial logistic regression on (L2-normalised) embeddings; classes are 0..n_classes-1, and
    every one must have a training text."""
    from sklearn.linear_model import LogisticRegression

    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(f"{len(missing)} class(es) have no training text: {missing[:5]}")
    started = time.perf_counter()
    clf = LogisticRegression(C=C, max_iter=max_iter).fit(embeddings, y)
    log.info("head fitted on %d embeddings in %.1fs", len(y), time.perf_counter() - started)
    return LinearHead(clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32))
