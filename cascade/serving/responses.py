"""What the service answers: every status it can send (the serving page's table is checked against :data:`STATUSES`),
and the JSON error bodies written below FastAPI, by the request guard and by the connection guard."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

STATUSES: dict[int, str] = {
    200: "answered",
    400: "not HTTP/1.1 the parser can read (sent by uvicorn's h11 parser; the connection is closed)",
    401: "missing or wrong API key (every route but `/healthz` and `/readyz`)",
    404: "no such route",
    405: "method not allowed on the route",
    408: "the request's headers took longer than `--header-timeout`, or its body longer than `--body-timeout`; "
         "the connection is closed",
    413: "body over `--max-body-bytes` (read no further; the connection is closed)",
    415: "a POST body that is not `application/json`",
    422: "malformed JSON (bad syntax, not UTF-8, nested too deeply), a body that is not an object, a missing or "
         "unknown field, a wrong type, too many or too long texts, `top_k` or `threshold` out of range: each "
         "error names its field (`[\"body\", \"texts\", 3]`)",
    431: "request line and headers over `--max-head-bytes` (the connection is closed)",
    503: "with `Retry-After: 1`: the neural queue would pass `--max-queue`, `--max-concurrency` requests are being "
         "answered, every one of `--max-connections` is being answered, or the server is shutting down (then "
         "the connection is closed)",
}

RETRY_AFTER = (b"retry-after", b"1")
CLOSE = (b"connection", b"close")


def body(detail: Any) -> bytes:
    """A JSON error body (ASCII only: it never fails to encode, whatever the input held)."""
    return json.dumps({"detail": detail}, ensure_ascii=True, default=str).encode()


def raw_response(status: int, detail: str, *, retry: bool = False) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for answers written straight to a socket
    (before or instead of a request reaching the application)."""
    if status not in STATUSES:
        raise ValueError(f"status {status} is not one the service documents")
    payload = body(detail)
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
            f"content-length: {len(payload)}", "connection: close"]
    if retry:
        head.append("retry-after: 1")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def send_json(send: Any, status: int, detail: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer an ASGI request with ``{"detail": detail}``."""
    if status not in STATUSES:
        raise ValueError(f"status {status} is not one the service documents")
    payload = body(detail)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})
