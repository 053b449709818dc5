"""cascade: fast, cheap text classification.

A TF-IDF + logistic regression stage answers the texts it is sure about in microseconds; the rest fall
through to an INT8 transformer run by onnxruntime. ``cascade.classify(texts)`` uses the shipped
BANKING77 bundle; ``cascade.load(path)`` any other.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, overload

from .batch import BatchReport, batch
from .bundle import Bundle, read_bundle
from .calibration import CalibrationWarning, Calibrator, ThresholdChoice, calibrate
from .datasets import TextDataset, load_banking77, read_csv, stratified_split
from .distillation import distill, pseudo_label
from .errors import BundleError, CascadeError
from .evaluation import coverage_at_accuracy, evaluate, risk_coverage, score_stages
from .limits import Limits
from .router import Cascade, Prediction
from .splits import Splits, carve_splits

if TYPE_CHECKING:
    from .integrations.sklearn import CascadeClassifier
    from .training.cheap import CheapConfig

__version__ = "0.1.0"
__all__ = [
    "BatchReport", "Bundle", "BundleError", "CalibrationWarning", "Calibrator", "Cascade", "CascadeClassifier", "CascadeError", "Limits", "Prediction",
    "Splits", "TextDataset", "carve_splits", "ThresholdChoice", "batch", "calibrate", "classify", "coverage_at_accuracy", "distill", "evaluate",
    "pseudo_label", "risk_coverage", "score_stages", "stratified_split",
    "load", "load_banking77", "read_bundle", "read_csv", "train", "train_cheap", "finetune",
]


def __getattr__(name: str) -> Any:
    # scikit-learn loads only when the estimator is asked for: `import cascade` stays light.
    if name == "CascadeClassifier":
        from .integrations.sklearn import CascadeClassifier

        return CascadeClassifier
    raise AttributeError(f"module 'cascade' has no attribute {name!r}")


load = Cascade.load  # cascade.load(path=None, *, threads=..., digest=..., limits=...): the real signature in help()


_default_model: Cascade | None = None
_default_lock = threading.Lock()


def _default() -> Cascade:
    """The shipped bundle, loaded once even when many threads ask for it at the same moment."""
    global _default_model
    if _default_model is None:
        with _default_lock:
            if _default_model is None:
                _default_model = Cascade.load()
    return _default_model


@overload
def classify(  # type: ignore[overload-overlap]  # a str is one text, though it is also an iterable of str
        texts: str, *, threshold: float | None = ..., top_k: int | None = ...,
        progress: bool = ...) -> Prediction: ...
@overload
def classify(texts: Iterable[str], *, threshold: float | None = ..., top_k: int | None = ...,
             progress: bool = ...) -> list[Prediction]: ...


def classify(texts: Any, *, threshold: float | None = None, top_k: int | None = 1, progress: bool = True) -> Any:
    """Classify with the shipped bundle (loaded once, then cached). See :meth:`Cascade.classify`."""
    return _default().classify(texts, threshold=threshold, top_k=top_k, progress=progress)


def train_cheap(data: TextDataset, selection: TextDataset | None, out: str | Path, *,
                base: str | Path | None = None, config: "CheapConfig | None" = None, progress: bool = True,
                selection_share: float = 0.1, certification_share: float = 0.1, label_sep: str | None = None) -> Bundle:
    """Retrain the cheap stage and write a bundle keeping ``base``'s neural stage (see ``cascade.training``).
    ``selection`` None: ``data`` is carved into train / selection / certification (:func:`carve_splits`,
    with these shares); ``label_sep``: ``base`` is multi-label, label cells hold topics joined by it."""
    from .training.build import train_cheap as _train_cheap

    return _train_cheap(data, selection, out, base=base, config=config, progress=progress,
                        selection_share=selection_share, certification_share=certification_share, label_sep=label_sep)


def train(data: TextDataset, selection: TextDataset | None, out: str | Path, *,
          encoder_from: str | Path | None = None, progress: bool = True, **config: Any) -> Bundle:
    """Build a whole bundle on any label set without torch: the cheap stage and a head on the shipped
    frozen encoder (see ``cascade.training.train``; ``config``: fields of its ``TrainConfig``, e.g.
    ``abstain=0.05``). ``selection`` None: ``data`` is carved into train / selection / certification
    (:func:`carve_splits`), the last left untouched for :func:`calibrate`."""
    from .training.train import TrainConfig, train_bundle

    return train_bundle(data, selection, out, encoder_from=encoder_from, config=TrainConfig(**config),
                        progress=progress)


def finetune(data: TextDataset, selection: TextDataset | None, labels: list[str] | None, out: str | Path, *,
             work_dir: str | Path, **options: Any) -> Bundle:
    """Fine-tune the transformer and build a whole bundle (needs ``pip install 'cascade-text[train]'``);
    ``selection`` None: ``data`` is carved three ways, as for :func:`train`; ``labels`` None: the training
    texts'; ``label_sep="|"`` builds a tagger (options: see :func:`cascade.training.build.finetune_bundle`)."""
    from .training.build import finetune_bundle

    return finetune_bundle(data, selection, labels, out, work_dir=work_dir, **options)
