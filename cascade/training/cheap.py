"""Train the cheap stage with scikit-learn and export it pickle-free.

The scikit-learn model is a ``FeatureUnion`` of ``TfidfVectorizer`` blocks (word n-grams, and char_wb
n-grams when enabled) followed by a multinomial ``LogisticRegression``. It is exported as two files:

* ``cheap_features.json`` — the featurizer (see :mod:`cascade.stages.featurizer`): vocabulary, idf,
  n-gram settings;
* ``cheap.onnx`` — the logistic regression converted by skl2onnx (features -> probabilities); for a
  multi-label stage (one-vs-rest, one binary logistic regression per topic, liblinear) one
  ``LinearClassifier`` node with a logistic post-transform, written directly.

:func:`check_parity` proves the export equal to the scikit-learn pipeline: same argmax everywhere and
probabilities within ``1e-5``, for both onnxruntime and cascade's own fast path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from ..datasets import TextDataset
from ..policy.multilabel import assign, choose_cutoffs, label_matrix, tagging_figures
from ..progress import progress_bar
from ..stages.cheap import CheapStage
from ..stages.featurizer import FeatureBlock, Featurizer
from ..text import normalize

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-5
CHOOSE = "choose"
TOPIC_WEIGHTS: tuple[str | None, ...] = (None, "balanced")


@dataclass(frozen=True)
class CheapConfig:
    """Cheap-stage settings; the defaults were chosen on the BANKING77 validation split."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] | None = (1, 4)
    min_df: int = 2
    C: float = 20.0
    max_iter: int = 1000
    sublinear_tf: bool = True
    max_features: int | None = None  # per n-gram block; None keeps every n-gram seen min_df times
    class_weight: str | None = None  # "balanced": classes weighted by inverse frequency; a tagger's "choose":
    # each of TOPIC_WEIGHTS fitted, the better on the selection texts kept (rare topics gain from "balanced")

    def __post_init__(self) -> None:
        if self.class_weight not in (None, "balanced", CHOOSE):
            raise ValueError(f"class_weight must be None, 'balanced' or {CHOOSE!r} (a tagger's), got "
                             f"{self.class_weight!r}")


@dataclass
class ParityReport:
    """How closely the exported cheap stage reproduces scikit-learn."""

    n_texts: int
    onnx_max_abs_diff: float
    fast_max_abs_diff: float
    onnx_argmax_agreement: float
    fast_argmax_agreement: float

    @property
    def ok(self) -> bool:
        return (
            self.onnx_max_abs_diff <= PARITY_ATOL
            and self.fast_max_abs_diff <= PARITY_ATOL
            and self.onnx_argmax_agreement == 1.0
            and self.fast_argmax_agreement == 1.0
        )


def build_pipeline(config: CheapConfig) -> Pipeline:
    """An unfitted scikit-learn pipeline for ``config``."""
    blocks: list[tuple[str, Any]] = [
        ("word", TfidfVectorizer(ngram_range=config.word_ngrams, min_df=config.min_df,
                                 sublinear_tf=config.sublinear_tf, max_features=config.max_features))
    ]
    if config.char_ngrams is not None:
        blocks.append(
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=config.char_ngrams, min_df=config.min_df,
                                     sublinear_tf=config.sublinear_tf, max_features=config.max_features))
        )
    return Pipeline([
        ("features", FeatureUnion(blocks)),
        ("clf", LogisticRegression(C=config.C, max_iter=config.max_iter, class_weight=config.class_weight)),
    ])


def fit_cheap(data: TextDataset, labels: list[str], config: CheapConfig = CheapConfig(),
              label_sep: str | None = None, jobs: int = 2, progress: bool = False,
              selection: TextDataset | None = None) -> Pipeline:
    """Fit the scikit-learn cheap stage on normalized texts (:func:`cascade.text.normalize`, as the stage
    reads them at inference); its class order is ``labels``' order. ``label_sep``: multi-label, each
    label cell holds topics joined by it, and one binary logistic regression per topic is fitted (on
    ``jobs`` cores; ``progress``: a bar on a terminal; ``selection``: the texts a tagger's ``class_weight``
    of ``"choose"`` chooses on)."""
    if label_sep is not None:
        return _fit_multi_label(data, labels, config, label_sep, jobs, progress, selection)
    if config.class_weight == CHOOSE:
        raise ValueError(f"class_weight={CHOOSE!r} is for multi-label cheap stages; use None or 'balanced'")
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise ValueError(f"training labels not in the label list: {unknown[:5]}")
    missing = sorted(set(labels) - set(data.labels))
    if missing:
        raise ValueError(
            f"{len(missing)} label(s) have no training text, e.g. {missing[:5]}; "
            "every label needs at least one example"
        )
    index = {label: i for i, label in enumerate(labels)}
    started = time.perf_counter()
    texts = [normalize(t) for t in data.texts]  # exactly what the stage reads at inference
    pipeline = build_pipeline(config).fit(texts, np.array([index[y] for y in data.labels]))
    log.info("cheap stage fitted on %d texts in %.1fs", len(data), time.perf_counter() - started)
    return pipeline


def _fit_multi_label(data: TextDataset, labels: list[str], config: CheapConfig, sep: str, jobs: int,
                     progress: bool = False, selection: TextDataset | None = None) -> Pipeline:
    y = label_matrix(data.labels, labels, sep)
    counts = y.sum(axis=0)
    bad = [labels[i] for i in np.flatnonzero((counts == 0) | (counts == len(y)))]
    if bad:
        raise ValueError(f"{len(bad)} topic(s) are on no training text or on every one, e.g. {bad[:5]}; "
                         "a topic needs texts with and without it")
    weights = TOPIC_WEIGHTS if config.class_weight == CHOOSE else (config.class_weight,)
    if len(weights) > 1 and selection is None:
        raise ValueError(f"class_weight={CHOOSE!r} chooses on the selection texts: pass them (or set class_weight "
                         "to None or 'balanced')")
    started = time.perf_counter()
    pipeline = build_pipeline(replace(config, class_weight=None))
    features = pipeline.named_steps["features"].fit_transform([normalize(t) for t in data.texts]).tocsr()
    features.sort_indices()  # the workers get it read-only: nothing may sort it in place there
    log.info("cheap stage: %d features from %d texts in %.1fs", features.shape[1], len(data),
             time.perf_counter() - started)
    # liblinear's primal solver: on Reuters (167k features, C=100) 4x faster than its dual one, which also
    # stopped unconverged on 3 of 8 balanced topics (experiments/reuters_cheap_settings.py --solvers)
    makes = [LogisticRegression(C=config.C, solver="liblinear", dual=False, max_iter=config.max_iter, class_weight=w)
             for w in weights]
    fitted = TopicClassifiers.fit_topics(makes, features, y, jobs, progress)
    if len(fitted) == 1 or selection is None:  # (a choice without selection texts was refused above)
        clf = fitted[0]
    else:
        held = pipeline.named_steps["features"].transform([normalize(t) for t in selection.texts])
        truth = label_matrix(selection.labels, labels, sep)
        scores = {}
        for w, candidate in zip(weights, fitted):
            probs = candidate.predict_proba(held)
            figures = tagging_figures(truth, assign(probs, choose_cutoffs(probs, truth)[0], True))
            scores[str(w)] = {k: round(figures[k], 6) for k in ("micro_f1", "macro_f1")}
        best = max(range(len(weights)), key=lambda i: (sum(scores[str(weights[i])].values()), -i))
        clf = fitted[best]
        clf.choice_ = {"class_weight": weights[best], "selection": scores,
                       "rule": "the higher mean of micro- and macro-F1 on the selection texts, cut-offs chosen there"}
        log.info("cheap stage: topic weighting %s chosen on the selection texts (%s)", weights[best],
                 "; ".join(f"{w}: micro-F1 {v['micro_f1']:.4f}, macro-F1 {v['macro_f1']:.4f}" for w, v in scores.items()))
    pipeline.steps[-1] = ("clf", clf)
    log.info("multi-label cheap stage (%d topics) fitted on %d texts in %.1fs", len(labels), len(data),
             time.perf_counter() - started)
    return pipeline


class TopicClassifiers(BaseEstimator):
    """A tagger's cheap stage in scikit-learn: one fitted binary logistic regression per topic (what
    ``OneVsRestClassifier`` holds), fitted topic by topic so long fits can show how far they are."""

    def __init__(self, estimators: list[LogisticRegression]) -> None:
        self.estimators = estimators
        self.estimators_ = estimators

    @classmethod
    def fit_topics(cls, makes: list[LogisticRegression], features: Any, y: np.ndarray, jobs: int,
                   progress: bool) -> list[TopicClassifiers]:
        """For each estimator in ``makes``, a clone fitted on each column of ``y``: every fit on ``jobs``
        cores, with a bar on a terminal and a log line at least every ``LOG_EVERY`` seconds."""
        n = y.shape[1]
        fitted: dict[tuple[int, int], LogisticRegression] = {}
        started = last = time.perf_counter()
        work = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(_fit_topic)(clone(make), features, y[:, k], (m, k)) for m, make in enumerate(makes)
            for k in range(n))
        total = n * len(makes)
        with progress_bar(total=total, desc="cheap stage: topics", unit="fit", progress=progress) as bar:
            for done, (key, estimator) in enumerate(work, start=1):
                fitted[key] = estimator
                bar.update()
                if time.perf_counter() - last >= LOG_EVERY and done < total:
                    last = time.perf_counter()
                    log.info("cheap stage: %d of %d topic fits done (%.0fs)", done, total, last - started)
        return [cls([fitted[m, k] for k in range(n)]) for m in range(len(makes))]

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, features: Any, y: np.ndarray) -> TopicClassifiers:
        """Refit every topic like the first (one core, no bar): :meth:`fit_topics` is the way the build fits."""
        self.estimators_ = type(self).fit_topics([self.estimators_[0]], features, y, 1, False)[0].estimators_
        return self

    def predict_proba(self, features: Any) -> np.ndarray:
        """(texts, topics) probability of each topic."""
        return np.column_stack([e.predict_proba(features)[:, 1] for e in self.estimators_])


LOG_EVERY = 15.0  # seconds between two progress lines of a long topic fit


def _fit_topic(estimator: LogisticRegression, features: Any, y: np.ndarray,
               key: tuple[int, int]) -> tuple[tuple[int, int], LogisticRegression]:
    return key, estimator.fit(features, y)


def linear_layer(clf: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(coef (classes x features), intercept, multi-label) of a fitted classifier: a multinomial
    ``LogisticRegression`` or a ``OneVsRestClassifier`` of binary ones."""
    if hasattr(clf, "estimators_"):
        coef = np.vstack([e.coef_ for e in clf.estimators_])
        intercept = np.concatenate([np.ravel(e.intercept_) for e in clf.estimators_])
        return coef, intercept, True
    return binary_as_two_rows(clf.coef_, clf.intercept_) + (False,)


def binary_as_two_rows(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A two-class ``LogisticRegression`` keeps one row of weights (class 1 against class 0); as rows
    ``[0, w]`` and biases ``[0, b]`` under a softmax it gives the same probabilities, so every stage
    handles two classes as it handles many."""
    coef, intercept = np.atleast_2d(coef), np.ravel(intercept)
    if coef.shape[0] != 1:
        return coef, intercept
    return np.vstack([np.zeros_like(coef), coef]), np.concatenate([np.zeros_like(intercept), intercept])


def _logistic_onnx(coef: np.ndarray, intercept: np.ndarray, post_transform: str = "LOGISTIC") -> bytes:
    """One ``LinearClassifier`` node, features -> per-topic sigmoid probabilities (``LOGISTIC``) or, for
    a two-class stage, softmax class probabilities (``SOFTMAX``)."""
    # lazy: onnx and its tools load only for builds
    from onnx import TensorProto, helper

    n_classes, n_features = coef.shape
    node = helper.make_node(
        "LinearClassifier", ["features"], ["label", "probabilities"], domain="ai.onnx.ml",
        coefficients=coef.astype(np.float32).ravel().tolist(), intercepts=intercept.astype(np.float32).tolist(),
        classlabels_ints=list(range(n_classes)), multi_class=0, post_transform=post_transform,
    )
    graph = helper.make_graph(
        [node], "cascade_cheap_multilabel",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    return model.SerializeToString()


def featurizer_from_pipeline(pipeline: Pipeline) -> Featurizer:
    """The portable featurizer equivalent of a fitted pipeline's ``FeatureUnion``."""
    blocks = []
    for _, vec in pipeline.named_steps["features"].transformer_list:
        if vec.lowercase is not True or vec.strip_accents is not None or vec.norm != "l2":
            raise ValueError("only lowercase=True, strip_accents=None, norm='l2' vectorizers can be exported")
        terms = [""] * len(vec.vocabulary_)
        for term, i in vec.vocabulary_.items():
            terms[i] = term
        blocks.append(FeatureBlock(
            analyzer=vec.analyzer, ngram_range=tuple(vec.ngram_range), terms=terms,
            idf=vec.idf_, sublinear_tf=vec.sublinear_tf, token_pattern=vec.token_pattern,
        ))
    return Featurizer(blocks)


def export_cheap(pipeline: Pipeline, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``cheap_features.json`` and ``cheap.onnx`` for a fitted pipeline into ``out_dir``."""
    # lazy: onnx and its tools load only for builds
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    featurizer = featurizer_from_pipeline(pipeline)
    clf = pipeline.named_steps["clf"]
    coef, intercept, multi_label = linear_layer(clf)
    if multi_label:
        model_bytes = _logistic_onnx(coef, intercept)
    elif len(intercept) == 2:  # skl2onnx writes a binary model as one sigmoid: keep the softmax form
        model_bytes = _logistic_onnx(coef, intercept, "SOFTMAX")
    else:
        model_bytes = to_onnx(
            clf,
            initial_types=[("features", FloatTensorType([None, featurizer.n_features]))],
            options={id(clf): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        ).SerializeToString()
    features_path, onnx_path = out_dir / CheapStage.FEATURES_FILE, out_dir / CheapStage.ONNX_FILE
    featurizer.save(features_path)
    onnx_path.write_bytes(model_bytes)
    return features_path, onnx_path


def check_parity(pipeline: Pipeline, stage: CheapStage, texts: list[str], batch_size: int = 256) -> ParityReport:
    """Compare scikit-learn, onnxruntime on ``cheap.onnx`` and the fast path on ``texts``."""
    want = pipeline.predict_proba([normalize(t) for t in texts])
    fast = stage.predict_proba(texts)
    onnx = np.vstack([stage.predict_proba_onnx(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    report = ParityReport(
        n_texts=len(texts),
        onnx_max_abs_diff=float(np.abs(onnx - want).max()),
        fast_max_abs_diff=float(np.abs(fast - want).max()),
        onnx_argmax_agreement=float((onnx.argmax(1) == want.argmax(1)).mean()),
        fast_argmax_agreement=float((fast.argmax(1) == want.argmax(1)).mean()),
    )
    log.info("cheap-stage parity on %d texts: %s", len(texts), asdict(report))
    return report
# C chosen on Reuters selection texts (experiments/reuters_cheap_settings.py): micro-F1 0.9239 / 0.9284 /
# 0.9311 / 0.9343 / 0.9298 at C = 5 / 20 / 50 / 100 / 200 (first carve); on the final carve 0.9136 / 0.9186 /
# 0.9196 / 0.9168 at C = 5 / 20 / 50 / 100: within noise, not re-chosen
MULTI_LABEL_CHEAP = CheapConfig(C=100.0, class_weight=CHOOSE)
