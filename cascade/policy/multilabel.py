"""Multi-label tagging: label sets, per-topic cut-offs, set confidence, and the figures of a tagger.

A multi-label bundle's stages return one independent probability per topic (a sigmoid each). A topic is
assigned when its probability reaches its cut-off; cut-offs are chosen on the selection texts, per topic
where the topic has enough positives there, one shared cut-off otherwise (:func:`choose_cutoffs`). When
the training data always had a topic, the most likely topic is assigned even if none reaches its cut-off.

Routing needs the cheap stage's confidence in the whole *set* it assigns (:func:`set_confidence`):

* ``set_prob``: the probability that the set is exactly right, if topics were independent: the product
  of p over assigned topics and 1 - p over the others;
* ``min_margin``: how far the least decided topic is from its cut-off, as a share of the room on its
  side: the smallest |p - cut-off| / (1 - cut-off above it, cut-off below it), in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_SEP = "|"
SET_MEASURES = ("set_prob", "min_margin")  # a tagger's confidence in a set of topics
MIN_SUPPORT = 5  # positives among the selection texts for a topic to get a cut-off of its own
CUTOFF_GRID = np.round(np.arange(0.05, 0.951, 0.025), 4)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, numerically stable."""
    out = np.empty_like(logits, dtype=np.float64)
    pos = logits >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logits[pos]))
    e = np.exp(logits[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def split_labels(joined: str, sep: str = DEFAULT_SEP) -> list[str]:
    """The topics of one ``sep``-joined label cell (blank parts dropped, order kept, no repeats)."""
    seen: dict[str, None] = {}
    for part in joined.split(sep):
        if part.strip():
            seen.setdefault(part.strip(), None)
    return list(seen)


def label_matrix(joined: Sequence[str], labels: Sequence[str], sep: str = DEFAULT_SEP) -> np.ndarray:
    """(texts, topics) 0/1 matrix of ``sep``-joined label cells; a ValueError names unknown topics."""
    y, unknown = label_matrix_with_unknown(joined, labels, sep)
    if unknown.shape[1]:
        found = sorted({t for cell in joined for t in split_labels(cell, sep)} - set(labels))
        raise ValueError(f"{len(found)} topic(s) are not the model's topics, e.g. {found[:5]}")
    return y


def label_matrix_with_unknown(joined: Sequence[str], labels: Sequence[str],
                              sep: str = DEFAULT_SEP) -> tuple[np.ndarray, np.ndarray]:
    """The 0/1 matrix of the model's topics, and one of the topics the model does not know (a column each,
    in sorted order): figures count those as topics no stage can assign."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.zeros((len(joined), len(labels)), dtype=np.int8)
    extra: dict[str, list[int]] = {}
    for row, cell in enumerate(joined):
        if not isinstance(cell, str):
            raise TypeError(f"labels[{row}] is {type(cell).__name__}; a multi-label cell is one string of topics "
                            f"joined by {sep!r}, e.g. 'grain{sep}wheat'")
        for topic in split_labels(cell, sep):
            if topic in index:
                y[row, index[topic]] = 1
            else:
                extra.setdefault(topic, []).append(row)
    unknown = np.zeros((len(joined), len(extra)), dtype=np.int8)
    for j, topic in enumerate(sorted(extra)):
        unknown[extra[topic], j] = 1
    return y, unknown


def topics_of(joined: Sequence[str], sep: str = DEFAULT_SEP) -> list[str]:
    """Every topic that occurs, sorted."""
    return sorted({t for cell in joined for t in split_labels(cell, sep)})


def assign(probs: np.ndarray, cutoffs: np.ndarray, at_least_one: bool) -> np.ndarray:
    """The assigned topics, (texts, topics) bool: probability at or above the topic's cut-off; with
    ``at_least_one``, a text with none gets the topic that comes nearest its cut-off (in log-odds)."""
    cut = np.broadcast_to(cutoffs, probs.shape)  # one cut-off per topic, or one per text and topic
    chosen = probs >= cut
    if at_least_one and len(probs):
        empty = ~chosen.any(axis=1)
        if empty.any():  # nearest in log-odds: the same topic whatever temperature scaled the stage
            best = (logit(probs[empty]) - logit(cut[empty])).argmax(axis=1)
            chosen[np.flatnonzero(empty), best] = True
    return chosen


def logit(p: np.ndarray) -> np.ndarray:
    """The log-odds of probabilities, exact down to 1e-300 (tiny cut-offs of a sharp stage survive a round trip)."""
    p = np.clip(p, 1e-300, 1.0)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-np.minimum(p, 1.0 - 1e-16))


def set_confidence(probs: np.ndarray, cutoffs: np.ndarray, measure: str, at_least_one: bool) -> np.ndarray:
    """The confidence that a text's assigned set is right (see the module docstring), in [0, 1]."""
    chosen = assign(probs, cutoffs, at_least_one)
    if measure == "set_prob":
        p = np.clip(np.where(chosen, probs, 1.0 - probs), 1e-300, 1.0)
        return np.exp(np.log(p).sum(axis=1))
    if measure == "min_margin":
        room = np.where(probs >= cutoffs, 1.0 - cutoffs, cutoffs)
        return (np.abs(probs - cutoffs) / np.maximum(room, 1e-12)).min(axis=1).clip(0.0, 1.0)
    raise ValueError(f"unknown set confidence measure {measure!r}; use one of {SET_MEASURES}")


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def choose_cutoffs(probs: np.ndarray, y: np.ndarray, min_support: int = MIN_SUPPORT) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-topic cut-offs maximising each topic's F1 on these (selection) texts, for topics with at least
    ``min_support`` positives; the others share the one cut-off that maximises their pooled (micro) F1.
    Candidates come from a fixed grid, so a cut-off never sits on one text's probability."""
    grid = CUTOFF_GRID
    hits = probs[:, :, None] >= grid[None, None, :]  # texts x topics x grid
    pos = y.astype(bool)[:, :, None]
    tp = (hits & pos).sum(axis=0)
    fp = (hits & ~pos).sum(axis=0)
    fn = (~hits & pos).sum(axis=0)
    support = y.sum(axis=0)
    own = support >= min_support
    shared_f1 = _f1(tp[~own].sum(axis=0), fp[~own].sum(axis=0), fn[~own].sum(axis=0))
    shared = float(grid[int(np.argmax(shared_f1))]) if (~own).any() else 0.5
    cutoffs = np.full(y.shape[1], shared)
    f1 = _f1(tp, fp, fn)
    cutoffs[own] = grid[np.argmax(f1[own], axis=1)]
    info = {"rule": f"per topic: the F1-best cut-off on the selection texts (topics with >= {min_support} positives "
                    "there); the rest share the micro-F1-best one", "grid": [float(grid[0]), float(grid[-1]),
                                                                            float(grid[1] - grid[0])],
            "own": int(own.sum()), "shared": shared}
    return cutoffs, info


def tuned_micro_f1(probs: np.ndarray, y: np.ndarray, at_least_one: bool) -> float:
    """micro-F1 of the sets at the cut-offs :func:`choose_cutoffs` picks on these very texts: how a
    stage compares with another (an epoch, a quantization) when both are judged as a bundle would decide."""
    cutoffs, _ = choose_cutoffs(probs, y)
    return tagging_figures(y, assign(probs, cutoffs, at_least_one))["micro_f1"]


def per_text_f1(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each text's F1 between its true and predicted sets (1 when both are empty)."""
    y, pred = y.astype(bool), pred.astype(bool)
    tp = (y & pred).sum(axis=1)
    return _f1(tp, (pred & ~y).sum(axis=1), (y & ~pred).sum(axis=1))


def tagging_figures(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """micro-F1, macro-F1, exact match (subset accuracy) and Hamming loss from scikit-learn, and the mean
    per-text F1 (1 for a text whose true and predicted sets are both empty). Macro-F1 averages the topics
    that are true or predicted here, as scikit-learn does for single labels (a topic neither true nor
    assigned in these texts has no F1)."""
    # lazy: scikit-learn (2-3 s to import) loads only when this runs
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    y, pred = y.astype(bool), pred.astype(bool)
    seen = y.any(axis=0) | pred.any(axis=0)
    return {
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0.0)),
        "macro_f1": float(f1_score(y[:, seen], pred[:, seen], average="macro", zero_division=0.0)) if seen.any() else 0.0,
        "exact_match": float(accuracy_score(y, pred)),
        "hamming_loss": float(hamming_loss(y, pred)),
        "mean_text_f1": float(per_text_f1(y, pred).mean()),
    }


def stage_figures(y: np.ndarray, sets: dict[str, np.ndarray]) -> dict[str, float]:
    """:func:`tagging_figures` of each named set of answers, keys prefixed by the name (``cheap_micro_f1``...)."""
    return {f"{name}_{key}": value for name, chosen in sets.items() for key, value in tagging_figures(y, chosen).items()}


@dataclass(frozen=True)
class Decisions:
    """How a multi-label bundle turns probabilities into sets: cut-offs for the cheap stage's answers and
    for the answers of texts that fall through (the stages' mix, if the bundle has one), and whether one
    topic is always assigned. ``neural``: the neural stage's own cut-offs, for figures of that stage alone
    (None: ``fallen``, as when there is no mix)."""

    cheap: np.ndarray
    fallen: np.ndarray
    at_least_one: bool
    neural: np.ndarray | None = None

    @property
    def neural_alone(self) -> np.ndarray:
        """The cut-offs of the neural stage answering alone."""
        return self.fallen if self.neural is None else self.neural

    def to_dict(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"cheap": [float(c) for c in self.cheap], "fallen": [float(c) for c in self.fallen],
                **({"neural": [float(c) for c in self.neural]} if self.neural is not None else {}),
                "at_least_one": self.at_least_one, **info}

    @classmethod
    def from_dict(cls, node: dict[str, Any]) -> Decisions:
        return cls(np.asarray(node["cheap"], dtype=np.float64), np.asarray(node["fallen"], dtype=np.float64),
                   bool(node["at_least_one"]),
                   np.asarray(node["neural"], dtype=np.float64) if "neural" in node else None)
