"""Accuracy figures of a cascade on a labelled data set: each stage alone and the routed cascade."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .datasets import TextDataset
from .model import Cascade
from .policy.mix import NEURAL_ALONE, Mix
from .policy.multilabel import assign, label_matrix_with_unknown, stage_figures
from .policy.routing import fall_through, fallthrough_answer, routing_confidence
from .progress import map_with_progress

log = logging.getLogger(__name__)


def label_indices(labels: Sequence[str], data_labels: Sequence[str]) -> np.ndarray:
    """Class indices of ``data_labels``; a ValueError names labels the model does not know."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(data_labels) - set(index))
    if unknown:
        raise ValueError(f"{len(unknown)} label(s) are not the model's labels, e.g. {unknown[:5]}: use texts labelled "
                         "with the bundle's labels (`cascade info` lists them), or retrain with these labels")
    return np.array([index[label] for label in data_labels], dtype=np.int64)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scikit-learn's macro-F1: the unweighted mean of per-class F1 over every class that is true or
    predicted (a class predicted but never true counts, with F1 0)."""
    # lazy: scikit-learn (2-3 s to import) loads only when this runs
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0.0)) if len(y_true) else 0.0


@dataclass(frozen=True)
class StageScores:
    """Both stages' probabilities on every text of a data set, and the true classes."""

    cheap: np.ndarray
    neural: np.ndarray
    y: np.ndarray
    mix: Mix = NEURAL_ALONE

    @property
    def fallen(self) -> np.ndarray:
        """The answer a text gets when it falls through (both stages' votes combined by :attr:`mix`)."""
        return fallthrough_answer(self.cheap, self.neural, self.mix)

    def cascade_probabilities(self, threshold: float, measure: str = "max_prob",
                              always_neural: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(final probabilities, fall-through mask) of the cascade at ``threshold``: what ``route`` returns."""
        mask = fall_through(routing_confidence(self.cheap, measure, always_neural), threshold)
        return np.where(mask[:, None], self.fallen, self.cheap), mask

    def cascade_predictions(self, threshold: float, measure: str = "max_prob",
                            always_neural: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(predicted classes, fall-through mask) of the cascade at ``threshold``."""
        mask = fall_through(routing_confidence(self.cheap, measure, always_neural), threshold)
        return np.where(mask, self.fallen.argmax(1), self.cheap.argmax(1)), mask


def score_stages(model: Cascade, data: TextDataset, progress: bool = False) -> StageScores:
    """Run both stages on every text: what the figures and calibration need.

    Parameters
    ----------
    model : Cascade
        A loaded bundle.
    data : TextDataset
        Labelled texts.
    progress : bool, default False
        A bar, or log lines, while the neural stage reads many texts.

    Returns
    -------
    StageScores
        Both stages' probabilities, the answer of a text that falls through, and the true classes.
    """
    y = label_indices(model.labels, data.labels)
    return StageScores(model.cheap.predict_proba(data.texts), _neural_proba(model, data.texts, progress), y, model.mix)


def _neural_proba(model: Cascade, texts: list[str], progress: bool) -> np.ndarray:
    return map_with_progress(model.neural.predict_proba, texts, desc="evaluate: neural stage", progress=progress)


def summarize(scores: StageScores, threshold: float, measure: str = "max_prob",
              always_neural: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy of each stage alone and of the cascade at ``threshold``, and its fall-through rate."""
    pred, mask = scores.cascade_predictions(threshold, measure, always_neural)
    cheap_pred, neural_pred = scores.cheap.argmax(1), scores.neural.argmax(1)
    return {
        "n_texts": int(len(scores.y)),
        "threshold": float(threshold),
        "cheap_accuracy": float((cheap_pred == scores.y).mean()),
        "neural_accuracy": float((neural_pred == scores.y).mean()),
        "cascade_accuracy": float((pred == scores.y).mean()),
        "fall_through_rate": float(mask.mean()),
        "cheap_macro_f1": macro_f1(scores.y, cheap_pred),
        "neural_macro_f1": macro_f1(scores.y, neural_pred),
        "cascade_macro_f1": macro_f1(scores.y, pred),
        **({"mix": scores.mix.to_manifest(),
            "fallthrough_answer_accuracy": float((scores.fallen.argmax(1) == scores.y).mean())}
           if not scores.mix.neural_alone else {}),
    }


def neural_adds_nothing(metrics: dict[str, Any], ms_per_text: dict[str, float] | None = None) -> str | None:
    """Why a bundle is effectively its cheap stage, from its figures on the selection texts (``summarize``'s
    or a tagger's, with the build rule's ``rule``), or None when the neural stage earns its place: the
    threshold chosen sends no text on, or no threshold beats the cheap stage alone (the stages' mix
    included). ``ms_per_text``: each stage's cost, said beside the figures."""
    figure = "exact_match" if "cheap_exact_match" in metrics else "accuracy"
    cheap, neural = float(metrics[f"cheap_{figure}"]), float(metrics[f"neural_{figure}"])
    rule = metrics.get("rule", {})
    best = float(rule.get("best_accuracy", metrics[f"cascade_{figure}"]))
    name = figure.replace("_", " ")
    if best <= cheap:
        why = (f"no threshold beats the cheap stage alone ({name} {cheap:.2%}; the neural stage alone {neural:.2%}; "
               f"the best cascade {best:.2%})")
    elif float(metrics["fall_through_rate"]) == 0.0:
        why = (f"the threshold chosen sends no text on: the most accurate one ({name} {best:.2%} against the cheap "
               f"stage's {cheap:.2%}, sending {float(rule.get('best_fall_through_rate', 0.0)):.1%}) was not "
               f"significantly better (McNemar p = {float(rule.get('p_value', 1.0)):.2g}); the neural stage alone "
               f"scores {neural:.2%}")
    else:
        return None
    cost = (f"; per text the cheap stage costs {ms_per_text['cheap']:.3f} ms, the neural stage "
            f"{ms_per_text['neural']:.3f} ms" if ms_per_text else "")
    return (f"the neural stage adds nothing on the {int(metrics['n_texts']):,} selection texts: {why}{cost}. The "
            "bundle is effectively its cheap stage (`cascade train-cheap` builds that alone); more labelled texts or "
            "another encoder (`--encoder-from`) may change this")


def per_class_figures(labels: Sequence[str], truth: np.ndarray, chosen: np.ndarray,
                      fell: np.ndarray) -> dict[str, dict[str, float]]:
    """Per label (or topic), the cascade's precision, recall, F1 and support, and the share of the texts
    that carry it which fell through. ``truth`` and ``chosen``: (texts, labels) 0/1 matrices."""
    truth, chosen = truth.astype(bool), chosen.astype(bool)
    hits, support, picked = (truth & chosen).sum(0), truth.sum(0), chosen.sum(0)
    fell_with = (truth & fell[:, None]).sum(0)
    out = {}
    for k, label in enumerate(labels):
        precision = hits[k] / picked[k] if picked[k] else 0.0
        recall = hits[k] / support[k] if support[k] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                      "support": int(support[k]),
                      "fall_through_share": float(fell_with[k] / support[k]) if support[k] else 0.0}
    return out


def evaluate(model: Cascade, data: TextDataset, threshold: float | None = None,
             label_sep: str | None = None, per_class: bool = False, progress: bool = False) -> dict[str, Any]:
    """Each stage alone and the cascade, on labelled texts.

    Warns when the texts are the bundle's own training or selection texts: figures on them flatter it.

    Parameters
    ----------
    model : Cascade
        A loaded bundle.
    data : TextDataset
        Labelled texts the bundle's build never saw.
    threshold : float, optional
        The routing cut-off to evaluate at; None: the model's.
    label_sep : str, optional
        A tagger's label cells hold topics joined by this; default: the bundle's.
    per_class : bool, default False
        Add the cascade's per-label figures (:func:`per_class_figures`) under ``per_class``.
    progress : bool, default False
        See :func:`score_stages`.

    Returns
    -------
    dict
        :func:`summarize` of :func:`score_stages` (accuracy, macro-F1 and the fall-through rate of each
        stage and the cascade), or for a tagger :func:`evaluate_tagging` (micro- and macro-F1, exact match).
    """
    _warn_if_seen(model, data.texts)
    if model.multi_label:
        return evaluate_tagging(model, data, threshold, label_sep, per_class, progress)
    scores = score_stages(model, data, progress)
    t = model.threshold if threshold is None else threshold
    figures = summarize(scores, t, model.measure, model.always_neural_idx)
    if per_class:
        pred, mask = scores.cascade_predictions(t, model.measure, model.always_neural_idx)
        eye = np.eye(len(model.labels), dtype=bool)
        figures["per_class"] = per_class_figures(model.labels, eye[scores.y], eye[pred], mask)
    return figures


def _warn_if_seen(model: Cascade, texts: list[str]) -> None:
    recorded = model.bundle.train_hashes() if model.bundle is not None else None
    if recorded is None:
        return
    seen = sum(t in recorded or recorded.chose(t) for t in texts)
    if seen:
        log.warning("%d of %d texts are training or selection texts of this bundle (or copies but for case, "
                    "spacing or punctuation): figures on them flatter it; evaluate on held-out texts", seen, len(texts))


def evaluate_tagging(model: Cascade, data: TextDataset, threshold: float | None = None,
                     label_sep: str | None = None, per_class: bool = False, progress: bool = False) -> dict[str, Any]:
    """A multi-label bundle's figures on labelled texts: micro-F1, macro-F1, exact match, Hamming loss and
    mean per-text F1 of the cheap stage alone (its cut-offs), the neural stage alone (the cut-offs of texts
    that fall through) and the cascade, and the cascade's fall-through rate."""
    decisions = model.decisions
    if decisions is None:
        raise ValueError("this bundle answers one label per text; use evaluate()")
    y, unknown = label_matrix_with_unknown(data.labels, model.labels, label_sep or model.label_sep)
    if unknown.shape[1]:
        log.warning("%d text(s) carry %d topic(s) this bundle does not know; they count as topics missed by every "
                    "stage", int(unknown.any(axis=1).sum()), unknown.shape[1])
    cheap_p, neural_p = model.cheap.predict_proba(data.texts), _neural_proba(model, data.texts, progress)
    t = model.threshold if threshold is None else threshold
    fell = fall_through(routing_confidence(cheap_p, model.measure, model.always_neural_idx, decisions), t)
    final = np.where(fell[:, None], fallthrough_answer(cheap_p, neural_p, model.mix, True), cheap_p)
    sets = {"cheap": assign(cheap_p, decisions.cheap, decisions.at_least_one),
            "neural": assign(neural_p, decisions.neural_alone, decisions.at_least_one),
            "cascade": model.assigned(final, fell)}
    y_all = np.hstack([y, unknown])  # unknown topics: columns no stage ever assigns
    padded = {name: np.hstack([chosen, np.zeros(unknown.shape, dtype=bool)]) for name, chosen in sets.items()}
    figures: dict[str, Any] = {"n_texts": len(y), "threshold": float(t), "fall_through_rate": float(fell.mean()),
               "unknown_topics": int(unknown.shape[1]), **stage_figures(y_all, padded)}
    if per_class:
        figures["per_class"] = per_class_figures(model.labels, y, sets["cascade"], fell)
    return figures


def risk_coverage(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, accuracy) when only the k most confident answers are kept, for k = 1..n.

    Parameters
    ----------
    conf : ndarray of shape (n,)
        Each text's confidence.
    correct : ndarray of bool, shape (n,)
        Whether the answer to it is right.

    Returns
    -------
    coverage, accuracy : ndarray of shape (n,)

    Examples
    --------
    >>> import numpy as np, cascade
    >>> coverage, accuracy = cascade.risk_coverage(np.array([0.9, 0.6, 0.8]), np.array([True, False, True]))
    >>> coverage.round(3).tolist(), accuracy.round(3).tolist()
    ([0.333, 0.667, 1.0], [1.0, 1.0, 0.667])
    """
    order = np.argsort(-np.asarray(conf), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    k = np.arange(1, len(order) + 1)
    return k / len(order), hits / k


def coverage_at_accuracy(conf: np.ndarray, correct: np.ndarray, accuracy: float) -> float:
    """The largest share of texts a stage can keep, most confident first, with at least ``accuracy`` on them.

    Parameters
    ----------
    conf : ndarray of shape (n,)
        Each text's confidence.
    correct : ndarray of bool, shape (n,)
        Whether the stage's answer to it is right.
    accuracy : float
        The accuracy the kept texts must reach.

    Returns
    -------
    float
        The share kept; 0 if none.

    Examples
    --------
    >>> import numpy as np, cascade
    >>> cascade.coverage_at_accuracy(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.75)
    1.0
    """
    coverage, acc = risk_coverage(conf, correct)
    ok = np.flatnonzero(acc >= accuracy)
    return float(coverage[ok[-1]]) if len(ok) else 0.0
