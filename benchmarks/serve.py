"""`cascade serve` under load: requests/s and p50/p99 latency at 1, 8, 32 and 128 concurrent clients,
micro-batching on and off, side by side in one run, on single-text requests drawn from the BANKING77
test split; and the bare `Cascade.classify` call on one text, to show the server's own overhead.

    python benchmarks/serve.py [--requests-per-client 40] [--out benchmarks/serve_results]

Each configuration runs a real server process on loopback; the load comes from this process (asyncio,
one keep-alive connection per client, a few microseconds of client work per request). Client and server
share the machine's cores, as they would on one host: the figures are for the pair.
"""

from __future__ import annotations

import argparse
import asyncio
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

import cascade  # noqa: E402
from cascade.datasets import load_banking77  # noqa: E402

CONCURRENCY = (1, 8, 32, 128)
# the shipped threshold (the product as configured), and every text sent on (threshold 1: what
# micro-batching does to the neural stage alone)
WORKLOADS = (("shipped threshold", None), ("every text to the neural stage", 1.0))


def start_server(batching: bool, extra: list[str]) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "serve", "--port", str(port),
                             "--batching" if batching else "--no-batching", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-client", type=int, default=40,
                        help="requests each client sends at 8 clients and more (at 1 client: 25x this)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md (default: print only)")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra `cascade serve` flags")
    args = parser.parse_args()
    texts = load_banking77("test").texts
    rows = []
    bare = bare_latency(texts)
    for batching in (True, False):
        proc, port = start_server(batching, args.server_args)
        try:
            for workload, threshold in WORKLOADS:
                for clients in CONCURRENCY:
                    per_client = 25 * args.requests_per_client if clients == 1 else args.requests_per_client
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
    summary = {
        "bare_classify_one_text": bare,
        "server_overhead_p50_ms": idle["p50_ms"] - bare["p50_ms"],
        "batching_speedup_at_32": speedup,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "measured": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
        order = [w for w, _ in WORKLOADS]
        lines = ["| workload | clients | micro-batching | requests/s | p50 ms | p99 ms | texts falling through |",
                 "|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (order.index(r["workload"]), r["clients"], not r["batching"])):
            lines.append(f"| {r['workload']} | {r['clients']} | {'on' if r['batching'] else 'off'} | "
                         f"{r['requests_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['fall_through']:.1%} |")
        ratios = "; ".join(f"{w}: {x:.2f}x" for w, x in speedup.items())
        lines += ["", f"Bare `classify()` on one text, same run: p50 {bare['p50_ms']:.3f} ms, p99 {bare['p99_ms']:.3f} ms; "
                      f"server overhead at p50 on an idle server (1 client): {summary['server_overhead_p50_ms']:.3f} ms. "
                      f"Micro-batching at 32 clients, requests/s on against off: {ratios}. "
                      f"{summary['machine']}; {summary['measured']}; `{summary['command']}`."]
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
