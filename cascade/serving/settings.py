"""Every setting of ``cascade serve``, each with its CLI flag and its environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CASCADE_SERVE_"
API_KEY_ENV = "CASCADE_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the HTTP service; ``help`` is what ``cascade serve --help`` and README print."""

    bundle: Path | None = field(default=None, metadata={"help": "bundle folder (default: the shipped one, or "
                                                                "$CASCADE_BUNDLE)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 0.0.0.0 exposes it to the network"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "require 'Authorization: Bearer KEY' on every route but /healthz and /readyz (prefer the variable: a flag shows in the process list)"})
    threads: int | None = field(default=None, metadata={"help": "onnxruntime threads for the neural stage (default: "
                                                                "the cores this process may use)"})
    max_batch: int = field(default=64, metadata={"help": "most fall-through texts in one neural micro-batch"})
    max_wait_ms: float = field(default=0.0, metadata={"help": "how long a micro-batch waits for more texts once "
                                                              "the neural stage is free"})
    batching: bool = field(default=True, metadata={"help": "gather fall-through texts across requests (off: each "
                                                           "request's texts run alone, one request at a time)"})
    max_queue: int = field(default=4096, metadata={"help": "fall-through texts waiting for the neural stage before "
                                                           "new requests get 503 with Retry-After"})
    max_texts: int = field(default=256, metadata={"help": "texts per request"})
    max_chars: int = field(default=20_000, metadata={"help": "characters per text"})
    max_body_bytes: int = field(default=4 << 20, metadata={"help": "bytes per request body (413 above)"})
    max_concurrency: int = field(default=1024, metadata={"help": "connections served at once (503 above)"})
    drift_window: int = field(default=2000, metadata={"help": "texts in the sliding window whose fall-through rate "
                                                              "is tested against the promised one"})
    drift_level: float = field(default=0.001, metadata={"help": "significance level of that two-sided binomial "
                                                                "test"})
    graceful_seconds: float = field(default=30.0, metadata={"help": "on SIGTERM/SIGINT, how long requests in "
                                                                    "flight may take to finish"})

    def __post_init__(self) -> None:
        positive = ("port", "max_batch", "max_queue", "max_texts", "max_chars", "max_body_bytes", "max_concurrency",
                    "drift_window")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.port > 65535:
            raise ValueError(f"port must be at most 65535, got {self.port}")
        if not 0.0 <= self.max_wait_ms <= 1000.0:
            raise ValueError(f"max_wait_ms must be between 0 and 1000, got {self.max_wait_ms}")
        if not 0.0 < self.drift_level < 0.5:
            raise ValueError(f"drift_level must be between 0 and 0.5, got {self.drift_level}")
        if self.graceful_seconds < 0:
            raise ValueError(f"graceful_seconds must be >= 0, got {self.graceful_seconds}")
        if self.threads is not None:
            from ..stages.neural import check_threads

            check_threads(self.threads)
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("the API key must be at least 16 characters (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'`)")

    @staticmethod
    def env_name(name: str) -> str:
        return API_KEY_ENV if name == "api_key" else ENV_PREFIX + name.upper()

    @classmethod
    def from_sources(cls, flags: dict[str, Any], environ: dict[str, str] | None = None) -> ServeSettings:
        """Flags given on the command line win over environment variables, which win over the defaults."""
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if flags.get(f.name) is not None:
                values[f.name] = flags[f.name]
                continue
            raw = environ.get(cls.env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, f.default)
        if values.get("bundle") is not None:
            values["bundle"] = Path(values["bundle"])
        return cls(**values)


def _parse(name: str, raw: str, default: Any) -> Any:
    env = ServeSettings.env_name(name)
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"${env}={raw!r} is not a valid {type(default).__name__}") from None
    return raw
