"""cascade: fast, cheap text classification.

A TF-IDF + logistic regression stage answers the texts it is sure about in microseconds; the rest fall
through to an INT8 transformer run by onnxruntime. ``cascade.classify(texts)`` uses the shipped
BANKING77 bundle; ``cascade.load(path)`` any other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from .banking77 import load_banking77
from .batch import BatchReport, batch
from .bundle import Bundle, read_bundle
from .calibration import CalibrationWarning, Calibrator, ThresholdChoice, calibrate
from .datasets import TextDataset, read_csv
from .distillation import distill, pseudo_label
from .errors import BundleError, CascadeError
from .evaluation import coverage_at_accuracy, evaluate, risk_coverage, score_stages
from .limits import Limits
from .model import Cascade, Prediction
from .splits import Splits, carve_splits, stratified_split
from .version import __version__

if TYPE_CHECKING:
    from .integrations.sklearn import CascadeClassifier
    from .training.cheap import CheapConfig

__all__ = [
    "__version__", "BatchReport", "Bundle", "BundleError", "CalibrationWarning", "Calibrator", "Cascade",
    "CascadeClassifier", "CascadeError", "Limits", "Prediction", "Splits", "TextDataset", "carve_splits",
    "ThresholdChoice", "batch", "calibrate", "classify", "coverage_at_accuracy", "distill", "evaluate",
    "pseudo_label", "risk_coverage", "score_stages", "stratified_split",
    "load", "load_banking77", "read_bundle", "read_csv", "train", "train_cheap", "finetune",
]


def __getattr__(name: str) -> Any:
    if name == "CascadeClassifier":
        # lazy: scikit-learn loads only when the estimator is asked for: `import cascade` stays light
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
    """Classify with the shipped BANKING77 bundle, loaded once and then kept.

    Parameters
    ----------
    texts : str or iterable of str
        One text (the answer is one :class:`Prediction`) or many (a list, in the same order).
    threshold : float, optional
        The routing cut-off in [0, 1]: texts whose cheap-stage confidence is below it go to the neural
        stage. None keeps the bundle's.
    top_k : int or None, default 1
        How many (label, probability) pairs each answer's ``top_k`` holds; None: every label.
    progress : bool, default True
        A progress bar for 5,000 texts or more, when stderr is a terminal.

    Returns
    -------
    Prediction or list of Prediction

    See Also
    --------
    load : another bundle; Cascade.classify has the details.

    Examples
    --------
    >>> import cascade
    >>> cascade.classify("I still have not received my new card").label
    'card_arrival'
    >>> [p.stage for p in cascade.classify(["my card is lost", "where is my refund"])]
    ['cheap', 'cheap']
    """
    return _default().classify(texts, threshold=threshold, top_k=top_k, progress=progress)


def train_cheap(data: TextDataset, selection: TextDataset | None, out: str | Path, *,
                base: str | Path | None = None, config: CheapConfig | None = None, progress: bool = True,
                selection_share: float = 0.1, certification_share: float = 0.1, label_sep: str | None = None) -> Bundle:
    """Retrain the cheap stage on new data for the same labels, keeping ``base``'s neural stage.

    Parameters
    ----------
    data : TextDataset
        Labelled texts; every label must be one of ``base``'s.
    selection : TextDataset or None
        Texts the threshold, the mix and any "none of these" cut are chosen on; None: ``data`` is carved
        into train / selection / certification (:func:`carve_splits`, with the two shares below).
    out : str or Path
        The bundle folder to write (atomically, verified).
    base : str or Path, optional
        The bundle whose neural stage is kept; default the shipped one.
    config : CheapConfig, optional
        The cheap stage's settings; default the task's.
    progress : bool, default True
        Progress bars on a terminal, log lines elsewhere.
    selection_share, certification_share : float, default 0.1
        Shares of ``data`` carved out when ``selection`` is None.
    label_sep : str, optional
        ``base`` is a tagger and label cells hold topics joined by this.

    Returns
    -------
    Bundle
        The bundle written to ``out``.
    """
    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from .training.recipes.refresh import train_cheap as _train_cheap

    return _train_cheap(data, selection, out, base=base, config=config, progress=progress,
                        selection_share=selection_share, certification_share=certification_share, label_sep=label_sep)


def train(data: TextDataset, selection: TextDataset | None, out: str | Path, *,
          encoder_from: str | Path | None = None, progress: bool = True, **config: Any) -> Bundle:
    """Build a whole bundle on any label set without torch: the cheap stage and a head on a frozen encoder.

    Parameters
    ----------
    data : TextDataset
        Labelled texts (2 or more labels, 2 or more texts each after the carve).
    selection : TextDataset or None
        Texts the threshold and the mix are chosen on; None: ``data`` is carved into train / selection /
        certification (:func:`carve_splits`), the last left untouched for :func:`calibrate`.
    out : str or Path
        The bundle folder to write (atomically, verified).
    encoder_from : str or Path, optional
        A bundle or an encoder folder whose frozen encoder to use; default the shipped one.
    progress : bool, default True
        Progress bars on a terminal, log lines elsewhere.
    **config
        Fields of :class:`cascade.training.recipes.frozen.TrainConfig`, e.g. ``abstain=0.05`` ("none of
        these") or ``label_sep="|"`` (a tagger).

    Returns
    -------
    Bundle
        The bundle written to ``out``; ``cascade.load(bundle.path)`` runs it.
    """
    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from .training.recipes.frozen import TrainConfig, train_bundle

    return train_bundle(data, selection, out, encoder_from=encoder_from, config=TrainConfig(**config),
                        progress=progress)


def finetune(data: TextDataset, selection: TextDataset | None, labels: list[str] | None, out: str | Path, *,
             work_dir: str | Path, **options: Any) -> Bundle:
    """Fine-tune a transformer and build a whole bundle (needs ``pip install 'cascade-text[train]'``).

    Parameters
    ----------
    data : TextDataset
        Labelled texts.
    selection : TextDataset or None
        As for :func:`train`.
    labels : list of str or None
        The label order; None: the training texts' (a tagger's topics).
    out : str or Path
        The bundle folder to write.
    work_dir : str or Path
        Where checkpoints and fp32 ONNX files go.
    **options
        Options of :func:`cascade.training.recipes.finetuned.finetune_bundle`: ``finetune_config``,
        ``base_model`` (another BERT- or MPNet-family folder), ``label_sep="|"`` (a tagger), ...

    Returns
    -------
    Bundle
    """
    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from .training.recipes.finetuned import finetune_bundle

    return finetune_bundle(data, selection, labels, out, work_dir=work_dir, **options)
