"""The cascade: every text is scored by the cheap stage; the unsure ones go to the neural stage.

Stages only return probabilities. :func:`fall_through` is the one place the threshold is applied:
a text whose cheap-stage confidence is below the threshold is answered by the neural stage, and those
texts are sent to it together, in length-sorted batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, overload

import numpy as np

from .bundle import Bundle, default_bundle_path, read_bundle
from .errors import BundleError
from .inputs import as_text_list
from .stages.cheap import CheapStage
from .stages.neural import DEFAULT_PROVIDERS, NeuralStage

log = logging.getLogger(__name__)

Stage = Literal["cheap", "neural"]


@dataclass(frozen=True)
class Prediction:
    """One answer: the label, its probability, which stage gave it, and the top-k (label, probability)."""

    label: str
    score: float
    stage: Stage
    top_k: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "score": self.score, "stage": self.stage}
        if len(self.top_k) > 1:
            out["top_k"] = [{"label": label, "score": score} for label, score in self.top_k]
        return out


MEASURES = ("max_prob", "margin")


def confidence(probs: np.ndarray, measure: str = "max_prob") -> np.ndarray:
    """The cheap stage's confidence in its answer: its largest class probability (``max_prob``) or
    the largest minus the second largest (``margin``)."""
    if measure == "max_prob":
        return probs.max(axis=-1)
    if measure == "margin":
        top2 = np.partition(probs, -2, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    raise ValueError(f"unknown confidence measure {measure!r}; use one of {MEASURES}")


def routing_confidence(probs: np.ndarray, measure: str = "max_prob",
                       always_neural: np.ndarray | None = None) -> np.ndarray:
    """The confidence the threshold is compared with: :func:`confidence`, except that texts the cheap
    stage assigns to a class in ``always_neural`` (class indices, set by per-class calibration) get -1,
    below every threshold."""
    conf = confidence(probs, measure)
    if always_neural is not None and len(always_neural):
        conf = np.where(np.isin(probs.argmax(axis=-1), always_neural), -1.0, conf)
    return conf


def fall_through(conf: np.ndarray, threshold: float) -> np.ndarray:
    """True where a text goes to the neural stage: its confidence is below the threshold."""
    return conf < threshold


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    return float(threshold)


class Cascade:
    """A cheap stage and a neural stage behind one confidence threshold."""

    def __init__(self, cheap: CheapStage, neural: NeuralStage, labels: Sequence[str], threshold: float,
                 bundle: Bundle | None = None, measure: str = "max_prob",
                 always_neural: Sequence[str] = ()) -> None:
        if not (cheap.n_classes == neural.n_classes == len(labels)):
            raise BundleError(
                f"stage sizes disagree: cheap has {cheap.n_classes} classes, neural {neural.n_classes}, "
                f"labels {len(labels)}"
            )
        self.cheap = cheap
        self.neural = neural
        self.labels = list(labels)
        self.threshold = check_threshold(threshold)
        if measure not in MEASURES:
            raise BundleError(f"unknown confidence measure {measure!r}; expected one of {MEASURES}")
        self.measure = measure
        self.bundle = bundle
        self.always_neural = tuple(always_neural)

    @classmethod
    def load(cls, path: str | Path | None = None, *, threads: int | None = None, batch_size: int = 32,
             providers: Sequence[str] = DEFAULT_PROVIDERS, verify: bool = True) -> "Cascade":
        """Load a bundle folder (default: the shipped one), checking every file's hash."""
        if path is None and not default_bundle_path().is_dir():
            raise BundleError(
                f"the default bundle was not found at {default_bundle_path()}: it ships in the repository's "
                "artifacts/ folder (install with `pip install -e .` from a clone), or set CASCADE_BUNDLE "
                "or pass the path of a bundle"
            )
        bundle = read_bundle(path if path is not None else default_bundle_path(), verify=verify)
        cheap = CheapStage.load(bundle.path)
        neural = NeuralStage(
            bundle.file(NeuralStage.ONNX_FILE), bundle.file(NeuralStage.TOKENIZER_FILE),
            int(bundle.manifest["neural"]["max_length"]),
            threads=threads, batch_size=batch_size, providers=providers,
        )
        calibration = bundle.manifest.get("calibration", {})
        cheap.temperature = float(calibration.get("cheap_temperature", 1.0))
        neural.temperature = float(calibration.get("neural_temperature", 1.0))
        return cls(cheap, neural, bundle.labels, bundle.threshold, bundle,
                   measure=calibration.get("measure", "max_prob"),
                   always_neural=calibration.get("always_neural", ()))

    @property
    def always_neural(self) -> tuple[str, ...]:
        """Labels whose cheap-stage answers always fall through (set by per-class calibration)."""
        return tuple(self.labels[i] for i in self._always_neural_idx)

    @property
    def always_neural_idx(self) -> np.ndarray:
        """Class indices of :attr:`always_neural`."""
        return self._always_neural_idx

    @always_neural.setter
    def always_neural(self, labels: Sequence[str]) -> None:
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise BundleError(f"always_neural names labels the bundle does not have: {unknown[:5]}")
        self._always_neural_idx = np.array([self.labels.index(label) for label in labels], dtype=np.int64)

    def route(self, texts: list[str], threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Final probabilities (one row per text) and a mask of the texts the neural stage answered."""
        t = self.threshold if threshold is None else check_threshold(threshold)
        probs = self.cheap.predict_proba(texts)
        to_neural = fall_through(routing_confidence(probs, self.measure, self._always_neural_idx), t)
        if to_neural.any():
            idx = np.flatnonzero(to_neural)
            probs[idx] = self.neural.predict_proba([texts[i] for i in idx])
        return probs, to_neural

    @overload
    def classify(self, texts: str, *, threshold: float | None = ..., top_k: int = ...) -> Prediction: ...
    @overload
    def classify(self, texts: Sequence[str], *, threshold: float | None = ..., top_k: int = ...) -> list[Prediction]: ...

    def classify(self, texts: Any, *, threshold: float | None = None, top_k: int = 1) -> Any:
        """Classify a text (returns a Prediction) or a list of texts (a list, in the same order).

        ``threshold`` overrides the bundle's for this call; ``top_k`` asks for the k most likely labels.
        """
        items, single = as_text_list(texts)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(self.labels):
            raise ValueError(f"top_k must be an integer from 1 to {len(self.labels)}, got {top_k!r}")
        if not items:
            return []
        probs, to_neural = self.route(items, threshold)
        if top_k == 1:
            best = probs.argmax(axis=1)[:, None]
        else:
            best = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        predictions = [
            Prediction(
                label=self.labels[row[0]],
                score=float(p[row[0]]),
                stage="neural" if neural else "cheap",
                top_k=tuple((self.labels[j], float(p[j])) for j in row),
            )
            for p, row, neural in zip(probs, best, to_neural)
        ]
        return predictions[0] if single else predictions
