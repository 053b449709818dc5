"""The neural stage at inference: an INT8 ONNX transformer run by onnxruntime, no torch.

Two forms: a fine-tuned classifier whose graph outputs logits, or a frozen sentence encoder whose graph
outputs token states, mean-pooled here (:func:`mean_pool`) and scored by a linear head
(:mod:`cascade.stages.head`). Texts are tokenized with HF ``tokenizers`` (truncated to the bundle's
``max_length``), sorted by length and run in batches padded to their longest member, so a batch of short
texts never pays for a long one. Probabilities come back in the caller's order, and a text's are the same
in any batch.

The engine sits behind four methods (``_open``, ``_infer``, ``_batches``, ``_pad``):
:class:`cascade.stages.openvino.OpenVinoStage` runs the same stage on OpenVINO by overriding them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CascadeError
from ..limits import DEFAULT_LIMITS, Limits, chunks
from ..policy.multilabel import sigmoid
from .cheap import softmax
from .head import LinearHead
from .tokenization import TextEncoder

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def check_providers(providers: Sequence[str]) -> list[str]:
    """``providers`` as a list, each one this onnxruntime build has: an unavailable one (CUDA without a
    GPU build, OpenVINO without its package) is an error listing the available ones, instead of
    onnxruntime's silent fall back to the CPU."""
    # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
    import onnxruntime as ort

    if isinstance(providers, str):
        providers = [providers]
    available = ort.get_available_providers()
    missing = [p for p in providers if not isinstance(p, str) or p not in available]
    if not providers or missing:
        raise ValueError(f"execution provider(s) {missing or providers!r} not available in this onnxruntime "
                         f"build; available: {available} (CUDA needs onnxruntime-gpu, OpenVINO "
                         "onnxruntime-openvino)")
    return list(providers)
MAX_BATCH_SIZE = 4096
# A graph that quantizes activations with per-batch scales gives a text a score that depends on its
# batch-mates; such models are run one text at a time (bundles built now carry fixed scales).
_DYNAMIC_QUANT_OP = b"DynamicQuantizeLinear"


def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings: the mean of each text's own token states (padding never enters a sum), scaled
    to unit length; each row is computed alone, so a text's embedding is the same bits in any batch."""
    lengths = mask.sum(axis=1)
    out = np.empty((len(states), states.shape[-1]), dtype=np.float32)
    for i, n in enumerate(lengths):
        mean = np.add.reduce(states[i, : max(int(n), 1)].astype(np.float32), axis=0) / np.float32(max(int(n), 1))
        out[i] = mean / max(np.float32(np.sqrt(np.add.reduce(mean * mean))), np.float32(1e-12))
    return out


def check_batch_size(batch_size: object) -> int:
    """A batch size from 1 to MAX_BATCH_SIZE (numpy integers accepted)."""

    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or not 1 <= int(batch_size) <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}")
    return int(batch_size)


def check_threads(threads: object) -> int | None:
    """None (all cores) or a thread count from 1 to the cores this process may use."""

    if threads is None:
        return None
    cores = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, Integral) or not 1 <= int(threads) <= cores:
        raise ValueError(f"threads must be an integer from 1 to {cores} (the cores this process may use), "
                         f"got {threads!r}")
    return int(threads)


def default_threads() -> int:
    """Threads for onnxruntime: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class NeuralStage:
    """A sequence-classification transformer in ONNX; returns class probabilities."""

    ONNX_FILE = "neural.onnx"
    TOKENIZER_FILE = "tokenizer.json"
    RUNTIME = "onnxruntime"  # the engine that runs the model

    def __init__(
        self,
        model: str | Path | bytes,
        tokenizer: str | Path | bytes,
        max_length: int,
        *,
        threads: int | None = None,
        batch_size: int = 32,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        limits: Limits = DEFAULT_LIMITS,
        head: LinearHead | None = None,
        multi_label: bool = False,
        windows: int = 1,
    ) -> None:
        """``model`` and ``tokenizer``: paths, or the verified bytes of a bundle's files. With a ``head``
        the model is a frozen sentence encoder (its output: embeddings) and the head turns embeddings
        into logits; without, the model outputs logits itself (a fine-tuned classifier). ``multi_label``:
        one sigmoid per topic instead of a softmax. ``windows``: a long text is read as up to that many
        windows of ``max_length`` tokens, whose embeddings (or logits) are averaged, weighted by tokens."""
        batch_size = check_batch_size(batch_size)
        providers = check_providers(providers)
        self.encoder = TextEncoder(tokenizer, max_length, limits, windows)
        self.multi_label = multi_label
        self.limits = limits
        self.threads = check_threads(threads) or default_threads()
        model_bytes = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.per_text = _DYNAMIC_QUANT_OP in model_bytes
        self.batch_size = 1 if self.per_text else batch_size
        self._input_names, shape = self._open(model_bytes, providers)
        del model_bytes
        missing = {"input_ids", "attention_mask"} - self._input_names
        if missing:
            raise ValueError(f"{self.model_file}: the model lacks the inputs {sorted(missing)}")
        if len(shape) not in (2, 3) or not isinstance(shape[-1], int) or shape[-1] < 2:
            raise ValueError(f"{self.model_file}: the first output must be logits (batch, classes) or, for a frozen "
                             f"encoder, token states (batch, sequence, dim); got {shape}")
        # A frozen encoder outputs token states, pooled here; a fine-tuned classifier outputs logits.
        self.embedding_dim: int | None = int(shape[-1]) if len(shape) == 3 else None
        if head is not None and head.dim != self.embedding_dim:
            raise ValueError(f"the head expects {head.dim}-dimensional embeddings; {self.model_file} gives "
                             f"{'logits' if self.embedding_dim is None else self.embedding_dim}")
        self.head = head
        self.n_classes = head.n_classes if head is not None else (0 if self.embedding_dim else int(shape[-1]))
        self.temperature = 1.0  # set by calibration: probabilities are softmax(logits / temperature)

    @property
    def model_file(self) -> str:
        """The bundle file this stage runs (named in errors)."""
        return self.ONNX_FILE

    def _open(self, model: bytes, providers: Sequence[str]) -> tuple[set[str], list[Any]]:
        """Make the onnxruntime session; return the model's input names and its first output's shape."""
        # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(model, options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types: name the file, keep the cause
            raise ValueError(f"{self.ONNX_FILE}: onnxruntime cannot load the model ({exc})") from exc
        outputs = self.session.get_outputs()
        return {i.name for i in self.session.get_inputs()}, list(outputs[0].shape) if outputs else []

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's first output for one padded batch."""
        return np.asarray(self.session.run(None, feeds)[0])

    def _batches(self, lengths: list[int]) -> Iterator[np.ndarray]:
        """Row indices of each batch: length-sorted, ``batch_size`` at a time (each padded to its longest)."""
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """One batch's (input_ids, attention_mask), padded to its longest row."""
        return self.encoder.pad(rows)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = self._raw(ids, mask)
        if self.embedding_dim is None:
            return np.asarray(out, dtype=np.float64)
        if self.head is None:
            raise ValueError(f"{self.model_file} is a sentence encoder without a head: it gives embeddings, not logits")
        return self.head.logits(out)

    def _raw(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The model's logits, or a frozen encoder's sentence embeddings (:func:`mean_pool` of its token states)."""
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            out = self._infer(feeds)
        except Exception as exc:  # the runtime's own error types: say which file, keep the cause
            raise CascadeError(f"{self.model_file} failed on a batch of {len(ids)} text(s) ({str(exc)[:300]}); its "
                               "tokenizer and model do not fit together: rebuild the bundle") from exc
        return mean_pool(out, mask) if self.embedding_dim is not None else out

    def embed(self, texts: list[str]) -> np.ndarray:
        """The model's first output for each text, float32: a frozen encoder's sentence embeddings, exactly
        as :meth:`logits` feeds them to the head."""
        if self.embedding_dim is None:
            raise ValueError(f"{self.model_file} outputs logits, not token states: it is not a sentence encoder")
        pooled = self._map_batches(texts, self._raw, self.embedding_dim, np.float32)
        if self.encoder.windows > 1:  # a mean of unit vectors, scaled back to unit length, row by row
            for row in pooled:
                row /= max(np.float32(np.sqrt(np.add.reduce(row * row))), np.float32(1e-12))
        return pooled

    def _map_batches(self, texts: list[str], run: Callable[[np.ndarray, np.ndarray], np.ndarray], width: int,
                     dtype: type) -> np.ndarray:
        """``run`` over chunks of texts in length-sorted, dynamically padded batches; rows in input order.
        A text read as several windows gets the token-weighted mean of its windows' rows (computed from its
        own windows only, in their order: the same bits in any batch)."""
        out: np.ndarray = np.empty((len(texts), width), dtype=dtype)
        for offset, end in chunks(texts, self.limits):
            pieces = [self.encoder.windows_of(r) for r in self.encoder.token_ids(texts[offset:end])]
            rows = [w for p in pieces for w in p]
            done: np.ndarray = np.empty((len(rows), width), dtype=dtype)
            for idx in self._batches([len(r) for r in rows]):
                done[idx] = run(*self._pad([rows[i] for i in idx]))
            first = 0
            for i, p in enumerate(pieces):
                if len(p) == 1:
                    out[offset + i] = done[first]
                else:
                    weights: np.ndarray = np.array([len(w) for w in p], dtype=dtype)
                    out[offset + i] = (weights[:, None] * done[first:first + len(p)]).sum(axis=0) / weights.sum()
                first += len(p)
        return out

    def logits(self, texts: list[str]) -> np.ndarray:
        """Class logits, (len(texts), n_classes), computed chunk by chunk in length-sorted batches; a frozen
        encoder's come from its (window-pooled, unit-length) sentence embeddings."""
        if self.embedding_dim is not None and self.encoder.windows > 1:
            if self.head is None:
                raise ValueError(f"{self.model_file} is a sentence encoder without a head: it gives embeddings, not "
                                 "logits")
            return self.head.logits(self.embed(texts))
        return self._map_batches(texts, self._run, self.n_classes, np.float64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (per topic, a sigmoid each, for a multi-label stage), (len(texts), n_classes),
        at the stage's ``temperature``."""
        scaled = self.logits(texts) / self.temperature
        return sigmoid(scaled) if self.multi_label else softmax(scaled)
