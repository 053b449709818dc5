"""How calibration texts are scored, for each task: temperatures fitted on the fit part, calibration error
before and after, the calibrated probabilities, and each text's outcome under the bundle's decisions.

Single-label: one softmax temperature per stage; a text is right when its top class is its label.
Multi-label: one sigmoid temperature per stage; the per-topic cut-offs move with it (a probability
reaches its cut-off exactly when it did before scaling), a text is right when its whole set of topics is,
and its F1 (between the true and the assigned sets) is its bounded score for ``target_f1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..policy.multilabel import Decisions, assign, logit, per_text_f1, sigmoid
from ..policy.routing import fallthrough_answer
from ..stages.cheap import softmax
from .statistics import expected_calibration_error, fit_sigmoid_temperature, fit_temperature, marginal_calibration_error

if TYPE_CHECKING:
    from ..model import Cascade


@dataclass(frozen=True)
class Scored:
    """Calibrated probabilities of both stages on every calibration text, and what each text's answer is worth."""

    temperatures: dict[str, float]
    ece: dict[str, dict[str, float]]
    cheap_p: np.ndarray
    neural_p: np.ndarray  # what a text that falls through is answered with (the stages' mix, if any)
    cheap_ok: np.ndarray  # bool: the cheap stage's answer is right (the whole set, for multi-label)
    neural_ok: np.ndarray
    y: np.ndarray  # class indices (-1: a label the bundle lacks), or the 0/1 topic matrix
    decisions: Decisions | None = None  # multi-label: the cut-offs on the calibrated scale
    cheap_f1: np.ndarray | None = None  # multi-label: each text's F1
    neural_f1: np.ndarray | None = None


def calibrated_answers(model: Cascade, cheap_logits: np.ndarray, neural_logits: np.ndarray,
                       temperatures: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(the cheap stage's calibrated probabilities, the answer given to a text that falls through) of texts
    whose labels are not known (traffic), with temperatures fitted on labelled ones."""
    squash = sigmoid if model.multi_label else softmax
    cheap_p = squash(cheap_logits / temperatures["cheap"])
    return cheap_p, fallthrough_answer(cheap_p, squash(neural_logits / temperatures["neural"]), model.mix,
                                       model.multi_label)


def score_single(model: Cascade, cheap_logits: np.ndarray, neural_logits: np.ndarray, y: np.ndarray,
                 fit: np.ndarray) -> Scored:
    """Softmax temperatures on the fit part (texts with a known label), ECE on the certify part."""
    known = y >= 0
    temperatures, ece = {}, {}
    for name, logits in (("cheap", cheap_logits), ("neural", neural_logits)):
        t = fit_temperature(logits[fit & known], y[fit & known])
        certify = ~fit & known
        temperatures[name] = t
        ece[name] = {"before": expected_calibration_error(softmax(logits[certify]), y[certify]),
                     "after": expected_calibration_error(softmax(logits[certify] / t), y[certify])}
    cheap_p, fallen = calibrated_answers(model, cheap_logits, neural_logits, temperatures)
    return Scored(temperatures, ece, cheap_p, fallen, cheap_p.argmax(1) == y, fallen.argmax(1) == y, y)


def moved_cutoffs(cutoffs: np.ndarray, temperature: float) -> np.ndarray:
    """Cut-offs on the scale of sigmoid(logit / temperature): p >= c before scaling exactly when
    p' >= c' after."""
    return sigmoid(logit(np.asarray(cutoffs, dtype=np.float64)) / temperature)


def score_tagging(model: Cascade, cheap_logits: np.ndarray, neural_logits: np.ndarray, y: np.ndarray,
                  fit: np.ndarray, missed: np.ndarray | None = None) -> Scored:
    """Sigmoid temperatures on the fit part, marginal calibration error on the certify part, the cut-offs
    moved with the temperatures, and each text's exact-match outcome and F1. ``missed``: per text, how many
    of its topics the bundle does not know (no set with one is exactly right; each lowers its F1)."""
    decisions = model.decisions
    if decisions is None:
        raise ValueError("score_tagging needs a multi-label bundle")
    temperatures, ece = {}, {}
    for name, logits in (("cheap", cheap_logits), ("neural", neural_logits)):
        t = fit_sigmoid_temperature(logits[fit], y[fit])
        temperatures[name] = t
        ece[name] = {"before": marginal_calibration_error(sigmoid(logits[~fit]), y[~fit]),
                     "after": marginal_calibration_error(sigmoid(logits[~fit] / t), y[~fit])}
    # the bundle's cut-offs are on the scale of the temperatures it was saved with (1 if never calibrated):
    # back to raw logits first, then to the new temperatures, so calibrating again moves nothing twice
    raw = {"cheap": moved_cutoffs(decisions.cheap, 1.0 / model.cheap.temperature),
           "fallen": moved_cutoffs(decisions.fallen, 1.0 / model.neural.temperature),
           "neural": moved_cutoffs(decisions.neural_alone, 1.0 / model.neural.temperature)}
    # a mix's cut-offs move with the neural stage's temperature: exact for the neural stage alone, close for
    # a mix (its sets may change slightly); what is certified is computed with the moved cut-offs either way
    moved = Decisions(moved_cutoffs(raw["cheap"], temperatures["cheap"]),
                      moved_cutoffs(raw["fallen"], temperatures["neural"]), decisions.at_least_one,
                      moved_cutoffs(raw["neural"], temperatures["neural"]) if decisions.neural is not None else None)
    cheap_p, fallen = calibrated_answers(model, cheap_logits, neural_logits, temperatures)
    cheap_sets = assign(cheap_p, moved.cheap, moved.at_least_one)
    fallen_sets = assign(fallen, moved.fallen, moved.at_least_one)
    truth = y.astype(bool)
    missed = np.zeros(len(y), dtype=np.int64) if missed is None else np.asarray(missed)

    def f1(sets: np.ndarray) -> np.ndarray:  # unknown topics: one extra column per text, never assigned
        extra = np.zeros((len(y), int(missed.max(initial=0))), dtype=bool)
        extra[np.arange(extra.shape[1])[None, :] < missed[:, None]] = True
        return per_text_f1(np.hstack([truth, extra]), np.hstack([sets, np.zeros_like(extra)]))

    return Scored(temperatures, ece, cheap_p, fallen, (cheap_sets == truth).all(axis=1) & (missed == 0),
                  (fallen_sets == truth).all(axis=1) & (missed == 0), y, moved, f1(cheap_sets), f1(fallen_sets))
