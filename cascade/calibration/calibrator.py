"""The :class:`Calibrator`: fits calibrated scores on labelled texts the build never saw and chooses thresholds with
stated guarantees (see :mod:`cascade.calibration` for the method)."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import write_bundle
from ..errors import CascadeError
from ..evaluation import StageScores
from ..inputs import as_text_list
from ..policy.multilabel import SET_MEASURES, label_matrix_with_unknown
from ..policy.routing import MEASURES, abstain_cut, fall_through, routing_confidence
from ..progress import map_with_progress
from ..stages.timing import ms_per_text
from ..text import dedup_key
from .curves import Curve
from .plot import draw
from .rules import (
    FIT_FRACTION,
    Policy,
    ThresholdChoice,
    TrafficChecker,
    by_curve,
    by_target,
    by_target_f1,
    check_request,
    target_sequences,
)
from .scoring import Scored, calibrated_answers, score_single, score_tagging
from .statistics import aurc
from .traffic import AnswerConfidence, answer_confidence, atc_cut, check, shift_test

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..model import Cascade

log = logging.getLogger(__name__)


class CalibrationWarning(UserWarning):
    """A calibration result holds with caveats: a target cannot be met, or the data is suspect."""


def _check_label_values(labels: Sequence[Any]) -> list[str]:
    """Labels as strings: str and integer labels are accepted; a missing or other value is named."""

    if isinstance(labels, (str, bytes)) or getattr(labels, "ndim", 1) != 1:
        raise TypeError("labels must be a flat sequence with one label per text")
    out = []
    for i, label in enumerate(labels):
        if isinstance(label, str) and label.strip():
            out.append(label.strip())
        elif isinstance(label, Integral) and not isinstance(label, bool):
            out.append(str(int(label)))
        else:
            raise TypeError(f"labels[{i}] is {label!r} ({type(label).__name__}); every label must be a "
                            "non-empty str (or an integer), as in the bundle's label list")
    return out


MEASURE_NAMES = {"max_prob": "cheap-stage max probability", "margin": "cheap-stage top-1 minus top-2 probability",
                 "set_prob": "cheap-stage probability that its set of topics is exactly right",
                 "min_margin": "cheap-stage distance of its least decided topic from that topic's cut-off"}
DEFAULT_MEASURES = ("max_prob", "margin")
MIN_TRAFFIC_TEXTS = 100
SHIFT_P_VALUE = 0.01  # below this, the traffic is reported as unlike the certifying texts
PREMISE = ("a promise holds for texts drawn like the certifying texts; texts unlike them (new phrasings, another "
           "source, texts that are not siblings of the training file's) may do worse. Check it on your recent "
           "unlabelled traffic (`cascade calibrate --traffic FILE`, `Calibrator.observe_traffic`), and watch it with "
           "labelled feedback (`cascade monitor`, the server's POST /v1/feedback)")


def _fit_part(texts: Sequence[str]) -> np.ndarray:
    """A mask of the texts that fit the score (about FIT_FRACTION of them, by a salted text hash: unsalted,
    it would follow the hash order that carved the validation split out of the training data)."""
    def draw(text: str) -> float:
        return int(hashlib.sha256(b"cascade-fit-split:" + text.encode("utf-8", "replace")).hexdigest()[:8], 16) / 16**8

    return np.array([draw(t) < FIT_FRACTION for t in texts], dtype=bool)


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


@dataclass
class Calibrator:
    """Fits calibrated scores on labelled held-out texts and chooses thresholds with stated guarantees.

    Call :meth:`calibrate` with texts the bundle's build never saw; :meth:`choose` then returns a
    :class:`ThresholdChoice` that says whether a target can be promised (a lower confidence bound on the
    certifying part, over a fixed test sequence), :meth:`apply` sets it on the model, :meth:`save` writes it
    into the bundle, and :meth:`report` says what was measured.

    Parameters
    ----------
    model : Cascade
        The loaded bundle to calibrate.
    measures : tuple of str
        Confidence measures to compare (the one with the lower AURC is kept); a tagger's default are its
        set measures.
    label_sep : str, optional
        A tagger's label cells hold topics joined by this; default: the bundle's.

    Attributes
    ----------
    temperatures_ : dict
        Each stage's fitted temperature.
    measure_ : str
        The confidence measure kept.
    ece_, aurc_ : dict
        Expected calibration error before and after, and each measure's area under the risk-coverage curve.
    n_fit_, n_certify_, n_duplicates_ : int
        Texts fitted on, certifying, and dropped as duplicates.
    choice_ : ThresholdChoice or None
        The last choice made.
    """

    model: Cascade
    measures: tuple[str, ...] = DEFAULT_MEASURES  # a multi-label bundle's default: SET_MEASURES
    label_sep: str | None = None  # multi-label: the topics of a label cell are joined by this (None: the bundle's)
    temperatures_: dict[str, float] = field(default_factory=dict)
    measure_: str = ""
    ece_: dict[str, dict[str, float]] = field(default_factory=dict)
    aurc_: dict[str, float] = field(default_factory=dict)
    costs_ms_: dict[str, float] = field(default_factory=dict)
    n_fit_: int = 0
    n_certify_: int = 0
    n_duplicates_: int = 0
    warnings_: list[str] = field(default_factory=list)
    choice_: ThresholdChoice | None = None
    traffic_: dict[str, Any] = field(default_factory=dict)  # what observe_traffic saw (empty: no traffic)
    _traffic_p: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (cheap_p, fallen answer)
    _fit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)  # the fit part's mask
    _scored: Scored | None = field(default=None, repr=False)

    def calibrate(self, texts: Sequence[str], labels: Sequence[str], *, progress: bool = True) -> Calibrator:
        """Score the calibration texts with both stages, fit temperatures, pick the measure, draw the curve.
        For a multi-label bundle each label cell holds topics joined by ``label_sep``. ``progress``: a bar
        while the neural stage scores many texts (log lines outside a terminal)."""
        texts, _ = as_text_list(texts)
        labels = _check_label_values(labels)
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        multi = self.model.multi_label
        if multi and self.measures == DEFAULT_MEASURES:
            self.measures = SET_MEASURES
        allowed = SET_MEASURES if multi else MEASURES
        unknown = [m for m in self.measures if m not in allowed]
        if unknown:
            raise ValueError(f"unknown confidence measures {unknown}; use some of {allowed}")
        self.warnings_ = []
        texts, labels = self._deduplicate(texts, labels)
        y, missed = self._check_topics(labels) if multi else (self._check_labels(labels), None)
        self._check_overlap(texts)

        cheap_logits = self.model.cheap.logits(texts)
        neural_logits = map_with_progress(self.model.neural.logits, texts, desc="neural stage", progress=progress)
        self.costs_ms_ = self._time_stages(texts)

        fit = _fit_part(texts)
        if fit.all() or not fit.any():
            raise ValueError(f"need more calibration texts: {len(texts)} cannot be split into fit and certify parts")
        known = np.ones(len(texts), dtype=bool) if multi else y >= 0
        if not (fit & known).any() or not (~fit & known).any():
            raise ValueError(
                f"too few calibration texts with the bundle's labels ({int(known.sum())} of {len(texts)}): both the "
                f"fit part (about {FIT_FRACTION:.0%}) and the certify part need some; give more labelled texts"
            )
        self.n_fit_, self.n_certify_ = int(fit.sum()), int((~fit).sum())
        scored = (score_tagging(self.model, cheap_logits, neural_logits, y, fit, missed) if multi
                  else score_single(self.model, cheap_logits, neural_logits, y, fit))
        self.temperatures_, self.ece_ = scored.temperatures, scored.ece
        self.aurc_ = {m: aurc(routing_confidence(scored.cheap_p[fit], m, None, scored.decisions), scored.cheap_ok[fit])
                      for m in self.measures}
        self.measure_ = min(self.measures, key=lambda m: self.aurc_[m])
        self._fit, self._scored = fit, scored
        self._policies = {False: self._make_policy(())}
        self.choice_ = None
        self._traffic_p, self.traffic_ = None, {}
        log.info("calibrated on %d texts (%d fit, %d certify): temperatures %s, measure %s (AURC %s)",
                 len(texts), self.n_fit_, self.n_certify_, self.temperatures_, self.measure_, self.aurc_)
        return self

    def observe_traffic(self, texts: Sequence[str], *, progress: bool = True) -> Calibrator:
        """Score recent unlabelled texts (what users send now) with both stages, so that :meth:`choose`
        promises a target only where the traffic supports it too (see :mod:`cascade.calibration.traffic`), and
        test whether the traffic looks like the certifying texts. Call after :meth:`calibrate`."""
        self._require_fitted()
        texts, _ = as_text_list(texts)
        given = len(texts)
        texts = list(dict.fromkeys(texts))  # a text sent twice is one draw, as for the certifying texts
        if len(texts) < MIN_TRAFFIC_TEXTS:
            raise ValueError(f"{len(texts)} distinct traffic texts: give at least {MIN_TRAFFIC_TEXTS} (a few thousand "
                             "make the estimate's bound tight)")
        cheap_logits = self.model.cheap.logits(texts)
        neural_logits = map_with_progress(self.model.neural.logits, texts, desc="neural stage (traffic)",
                                          progress=progress)
        self._traffic_p = calibrated_answers(self.model, cheap_logits, neural_logits, self.temperatures_)
        sc = self._require_scored()
        route = routing_confidence(self._traffic_p[0], self.measure_, None, sc.decisions)
        shift = shift_test(self._policy(False).conf, route)
        self.traffic_ = {"n_texts": len(texts), "duplicates_dropped": given - len(texts), "shift": shift,
                         "method": "average thresholded confidence (Garg et "
                         "al., ICLR 2022) on the confidence in the final answer; shift: two-sample Kolmogorov-Smirnov "
                         "test of the routing confidence, certifying texts against traffic"}
        if shift["p_value"] < SHIFT_P_VALUE:
            self._warn(f"the traffic does not look like the certifying texts: its routing confidence averages "
                       f"{shift['traffic_mean_confidence']:.3f} against {shift['certify_mean_confidence']:.3f} "
                       f"(Kolmogorov-Smirnov p = {shift['p_value']:.2g}); promises are held to what the traffic "
                       "supports")
        self.choice_ = None
        return self

    def _answer_confidence(self, policy: Policy, score: str = "negentropy"
                           ) -> tuple[AnswerConfidence, AnswerConfidence | None]:
        """The confidence in each answer of the certify part and of the traffic (None without traffic), as
        ``policy`` routes them (``score``: see :func:`cascade.calibration.traffic.answer_confidence`)."""
        sc, fit = self._require_scored(), self._fit
        certify = answer_confidence(sc.cheap_p[~fit], sc.neural_p[~fit], policy.conf, sc.decisions, score)
        if self._traffic_p is None:
            return certify, None
        idx = np.array([self.model.labels.index(c) for c in policy.always_neural], dtype=np.int64)
        cheap_p, fallen = self._traffic_p
        route = routing_confidence(cheap_p, self.measure_, idx, sc.decisions)
        return certify, answer_confidence(cheap_p, fallen, route, sc.decisions, score)

    def _outcome(self, policy: Policy, threshold: float, f1: bool) -> np.ndarray:
        """Each certifying text's score at ``threshold``: right or wrong, or (``f1``) its F1."""
        mask = fall_through(policy.conf, threshold)
        if f1 and policy.f1 is not None:
            return np.where(mask, policy.f1[1], policy.f1[0])
        return np.where(mask, policy.neural_ok, policy.cheap_ok).astype(np.float64)

    def _traffic_checker(self, policy: Policy, level: float, f1: bool) -> TrafficChecker | None:
        certify, traffic = self._answer_confidence(policy)
        if traffic is None:
            return None

        def at(threshold: float) -> Any:
            return check(certify, self._outcome(policy, threshold, f1), traffic, threshold, level)

        return at

    def traffic_estimate(self, threshold: float, *, figure: str = "accuracy", per_class: bool = False,
                         confidence: float = 0.95) -> Any:
        """What the traffic (:meth:`observe_traffic`) says of routing at ``threshold``: the ATC estimate of
        ``figure`` (``accuracy``, a tagger's exact match; ``mean_text_f1``) and its lower bound at
        ``confidence`` (a :class:`cascade.calibration.traffic.TrafficCheck`)."""
        if self._traffic_p is None:
            raise ValueError("call observe_traffic(texts) first")
        policy = self._policy(per_class)
        checker = self._traffic_checker(policy, confidence, figure == "mean_text_f1")
        if checker is None:
            raise ValueError("call observe_traffic(texts) first")
        return checker(float(threshold))

    def reference(self, choice: ThresholdChoice | None = None) -> dict[str, Any]:
        """What a server needs to estimate, on its own traffic, the figure promised at ``choice``'s threshold
        (the ATC cut on the certifying texts' confidence in their final answers), and the promise itself."""
        choice = self._resolve(choice)
        policy = self._policy(bool(choice.always_neural))
        f1 = choice.mode == "target_f1"
        certify, _ = self._answer_confidence(policy)
        outcome = self._outcome(policy, choice.threshold, f1)
        promised = choice.request.get(choice.mode) if choice.certified else None
        return {"threshold": choice.threshold, "atc_cut": atc_cut(certify.at(choice.threshold), outcome),
                "certify_figure": float(outcome.mean()), "figure": "mean_text_f1" if f1 else
                ("exact_match" if self.model.multi_label else "accuracy"), "promised": promised,
                "score": "set_prob" if self.model.multi_label else "negentropy"}

    TIMING_TEXTS = 256
    TIMING_REPEATS = 5

    def _time_stages(self, texts: list[str]) -> dict[str, float]:
        """Milliseconds per text of each stage, warm (the stages have just scored these texts): see
        :func:`cascade.stages.timing.ms_per_text`. Machine and threads are in :meth:`report`."""
        return ms_per_text({"cheap": self.model.cheap.logits, "neural": self.model.neural.logits}, texts,
                           self.TIMING_TEXTS, self.TIMING_REPEATS)

    # -- guard rails --

    def _warn(self, message: str) -> None:
        self.warnings_.append(message)
        warnings.warn(message, CalibrationWarning, stacklevel=3)

    def _deduplicate(self, texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
        """Keep the first text of each :func:`cascade.text.dedup_key` (exact and near duplicates alike):
        a text counted twice would make a promise look surer than the data allows."""
        seen: set[str] = set()
        keep = []
        for i, text in enumerate(texts):
            key = dedup_key(text)
            if key not in seen:
                seen.add(key)
                keep.append(i)
        self.n_duplicates_ = len(texts) - len(keep)
        if self.n_duplicates_:
            self._warn(f"{self.n_duplicates_} of {len(texts)} calibration texts repeat an earlier one (exactly, or "
                       "but for case, spacing or punctuation) and were dropped: a duplicate must not count twice "
                       "in a promise")
        return [texts[i] for i in keep], [labels[i] for i in keep]

    def _check_labels(self, labels: list[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.model.labels)}
        unknown = sorted(set(labels) - set(index))
        if len(unknown) == len(set(labels)):
            raise ValueError(
                f"none of the calibration labels is a label of this bundle (the texts have e.g. {unknown[:3]}, "
                f"the bundle e.g. {self.model.labels[:3]}): pass the right label column or the right bundle"
            )
        if unknown:
            self._warn(
                f"{sum(label in unknown for label in labels)} calibration texts have labels the bundle does not "
                f"know (e.g. {unknown[:3]}); they count as errors of both stages. Is this the right bundle?"
            )
        absent = set(index) - set(labels)
        if len(absent) > len(index) // 2:
            self._warn(f"the calibration texts cover only {len(index) - len(absent)} of the bundle's "
                       f"{len(index)} labels; its figures describe that subset")
        return np.array([index.get(label, -1) for label in labels], dtype=np.int64)

    def _check_topics(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """A multi-label bundle's 0/1 topic matrix of the label cells (topics joined by ``label_sep``), and
        each text's count of topics the bundle does not know (missed by every stage, with a warning)."""
        y, unknown = label_matrix_with_unknown(labels, self.model.labels, self.label_sep or self.model.label_sep)
        if unknown.shape[1] and not y.any():
            raise ValueError(f"none of the calibration topics is a topic of this bundle (the bundle has e.g. "
                             f"{self.model.labels[:3]}): pass the right label column, --label-sep or bundle")
        if unknown.shape[1]:
            self._warn(f"{int(unknown.any(axis=1).sum())} calibration texts carry {unknown.shape[1]} topic(s) the "
                       "bundle does not know; they count as topics missed by both stages. Is this the right bundle?")
        absent = int((y.sum(axis=0) == 0).sum())
        if absent > len(self.model.labels) // 2:
            self._warn(f"the calibration texts cover only {len(self.model.labels) - absent} of the bundle's "
                       f"{len(self.model.labels)} topics; its figures describe that subset")
        return y, unknown.sum(axis=1)

    def _check_overlap(self, texts: list[str]) -> None:
        seen = self.model.bundle.train_hashes() if self.model.bundle is not None else None
        if seen is None:
            log.info("the bundle records no training-text hashes; overlap with training data not checked")
            return
        overlap = sum(t in seen for t in texts)
        if overlap:
            self._warn(f"{overlap} of {len(texts)} calibration texts ({overlap / len(texts):.1%}) are training "
                       "texts of this bundle (or differ from one only in case, spacing or punctuation); the "
                       "figures promised will be optimistic: use held-out data")
        chose = sum(seen.chose(t) for t in texts)
        if chose:
            self._warn(f"{chose} of {len(texts)} calibration texts ({chose / len(texts):.1%}) are selection texts "
                       "of this bundle: they chose its threshold and settings, so promises certified on them are "
                       "optimistic; certify on texts the build never saw (its certification split: `cascade "
                       "calibrate --data` with the file it was built from, or `load_banking77('certification')`)")

    # -- the curve and the choices --

    def _require_fitted(self) -> None:
        if not self.measure_:
            raise RuntimeError("call calibrate(texts, labels) first")

    def _require_scored(self) -> Scored:
        if self._scored is None:
            raise RuntimeError("call calibrate(texts, labels) first")
        return self._scored

    @property
    def curve(self) -> Curve:
        """Every distinct routing of the certify part, with its expected figures."""
        return self.curve_for(per_class=False)

    def curve_for(self, per_class: bool) -> Curve:
        """The curve with (``per_class=True``) or without the always-neural classes of per-class calibration."""
        return self._policy(per_class).curve

    def _make_policy(self, always_neural: tuple[str, ...]) -> Policy:
        fit, sc = self._fit, self._require_scored()
        idx = np.array([self.model.labels.index(c) for c in always_neural], dtype=np.int64)
        conf = routing_confidence(sc.cheap_p, self.measure_, idx, sc.decisions)
        f1 = (sc.cheap_f1[~fit], sc.neural_f1[~fit]) if sc.cheap_f1 is not None and sc.neural_f1 is not None else None
        return Policy(conf[~fit], sc.cheap_ok[~fit], sc.neural_ok[~fit],
                       (conf[fit], sc.cheap_ok[fit], sc.neural_ok[fit]), self.costs_ms_, always_neural, f1)

    def _policy(self, per_class: bool) -> Policy:
        self._require_fitted()
        if per_class not in self._policies:
            self._policies[per_class] = self._make_policy(self.flag_classes())
        return self._policies[per_class]

    def flag_classes(self, alpha: float = 0.05) -> tuple[str, ...]:
        """Classes whose cheap-stage answers are much less often right than the rest, on the fit part:
        among fit texts the cheap stage assigns to the class, an exact one-sided binomial test against its
        overall fit accuracy, Bonferroni-corrected over the classes it assigned. Per-class calibration
        sends these classes' texts to the neural stage whatever their confidence."""
        # lazy: scipy loads only when this runs, so `import cascade` stays light
        from scipy.stats import binom

        self._require_fitted()
        if self.model.multi_label:
            raise ValueError("per-class calibration is for single-label bundles")
        fit, sc = self._fit, self._require_scored()
        pred, ok = sc.cheap_p[fit].argmax(1), sc.cheap_ok[fit]
        overall = float(ok.mean())
        classes = np.unique(pred)
        flagged = [self.model.labels[c] for c in classes
                   if binom.cdf(int(ok[pred == c].sum()), int((pred == c).sum()), overall) < alpha / len(classes)]
        return tuple(flagged)

    def choose(self, *, target_accuracy: float | None = None, confidence: float = 0.95,
               fallthrough: float | None = None, latency_ms: float | None = None,
               match_neural: float | None = None, per_class: bool = False,
               target_f1: float | None = None) -> ThresholdChoice:
        """Choose a threshold by exactly one rule (see the module docstring).

        Parameters
        ----------
        target_accuracy : float, optional
            Promise at least this accuracy (in (0, 1): 0.93 for 93%), at ``confidence``.
        confidence : float, default 0.95
            The confidence of a promise.
        fallthrough : float, optional
            Send at most this share of texts to the neural stage.
        latency_ms : float, optional
            Cost at most this many milliseconds per text, as timed at calibration.
        match_neural : float, optional
            Agree with the neural stage alone on at least this share of texts.
        per_class : bool, default False
            First send the classes :meth:`flag_classes` finds to the neural stage whatever their confidence.
        target_f1 : float, optional
            A tagger: promise a mean per-text F1 of at least this.

        Returns
        -------
        ThresholdChoice
            ``certified`` says whether the promise holds at ``confidence``; when not, ``reason`` says why and what
            would help, and the threshold is the closest choice.
        """
        mode, value = check_request(target_accuracy=target_accuracy, target_f1=target_f1, fallthrough=fallthrough,
                                    latency_ms=latency_ms, match_neural=match_neural, confidence=confidence)
        policy = self._policy(per_class)
        curve = policy.curve
        _, level = target_sequences(policy, confidence)
        if mode == "target_accuracy":
            choice = by_target(policy, self.measure_, value, confidence, self._traffic_checker(policy, level, False))
        elif mode == "target_f1":
            choice = by_target_f1(policy, self.measure_, value, confidence, self._traffic_checker(policy, level, True))
        elif mode == "fallthrough":
            choice = by_curve(policy, self.measure_, mode, value, curve.fall_through_rate <= value + 1e-12, confidence,
                                    f"no threshold sends at most {value:.1%} of texts to the neural stage")
        elif mode == "latency_ms":
            choice = by_curve(
                policy, self.measure_, mode, value, curve.ms_per_text <= value, confidence,
                f"even the cheapest routing costs {curve.ms_per_text[0]:.3f} ms per text here, over "
                f"the {value} ms budget",
            )
        else:
            neural_acc = float(np.mean(policy.neural_ok))
            choice = by_curve(policy, self.measure_, mode, value, curve.accuracy >= neural_acc - value / 100 - 1e-12,
                                    confidence, "no threshold comes that close to the neural stage")
        choice = self._with_traffic_figures(choice, policy, level)
        self.choice_ = choice
        if not choice.feasible:
            self._warn(choice.reason)
        return choice

    def _with_traffic_figures(self, choice: ThresholdChoice, policy: Policy, level: float) -> ThresholdChoice:
        """The traffic's estimate at the chosen threshold for every rule (a target rule has it already), and,
        for a bundle that abstains, the share of the traffic its "none of these" cut would reject."""

        checker = self._traffic_checker(policy, level, choice.mode == "target_f1")
        if checker is None:
            return choice
        traffic = dict(choice.expected.get("traffic") or checker(choice.threshold).to_dict())
        cut = self.abstain_cut(choice)
        if cut is not None:
            _, answers = self._answer_confidence(policy, "max_prob")  # what the cut reads
            if answers is not None:
                share = self.model.bundle.manifest["abstain"]["max_rejected_share"] if self.model.bundle else None
                traffic["abstain"] = {"asked_rejected_share": share,
                                      "traffic_rejected_share": float((answers.at(choice.threshold) < cut).mean()),
                                      "note": "the traffic's share includes texts that fit no label; the asked share "
                                              "is of texts that fit one"}
        return replace(choice, expected={**choice.expected, "traffic": traffic})

    # -- output --

    def report(self) -> dict[str, Any]:
        """What was fitted and measured, for the manifest and for people."""
        self._require_fitted()
        return {
            "measure": self.measure_,
            "cheap_temperature": self.temperatures_["cheap"],
            "neural_temperature": self.temperatures_["neural"],
            "ece": self.ece_,
            "aurc": self.aurc_,
            "costs_ms_per_text": self.costs_ms_,
            "costs_measured": f"warm, median of {self.TIMING_REPEATS} runs over up to {self.TIMING_TEXTS} calibration "
                              "texts, in batches, on the machine and threads below",
            "neural_threads": self.model.neural.threads,
            "machine": machine_description(),
            "n_fit": self.n_fit_,
            "n_certify": self.n_certify_,
            "n_duplicates_dropped": self.n_duplicates_,
            "method": "temperatures and measure fitted on a 30% hash split; choices certified on the rest",
            "premise": PREMISE,
            "traffic": self.traffic_ or None,
            "warnings": list(self.warnings_),
        }

    def abstain_cut(self, choice: ThresholdChoice) -> float | None:
        """The "none of these" cut re-chosen for the calibrated scores (the same share of in-scope
        texts rejected as the bundle asked for), or None if the bundle does not abstain. Its
        old cut was on the uncalibrated scale and would reject a different share."""
        bundle = self.model.bundle
        share = bundle.manifest.get("abstain", {}).get("max_rejected_share") if bundle is not None else None
        if share is None:
            return None
        sc = self._require_scored()
        idx = np.array([self.model.labels.index(c) for c in choice.always_neural], dtype=np.int64)
        scores = StageScores(sc.cheap_p, sc.neural_p, sc.y)  # neural_p is already the mixed answer
        final, _ = scores.cascade_probabilities(choice.threshold, self.measure_, idx)
        return abstain_cut(final, float(share))

    def apply(self, choice: ThresholdChoice | None = None) -> None:
        """Make the model in memory route with the calibrated scores and the chosen threshold."""
        choice = self._resolve(choice)
        self.model.cheap.temperature = self.temperatures_["cheap"]
        self.model.neural.temperature = self.temperatures_["neural"]
        self.model.measure = self.measure_
        self.model.always_neural = choice.always_neural
        self.model.threshold = choice.threshold
        decisions = self._require_scored().decisions
        if decisions is not None:
            self.model.decisions = decisions
        cut = self.abstain_cut(choice)
        if cut is not None:
            self.model.abstain_below = cut

    def save(self, path: str | Path | None = None, choice: ThresholdChoice | None = None, *,
             allow_uncertified: bool = False) -> Bundle:
        """Write the calibration and the chosen threshold into the bundle (or a copy at ``path``),
        atomically, and apply them to the model in memory. A target-accuracy choice that could not be
        certified is not written unless ``allow_uncertified``: a deployed bundle must not carry a promise
        nobody made."""
        choice = self._resolve(choice)
        if choice.mode in ("target_accuracy", "target_f1") and not choice.feasible and not allow_uncertified:
            raise CascadeError(f"not saved: {choice.reason}. Pass allow_uncertified=True (--allow-uncertified) to "
                               "write this uncertified threshold anyway")
        bundle = self.model.bundle
        if bundle is None:
            raise ValueError("this model was not loaded from a bundle; nothing to save into")
        manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
        manifest["threshold"] = choice.threshold
        manifest["calibration"] = {**self.report(), "always_neural": list(choice.always_neural),
                                   "choice": choice.to_dict(), "reference": self.reference(choice)}
        asked = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in choice.request.items())
        manifest["threshold_rule"] = f"cascade calibrate: {asked}"
        manifest["confidence"] = MEASURE_NAMES[self.measure_]
        # earlier figures keep the threshold they were measured at; these are the calibrated threshold's
        manifest["metrics"] = {**manifest.get("metrics", {}),
                               "calibration": {"threshold": choice.threshold, "measure": self.measure_,
                                               **choice.expected}}
        decisions = self._require_scored().decisions
        if decisions is not None:  # the cut-offs, moved to the calibrated scale
            manifest["decisions"] = {**manifest["decisions"], **decisions.to_dict({}),
                                     "moved_by": "cascade calibrate (the same sets, on the calibrated probabilities)"}
        cut = self.abstain_cut(choice)
        if cut is not None:
            manifest["abstain"] = {**manifest["abstain"], "below": cut,
                                   "rule": "re-chosen by cascade calibrate on the calibrated scores, same share"}
        files = {name: bundle.file(name) for name in bundle.manifest["files"]}
        saved = write_bundle(path if path is not None else bundle.path, files, manifest,
                             expected=bundle.expected_hashes())
        self.apply(choice)
        if path is None:
            self.model.bundle = saved
        return saved

    def _resolve(self, choice: ThresholdChoice | None) -> ThresholdChoice:
        self._require_fitted()
        choice = choice or self.choice_
        if choice is None:
            raise ValueError("choose(...) a threshold first, or pass a choice")
        return choice

    def plot(self, path: str | Path | None = None, choice: ThresholdChoice | None = None) -> Any:
        """The trade-off curve (accuracy against fall-through rate and against ms per text), the chosen
        point marked: saved at ``path`` (returned; ``.png`` added to a name without a suffix), or returned
        as a matplotlib Figure (shown inline in a notebook). Needs matplotlib (``pip install 'cascade-text[plot]'``)."""
        return draw(self, path, choice or self.choice_)


def calibrate(model: Cascade, texts: Sequence[str], labels: Sequence[str], **options: Any) -> Calibrator:
    """Calibrate ``model`` on labelled texts its build never saw: ``Calibrator(model, **options).calibrate(...)``.

    Parameters
    ----------
    model : Cascade
        A loaded bundle.
    texts, labels : sequence of str
        Its certification split, or other held-out labelled texts like the ones users will send.
    **options
        Options of :class:`Calibrator`.

    Returns
    -------
    Calibrator
        Fitted: ``choose(target_accuracy=...)`` returns a :class:`ThresholdChoice` that says whether the
        target can be promised, ``apply`` sets it, ``report()`` says what was measured.

    Examples
    --------
    >>> import cascade
    >>> model = cascade.load(threads=1)
    >>> held = cascade.load_banking77("certification")
    >>> cal = cascade.calibrate(model, held.texts, held.labels)
    >>> choice = cal.choose(target_accuracy=0.90)
    >>> choice.certified, 0.0 <= choice.threshold <= 1.0
    (True, True)
    """
    return Calibrator(model, **options).calibrate(texts, labels)
