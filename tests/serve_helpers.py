"""A real `cascade serve` process on loopback for the serving tests, and raw-socket clients for the ones that
misbehave on purpose (half-sent heads, partial bodies, idle connections)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

KEY = "k" * 20 + "-secret-key"
JSON = {"content-type": "application/json"}


class Server:
    """`cascade serve` on a free port, its output collected in ``log``."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "serve", "--port", str(self.port),
                                      "--threads", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, **(env or {})})
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def request(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers={**(JSON if data is not None else {}), **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def classify(self, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        status, _, data = self.request("POST", "/v1/classify", body, headers)
        return status, json.loads(data)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)



def raw(port: int, data: bytes = b"") -> socket.socket:
    """A connection that has sent ``data`` and nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if data:
        sock.sendall(data)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection, and whether it did within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    got = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return got, False
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    return got, False


NONE_DEFAULTS = {"bundle": "the shipped bundle", "api_key": "none", "threads": "the cores it may use"}


def settings_table() -> str:
    """The serving page's table of `cascade serve` settings, as the settings themselves describe them."""
    from dataclasses import fields

    from cascade.serving.settings import ServeSettings

    rows = ["| setting | flag | variable | default |", "|---|---|---|---|"]
    for f in fields(ServeSettings):
        flag = "--" + f.name.replace("_", "-")
        flags = f"`{flag}` / `--no-{flag[2:]}`" if isinstance(f.default, bool) else f"`{flag}`"
        if f.default is None:
            default = NONE_DEFAULTS[f.name]
        elif isinstance(f.default, bool):
            default = "on" if f.default else "off"
        elif isinstance(f.default, (int, float)):
            default = f"{f.default:g}" if isinstance(f.default, float) or f.name == "port" else f"{f.default:,}"
        else:
            default = str(f.default)
        rows.append(f"| {f.metadata['help']} | {flags} | `{ServeSettings.env_name(f.name)}` | {default} |")
    return "\n".join(rows)
