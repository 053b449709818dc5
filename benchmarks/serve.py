"""`cascade serve` under load, side by side in one run, on single-text requests drawn from the BANKING77 test
split:

* ``load``: requests/s and p50/p99 latency at 1, 8, 32 and 128 concurrent clients, micro-batching on and off,
  and the bare `Cascade.classify` call on one text, to show the server's own overhead;
* ``slow``: one normal client (a new connection per request) alone, then beside 1,030 connections that each
  sent half a request head, a partial body to `/healthz`, or nothing at all, on a server with its defaults
  and an API key; how many of those connections the server closed, and when;
* ``big``: one-text requests alone, then while one 4 MB request (256 texts of 16,000 characters) is answered;
* ``shutdown``: SIGTERM with ``--graceful-seconds 2`` while 12 requests of 250 long texts, all sent to the neural
  stage, are in flight: how each is answered, and when the process exits.

    python benchmarks/serve.py [--parts load slow big shutdown] [--requests-per-client 40] [--out benchmarks/serve_results]

Each configuration runs a real server process on loopback; the load comes from this process (asyncio,
one keep-alive connection per client, a few microseconds of client work per request). Client and server
share the machine's cores, as they would on one host: the figures are for the pair. ``--quick`` is a smoke
run of every part with small numbers (the figures mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade
from cascade.banking77 import load_banking77

CONCURRENCY = (1, 8, 32, 128)
# the shipped threshold (the product as configured), and every text sent on (threshold 1: what
# micro-batching does to the neural stage alone)
WORKLOADS = (("shipped threshold", None), ("every text to the neural stage", 1.0))


def start_server(batching: bool, extra: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "serve", "--port", str(port),
                             "--batching" if batching else "--no-batching", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become ready")


async def _client(port: int, texts: list[str], latencies: list[float], fallen: list[int],
                  threshold: float | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = {} if threshold is None else {"threshold": threshold}
    try:
        for text in texts:
            body = json.dumps({"texts": [text], **extra}).encode()
            request = (b"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body)) + body
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"request failed: {head[:40]!r} {payload[:200]!r}")
            fallen.append(json.loads(payload)["fall_through"])
    finally:
        writer.close()


async def _load(port: int, texts: list[str], clients: int, per_client: int,
                threshold: float | None) -> dict[str, float]:
    rng = random.Random(clients)
    work = [[rng.choice(texts) for _ in range(per_client)] for _ in range(clients)]
    latencies: list[float] = []
    fallen: list[int] = []
    await asyncio.gather(*(_client(port, w[:2], [], [], threshold) for w in work))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, w, latencies, fallen, threshold) for w in work))
    seconds = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "requests_per_s": len(latencies) / seconds,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "fall_through": sum(fallen) / len(fallen)}


def bare_latency(texts: list[str], n: int = 2000) -> dict[str, float]:
    model = cascade.load(cache_size=0)  # the work of one answer, as the server does it (no cache there)
    rng = random.Random(0)
    sample = [rng.choice(texts) for _ in range(n)]
    for text in sample[:100]:
        model.classify(text)
    times = []
    for text in sample:
        started = time.perf_counter()
        model.classify(text)
        times.append(time.perf_counter() - started)
    return {"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * float(np.percentile(times, 99))}


SLOW_CLIENTS = {
    "half-sent heads": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n",
    "partial bodies to /healthz": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
    "connections that send nothing": b"",
}


def _post(conn: http.client.HTTPConnection, body: dict, key: str | None = None) -> tuple[int, bytes]:
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    conn.request("POST", "/v1/classify", body=json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def _normal_client(port: int, texts: list[str], key: str | None, fresh: bool) -> tuple[list[float], int]:
    """One client sending ``texts`` one per request, in turn (``fresh``: a new connection each time): the
    latencies of the requests answered 200, and how many were not."""
    latencies, failed = [], 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for text in texts:
        started = time.perf_counter()
        try:
            if fresh:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status, _ = _post(conn, {"texts": [text]}, key)
        except OSError:
            status = -1
        finally:
            if fresh:
                conn.close()
        if status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failed += 1
    conn.close()
    return latencies, failed


def _summary(latencies: list[float], failed: int) -> dict[str, float]:
    return {"requests": len(latencies) + failed, "answered": len(latencies), "failed": failed,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else float("nan"),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else float("nan")}


def _wait_closed(socks: list[socket.socket], timeout: float) -> tuple[int, float]:
    """How many of ``socks`` the server closed within ``timeout`` s, and when the last of them was closed."""
    import selectors

    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    started, closed, last = time.monotonic(), 0, 0.0
    while closed < len(socks) and (left := timeout - (time.monotonic() - started)) > 0:
        for key, _ in selector.select(left):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(sock)
                closed, last = closed + 1, time.monotonic() - started
    selector.close()
    return closed, last


def slow_clients(texts: list[str], connections: int, requests: int) -> list[dict]:
    """A server with its defaults and an API key; a normal client alone, then beside ``connections`` slow ones."""
    import secrets

    key = secrets.token_urlsafe(32)
    proc, port = start_server(True, [], env={"CASCADE_API_KEY": key})
    rows = []
    try:
        sample = [texts[i % len(texts)] for i in range(requests)]
        _normal_client(port, sample[:20], key, fresh=True)  # warm-up
        rows.append({"slow_clients": "none", "connections": 0, **_summary(*_normal_client(port, sample, key, True))})
        for name, payload in SLOW_CLIENTS.items():
            socks = []
            for _ in range(connections):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                if payload:
                    sock.sendall(payload)
                socks.append(sock)
            time.sleep(0.5)
            row = {"slow_clients": name, "connections": connections, **_summary(*_normal_client(port, sample, key, True))}
            row["closed_by_server"], row["all_closed_after_s"] = _wait_closed(socks, timeout=30)
            for sock in socks:
                sock.close()
            rows.append(row)
            print(json.dumps(row), flush=True)
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


def _long_texts(n: int, chars: int) -> list[str]:
    rng = random.Random(1)
    words = " ".join(load_banking77("train").texts[:2000]).split()
    return [" ".join(rng.choice(words) for _ in range(chars // 5))[:chars] for _ in range(n)]


def big_request(texts: list[str], n_big: int, requests: int) -> dict:
    """One-text requests (a new connection each) alone, then while one request of ``n_big`` texts of 16,000
    characters is answered."""
    import threading

    proc, port = start_server(True, [])
    try:
        sample = [texts[i % len(texts)] for i in range(requests)]
        _normal_client(port, sample[:20], None, fresh=True)
        alone = _summary(*_normal_client(port, sample, None, fresh=True))
        big = _long_texts(n_big, 16_000)
        done: dict = {}

        def send_big() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            started = time.perf_counter()
            done["status"], _ = _post(conn, {"texts": big})
            done["seconds"] = time.perf_counter() - started
            conn.close()

        worker = threading.Thread(target=send_big)
        worker.start()
        time.sleep(0.2)
        beside: list[float] = []
        failed = bad_total = 0
        while worker.is_alive():
            latencies, bad = _normal_client(port, [sample[(len(beside) + bad_total) % len(sample)]], None, True)
            beside += latencies
            failed += bad
            bad_total += bad
        worker.join()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"big_texts": n_big, "big_chars": 16_000 * n_big, "big_status": done.get("status"),
            "big_seconds": done.get("seconds"), "small_alone": alone, "small_beside_big": _summary(beside, failed)}


def load_part(texts: list[str], per: int, server_args: list[str]) -> tuple[list[dict], dict]:
    rows = []
    bare = bare_latency(texts)
    for batching in (True, False):
        proc, port = start_server(batching, server_args)
        try:
            for workload, threshold in WORKLOADS:
                for clients in CONCURRENCY:
                    per_client = 25 * per if clients == 1 else per
                    row = asyncio.run(_load(port, texts, clients, per_client, threshold))
                    row.update(batching=batching, workload=workload)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    shipped = [r for r in rows if r["workload"] == WORKLOADS[0][0]]
    idle = next(r for r in shipped if r["batching"] and r["clients"] == 1)
    speedup = {}
    for workload, _ in WORKLOADS:
        at32 = {r["batching"]: r for r in rows if r["clients"] == 32 and r["workload"] == workload}
        speedup[workload] = at32[True]["requests_per_s"] / at32[False]["requests_per_s"]
    return rows, {"bare_classify_one_text": bare, "server_overhead_p50_ms": idle["p50_ms"] - bare["p50_ms"],
                  "batching_speedup_at_32": speedup}


def load_table(rows: list[dict], summary: dict) -> list[str]:
    order = [w for w, _ in WORKLOADS]
    lines = ["| workload | clients | micro-batching | requests/s | p50 ms | p99 ms | texts falling through |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (order.index(r["workload"]), r["clients"], not r["batching"])):
        lines.append(f"| {r['workload']} | {r['clients']} | {'on' if r['batching'] else 'off'} | "
                     f"{r['requests_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['fall_through']:.1%} |")
    bare = summary["bare_classify_one_text"]
    ratios = "; ".join(f"{w}: {x:.2f}x" for w, x in summary["batching_speedup_at_32"].items())
    note = (f"Bare `classify()` on one text, same run: p50 {bare['p50_ms']:.3f} ms, p99 {bare['p99_ms']:.3f} ms; "
            f"server overhead at p50 on an idle server (1 client): {summary['server_overhead_p50_ms']:.3f} ms. "
            f"Micro-batching at 32 clients, requests/s on against off: {ratios}.")
    return [*lines, "", note]


def slow_table(rows: list[dict]) -> list[str]:
    lines = [("| beside the normal client | connections | normal requests answered | p50 ms | p99 ms | "
              "slow connections the server closed | last one closed after |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        closed = "–" if not r["connections"] else f"{r['closed_by_server']:,} of {r['connections']:,}"
        after = "–" if not r["connections"] else f"{r['all_closed_after_s']:.1f} s"
        lines.append(f"| {r['slow_clients']} | {r['connections']:,} | {r['answered']} of {r['requests']} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {closed} | {after} |")
    return lines


def big_table(big: dict) -> list[str]:
    lines = ["| one-text requests | answered | p50 ms | p99 ms |", "|---|---|---|---|"]
    beside = (f"while one request of {big['big_texts']} texts of 16,000 characters ({big['big_chars']:,} characters) "
              "is answered")
    for name, key in (("alone", "small_alone"), (beside, "small_beside_big")):
        r = big[key]
        lines.append(f"| {name} | {r['answered']} of {r['requests']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    return lines + ["", f"The big request itself: status {big['big_status']}, {big['big_seconds']:.1f} s."]


def shutdown_part(n_requests: int, n_texts: int, grace: float = 2.0) -> dict:
    """``n_requests`` concurrent requests of ``n_texts`` long texts, all sent to the neural stage (seconds of
    work each), then SIGTERM with ``--graceful-seconds`` ``grace``: how each was answered, and when the
    process exited."""
    import signal
    import threading
    from collections import Counter

    proc, port = start_server(True, ["--graceful-seconds", str(grace)])
    texts = _long_texts(n_texts, 2000)
    statuses: list[int] = []

    def heavy(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            statuses.append(_post(conn, {"texts": texts[i:] + texts[:i], "threshold": 1.0})[0])
        except OSError:
            statuses.append(-1)  # no answer at all
        finally:
            conn.close()

    threads = [threading.Thread(target=heavy, args=(i,)) for i in range(n_requests)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    exit_s = time.monotonic() - signalled
    for t in threads:
        t.join(timeout=60)
    return {"requests": n_requests, "texts_each": n_texts, "graceful_seconds": grace,
            "statuses": dict(Counter(str(s) for s in statuses)), "exit_after_sigterm_s": exit_s}


def shutdown_table(row: dict) -> list[str]:
    answered = ", ".join(f"{n} × {'no answer' if s == '-1' else s}" for s, n in sorted(row["statuses"].items()))
    return ["| requests in flight at SIGTERM | `--graceful-seconds` | answered | process exited after SIGTERM |",
            "|---|---|---|---|",
            f"| {row['requests']} × {row['texts_each']} texts of 2,000 characters, `\"threshold\": 1.0` | "
            f"{row['graceful_seconds']:g} s | {answered} | {row['exit_after_sigterm_s']:.1f} s |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("load", "slow", "big", "shutdown"),
                        default=["load", "slow", "big", "shutdown"],
                        help="what to measure (default: all)")
    parser.add_argument("--requests-per-client", type=int, default=40,
                        help="requests each client sends at 8 clients and more (at 1 client: 25x this)")
    parser.add_argument("--slow-connections", type=int, default=1030,
                        help="slow connections beside the normal client (default: 1,030, past the default "
                             "--max-connections of 1,024)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part with small numbers")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md (default: print only)")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `cascade serve` flags (load part)")
    args = parser.parse_args()
    texts = load_banking77("test").texts
    result: dict = {}
    md: list[str] = []
    if "load" in args.parts:
        rows, summary = load_part(texts if not args.quick else texts[:200], 2 if args.quick else args.requests_per_client,
                                  args.server_args)
        result.update(rows=rows, summary=summary)
        md += load_table(rows, summary) + [""]
    if "slow" in args.parts:
        result["slow_clients"] = slow_clients(texts, 20 if args.quick else args.slow_connections,
                                              10 if args.quick else 200)
        md += slow_table(result["slow_clients"]) + [""]
    if "big" in args.parts:
        result["big_request"] = big_request(texts, 4 if args.quick else 256, 10 if args.quick else 200)
        print(json.dumps(result["big_request"]), flush=True)
        md += big_table(result["big_request"]) + [""]
    if "shutdown" in args.parts:
        result["shutdown"] = shutdown_part(4 if args.quick else 12, 20 if args.quick else 250)
        print(json.dumps(result["shutdown"]), flush=True)
        md += shutdown_table(result["shutdown"]) + [""]
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    result["measured"] = time.strftime("%Y-%m-%d")
    result["command"] = "python benchmarks/serve.py " + " ".join(sys.argv[1:])
    md.append(f"{result['machine']}; {result['measured']}; `{result['command']}`.")
    print("\n".join(md))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
