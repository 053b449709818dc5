"""The neural stage run by OpenVINO (the ``[openvino]`` extra): the bundle's OpenVINO INT8 model of the same
encoder (or classifier), fed, pooled and scored exactly as :class:`~cascade.stages.neural.NeuralStage` does.

Same text, same answer. OpenVINO's CPU kernels change with the input's shape: one text padded to 13 tokens
and to 16 gets embeddings 3e-3 apart. So a text is always run padded to its own *bucket*, the next multiple
of :data:`BUCKET` tokens (at least one bucket), whatever its batch-mates, and a batch holds texts of one
bucket only; the batch's size never changes a row (measured, and tested on a whole test split). The
inference precision is pinned to f32: a CPU with bf16 would otherwise run the ops left in floating point
in bf16, and the answers would depend on the machine. Activation scales are fixed in the model (NNCF
static quantization, :mod:`cascade.training.openvino`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..limits import DEFAULT_LIMITS, Limits
from .head import LinearHead
from .neural import DEFAULT_PROVIDERS, NeuralStage

MODEL_FILE = "neural.openvino.xml"
WEIGHTS_FILE = "neural.openvino.bin"
BUCKET = 16  # tokens; OpenVINO's kernels for shorter inputs differ from those for 16 and more


def bucket_length(tokens: int) -> int:
    """The padded length a row of ``tokens`` tokens is always run at: the next multiple of :data:`BUCKET`."""
    return max(BUCKET, -(-tokens // BUCKET) * BUCKET)


def pad_to_bucket(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch widened to the bucket of its longest row (zeros: padding the mask excludes)."""
    extra = bucket_length(ids.shape[1]) - ids.shape[1]
    return np.pad(ids, ((0, 0), (0, extra))), np.pad(mask, ((0, 0), (0, extra)))


def compile_options(threads: int) -> dict[str, Any]:
    """OpenVINO CPU settings: ``threads`` threads in one stream, f32 for the ops not quantized, no dynamic
    quantization of activations (the answers must not depend on the batch or the machine's bf16 support)."""
    return {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0, "PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False}


class OpenVinoStage(NeuralStage):
    """The neural stage on OpenVINO: an OpenVINO IR model (``.xml`` graph, ``.bin`` weights); returns the
    same kind of probabilities as :class:`NeuralStage`, from its own INT8 model."""

    RUNTIME = "openvino"

    def __init__(
        self,
        model: str | Path | bytes,
        weights: str | Path | bytes,
        tokenizer: str | Path | bytes,
        max_length: int,
        *,
        threads: int | None = None,
        batch_size: int = 32,
        limits: Limits = DEFAULT_LIMITS,
        head: LinearHead | None = None,
        multi_label: bool = False,
        windows: int = 1,
    ) -> None:
        """``model``, ``weights``: the IR's ``.xml`` and ``.bin`` (paths, or a bundle's verified bytes); the
        rest as for :class:`NeuralStage`."""
        self._weights = weights if isinstance(weights, bytes) else Path(weights).read_bytes()
        super().__init__(model, tokenizer, max_length, threads=threads, batch_size=batch_size,
                         providers=DEFAULT_PROVIDERS, limits=limits, head=head, multi_label=multi_label,
                         windows=windows)

    @property
    def model_file(self) -> str:
        return MODEL_FILE

    def _open(self, model: bytes, providers: Sequence[str]) -> tuple[set[str], list[Any]]:
        """Read and compile the IR for the CPU; return its input names and first output's shape."""
        ov = require("openvino", "openvino")
        core = ov.Core()
        weights, self._weights = self._weights, b""
        try:
            graph = core.read_model(model=model, weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
            self._compiled = core.compile_model(graph, "CPU", compile_options(self.threads))
        except RuntimeError as exc:  # OpenVINO's one error type: name the file, keep the cause
            raise ValueError(f"{MODEL_FILE}: OpenVINO cannot load the model ({str(exc).strip()[-300:]})") from exc
        self._requests: list[Any] = []
        self._lock = threading.Lock()
        dims = [d.get_length() if d.is_static else None for d in graph.outputs[0].get_partial_shape()] \
            if graph.outputs else []
        return {name for port in graph.inputs for name in port.get_names()}, dims

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One padded batch through an idle infer request (one per concurrent caller: a request is not
        thread-safe, the compiled model is)."""
        with self._lock:
            request = self._requests.pop() if self._requests else self._compiled.create_infer_request()
        try:
            return np.asarray(request.infer(feeds).to_tuple()[0])
        finally:
            with self._lock:
                self._requests.append(request)

    def _batches(self, lengths: list[int]) -> Iterator[np.ndarray]:
        """Length-sorted batches of at most ``batch_size`` rows, each within one bucket."""
        order = np.argsort(lengths, kind="stable")
        buckets = np.array([bucket_length(lengths[i]) for i in order], dtype=np.int64)
        start = 0
        while start < len(order):
            end = min(start + self.batch_size, int(np.searchsorted(buckets, buckets[start], side="right")))
            yield order[start:end]
            start = end

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """One batch padded to its bucket (every row of a batch shares one)."""
        return pad_to_bucket(*self.encoder.pad(rows))
