"""TF-IDF features for the cheap stage: a small, exact, portable specification.

The featurizer turns a text into the same L2-normalised TF-IDF vector that scikit-learn's
``FeatureUnion`` of ``TfidfVectorizer`` blocks produces, using only the Python standard library and
numpy. It is stored as JSON (``cheap_features.json``) and reimplemented here rather than run through
ONNX string operators, whose regex engines and locale-dependent lower-casing disagree with Python's
(a straight ``to_onnx`` of a word-bigram pipeline matched scikit-learn on only 98.3% of texts).

The algorithm, which any runtime can follow, for each block:

1. ``text.lower()`` (Python's Unicode lower-casing).
2. ``word`` blocks: tokens are the matches of ``token_pattern`` (default ``(?u)\\b\\w\\w+\\b``); the
   n-grams are the tokens joined by single spaces, for every n in ``ngram_range``.
   ``char_wb`` blocks: each whitespace-separated word is padded with one space on each side; its
   n-grams are its substrings of each length n in ``ngram_range``; a padded word no longer than n is
   emitted once, whole, and no longer n-grams are taken from it.
3. Count the n-grams found in ``terms`` (its position is the feature index); drop the others.
4. tf = 1 + ln(count) if ``sublinear_tf`` else count; value = tf * idf[index].
5. Divide the block's values by their Euclidean norm (a block with no known n-gram stays all zero).

Block vectors are concatenated in order; the feature index of a term is its block's offset plus its
position in that block's ``terms``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "cascade.tfidf/1"
# What a featurizer spec may ask for: bounded n-gram sizes and token patterns known to run in linear
# time, so that no spec can make one text cost seconds or gigabytes.
SAFE_TOKEN_PATTERNS = (r"(?u)\b\w\w+\b", r"(?u)\b\w+\b")
MAX_NGRAM = {"word": 3, "char_wb": 6}
MAX_BLOCKS = 4
MAX_TERMS = 5_000_000
_CACHE_ENTRY_OVERHEAD = 120  # bytes of dict slot, str and array headers per cached word, roughly


@dataclass
class FeatureBlock:
    """One TF-IDF block: how to cut n-grams, its vocabulary and its idf weights."""

    analyzer: str
    ngram_range: tuple[int, int]
    terms: list[str]
    idf: np.ndarray
    sublinear_tf: bool = True
    token_pattern: str = r"(?u)\b\w\w+\b"

    def __post_init__(self) -> None:
        if self.analyzer not in MAX_NGRAM:
            raise ValueError(f"unsupported analyzer {self.analyzer!r}; use 'word' or 'char_wb'")
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi <= MAX_NGRAM[self.analyzer]:
            raise ValueError(f"ngram_range {self.ngram_range} of a {self.analyzer} block must satisfy "
                             f"1 <= low <= high <= {MAX_NGRAM[self.analyzer]}")
        if self.token_pattern not in SAFE_TOKEN_PATTERNS:
            raise ValueError(f"token_pattern {self.token_pattern!r} is not one of the supported patterns "
                             f"{list(SAFE_TOKEN_PATTERNS)}")
        if len(self.terms) != len(self.idf) or len(self.terms) > MAX_TERMS:
            raise ValueError(f"{len(self.terms)} terms and {len(self.idf)} idf weights: they must be equal "
                             f"in number and at most {MAX_TERMS}")
        if not all(isinstance(t, str) and t for t in self.terms) or len(set(self.terms)) != len(self.terms):
            raise ValueError("terms must be unique non-empty strings")
        self.idf = np.asarray(self.idf, dtype=np.float64)
        if self.idf.ndim != 1 or not np.all(np.isfinite(self.idf)) or np.any(self.idf <= 0):
            raise ValueError("idf weights must be finite and positive")
        self.vocabulary = {term: i for i, term in enumerate(self.terms)}
        self._token_re = re.compile(self.token_pattern)

    def ngrams(self, text: str) -> list[str]:
        """All n-grams of an already lower-cased text, as scikit-learn's analyzer yields them."""
        lo, hi = self.ngram_range
        if self.analyzer == "word":
            tokens = self._token_re.findall(text)
            grams = list(tokens) if lo == 1 else []
            for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
                grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
            return grams
        grams = []
        for word in text.split():
            grams.extend(self.word_char_ngrams(word))
        return grams

    def word_char_ngrams(self, word: str) -> list[str]:
        """char_wb n-grams of one word. A padded word of size s yields its n-grams for lo <= n < s
        (n <= hi), then itself once if s <= hi: scikit-learn's loop, which stops at the first n that
        reaches the word's size."""
        lo, hi = self.ngram_range
        padded = f" {word} "
        size = len(padded)
        grams = [padded[i : i + n] for n in range(lo, min(hi + 1, size)) for i in range(size - n + 1)]
        if size <= hi:
            grams.append(padded)
        return grams

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyzer": self.analyzer,
            "ngram_range": list(self.ngram_range),
            "token_pattern": self.token_pattern,
            "sublinear_tf": self.sublinear_tf,
            "terms": self.terms,
            "idf": [float(x) for x in self.idf],
        }

    @classmethod
    def from_dict(cls, data: Any) -> FeatureBlock:
        """A block from its JSON form; every field is type-checked (ValueError names the field)."""
        if not isinstance(data, dict):
            raise ValueError(f"a block must be an object, got {type(data).__name__}")
        fields = {"analyzer", "ngram_range", "token_pattern", "sublinear_tf", "terms", "idf"}
        if set(data) - fields or {"analyzer", "ngram_range", "sublinear_tf", "terms", "idf"} - set(data):
            raise ValueError(f"a block has the fields {sorted(fields)}, got {sorted(data)}")
        for key in ("analyzer", "token_pattern"):
            if key in data and not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {type(data[key]).__name__}")
        rng = data["ngram_range"]
        if not (isinstance(rng, list) and len(rng) == 2 and all(type(x) is int for x in rng)):
            raise ValueError(f"ngram_range must be two integers, got {rng!r}")
        if not isinstance(data["sublinear_tf"], bool):
            raise ValueError("sublinear_tf must be true or false")
        if not isinstance(data["terms"], list) or not isinstance(data["idf"], list):
            raise ValueError("terms and idf must be lists")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data["idf"]):
            raise ValueError("idf must hold numbers")
        try:
            idf = np.asarray(data["idf"], dtype=np.float64)
        except OverflowError:
            raise ValueError("idf weights must be finite") from None
        return cls(
            analyzer=data["analyzer"],
            ngram_range=(rng[0], rng[1]),
            terms=data["terms"],
            idf=idf,
            sublinear_tf=data["sublinear_tf"],
            token_pattern=data.get("token_pattern", SAFE_TOKEN_PATTERNS[0]),
        )


class Featurizer:
    """Concatenated TF-IDF blocks: text -> sparse feature vector."""

    def __init__(self, blocks: list[FeatureBlock], cache_bytes: int = 64 << 20) -> None:
        if not 1 <= len(blocks) <= MAX_BLOCKS:
            raise ValueError(f"a featurizer needs 1 to {MAX_BLOCKS} blocks, got {len(blocks)}")
        self.blocks = blocks
        sizes = [len(b.terms) for b in blocks]
        self.offsets = np.cumsum([0] + sizes)
        self.n_features = int(self.offsets[-1])
        # Per-block term -> global feature index, and per-feature arrays, so one text is scored with
        # one pass of numpy over all blocks.
        self._lookups = [{t: i + int(off) for t, i in b.vocabulary.items()} for b, off in zip(blocks, self.offsets)]
        self._idf = np.concatenate([b.idf for b in blocks])
        self._block_of = np.repeat(np.arange(len(blocks)), sizes)
        self._sublinear = np.array([b.sublinear_tf for b in blocks])
        self._all_sublinear = bool(self._sublinear.all())
        # char_wb features depend on each word alone, and words repeat: cache each word's feature ids,
        # within a memory budget (the caches are emptied when they would outgrow it).
        self._word_caches: list[dict[str, np.ndarray] | None] = [
            {} if b.analyzer == "char_wb" else None for b in blocks
        ]
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0

    def _remember(self, cache: dict[str, np.ndarray], word: str, ids: np.ndarray) -> None:
        size = len(word) * 4 + ids.nbytes + _CACHE_ENTRY_OVERHEAD
        if self._cached_bytes + size > self.cache_bytes:
            for c in self._word_caches:
                if c is not None:
                    c.clear()
            self._cached_bytes = 0
            if size > self.cache_bytes:
                return
        cache[word] = ids
        self._cached_bytes += size

    def _found_ids(self, text: str) -> list[np.ndarray]:
        """Feature indices of every known n-gram of one text, repeats included, in pieces."""
        lowered = text.lower()
        parts: list[np.ndarray] = []
        for block, lookup, cache in zip(self.blocks, self._lookups, self._word_caches):
            if cache is None:
                found = [j for j in map(lookup.get, block.ngrams(lowered)) if j is not None]
                parts.append(np.array(found, dtype=np.int64))
                continue
            for word in lowered.split():
                ids = cache.get(word)
                if ids is None:
                    found = [j for j in map(lookup.get, block.word_char_ngrams(word)) if j is not None]
                    ids = np.array(found, dtype=np.int64)
                    self._remember(cache, word, ids)
                parts.append(ids)
        return parts

    def _tfidf(self, idx: np.ndarray, counts: np.ndarray, rows: np.ndarray | None = None, n_rows: int = 1) -> np.ndarray:
        """Tf-idf values of (row, feature) entries with these counts, L2-normalised per row and block."""
        block = self._block_of[idx]
        if self._all_sublinear:
            tf = np.log(counts)
            tf += 1.0
        else:
            tf = np.where(self._sublinear[block], np.log(counts) + 1.0, counts)
        values = tf * self._idf[idx]
        group = block if rows is None else rows * len(self.blocks) + block
        norms = np.sqrt(np.bincount(group, weights=values * values, minlength=n_rows * len(self.blocks)))
        norms[norms == 0] = 1.0  # a block whose values are all zero stays zero
        return values / norms[group]

    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(sorted feature indices, tf-idf values) of one text."""
        parts = self._found_ids(text)
        ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        if len(ids) == 0:
            return ids, np.empty(0, dtype=np.float64)
        idx, counts = np.unique(ids, return_counts=True)
        return idx, self._tfidf(idx, counts)

    def transform(self, texts: list[str]) -> Any:
        """A scipy CSR matrix (len(texts) x n_features) of tf-idf values, counted for the whole batch at once."""
        # lazy: scipy loads only when this runs, so `import cascade` stays light
        from scipy.sparse import csr_matrix

        pieces: list[np.ndarray] = []
        piece_rows: list[int] = []
        for row, text in enumerate(texts):
            parts = self._found_ids(text)
            pieces.extend(parts)
            piece_rows.extend([row] * len(parts))
        n = len(texts)
        if not pieces:
            return csr_matrix((n, self.n_features))
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        rows = np.repeat(np.array(piece_rows, dtype=np.int64), lengths)
        keys, counts = np.unique(rows * self.n_features + np.concatenate(pieces), return_counts=True)
        rows, idx = np.divmod(keys, self.n_features)
        indptr = np.searchsorted(rows, np.arange(n + 1))
        return csr_matrix((self._tfidf(idx, counts, rows, n), idx, indptr), shape=(n, self.n_features))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: Any, cache_bytes: int = 64 << 20) -> Featurizer:
        """A featurizer from its JSON spec, every field checked (ValueError says which block and why)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"unknown featurizer format {found!r}; expected {FORMAT!r}")
        blocks = data.get("blocks")
        if not isinstance(blocks, list):
            raise ValueError("'blocks' must be a list")
        parsed = []
        for i, block in enumerate(blocks):
            try:
                parsed.append(FeatureBlock.from_dict(block))
            except ValueError as exc:
                raise ValueError(f"blocks[{i}]: {exc}") from None
        return cls(parsed, cache_bytes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Featurizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_bytes(cls, data: bytes, cache_bytes: int = 64 << 20) -> Featurizer:
        try:
            spec = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise ValueError("the featurizer spec is nested too deeply") from None
        return cls.from_dict(spec, cache_bytes)
