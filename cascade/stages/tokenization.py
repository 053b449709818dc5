"""Word-piece tokenization for the neural stage: HF ``tokenizers`` only, no transformers, no torch.

Texts are truncated to ``max_length`` tokens (special tokens included) and padded per batch to the
longest text in it (dynamic padding), never to a fixed length. Training and inference share this code,
so the model sees exactly the same ids in both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# A word piece never spans more than this many characters in a BERT vocabulary (its
# max_input_chars_per_word is 100), so cutting a long text here cannot change its first max_length tokens
# unless it holds runs of whitespace; it keeps a 1 MB text from being tokenized in full.
_CHARS_PER_TOKEN_BOUND = 100


def _encodable(text: str) -> str:
    """The text with code points UTF-8 cannot encode (lone surrogates) replaced, which tokenizers needs."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


class TextEncoder:
    """Turns texts into padded ``input_ids``/``attention_mask`` int64 arrays."""

    def __init__(self, tokenizer_file: str | Path, max_length: int) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        self._char_cap = max_length * _CHARS_PER_TOKEN_BOUND

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_length``, unpadded."""
        return [e.ids for e in self.tokenizer.encode_batch([_encodable(t[: self._char_cap]) for t in texts])]

    @staticmethod
    def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Pad rows to the longest one: (input_ids, attention_mask), both int64 (pad id 0)."""
        width = max((len(r) for r in rows), default=0)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode a batch padded to its longest member: (input_ids, attention_mask)."""
        return self.pad(self.token_ids(texts))
