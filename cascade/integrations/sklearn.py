"""A scikit-learn estimator around ``cascade train``: ``fit`` builds a bundle with the fast path (no
torch), ``predict`` and ``predict_proba`` answer through the cascade, so it drops into a ``Pipeline``,
``cross_val_score`` or ``GridSearchCV``.

Inputs are texts (a list, numpy array or Series of ``str``), not numeric features; labels may be any
hashable values (strings, integers), and ``classes_`` keeps them as given. Single-label only: for
topics, use ``cascade train --multi-label``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from ..bundle import MANIFEST, check_file_name
from ..datasets import TextDataset
from ..inputs import as_text_list
from ..model import Cascade
from ..training.cheap import CheapConfig
from ..training.recipes.frozen import TrainConfig, train_bundle


class CascadeClassifier(ClassifierMixin, BaseEstimator):
    """Cheap TF-IDF stage + a head on the shipped frozen encoder, behind one routing threshold, as a
    scikit-learn estimator (``fit`` builds a bundle with ``cascade train``'s recipe).

    Parameters
    ----------
    C : float, default 20.0
        The cheap stage's inverse regularisation strength.
    head_C : float, default 10.0
        The encoder head's.
    threshold : float, optional
        The routing cut-off; None keeps the one the build chooses on its selection texts (carved out of what
        ``fit`` is given).
    selection_share : float, default 0.1
        The share of ``fit``'s texts carved out to choose on.
    out : str or Path, optional
        Where the bundle is written; None: a temporary folder, removed with the estimator.
    encoder_from : str or Path, optional
        A bundle whose encoder is reused; None: the shipped one.
    threads : int, optional
        onnxruntime's threads.

    Attributes
    ----------
    classes_ : ndarray
        The labels.
    model_ : Cascade
        The fitted model.
    bundle_path_ : Path
        Where its bundle is.
    """

    _owned: weakref.finalize | None = None  # removes the bundle folder this estimator made (out=None)

    def __init__(self, *, C: float = 20.0, head_C: float = 10.0, threshold: float | None = None,
                 selection_share: float = 0.1, out: str | Path | None = None,
                 encoder_from: str | Path | None = None, threads: int | None = None) -> None:
        self.C = C
        self.head_C = head_C
        self.threshold = threshold
        self.selection_share = selection_share
        self.out = out
        self.encoder_from = encoder_from
        self.threads = threads

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = False
        return tags

    def fit(self, X: Any, y: Any) -> CascadeClassifier:
        """Build a bundle on texts ``X`` and labels ``y`` (the selection texts that choose the threshold are
        carved out of them; nothing is set aside for certification). Returns self."""

        texts = _texts(X)
        labels = list(y) if not isinstance(y, str) else [y]
        if np.ndim(np.asarray(labels, dtype=object)) != 1 or len(labels) != len(texts):
            raise ValueError(f"y must be one label per text: got {np.shape(np.asarray(labels, dtype=object))} for "
                             f"{len(texts)} texts (multi-label: use `cascade train --multi-label`)")
        for i, label in enumerate(labels):
            if label is None or (isinstance(label, float) and math.isnan(label)) or not str(label).strip():
                raise ValueError(f"y[{i}] is {label!r}: every text needs a label (a non-empty string or a number)")
        self.classes_ = unique_labels(labels)  # refuses a mix of strings and numbers, as scikit-learn does
        names = [str(c) for c in self.classes_]
        if len(set(names)) != len(names):
            raise ValueError(f"labels must stay distinct as strings, got {list(self.classes_)[:10]}")
        if len(names) < 2:
            raise ValueError(f"fit needs at least two classes, got {len(names)}")
        if self.out is None:
            out = self._own_folder() / "bundle"
        else:
            self._owned = None
            out = Path(self.out)
        config = TrainConfig(cheap=replace(CheapConfig(), C=self.C), head_C=self.head_C,
                             selection_share=self.selection_share, certification_share=0.0)
        bundle = train_bundle(TextDataset(texts, [str(label) for label in labels]), None, out,
                              encoder_from=self.encoder_from, config=config, progress=False,
                              data_name="scikit-learn fit()")
        self.bundle_path_ = bundle.path
        self.model_ = Cascade.load(bundle.path, threads=self.threads)
        self._columns = np.array([self.model_.labels.index(name) for name in names])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities (texts x ``classes_``): the cheap stage's for the texts it keeps, the neural stage's
        (mixed as the bundle says) for those that fall through."""
        check_is_fitted(self, "model_")
        texts = _texts(X)
        if not texts:
            return np.zeros((0, len(self.classes_)))
        probs, _ = self.model_.route(texts, self.threshold)
        return probs[:, self._columns]

    def predict(self, X: Any) -> np.ndarray:
        """The most likely class of each text, as one of ``classes_``."""
        best = self.predict_proba(X).argmax(axis=1)  # checks fitted-ness before classes_ is read
        return self.classes_[best]

    def __getstate__(self) -> dict[str, Any]:
        # onnxruntime sessions cannot be pickled. A bundle in a folder of the estimator's own (out=None)
        # dies with it, so the pickle carries the bundle's files; a folder the caller named stays a path.
        state = {k: v for k, v in self.__dict__.items() if k not in ("model_", "_owned")}
        if getattr(self, "_owned", None) is not None and "bundle_path_" in state:
            folder = Path(state["bundle_path_"])
            state["_bundle_files"] = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        files = state.pop("_bundle_files", None)
        self.__dict__.update(state)
        if files is not None:  # a folder of this copy's own; loading verifies every file's hash
            folder = self._own_folder()
            for name, data in files.items():
                if name != MANIFEST:
                    check_file_name(name, "pickled bundle file")
                (folder / name).write_bytes(data)
            self.bundle_path_ = folder
        if "bundle_path_" in state or files is not None:
            self.model_ = Cascade.load(self.bundle_path_, threads=self.threads)

    def _own_folder(self) -> Path:
        """A new temporary folder removed when this estimator is (it wrote it, and only it removes it)."""
        previous = getattr(self, "_owned", None)
        if previous is not None:
            previous()  # a refit: the folder of the last fit is this estimator's own, and done with
        folder = Path(tempfile.mkdtemp(prefix="cascade-estimator-"))
        self._owned = weakref.finalize(self, shutil.rmtree, folder, True)
        return folder


def _texts(X: Any) -> list[str]:
    """A list of str from a list, numpy array or pandas Series (a one-column 2-D array is flattened, as a
    ColumnTransformer hands it over)."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == 1:
        X = np.asarray(X).ravel()
    texts, single = as_text_list(X)
    if single:
        raise TypeError("X must be a list of texts, not one str; wrap it: [text]")
    return texts
