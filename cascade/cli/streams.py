"""Standard input and output of the command line: UTF-8 whatever the locale, bounded memory per line."""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Iterator
from typing import Any

from ..text import skip_leading

STDIN_CHUNK = 1024


def read_stdin_chunks(max_text_chars: int) -> Iterator[list[str]]:
    """Lines of standard input, decoded as UTF-8 whatever the locale says, in chunks. Of a line, what
    cascade reads is kept (its first ``max_text_chars`` characters after leading whitespace, as for any
    text); the rest is skipped without being held in memory."""
    chunk: list[str] = []
    for lineno, line in enumerate(stdin_lines(max_text_chars), start=1):
        if line is None:
            raise ValueError(f"standard input line {lineno} is not UTF-8; cascade reads UTF-8 "
                             "(convert with e.g. `iconv -f latin1 -t UTF-8`)")
        chunk.append(line)
        if len(chunk) == STDIN_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def stdin_lines(max_text_chars: int, block: int = 1 << 16) -> Iterator[str | None]:
    """Each line of stdin (None if not UTF-8), leading whitespace skipped and cut at ``max_text_chars``,
    read in blocks so that no line, however long, is held whole."""

    stream = sys.stdin.buffer
    while True:
        raw = stream.readline(block)
        if not raw:
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        kept, ok = "", True
        while True:
            end = raw.endswith(b"\n")
            try:
                piece = decoder.decode(raw, final=end)
            except UnicodeDecodeError:
                ok = False
            if ok and len(kept) < max_text_chars:
                kept = kept + piece if kept.strip() else skip_leading(kept + piece)
                kept = kept[: max_text_chars]
            if end:
                break
            raw = stream.readline(block)
            if not raw:
                ok = ok and not decoder.buffer  # a truncated character at the very end
                break
        yield kept.rstrip("\r\n") if ok else None


def write_json_line(out: Any, obj: Any) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")


def utf8_stdout() -> Any:
    """Standard output as UTF-8 text, whatever the locale or PYTHONIOENCODING say."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    return sys.stdout
