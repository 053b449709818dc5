"""Every setting of ``cascade serve``, each with its CLI flag and its environment variable, parsed by its type."""

from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..stages.neural import check_threads
from ..stages.runtime import check_runtime

ENV_PREFIX = "CASCADE_SERVE_"
API_KEY_ENV = "CASCADE_API_KEY"
MIN_KEY_CHARS = 16
INTEGER = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)(e[-+]?[0-9]+)?")


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the HTTP service; ``help`` is what ``cascade serve --help`` and the serving page print."""

    bundle: Path | None = field(default=None, metadata={"help": "bundle folder (default: the shipped one, or "
                                                                "$CASCADE_BUNDLE)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 0.0.0.0 exposes it to the network"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "require 'Authorization: Bearer KEY' on every route but /healthz and /readyz (prefer the variable: a "
                "flag shows in the process list)"})
    threads: int | None = field(default=None, metadata={"help": "onnxruntime threads for the neural stage (default: "
                                                                "the cores this process may use)"})
    runtime: str = field(default="onnxruntime", metadata={
        "help": "engine of the neural stage: onnxruntime, or openvino (needs the [openvino] extra and a bundle with an "
                "OpenVINO model; faster in big batches, slower one text at a time)"})
    max_batch: int = field(default=64, metadata={"help": "most fall-through texts in one neural micro-batch"})
    slice_chars: int = field(default=32_768, metadata={
        "help": "most characters in one unit of stage work (a slice of a request for the cheap stage, a neural "
                "micro-batch): a small request waits behind at most one unit of a big one"})
    max_wait_ms: float = field(default=0.0, metadata={"help": "how long a micro-batch waits for more texts once "
                                                              "the neural stage is free"})
    batching: bool = field(default=True, metadata={"help": "gather fall-through texts across requests (off: each "
                                                           "request's texts run alone, one request at a time)"})
    max_queue: int = field(default=4096, metadata={"help": "fall-through texts waiting for the neural stage before "
                                                           "new requests get 503 with Retry-After (at least "
                                                           "--max-texts, so that any request can fit)"})
    max_texts: int = field(default=256, metadata={"help": "texts per request"})
    max_chars: int = field(default=20_000, metadata={"help": "characters per text"})
    max_body_bytes: int = field(default=4 << 20, metadata={"help": "bytes per request body (413 above)"})
    max_head_bytes: int = field(default=32 << 10, metadata={"help": "bytes of a request's line and headers (431 "
                                                                     "above; the connection is closed)"})
    max_connections: int = field(default=1024, metadata={
        "help": "open connections; when full, a new one replaces the idle connection or half-sent head that has "
                "waited longest (a half-sent body only if there is none), and gets 503 only if every one is being "
                "answered"})
    max_concurrency: int = field(default=256, metadata={"help": "requests being answered at once, counted from "
                                                                "their last body byte (503 with Retry-After above)"})
    idle_timeout: float = field(default=5.0, metadata={"help": "seconds an open connection may wait for the first "
                                                               "byte of a request (new or kept alive) before it "
                                                               "is closed"})
    header_timeout: float = field(default=10.0, metadata={"help": "seconds from a request's first byte to the end of "
                                                                  "its headers (408 and closed above)"})
    body_timeout: float = field(default=30.0, metadata={"help": "seconds from the end of a request's headers to the "
                                                                "end of its body (408 and closed above)"})
    send_timeout: float = field(default=30.0, metadata={"help": "seconds an answer may wait for the client to read "
                                                                "it once the socket's send buffer is full (closed "
                                                                "above)"})
    drift_window: int = field(default=2000, metadata={"help": "texts in the sliding window whose fall-through rate, "
                                                              "and estimated accuracy, are tested against the "
                                                              "promised ones"})
    drift_level: float = field(default=0.001, metadata={"help": "significance level of those tests"})
    feedback_alpha: float = field(default=0.05, metadata={"help": "POST /v1/feedback: the promise is declared "
                                                                  "violated at confidence 1 - this (anytime-valid)"})
    graceful_seconds: float = field(default=30.0, metadata={"help": "on SIGTERM/SIGINT, how long requests in "
                                                                    "flight may take to finish; then they get 503 "
                                                                    "and their work is cancelled"})

    def __post_init__(self) -> None:
        positive = ("port", "max_batch", "slice_chars", "max_queue", "max_texts", "max_chars", "max_body_bytes",
                    "max_head_bytes", "max_connections", "max_concurrency", "drift_window")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_wait_ms", "idle_timeout", "header_timeout", "body_timeout", "send_timeout", "drift_level",
                     "feedback_alpha", "graceful_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.port > 65535:
            raise ValueError(f"port must be at most 65535, got {self.port}")
        if not 0.0 <= self.max_wait_ms <= 1000.0:
            raise ValueError(f"max_wait_ms must be between 0 and 1000, got {self.max_wait_ms}")
        for name in ("idle_timeout", "header_timeout", "body_timeout", "send_timeout"):
            if not 0.1 <= getattr(self, name) <= 3600.0:
                raise ValueError(f"{name} must be between 0.1 and 3600 seconds, got {getattr(self, name)}")
        if self.max_head_bytes < 1024:
            raise ValueError(f"max_head_bytes must be at least 1024 (a request line and a few headers), got "
                             f"{self.max_head_bytes}")
        if not 0.0 < self.drift_level < 0.5:
            raise ValueError(f"drift_level must be between 0 and 0.5, got {self.drift_level}")
        if not 0.0 < self.feedback_alpha < 0.5:
            raise ValueError(f"feedback_alpha must be between 0 and 0.5, got {self.feedback_alpha}")
        if not 0.0 <= self.graceful_seconds <= 3600.0:
            raise ValueError(f"graceful_seconds must be between 0 and 3600, got {self.graceful_seconds}")
        if self.max_queue < self.max_texts:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts}): a request "
                             "whose texts all fall through could never fit in the neural queue")
        if self.threads is not None:
            check_threads(self.threads)
        check_runtime(self.runtime)
        if self.api_key is not None and len(self.api_key) < MIN_KEY_CHARS:
            raise ValueError(f"the API key must be at least {MIN_KEY_CHARS} characters (e.g. `python -c 'import "
                             "secrets; print(secrets.token_urlsafe(32))'`)")

    @staticmethod
    def env_name(name: str) -> str:
        return API_KEY_ENV if name == "api_key" else ENV_PREFIX + name.upper()

    @classmethod
    def from_sources(cls, flags: dict[str, Any], environ: dict[str, str] | None = None) -> ServeSettings:
        """Flags given on the command line win over environment variables, which win over the defaults. A
        variable that is set must hold a valid value of its setting's type: an empty one is an error too
        (an empty ``$CASCADE_API_KEY`` would otherwise turn authentication off without a word)."""
        environ = dict(os.environ) if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is not None:  # checked even when a flag overrides it: a bad variable is never silent
                values[f.name] = _parse(cls.env_name(f.name), raw, hints[f.name])
            if flags.get(f.name) is not None:
                values[f.name] = flags[f.name]
        if values.get("bundle") is not None:
            values["bundle"] = Path(values["bundle"])
        return cls(**values)


def _parse(env: str, raw: str, hint: Any) -> Any:
    """``raw`` as a value of ``hint`` (``int | None`` is an int: None is the default, never a variable)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if raw.strip() == "":
        raise ValueError(f"${env} is set but empty: give it a value or unset it")
    word = raw.strip().lower()
    try:
        if hint is bool:
            if word not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return word in ("1", "true", "yes", "on")
        if hint is int:
            if not INTEGER.fullmatch(word):  # int() would also take '1_000', '+5' and non-ASCII digits
                raise ValueError(raw)
            return int(word)
        if hint is float:
            if not NUMBER.fullmatch(word):
                raise ValueError(raw)
            return float(word)
        if hint is Path:
            return Path(raw)
    except ValueError:
        raise ValueError(f"${env}={raw!r} is not a valid {'finite number' if hint is float else hint.__name__}") \
            from None
    return raw
