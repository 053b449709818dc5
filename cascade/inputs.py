"""Validation of what users pass to ``classify``: clear errors that name the bad item."""

from __future__ import annotations

from typing import Any


def as_text_list(texts: Any) -> tuple[list[str], bool]:
    """Return (list of texts, whether a single str was given); raise TypeError naming a bad item."""
    if isinstance(texts, str):
        return [texts], True
    if texts is None or isinstance(texts, (bytes, bytearray, memoryview)):
        kind = "None" if texts is None else type(texts).__name__
        raise TypeError(f"texts must be a str or a list of str, got {kind}; decode bytes with .decode('utf-8')")
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}") from None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            hint = " (a missing value?)" if item is None or item != item else ""
            raise TypeError(f"texts[{i}] is {type(item).__name__}{hint}, not str; pass only strings")
    return items, False
