"""What a text becomes before any stage sees it, the same in training and at inference.

:func:`normalize` drops invisible characters (every Unicode format character: zero-width spaces
and joiners, direction marks and isolates, soft hyphens, byte-order marks, tags; plus variation
selectors, the combining grapheme joiner and Hangul fillers), collapses every run of whitespace to one space
and applies the :class:`~cascade.limits.Limits` on text and word length. Neither stage's answer changes for
ordinary text (both split on whitespace and ignore its amount), but a text that starts with 13,000 spaces or
zero-width spaces is read from its first word, and no input can make a stage do unbounded work.

:func:`dedup_key` is coarser: it decides when two texts are "the same" for deduplication and for
spotting training texts among validation texts (case, spacing, NBSP, punctuation and invisible
characters ignored). :func:`text_hash` hashes it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .limits import DEFAULT_LIMITS, Limits

# Unicode's format characters (category Cf, as of Unicode 16; a test checks this against unicodedata),
# and the other characters that render as nothing.
_FORMAT = ("\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
           "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
           "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f")
_CONTROL = "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"  # control characters that are not whitespace
_OTHER_INVISIBLE = _CONTROL + "\u034f\u115f\u1160\u180b-\u180d\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef"
_INVISIBLE = _FORMAT + _OTHER_INVISIBLE
_LEADING = re.compile(rf"[\s{_INVISIBLE}]*")
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]+")
_SPACE_RE = re.compile(r"\s+")
_PUNCT_RE = re.compile(r"[^\w\s]+")


def normalize(text: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """The text both stages read: from its first visible character, at most ``limits.max_text_chars``
    characters, invisible characters removed, whitespace runs as one space, each word cut to
    ``limits.max_word_chars`` characters."""
    start = _LEADING.match(text).end()  # type: ignore[union-attr]  # always matches
    text = text[start : start + limits.max_text_chars]
    text = _INVISIBLE_RE.sub("", text)
    text = _SPACE_RE.sub(" ", text).strip()
    cap = limits.max_word_chars
    if len(text) > cap:
        words = text.split(" ")
        if max(map(len, words)) > cap:
            text = " ".join(word[:cap] for word in words)
    return text


def skip_leading(text: str) -> str:
    """``text`` from its first visible character (what :func:`normalize` reads from)."""
    return text[_LEADING.match(text).end() :]  # type: ignore[union-attr]  # always matches


def dedup_key(text: str) -> str:
    """The text NFKC-normalised and case-folded, with invisible characters and punctuation removed and
    whitespace runs as one space: texts that differ only in case, spacing, punctuation ("hasn't",
    "hasnt", "card?") or invisible characters share a key. A text with no letter or digit keeps itself
    as its key, so "???" and "!!!" stay distinct."""
    text = text[: DEFAULT_LIMITS.max_text_chars]
    folded = _INVISIBLE_RE.sub("", unicodedata.normalize("NFKC", text).casefold())
    key = " ".join(_PUNCT_RE.sub("", folded).split())
    return key if key else "\x00" + text.strip()


def text_hash(text: str) -> str:
    """The hash a bundle records for a training text: of its :func:`dedup_key`, so near-duplicates match."""
    return hashlib.sha256(dedup_key(text).encode("utf-8", "replace")).hexdigest()[:16]


def text_hash_v1(text: str) -> str:
    """The hash of bundles written before near-duplicates were matched (case and outer space ignored)."""
    return hashlib.sha256(text.strip().lower().encode("utf-8", "replace")).hexdigest()[:16]


def control_char(text: str) -> str | None:
    """The first control character (a line break, a tab, an escape) in ``text``, or None: names that reports
    and terminals show must not hold one."""
    return next((ch for ch in text if unicodedata.category(ch) == "Cc"), None)
