"""Word-piece tokenization for the neural stage: HF ``tokenizers`` only, no transformers, no torch.

Texts are read through :func:`cascade.text.normalize` (invisible characters and whitespace runs
dropped, length bounded), then truncated to ``max_length`` tokens (special tokens included) and padded per batch to the
longest text in it (dynamic padding), never to a fixed length. Training and inference share this code,
so the model sees exactly the same ids in both.
"""

from __future__ import annotations

import json
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..bundle.manifest import MAX_WINDOWS
from ..limits import DEFAULT_LIMITS, Limits
from ..text import normalize

# A word piece spans at most this many characters (BERT's max_input_chars_per_word is 100) and normalized
# text has no whitespace runs, so a text is first cut here; if the tokenizer deleted so much that fewer
# than max_length tokens came out, the window grows until it has them or holds the whole text.
_CHARS_PER_TOKEN_BOUND = 101  # 100 characters and the space after them


def _encodable(text: str) -> str:
    """The text with code points UTF-8 cannot encode (lone surrogates) replaced, which tokenizers needs."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


# The parts a tokenizer.json may use: those of BERT-style WordPiece tokenizers (MPNet's adds <s> ... </s> with
# RobertaProcessing: two special tokens, like BertProcessing), each named by its "type".
# Others (Replace and Prepend normalizers, regex splits, BPE with dropout, other models) could make one
# text cost unbounded time or memory, or its tokens change from run to run.
_ALLOWED = {
    "normalizer": {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip", "Sequence"},
    "pre_tokenizer": {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "Sequence"},
    "post_processor": {"TemplateProcessing", "BertProcessing", "RobertaProcessing"},
}
MAX_TOKENIZER_BYTES = 32 << 20
_MAX_PARTS = 8  # entries of a Sequence normalizer or pre-tokenizer
_MAX_SPECIAL = 4  # tokens a post-processor may add to a text


def _check_part(part: str, node: Any) -> None:
    allowed = _ALLOWED[part]
    stack = [node]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > _MAX_PARTS + 1:
            raise ValueError(f"{part}: at most {_MAX_PARTS} steps are supported")
        if not isinstance(node, dict) or node.get("type") not in allowed:
            kind = node.get("type") if isinstance(node, dict) else type(node).__name__
            raise ValueError(f"{part} {kind!r} is not supported; use one of {sorted(allowed)}")
        for key in ("normalizers", "pretokenizers"):
            children = node.get(key) or []
            if not isinstance(children, list):
                raise ValueError(f"{part}: {key} must be a list")
            stack.extend(children)
    if part == "post_processor" and node.get("type") == "TemplateProcessing":
        single = node.get("single")
        if not isinstance(single, list) or len(single) > _MAX_SPECIAL + 1:
            raise ValueError(f"post_processor: the template may add at most {_MAX_SPECIAL} tokens to a text")


def _check_spec(spec: Any) -> None:
    """Refuse tokenizer specs that are not BERT-style WordPiece ones (see ``_ALLOWED``), and WordPiece
    settings that would inflate the cost of a text or fail on it later."""
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ValueError("not a tokenizers JSON file (no 'model')")
    model = spec["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"model {model.get('type')!r} is not supported; a BERT-style 'WordPiece' model is")
    for part in _ALLOWED:
        if spec.get(part) is not None:
            _check_part(part, spec[part])
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError("the WordPiece vocabulary must be a non-empty object")
    ids = vocab.values()
    if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(vocab))):
        raise ValueError("the WordPiece vocabulary's ids must be 0 to n-1, each once")
    if model.get("unk_token") not in vocab:
        raise ValueError(f"the unknown token {model.get('unk_token')!r} is not in the vocabulary")
    prefix = model.get("continuing_subword_prefix", "##")
    if not isinstance(prefix, str) or len(prefix) > 8:
        raise ValueError("continuing_subword_prefix must be a string of at most 8 characters")
    chars = model.get("max_input_chars_per_word", 100)
    if type(chars) is not int or not 1 <= chars <= 100:
        raise ValueError(f"max_input_chars_per_word must be from 1 to 100, got {chars!r}")





def check_windows(windows: object) -> int:
    """How many windows of a text are read: an integer from 1 to ``MAX_WINDOWS`` (bool refused)."""
    if isinstance(windows, bool) or not isinstance(windows, Integral) or not 1 <= int(windows) <= MAX_WINDOWS:
        raise ValueError(f"windows must be an integer from 1 to {MAX_WINDOWS}, got {windows!r}")
    return int(windows)

class TextEncoder:
    """Turns texts into padded ``input_ids``/``attention_mask`` int64 arrays."""

    def __init__(self, tokenizer: str | Path | bytes, max_length: int, limits: Limits = DEFAULT_LIMITS,
                 windows: int = 1) -> None:
        """``tokenizer``: the path of a ``tokenizer.json``, or its bytes. ``windows``: how many windows of
        ``max_length`` tokens of a text are read (:meth:`windows_of`); 1 reads its head only."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= 512:
            raise ValueError(f"max_length must be an integer from 2 to 512, got {max_length!r}")
        if check_windows(windows) > 1 and max_length < 3:
            raise ValueError(f"windows above 1 need max_length 3 or more, got windows={windows!r} with max_length "
                             f"{max_length}")
        self.windows = windows
        self.max_length = max_length
        self._total = windows * (max_length - 2) + 2  # tokens read per text, two special tokens included
        self.limits = limits
        raw = tokenizer if isinstance(tokenizer, bytes) else Path(tokenizer).read_bytes()
        if len(raw) > MAX_TOKENIZER_BYTES:
            raise ValueError(f"tokenizer.json: larger than {MAX_TOKENIZER_BYTES >> 20} MiB")
        try:
            spec = json.loads(raw.decode("utf-8"))
            _check_spec(spec)
            self.tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"tokenizer.json: {str(exc)[:300]}") from None
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise ValueError(f"tokenizer.json cannot be loaded ({exc})") from exc
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self._total)
        self._char_cap = self._total * _CHARS_PER_TOKEN_BOUND

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``windows`` windows' worth of tokens, unpadded."""
        normalized = [normalize(t, self.limits) for t in texts]
        rows = [e.ids for e in self.tokenizer.encode_batch([_encodable(t[: self._char_cap]) for t in normalized])]
        for i, text in enumerate(normalized):
            # The tokenizer may drop characters (controls, accents): if the cut text made fewer than
            # max_length tokens, look further, so the tokens are those of the whole (normalized) text.
            window = self._char_cap
            while len(rows[i]) < self._total and len(text) > window:
                window *= 4
                rows[i] = self.tokenizer.encode(_encodable(text[:window])).ids
        return rows

    def windows_of(self, row: list[int]) -> list[list[int]]:
        """A text's token ids cut into consecutive windows of at most ``max_length`` tokens, each wrapped in
        the row's own first and last (special) tokens."""
        if len(row) <= self.max_length:
            return [row]
        body, step = row[1:-1], self.max_length - 2
        return [[row[0], *body[i:i + step], row[-1]] for i in range(0, len(body), step)]

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
