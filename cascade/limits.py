"""Resource limits: what bounds memory and time, whatever a text or a file contains.

Every limit is a setting (``cascade.load(path, limits=Limits(...))``); none depends on the input. The
defaults change nothing for ordinary text: they only cut what no classifier needs, such as a
megabyte-long "word" or the ten-millionth character of a text.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral


@dataclass(frozen=True)
class Limits:
    """Bounds on the work and memory one text, one batch or one file can cost, whatever the input holds.

    Parameters
    ----------
    max_text_chars : int, default 100,000
        Characters of a text that are read, counted after its leading whitespace; the rest is ignored (the
        neural stage reads far less: ``max_length`` tokens).
    max_word_chars : int, default 100
        Characters of one whitespace-separated word that are kept (BERT-style tokenizers already turn longer
        words into one unknown token).
    word_cache_bytes : int, default 64 MiB
        Memory for the cheap stage's cache of per-word character n-grams; emptied when it would grow past this.
    chunk_size, chunk_chars : int, default 1,024 and 2,000,000
        At most this many texts, holding at most this many characters, are featurized at once.
    max_csv_field_chars : int, default 1,000,000
        The longest field a labelled file may hold.

    Examples
    --------
    >>> import cascade
    >>> model = cascade.load(limits=cascade.Limits(max_text_chars=2_000), threads=1)
    >>> model.classify("card " * 10_000).label == model.classify("card " * 400).label
    True
    """

    max_text_chars: int = 100_000
    max_word_chars: int = 100
    word_cache_bytes: int = 64 << 20
    chunk_size: int = 1024
    chunk_chars: int = 2_000_000
    max_csv_field_chars: int = 1_000_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = Limits()


def chunks(texts: list[str], limits: Limits = DEFAULT_LIMITS) -> list[tuple[int, int]]:
    """(start, end) of consecutive chunks of ``texts`` within ``chunk_size`` texts and ``chunk_chars``
    characters (counting each text up to ``max_text_chars``); a chunk holds at least one text."""
    spans = []
    start, chars = 0, 0
    for i, text in enumerate(texts):
        size = min(len(text), limits.max_text_chars)
        if i > start and (i - start >= limits.chunk_size or chars + size > limits.chunk_chars):
            spans.append((start, i))
            start, chars = i, 0
        chars += size
    if start < len(texts):
        spans.append((start, len(texts)))
    return spans
