"""Validation of what users pass to ``classify``: clear errors that name the bad item."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from numbers import Integral
from typing import Any


def check_top_k(top_k: Any, n_labels: int) -> int:
    """``top_k`` as an int from 1 to ``n_labels`` (numpy integers accepted, bool refused); None is every
    label, as in Hugging Face pipelines."""
    if top_k is None:
        return n_labels
    if isinstance(top_k, bool) or not isinstance(top_k, Integral) or not 1 <= int(top_k) <= n_labels:
        raise ValueError(f"top_k must be an integer from 1 to {n_labels}, got {repr(top_k)[:40]}")
    return int(top_k)


def _is_missing(item: Any) -> bool:
    if item is None:
        return True
    try:
        return bool(item != item)  # NaN
    except (TypeError, ValueError):  # pandas.NA refuses truth testing: it is a missing value too
        return True


def refuse_ambiguous(texts: Any) -> None:
    """Refuse inputs whose texts would be ambiguous or are not text at all, saying what to pass instead."""
    if texts is None or isinstance(texts, (bytes, bytearray, memoryview)):
        kind = "None" if texts is None else type(texts).__name__
        raise TypeError(f"texts must be a str or a list of str, got {kind}; decode bytes with .decode('utf-8')")
    if isinstance(texts, (dict, set, frozenset)) or hasattr(texts, "columns"):
        kind = "a DataFrame" if hasattr(texts, "columns") else f"a {type(texts).__name__}"
        raise TypeError(f"texts must be a str or a list of str, got {kind}, whose texts would be ambiguous "
                        "(keys? column names? in what order?); pass a list, e.g. df['text'].tolist()")
    ndim = getattr(texts, "ndim", 1)
    if ndim != 1:
        raise TypeError(f"texts must be one-dimensional, got an array of shape {getattr(texts, 'shape', '?')}; "
                        "pass a flat list of str (e.g. array.ravel().tolist())")
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")


def _check_item(i: int, item: Any) -> str:
    if not isinstance(item, str):
        hint = " (a missing value?)" if _is_missing(item) else ""
        raise TypeError(f"texts[{i}] is {type(item).__name__}{hint}, not str; pass only strings")
    return item


def is_stream(texts: Any) -> bool:
    """Whether ``texts`` is read once, item by item (a generator, an iterator, any iterable without a
    length): such input is classified chunk by chunk, never held whole."""
    return not isinstance(texts, (str, Sized)) and isinstance(texts, Iterable)


def as_text_list(texts: Any) -> tuple[list[str], bool]:
    """Return (list of texts, whether a single str was given); raise TypeError naming a bad item."""
    if isinstance(texts, str):
        return [texts], True
    refuse_ambiguous(texts)
    return [_check_item(i, item) for i, item in enumerate(texts)], False


def text_chunks(texts: Iterable[Any], size: int) -> Iterator[list[str]]:
    """The texts of any iterable, ``size`` at a time, pulled lazily; a bad item is named by its position
    in the whole stream."""
    if isinstance(texts, str):
        yield [texts]
        return
    refuse_ambiguous(texts)
    chunk: list[str] = []
    for i, item in enumerate(texts):
        chunk.append(_check_item(i, item))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
