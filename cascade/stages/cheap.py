"""The cheap stage at inference: TF-IDF features and a linear layer, in microseconds.

The weights live in ``cheap.onnx`` (a skl2onnx ``LinearClassifier``) and the featurizer in
``cheap_features.json``; nothing is unpickled. The fast path reads the linear layer out of the ONNX
file once and scores a text with a sparse gather (a text touches a few hundred of the model's features),
which is what makes one text cost tens of microseconds instead of scikit-learn's millisecond.
:meth:`CheapStage.predict_proba_onnx` runs the same file through onnxruntime, for parity checks.

Texts are read through :func:`cascade.text.normalize` (as in training) and scored in chunks of
``limits.chunk_size`` texts (and ``chunk_chars`` characters). A text's logits come from the same sparse row
product whether it is scored alone or in a batch, so they are bit-for-bit the same either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..limits import DEFAULT_LIMITS, Limits, chunks
from ..policy.multilabel import sigmoid
from ..text import normalize
from .featurizer import Featurizer


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def read_linear_classifier(source: Path | bytes) -> tuple[np.ndarray, np.ndarray, bool]:
    """(coef (classes x features), intercept, multi-label) of the one ``LinearClassifier`` node of an
    ONNX file (a path, or its bytes); multi-label when its post-transform is the logistic function
    (one probability per topic) rather than softmax."""
    # lazy: onnx loads when a bundle is read, not at `import cascade`
    import onnx
    from onnx import helper

    try:
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    except Exception as exc:  # protobuf's DecodeError and friends: say which file, keep the cause
        raise ValueError(f"the cheap-stage ONNX model cannot be parsed ({exc})") from exc
    nodes = [n for n in model.graph.node if n.op_type == "LinearClassifier"]
    if len(nodes) != 1:
        raise ValueError(f"expected one LinearClassifier node in the cheap-stage ONNX, found {len(nodes)}")
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    if "intercepts" not in attrs or "coefficients" not in attrs:
        raise ValueError("the cheap-stage LinearClassifier lacks coefficients or intercepts")
    intercept = np.asarray(attrs["intercepts"], dtype=np.float64)
    coef = np.asarray(attrs["coefficients"], dtype=np.float64)
    if len(intercept) < 2 or coef.size % len(intercept) or not np.all(np.isfinite(coef)) \
            or not np.all(np.isfinite(intercept)):
        raise ValueError("the cheap-stage LinearClassifier has malformed or non-finite weights")
    post = attrs.get("post_transform", b"NONE")
    post = post.decode() if isinstance(post, bytes) else str(post)
    if post not in ("SOFTMAX", "LOGISTIC"):
        raise ValueError(f"the cheap-stage LinearClassifier's post_transform is {post!r}; expected SOFTMAX or LOGISTIC")
    return coef.reshape(len(intercept), -1), intercept, post == "LOGISTIC"


class CheapStage:
    """TF-IDF + logistic regression; returns class probabilities (softmax), or per-topic probabilities
    (a sigmoid each) for a multi-label stage."""

    FEATURES_FILE = "cheap_features.json"
    ONNX_FILE = "cheap.onnx"

    def __init__(self, featurizer: Featurizer, coef: np.ndarray, intercept: np.ndarray,
                 onnx_path: Path | None = None, limits: Limits = DEFAULT_LIMITS, multi_label: bool = False) -> None:
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
        self.limits = limits
        self.featurizer.cache_bytes = limits.word_cache_bytes
        self.multi_label = multi_label
        self.temperature = 1.0  # set by calibration: probabilities are softmax (or sigmoid) of logits / temperature
        self._session: object | None = None

    @property
    def n_classes(self) -> int:
        return len(self.intercept)

    @classmethod
    def load(cls, directory: str | Path, limits: Limits = DEFAULT_LIMITS) -> CheapStage:
        """Load ``cheap_features.json`` and ``cheap.onnx`` from a folder (not checked: see
        :meth:`from_bytes` for a bundle's verified bytes)."""
        directory = Path(directory)
        return cls.from_bytes((directory / cls.FEATURES_FILE).read_bytes(), (directory / cls.ONNX_FILE).read_bytes(),
                              onnx_path=directory / cls.ONNX_FILE, limits=limits)

    @classmethod
    def from_bytes(cls, features: bytes, onnx_model: bytes, *, onnx_path: Path | None = None,
                   limits: Limits = DEFAULT_LIMITS) -> CheapStage:
        """Build the stage from the contents of ``cheap_features.json`` and ``cheap.onnx``."""
        try:
            featurizer = Featurizer.from_bytes(features, limits.word_cache_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{cls.FEATURES_FILE}: {exc}") from None
        coef, intercept, multi_label = read_linear_classifier(onnx_model)
        return cls(featurizer, coef, intercept, onnx_path=onnx_path, limits=limits, multi_label=multi_label)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Class logits, (len(texts), n_classes) float64; each row depends on its own text only."""
        # lazy: scipy loads only when this runs, so `import cascade` stays light
        from scipy.sparse import csr_matrix

        out = np.empty((len(texts), self.n_classes), dtype=np.float64)
        for start, end in chunks(texts, self.limits):
            chunk = [normalize(t, self.limits) for t in texts[start:end]]
            if len(chunk) == 1:  # built float32 at once: a second sparse matrix costs a third of a text's time
                idx, values = self.featurizer.transform_one(chunk[0])
                features = csr_matrix((values.astype(np.float32), idx, np.array([0, len(idx)])),
                                      shape=(1, self.featurizer.n_features))
            else:
                features = self.featurizer.transform(chunk).astype(np.float32)
            # scipy's CSR product sums each row's terms in feature order, alone: the same bits in any batch
            out[start : start + len(chunk)] = features @ self.weights_t
        out += self.intercept
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (per-topic for a multi-label stage), (len(texts), n_classes) float64, at the
        stage's ``temperature``."""
        scaled = self.logits(texts) / self.temperature
        return sigmoid(scaled) if self.multi_label else softmax(scaled)

    def predict_proba_onnx(self, texts: list[str]) -> np.ndarray:
        """The same probabilities computed by onnxruntime from ``cheap.onnx`` (dense input: slower)."""
        if self.onnx_path is None:
            raise ValueError("this cheap stage was not loaded from a file; no ONNX model to run")
        if self._session is None:
            # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(self.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        dense = self.featurizer.transform([normalize(t, self.limits) for t in texts]).toarray().astype(np.float32)
        outputs = self._session.run(["probabilities"], {"features": dense})  # type: ignore[attr-defined,union-attr]
        return np.asarray(outputs[0], dtype=np.float64)
