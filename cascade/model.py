"""The cascade: every text is scored by the cheap stage; the unsure ones go to the neural stage.

Stages only return probabilities. :func:`cascade.policy.routing.fall_through` is the one place the threshold is applied:
a text whose cheap-stage confidence is below the threshold is answered by the neural stage, and those
texts are sent to it together, in length-sorted batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from .bundle import Bundle, default_bundle_path, read_bundle
from .cache import DEFAULT_ENTRIES, ResultCache
from .errors import BundleError, CascadeError
from .inputs import as_text_list, check_top_k, is_stream, refuse_ambiguous, text_chunks
from .limits import DEFAULT_LIMITS, Limits
from .policy.mix import Mix
from .policy.multilabel import DEFAULT_SEP, SET_MEASURES, Decisions, assign
from .policy.routing import MEASURES, abstains, check_threshold, fall_through, fallthrough_answer, routing_confidence
from .progress import MIN_TEXTS, progress_bar, stderr_is_terminal
from .stages.cheap import CheapStage
from .stages.head import FILE as HEAD_FILE
from .stages.head import LinearHead
from .stages.neural import DEFAULT_PROVIDERS, NeuralStage, check_batch_size, check_providers, check_threads
from .stages.openvino import MODEL_FILE as OV_MODEL_FILE
from .stages.openvino import WEIGHTS_FILE as OV_WEIGHTS_FILE
from .stages.runtime import check_runtime, neural_stage, runtime_threshold
from .text import normalize

log = logging.getLogger(__name__)

BAR_CHUNK = 4096  # texts between two updates of a progress bar

Stage = Literal["cheap", "neural"]


@dataclass(frozen=True)
class CachedRows:
    """:meth:`Cascade.cached_rows`: the cache's answers for some texts, and the rows it lacked (``fresh``)."""

    keys: list[str]
    state: tuple[Any, ...]
    probs: np.ndarray  # final probabilities of the rows the cache held; other rows unset
    to_neural: np.ndarray
    fresh: np.ndarray  # rows the cache did not hold


@dataclass(frozen=True)
class Prediction:
    """One answer: the label, its probability, which stage gave it, and the top-k (label, probability).

    Attributes
    ----------
    label : str or None
        The answer; None when the bundle abstains ("none of these"), with ``reason`` saying so and ``top_k``
        still holding the closest labels. A tagger: the most probable of its topics.
    score : float
        The answer's probability.
    stage : {"cheap", "neural"}
        Which stage answered.
    top_k : tuple of (str, float)
        The most probable labels and their probabilities.
    reason : str
        Why there is no label, if there is none.
    labels, scores : tuple, optional
        A tagger's topics (most probable first) and their probabilities; None for one label per text.
    """

    label: str | None
    score: float
    stage: Stage
    top_k: tuple[tuple[str, float], ...]
    reason: str = ""
    labels: tuple[str, ...] | None = None  # None: a single-label bundle's answer
    scores: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "score": self.score, "stage": self.stage}
        if self.labels is not None:
            out["labels"], out["scores"] = list(self.labels), list(self.scores or ())
        if self.reason:
            out["reason"] = self.reason
        if len(self.top_k) > 1:
            out["top_k"] = [{"label": label, "score": score} for label, score in self.top_k]
        return out



class Cascade:
    """A cheap stage and a neural stage behind one confidence threshold: a loaded bundle.

    Made by :meth:`load` (``cascade.load``). A text whose cheap-stage confidence is below ``threshold`` falls
    through to the neural stage, and its answer combines both stages' votes (``mix``).

    Parameters
    ----------
    cheap, neural : CheapStage, NeuralStage
        The stages (they score; this class and :mod:`cascade.policy` decide).
    labels : sequence of str
        The class (or topic) names, in the stages' order.
    threshold : float
        The routing cut-off in [0, 1].
    bundle : Bundle, optional
        Where the stages came from.
    measure : str, optional
        The confidence measure; default the task's first.
    always_neural : sequence of str
        Labels whose cheap-stage answers always fall through (per-class calibration).
    cheap_weight : float
        A linear mix's cheap-stage weight (give ``mix`` instead for a product).
    mix : Mix, optional
        How a fall-through text's answer combines both votes.
    abstain_below : float, optional
        "None of these" under this final probability.
    decisions : Decisions, optional
        A tagger's cut-offs.
    cache_size : int
        Answers of repeated texts kept (0: off).
    """

    def __init__(self, cheap: CheapStage, neural: NeuralStage, labels: Sequence[str], threshold: float,
                 bundle: Bundle | None = None, measure: str | None = None,
                 always_neural: Sequence[str] = (), cheap_weight: float = 0.0, mix: Mix | None = None,
                 abstain_below: float | None = None, decisions: Decisions | None = None,
                 cache_size: int = DEFAULT_ENTRIES) -> None:
        if neural.embedding_dim is not None and neural.head is None:
            raise BundleError("neural.onnx is a sentence encoder (token states out) but the bundle gives it no head: "
                              "its manifest needs neural.type 'frozen-encoder' and neural.head")
        if not (cheap.n_classes == neural.n_classes == len(labels)):
            raise BundleError(
                f"stage sizes disagree: cheap.onnx has {cheap.n_classes} classes, the neural stage "
                f"({'head.npz' if neural.head is not None else 'neural.onnx'}) {neural.n_classes}, the manifest's "
                f"labels {len(labels)}; rebuild the bundle"
            )
        self.cheap = cheap
        self.neural = neural
        self.labels = list(labels)
        self.threshold = check_threshold(threshold)
        if not cheap.multi_label == neural.multi_label == (decisions is not None):
            raise BundleError("the stages and the manifest disagree on the task: a multi-label bundle needs a cheap "
                              "stage and a neural stage with one sigmoid per topic, and cut-offs ('decisions')")
        if decisions is not None and not len(decisions.cheap) == len(decisions.fallen) == len(labels):
            raise BundleError(f"decisions hold cut-offs for {len(decisions.cheap)} / {len(decisions.fallen)} topics, "
                              f"the bundle has {len(labels)}")
        self.decisions = decisions
        allowed = SET_MEASURES if decisions is not None else MEASURES
        measure = measure if measure is not None else allowed[0]
        if measure not in allowed:
            raise BundleError(f"unknown confidence measure {measure!r}; expected one of {allowed}")
        self.measure = measure
        self.bundle = bundle
        self.always_neural = tuple(always_neural)
        if mix is not None and cheap_weight:
            raise ValueError("give either cheap_weight (a linear mix's weight) or mix, not both")
        if not 0.0 <= cheap_weight <= 1.0:
            raise ValueError(f"cheap_weight must be in [0, 1], got {cheap_weight}")
        self.mix = mix if mix is not None else Mix("linear", float(cheap_weight))  # texts that fall through
        # "none of these": a final probability under this means no label fits (None: always answer)
        self.abstain_below = None if abstain_below is None else check_threshold(abstain_below)
        self.cache = ResultCache(cache_size)  # answers of repeated texts (0: off)

    def __repr__(self) -> str:
        shown = ", ".join(repr(label) for label in self.labels[:3]) + (", ..." if len(self.labels) > 3 else "")
        neural = "frozen encoder + head" if self.neural.head is not None else "fine-tuned transformer"
        where = str(self.bundle.path) if self.bundle is not None else "not from a bundle"
        return (f"Cascade({'multi-label' if self.multi_label else 'single-label'}, {len(self.labels)} labels "
                f"[{shown}], threshold={self.threshold:.4g} on {self.measure}, stages: cheap TF-IDF + logistic "
                f"regression -> {neural} on {self.runtime}, bundle: {where})")

    @classmethod
    def load(cls, path: str | Path | None = None, *, threads: int | None = None, batch_size: int = 32,
             providers: Sequence[str] = DEFAULT_PROVIDERS, verify: bool = True, digest: str | None = None,
             limits: Limits = DEFAULT_LIMITS, cache_size: int = DEFAULT_ENTRIES,
             runtime: str = "onnxruntime") -> Cascade:
        """Load a bundle folder, checking its manifest and every file's hash.

        Parameters
        ----------
        path : str or Path, optional
            A bundle folder; default the shipped one (or ``$CASCADE_BUNDLE``).
        threads : int, optional
            onnxruntime threads for the neural stage; default all cores.
        batch_size : int, default 32
            Texts per neural-stage batch.
        providers : sequence of str
            onnxruntime execution providers, in order of preference.
        verify : bool, default True
            Check every file's SHA-256 against the manifest.
        digest : str, optional
            ``sha256:...``, as ``cascade info`` prints it: refuse any bundle but that one.
        limits : Limits
            Bounds on the work one text can cost (see :class:`cascade.Limits`).
        cache_size : int
            Answers of repeated texts kept, least recently used out; 0 turns the cache off.
        runtime : {"onnxruntime", "openvino"}
            The engine of the neural stage. ``"openvino"`` runs the bundle's OpenVINO INT8 model (added by
            ``cascade openvino``; needs the ``[openvino]`` extra) at the threshold chosen on its own scores;
            faster in big batches, see the docs' runtime page.

        Returns
        -------
        Cascade

        Examples
        --------
        >>> import cascade
        >>> model = cascade.load(threads=1)
        >>> model.multi_label, len(model.labels)
        (False, 77)
        """
        threads = check_threads(threads)
        batch_size = check_batch_size(batch_size)
        runtime = check_runtime(runtime)
        if runtime == "openvino" and list(providers) != list(DEFAULT_PROVIDERS):
            raise ValueError(f"providers {list(providers)} are onnxruntime's; runtime='openvino' runs on OpenVINO's CPU "
                             "plugin: drop them, or use runtime='onnxruntime'")
        providers = check_providers(providers)  # before the bundle: not a bundle problem
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a cascade.Limits, got {type(limits).__name__}")
        if path is None:
            path = default_bundle_path()
            if not path.is_dir():
                where = "CASCADE_BUNDLE points at" if os.environ.get("CASCADE_BUNDLE") else "the default bundle is"
                what = "a file, not a bundle folder" if path.is_file() else "missing"
                raise BundleError(
                    f"{where} {path}, which is {what}: set CASCADE_BUNDLE to a bundle folder (one holding "
                    "manifest.json), or pass the path of a bundle"
                )
        needed = (CheapStage.FEATURES_FILE, CheapStage.ONNX_FILE, NeuralStage.TOKENIZER_FILE, HEAD_FILE,
                  *((NeuralStage.ONNX_FILE,) if runtime == "onnxruntime" else (OV_MODEL_FILE, OV_WEIGHTS_FILE)))
        bundle = read_bundle(path, verify=verify, digest=digest, keep=needed)
        manifest = bundle.manifest
        head_file = manifest["neural"].get("head")
        multi_label = manifest.get("task", "single-label") == "multi-label"
        try:
            cheap = CheapStage.from_bytes(bundle.blobs[CheapStage.FEATURES_FILE], bundle.blobs[CheapStage.ONNX_FILE],
                                          onnx_path=bundle.file(CheapStage.ONNX_FILE), limits=limits)
            head = LinearHead.from_bytes(bundle.read_bytes(head_file)) if head_file else None
            neural = neural_stage(bundle, runtime, head=head, threads=threads, batch_size=batch_size,
                                  providers=providers, limits=limits)
        except ValueError as exc:
            raise BundleError(f"{bundle.path}: {exc}") from None
        bundle = bundle.without_blobs()
        calibration = manifest.get("calibration", {})
        cheap.temperature = float(calibration.get("cheap_temperature", 1.0))
        neural.temperature = float(calibration.get("neural_temperature", 1.0))
        return cls(cheap, neural, bundle.labels, runtime_threshold(bundle, runtime), bundle,
                   measure=calibration.get("measure"),
                   always_neural=calibration.get("always_neural", ()),
                   mix=Mix.from_manifest(manifest.get("mix", {})),
                   abstain_below=manifest.get("abstain", {}).get("below"),
                   decisions=Decisions.from_dict(manifest["decisions"]) if multi_label else None,
                   cache_size=cache_size)

    @property
    def cheap_weight(self) -> float:
        """The cheap stage's weight in :attr:`mix` (its share of a linear mix; its exponent in a product)."""
        return self.mix.cheap_weight

    @property
    def runtime(self) -> str:
        """The engine running the neural stage: ``"onnxruntime"`` or ``"openvino"``."""
        return self.neural.RUNTIME

    @property
    def multi_label(self) -> bool:
        return self.decisions is not None

    @property
    def label_sep(self) -> str:
        """The topic separator of a multi-label bundle's training data (``|`` if not recorded)."""
        recorded = self.bundle.manifest.get("training", {}).get("label_sep") if self.bundle is not None else None
        return recorded if isinstance(recorded, str) and recorded else DEFAULT_SEP

    @property
    def always_neural(self) -> tuple[str, ...]:
        """Labels whose cheap-stage answers always fall through (set by per-class calibration)."""
        return tuple(self.labels[i] for i in self._always_neural_idx)

    @always_neural.setter
    def always_neural(self, labels: Sequence[str]) -> None:
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise BundleError(f"always_neural names labels the bundle does not have: {unknown[:5]}")
        self._always_neural_idx = np.array([self.labels.index(label) for label in labels], dtype=np.int64)

    @property
    def always_neural_idx(self) -> np.ndarray:
        """Class indices of :attr:`always_neural`."""
        return self._always_neural_idx

    def route(self, texts: list[str], threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Final probabilities (one row per text) and a mask of the texts the neural stage answered."""
        return self._route(texts, self._threshold(threshold))

    def _threshold(self, threshold: float | None) -> float:
        """The routing cut-off of a call: the model's own (None), else ``threshold`` checked (once: the
        internal calls take the checked number)."""
        return self.threshold if threshold is None else check_threshold(threshold)

    def uses_cache(self, threshold: float | None) -> bool:
        """Whether a call at ``threshold`` is answered through :attr:`cache`: only at the model's own threshold
        (the cache's answers are the answers at it), and when the cache is on."""
        return self._cache_on(self._threshold(threshold))

    def _cache_on(self, t: float) -> bool:
        return self.cache.max_entries > 0 and t == self.threshold

    def _route(self, texts: list[str], t: float) -> tuple[np.ndarray, np.ndarray]:
        probs, to_neural = self._route_cheap(texts, t)
        idx = np.flatnonzero(to_neural)
        neural = self.neural.predict_proba([texts[i] for i in idx]) if len(idx) else None
        return self.merge_neural(probs, to_neural, neural), to_neural

    def route_cheap(self, texts: list[str], threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first half of :meth:`route`: the cheap stage's probabilities and the mask of texts that fall
        through (for callers that run the neural stage themselves, such as the server's micro-batches)."""
        return self._route_cheap(texts, self._threshold(threshold))

    def _route_cheap(self, texts: list[str], t: float) -> tuple[np.ndarray, np.ndarray]:
        probs = self.cheap.predict_proba(texts)
        return probs, fall_through(routing_confidence(probs, self.measure, self._always_neural_idx, self.decisions), t)

    def merge_neural(self, probs: np.ndarray, to_neural: np.ndarray, neural: np.ndarray | None) -> np.ndarray:
        """The second half of :meth:`route`: the fall-through texts' answers (``neural``: the neural stage's
        probabilities of the texts ``to_neural`` marks, in order) mixed with the cheap stage's vote."""
        idx = np.flatnonzero(to_neural)
        if len(idx):
            if neural is None or len(neural) != len(idx):
                raise ValueError(f"{len(idx)} texts fell through but {0 if neural is None else len(neural)} neural "
                                 "answers were given")
            probs[idx] = fallthrough_answer(probs[idx], neural, self.mix, self.multi_label)
        if not np.all(np.isfinite(probs)):
            raise CascadeError("the model produced non-finite probabilities; its bundle is broken: rebuild it")
        return probs

    @overload
    def classify(  # type: ignore[overload-overlap]  # a str is one text, though it is also an iterable of str
            self, texts: str, *, threshold: float | None = ..., top_k: int | None = ...,
            progress: bool = ...) -> Prediction: ...
    @overload
    def classify(self, texts: Iterable[str], *, threshold: float | None = ...,
                 top_k: int | None = ..., progress: bool = ...) -> list[Prediction]: ...

    def classify(self, texts: Any, *, threshold: float | None = None, top_k: int | None = 1,
                 progress: bool = True) -> Any:
        """Classify a text (returns a Prediction) or a list of texts (a list, in the same order).

        A text's answer never depends on the other texts of the call or their order.

        Parameters
        ----------
        texts : str or iterable of str
            A generator or other one-pass iterable is read chunk by chunk (see :meth:`classify_iter`); the
            answers still come back as one list.
        threshold : float, optional
            The *routing* cut-off, not a score filter: a text whose cheap-stage confidence (the measure the
            bundle was calibrated with; for a tagger, the confidence in its whole set) is below it falls
            through to the neural stage. 0 never sends a text on, 1 sends every text; None keeps the bundle's.
            At the bundle's own threshold repeated texts are answered from the cache; at another, not.
        top_k : int or None, default 1
            The k most likely labels in ``Prediction.top_k``; None: every label.
        progress : bool, default True
            A bar with rate and ETA on stderr for 5,000 texts or more, when stderr is a terminal.

        Returns
        -------
        Prediction or list of Prediction

        Examples
        --------
        >>> import cascade
        >>> model = cascade.load(threads=1)
        >>> answer = model.classify("I still have not received my new card", top_k=2)
        >>> answer.label, answer.stage, len(answer.top_k)
        ('card_arrival', 'cheap', 2)
        >>> model.classify("I still have not received my new card", threshold=1.0).stage
        'neural'
        """
        if is_stream(texts):
            return list(self.classify_iter(texts, threshold=threshold, top_k=top_k))
        items, single = as_text_list(texts)
        top_k = check_top_k(top_k, len(self.labels))
        t = self._threshold(threshold)
        if not items:
            return []
        if not (progress and len(items) >= MIN_TEXTS and stderr_is_terminal()):
            # one pass: the cheap stage chunks its own work, the neural stage length-sorts every text that
            # falls through at once (splitting the list here cost 29% of the throughput)
            predictions = self._predict(items, t, top_k)
            return predictions[0] if single else predictions
        predictions = []
        with progress_bar(total=len(items), desc="classify", unit="text", progress=True) as bar:
            for start in range(0, len(items), BAR_CHUNK):
                predictions += self._predict(items[start:start + BAR_CHUNK], t, top_k)
                bar.update(min(BAR_CHUNK, len(items) - start))
        return predictions

    def classify_iter(self, texts: Iterable[str], *, threshold: float | None = None,
                      top_k: int | None = 1) -> Iterator[Prediction]:
        """Answers for any iterable of texts, in order, as they are ready: texts are pulled
        ``limits.chunk_size`` at a time, so memory stays bounded however long the stream (a file's lines,
        a database cursor). Each answer is the one :meth:`classify` gives the text alone."""
        if not isinstance(texts, str):
            refuse_ambiguous(texts)  # at the call, not at the first answer
        top_k = check_top_k(top_k, len(self.labels))
        t = self._threshold(threshold)
        return (p for chunk in text_chunks(texts, self.cheap.limits.chunk_size)
                for p in self._predict(chunk, t, top_k))

    def _predict(self, items: list[str], t: float, top_k: int) -> list[Prediction]:
        """Answers at the checked threshold ``t``: through the cache when :meth:`uses_cache` says so."""
        if not self._cache_on(t):
            return self.predictions(*self._route(items, t), top_k)
        return self.predictions(*self.route_cached(items), top_k)

    def cache_state(self) -> tuple[Any, ...]:
        """Everything a cached answer depends on besides its text: when any of it changes, the cache empties."""
        decisions = (None if self.decisions is None else
                     (self.decisions.cheap.tobytes(), self.decisions.fallen.tobytes(), self.decisions.at_least_one))
        return (self.bundle.digest if self.bundle is not None else id(self), self.threshold, self.measure,
                self.mix, self._always_neural_idx.tobytes(), self.cheap.temperature, self.neural.temperature,
                self.abstain_below, decisions)

    def cached_rows(self, texts: list[str]) -> CachedRows:
        """What :attr:`cache` holds for ``texts`` (at the model's own threshold): their keys, the settings the
        answers belong to, the final probabilities and routing of the rows it held, and which rows it did not."""
        keys = [normalize(t, self.cheap.limits) for t in texts]
        state = self.cache_state()
        found = self.cache.get_many(keys, state)
        probs = np.empty((len(texts), len(self.labels)))
        to_neural = np.zeros(len(texts), dtype=bool)
        for i, entry in enumerate(found):
            if entry is not None:
                probs[i], to_neural[i] = entry
        return CachedRows(keys, state, probs, to_neural, np.array([entry is None for entry in found], dtype=bool))

    def route_cached(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`route` at the model's own threshold, answering repeated texts from :attr:`cache` (and each
        distinct text of the call once): the same numbers, since an answer depends on its text alone."""
        rows = self.cached_rows(texts)
        todo: dict[str, list[int]] = {}
        for i in rows.fresh.nonzero()[0]:
            todo.setdefault(rows.keys[i], []).append(int(i))
        if todo:
            first = [same[0] for same in todo.values()]
            fresh, fell = self._route([texts[i] for i in first], self.threshold)
            for same, p, n in zip(todo.values(), fresh, fell):
                rows.probs[same], rows.to_neural[same] = p, n
            self.cache.put_many(list(todo), fresh, fell, rows.state)
        return rows.probs, rows.to_neural

    def predictions(self, probs: np.ndarray, to_neural: np.ndarray, top_k: int = 1) -> list[Prediction]:
        """One :class:`Prediction` per row of final probabilities (``to_neural``: which stage answered it)."""
        if top_k == 1:
            best = probs.argmax(axis=1)[:, None]
        else:
            best = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        if self.decisions is not None:
            return self._tag(probs, to_neural, best)
        none = abstains(probs, self.abstain_below)
        reason = (f"none of these: no label reaches probability {self.abstain_below:.3f}"
                  if self.abstain_below is not None else "")
        return [
            Prediction(
                label=None if abstain else self.labels[row[0]],
                score=float(p[row[0]]),
                stage="neural" if neural else "cheap",
                top_k=tuple((self.labels[j], float(p[j])) for j in row),
                reason=reason if abstain else "",
            )
            for p, row, neural, abstain in zip(probs, best, to_neural, none)
        ]

    def assigned(self, probs: np.ndarray, to_neural: np.ndarray) -> np.ndarray:
        """A multi-label bundle's topic sets, (texts, topics) bool: each row's probabilities against the
        cut-offs of the stage that answered it."""
        if self.decisions is None:
            raise ValueError("topic sets belong to multi-label bundles; this one answers one label per text")
        cutoffs = np.where(to_neural[:, None], self.decisions.fallen, self.decisions.cheap)
        return assign(probs, cutoffs, self.decisions.at_least_one)

    def _tag(self, probs: np.ndarray, to_neural: np.ndarray, best: np.ndarray) -> list[Prediction]:
        chosen = self.assigned(probs, to_neural)
        predictions = []
        for p, row, neural, mask in zip(probs, best, to_neural, chosen):
            topics = sorted(np.flatnonzero(mask), key=lambda j: -p[j])
            predictions.append(Prediction(
                label=self.labels[topics[0]] if topics else None, score=float(p[topics[0]]) if topics else 0.0,
                stage="neural" if neural else "cheap", top_k=tuple((self.labels[j], float(p[j])) for j in row),
                reason="" if topics else "no topic reaches its cut-off",
                labels=tuple(self.labels[j] for j in topics), scores=tuple(float(p[j]) for j in topics)))
        return predictions
