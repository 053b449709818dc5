"""Labelled feedback on answers already given: each text's outcome under the figure a bundle promised
(accuracy, exact match, or mean per-text F1), the stream :class:`~cascade.calibration.sequential.PromiseMonitor`
checks the promise on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..policy.multilabel import split_labels

if TYPE_CHECKING:
    from ..model import Cascade, Prediction


def promise_of(model: Cascade) -> tuple[float | None, str]:
    """The figure ``model``'s bundle promised (None if it promised none) and its name: a calibrated bundle's
    certified target (``calibration.reference``), else nothing."""
    manifest = model.bundle.manifest if model.bundle is not None else {}
    reference = manifest.get("calibration", {}).get("reference") or {}
    figure = reference.get("figure") or ("exact_match" if model.multi_label else "accuracy")
    promised = reference.get("promised")
    return (float(promised) if promised is not None else None), figure


def check_feedback_labels(model: Cascade, labels: Sequence[Any]) -> list[Any]:
    """Each label as the bundle knows it: a label (single-label bundles), or a list of topics (taggers; a
    string of topics joined by the bundle's separator is split). An unknown label or topic is a ValueError
    naming its position; a tagger's empty list is the empty set."""
    known = set(model.labels)
    out: list[Any] = []
    for i, label in enumerate(labels):
        if model.multi_label:
            topics = split_labels(label, model.label_sep) if isinstance(label, str) else label
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise ValueError(f"labels[{i}] must be a list of topics (or topics joined by {model.label_sep!r})")
            unknown = [t for t in topics if t not in known]
            if unknown:
                raise ValueError(f"labels[{i}] has topics the bundle does not know: {unknown[:3]}")
            out.append(sorted(set(topics)))
        else:
            if not isinstance(label, str) or label not in known:
                raise ValueError(f"labels[{i}] is {repr(label)[:60]}, not one of the bundle's labels")
            out.append(label)
    return out


def outcomes(predictions: Sequence[Prediction], labels: Sequence[Any], figure: str) -> np.ndarray:
    """Each answer's score in [0, 1] against its (checked) label: 1 right, 0 wrong (an abstention is wrong);
    for a tagger, exact match of the sets, or their F1 (``figure`` ``mean_text_f1``)."""
    scores = []
    for p, label in zip(predictions, labels):
        if p.labels is None:
            scores.append(float(p.label is not None and p.label == label))
            continue
        given, truth = set(p.labels), set(label)
        if figure == "mean_text_f1":
            both = len(given & truth)
            scores.append(1.0 if not given and not truth else 2.0 * both / (len(given) + len(truth)))
        else:
            scores.append(float(given == truth))
    return np.array(scores, dtype=np.float64)
