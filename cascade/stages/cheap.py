"""The cheap stage at inference: TF-IDF features and a linear layer, in microseconds.

The weights live in ``cheap.onnx`` (a skl2onnx ``LinearClassifier``) and the featurizer in
``cheap_features.json``; nothing is unpickled. The fast path reads the linear layer out of the ONNX
file once and scores a text with a sparse gather (a text touches a few hundred of the model's features),
which is what makes one text cost tens of microseconds instead of scikit-learn's millisecond.
:meth:`CheapStage.predict_proba_onnx` runs the same file through onnxruntime, for parity checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .featurizer import Featurizer


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def read_linear_classifier(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(coef (classes x features), intercept) of the one ``LinearClassifier`` node of an ONNX file."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "LinearClassifier"]
    if len(nodes) != 1:
        raise ValueError(f"expected one LinearClassifier node in the cheap-stage ONNX, found {len(nodes)}")
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    intercept = np.asarray(attrs["intercepts"], dtype=np.float64)
    coef = np.asarray(attrs["coefficients"], dtype=np.float64).reshape(len(intercept), -1)
    return coef, intercept


class CheapStage:
    """TF-IDF + multinomial logistic regression; returns class probabilities."""

    FEATURES_FILE = "cheap_features.json"
    ONNX_FILE = "cheap.onnx"

    def __init__(self, featurizer: Featurizer, coef: np.ndarray, intercept: np.ndarray,
                 onnx_path: Path | None = None) -> None:
        if coef.shape != (len(intercept), featurizer.n_features):
            raise ValueError(
                f"linear layer shape {coef.shape} does not fit {featurizer.n_features} features "
                f"and {len(intercept)} classes"
            )
        self.featurizer = featurizer
        # features x classes, float32 (as stored in the ONNX file): one text gathers a few hundred rows
        self.weights_t = np.ascontiguousarray(coef.T, dtype=np.float32)
        self.intercept = intercept
        self.onnx_path = onnx_path
        self.temperature = 1.0  # set by calibration: probabilities are softmax(logits / temperature)
        self._session: object | None = None

    @property
    def n_classes(self) -> int:
        return len(self.intercept)

    @classmethod
    def load(cls, directory: str | Path) -> "CheapStage":
        """Load ``cheap_features.json`` and ``cheap.onnx`` from a bundle folder."""
        directory = Path(directory)
        featurizer = Featurizer.load(directory / cls.FEATURES_FILE)
        coef, intercept = read_linear_classifier(directory / cls.ONNX_FILE)
        return cls(featurizer, coef, intercept, onnx_path=directory / cls.ONNX_FILE)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Class logits, (len(texts), n_classes) float64."""
        if len(texts) == 1:
            idx, values = self.featurizer.transform_one(texts[0])
            logits = values.astype(np.float32) @ self.weights_t[idx]
            return (logits.astype(np.float64) + self.intercept)[None, :]
        features = self.featurizer.transform(texts)
        return np.asarray(features.astype(np.float32) @ self.weights_t, dtype=np.float64) + self.intercept

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, (len(texts), n_classes) float64, at the stage's ``temperature``."""
        return softmax(self.logits(texts) / self.temperature)

    def predict_proba_onnx(self, texts: list[str]) -> np.ndarray:
        """The same probabilities computed by onnxruntime from ``cheap.onnx`` (dense input: slower)."""
        if self.onnx_path is None:
            raise ValueError("this cheap stage was not loaded from a file; no ONNX model to run")
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(self.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        dense = self.featurizer.transform(texts).toarray().astype(np.float32)
        outputs = self._session.run(["probabilities"], {"features": dense})  # type: ignore[attr-defined]
        return np.asarray(outputs[0], dtype=np.float64)
