"""A bounded, thread-safe cache of answers, keyed on the normalised text both stages read.

Real traffic repeats itself. A text's answer depends only on its normalised form
(:func:`cascade.text.normalize`, what both stages read) and on the model's settings, so equal keys get
equal answers. The cache holds at most ``max_entries`` answers (least recently used first out) of texts
at most ``max_key_chars`` long, so its memory is bounded by settings; it is emptied whenever the model's
routing settings change (bundle, threshold, measure, mix, per-class routing, temperatures, abstention),
and a call at another threshold than the model's own bypasses it (:meth:`cascade.Cascade.uses_cache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

DEFAULT_ENTRIES = 10_000
MAX_KEY_CHARS = 2_000


class ResultCache:
    """LRU map from a normalised text to (final probabilities, answered by the neural stage)."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_key_chars: int = MAX_KEY_CHARS) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError(f"cache size must be a non-negative integer, got {max_entries!r}")
        self.max_entries = max_entries
        self.max_key_chars = max_key_chars
        self._entries: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self._state: Hashable = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0

    def cacheable(self, key: str) -> bool:
        return self.max_entries > 0 and len(key) <= self.max_key_chars

    def get_many(self, keys: Sequence[str], state: Hashable) -> list[tuple[np.ndarray, bool] | None]:
        """Each key's answer, or None; a ``state`` other than the cached answers' empties the cache first."""
        with self._lock:
            if state != self._state:
                self._entries.clear()
                self._state = state
            found: list[tuple[np.ndarray, bool] | None] = []
            for key in keys:
                entry = self._entries.get(key) if self.cacheable(key) else None
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                else:
                    self.misses += 1
                found.append(entry)
            return found

    def put_many(self, keys: Sequence[str], probs: np.ndarray, to_neural: np.ndarray, state: Hashable) -> None:
        with self._lock:
            if state != self._state:  # the settings changed while these were computed: keep nothing stale
                return
            for key, row, neural in zip(keys, probs, to_neural):
                if self.cacheable(key):
                    self._entries[key] = (row.copy(), bool(neural))
                    self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0
