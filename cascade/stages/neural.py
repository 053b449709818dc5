"""The neural stage at inference: an INT8 ONNX transformer run by onnxruntime, no torch.

Texts are tokenized with HF ``tokenizers`` (truncated to the bundle's ``max_length``), sorted by length
and run in batches padded to their longest member, so a batch of short texts never pays for a long one.
Probabilities come back in the caller's order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .cheap import softmax
from .tokenization import TextEncoder

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


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

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        max_length: int,
        *,
        threads: int | None = None,
        batch_size: int = 32,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ) -> None:
        import onnxruntime as ort

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.encoder = TextEncoder(tokenizer_path, max_length)
        self.batch_size = batch_size
        self.threads = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=list(providers))
        self._input_names = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._input_names
        if missing:
            raise ValueError(f"{model_path}: the ONNX model lacks the inputs {sorted(missing)}")
        self.n_classes = int(self.session.get_outputs()[0].shape[-1])
        self.temperature = 1.0  # set by calibration: probabilities are softmax(logits / temperature)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float64)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Class logits, (len(texts), n_classes), computed in length-sorted batches."""
        rows = self.encoder.token_ids(texts)
        out = np.empty((len(texts), self.n_classes), dtype=np.float64)
        order = np.argsort([len(r) for r in rows], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run(*self.encoder.pad([rows[i] for i in idx]))
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, (len(texts), n_classes), at the stage's ``temperature``."""
        return softmax(self.logits(texts) / self.temperature)
