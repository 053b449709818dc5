"""The linear head of a frozen-encoder neural stage: sentence embedding -> class logits.

Stored as ``head.npz`` (two float32 arrays, ``weight`` (dim x classes) and ``bias``), read with
``allow_pickle=False``: no code, just numbers, checked for shape and finiteness. The product is computed
with a fixed order of summation per row, so a text's logits are the same bits alone or in any batch
(a BLAS matrix product may sum in another order depending on the batch size).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

FILE = "head.npz"


class LinearHead:
    """logits = embeddings @ weight + bias."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        if weight.ndim != 2 or bias.shape != (weight.shape[1],) or weight.shape[1] < 2:
            raise ValueError(f"head weight {weight.shape} and bias {bias.shape} do not make a linear layer "
                             "of at least 2 classes")
        if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
            raise ValueError("head weights must be finite")
        self.weight = weight
        self.bias = bias

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, classes) float64; each row summed over the embedding in the same order whatever n is."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings of shape {embeddings.shape} do not fit a head of dimension {self.dim}")
        out = np.empty((len(embeddings), self.n_classes), dtype=np.float64)
        for i, row in enumerate(embeddings.astype(np.float32)):
            out[i] = np.add.reduce(row[:, None] * self.weight, axis=0)
        out += self.bias
        return out

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, weight=self.weight, bias=self.bias)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearHead:
        """A head from ``head.npz`` bytes (no pickles: object arrays are refused)."""
        if not data.startswith(b"PK"):
            raise ValueError(f"{FILE} is not an .npz archive (float32 arrays 'weight' and 'bias')")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                if not isinstance(npz, np.lib.npyio.NpzFile) or set(npz.files) != {"weight", "bias"}:
                    raise ValueError(f"{FILE} must hold exactly the arrays 'weight' and 'bias'")
                weight, bias = npz["weight"], npz["bias"]
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # numpy's and zipfile's errors
            raise ValueError(f"{FILE} cannot be read as float32 arrays ({str(exc)[:200]}); no pickled data is "
                             "ever loaded") from None
        if weight.dtype != np.float32 or bias.dtype != np.float32:
            raise ValueError(f"{FILE} must hold float32 arrays")
        return cls(weight, bias)
