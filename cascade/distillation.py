"""Distillation: the neural stage labels unlabelled texts, and the cheap stage learns from them.

The cheap stage answers only what it is sure of; texts it is unsure of cost a transformer call. Retraining
it on the neural stage's confident answers about real traffic teaches it what the transformer knows about
that traffic, so it keeps more texts at the same accuracy. :func:`distill` does this and writes a new
bundle (same neural stage, new cheap stage, threshold re-chosen on the selection texts), recording what it used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .datasets import TextDataset
from .evaluation import label_indices, risk_coverage
from .inputs import as_text_list

if TYPE_CHECKING:
    from .bundle import Bundle
    from .model import Cascade
    from .training.cheap import CheapConfig

log = logging.getLogger(__name__)


def pseudo_label(model: Cascade, pool: Sequence[str], min_confidence: float = 0.9) -> tuple[TextDataset, np.ndarray]:
    """Label pool texts with the neural stage's answers, keeping the confident ones.

    Parameters
    ----------
    model : Cascade
        A loaded bundle.
    pool : sequence of str
        Unlabelled texts.
    min_confidence : float, default 0.9
        The neural-stage probability a pool text's answer needs to be kept.

    Returns
    -------
    labelled : TextDataset
        The kept texts, labelled with the neural stage's answers.
    confidence : ndarray
        Every pool text's neural-stage probability.
    """
    texts, _ = as_text_list(pool)
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}")
    probs = model.neural.predict_proba(texts)
    conf, pred = probs.max(1), probs.argmax(1)
    keep = np.flatnonzero(conf >= min_confidence)
    return TextDataset([texts[i] for i in keep], [model.labels[pred[i]] for i in keep]), conf


def choose_min_confidence(model: Cascade, validation: TextDataset, accuracy: float = 0.95) -> float:
    """The lowest neural-stage confidence at which its answers on ``validation`` are still right at least
    ``accuracy`` of the time (counting every text at or above it); 1.0 if no cut reaches it."""
    probs = model.neural.predict_proba(validation.texts)
    conf = probs.max(1)
    correct = probs.argmax(1) == label_indices(model.labels, validation.labels)
    coverage, acc = risk_coverage(conf, correct)
    ok = np.flatnonzero(acc >= accuracy)
    if not len(ok):
        log.warning("the neural stage is never %.0f%% right on validation: no text will be pseudo-labelled", 100 * accuracy)
        return 1.0
    return float(np.sort(conf)[::-1][ok[-1]])


def distill(model: Cascade, labelled: TextDataset, pool: Sequence[str], validation: TextDataset,
            out: str | Path, *, min_confidence: float | None = None, pseudo_label_accuracy: float = 0.95,
            config: CheapConfig | None = None, progress: bool = True) -> Bundle:
    """Retrain ``model``'s cheap stage on ``labelled`` plus the pool texts its neural stage labels confidently.

    The result is written as a bundle at ``out`` (atomically), keeping ``model``'s neural stage.

    Parameters
    ----------
    model : Cascade
        A loaded bundle.
    labelled : TextDataset
        Labelled training texts.
    pool : sequence of str
        Unlabelled texts like the ones users send.
    validation : TextDataset
        Labelled texts the threshold and ``min_confidence`` are chosen on.
    out : str or Path
        The bundle folder to write.
    min_confidence : float, optional
        The neural-stage probability a pool text's pseudo-label needs; default: the lowest at which the
        neural stage's answers on ``validation`` are right ``pseudo_label_accuracy`` of the time.
    pseudo_label_accuracy : float, default 0.95
        See ``min_confidence``.
    config : CheapConfig, optional
        The cheap stage's settings.
    progress : bool, default True
        Progress bars on a terminal, log lines elsewhere.

    Returns
    -------
    Bundle
    """
    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from .training.cheap import CheapConfig
    from .training.recipes.refresh import train_cheap

    if model.bundle is None:
        raise ValueError("distill needs a model loaded from a bundle (its neural stage is kept)")
    if min_confidence is None:
        min_confidence = choose_min_confidence(model, validation, pseudo_label_accuracy)
    pseudo, conf = pseudo_label(model, pool, min_confidence)
    log.info("neural stage labelled %d of %d pool texts with confidence >= %.2f", len(pseudo), len(conf),
             min_confidence)
    combined = TextDataset(labelled.texts + pseudo.texts, labelled.labels + pseudo.labels)
    info = {"distillation": {"n_labelled": len(labelled), "n_pool": len(conf), "n_pseudo_labelled": len(pseudo),
                             "min_confidence": min_confidence, "pseudo_label_accuracy_target": pseudo_label_accuracy}}
    return train_cheap(combined, validation, out, base=model.bundle.path, config=config or CheapConfig(),
                       progress=progress, extra_training=info)
