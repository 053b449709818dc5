"""`cascade batch` on a generated 1,000,000-row Parquet file (30% duplicate texts, some nulls): peak memory
and rows/s, against the same rows through `classify()`, one call per chunk, in the same run.

    python benchmarks/batch.py [--rows 1000000] [--out benchmarks/batch_results]

The texts are BANKING77 test questions, each made distinct by an order number ("... (order 48213)");
30% of the rows repeat an earlier row's text, 2% are null. Peak RSS is the batch process's own (a child
process, read from getrusage), so the benchmark's memory does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade
from cascade.banking77 import load_banking77


def generate(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    import duckdb
    import pyarrow as pa

    rng = random.Random(seed)
    base = load_banking77("test").texts
    texts: list[str | None] = []
    fresh = 0
    for i in range(n):
        r = rng.random()
        if r < 0.02:
            texts.append(None)
        elif r < 0.32 and fresh:
            texts.append(texts[rng.randrange(i)] or f"{base[0]} (order 0)")
        else:
            texts.append(f"{base[rng.randrange(len(base))]} (order {fresh})")
            fresh += 1
    rows = pa.table({"id": pa.array(range(n), pa.int64()), "text": texts,
                     "customer": [f"c{rng.randrange(50_000)}" for _ in range(n)]})
    con = duckdb.connect()
    con.register("generated", rows)
    con.execute(f"COPY (SELECT * FROM generated) TO '{path}' (FORMAT parquet)")
    return {"rows": n, "nulls": sum(t is None for t in texts), "distinct": len(set(t for t in texts if t))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=4096, help="texts per classify() call and per batch commit")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cascade-batch-bench-"))
    source = work / "rows.parquet"
    made = generate(source, args.rows)
    print("generated", made, flush=True)

    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "cascade.cli", "batch", str(source), "--out", str(work / "out.parquet"),
                          "--chunk-size", str(args.chunk)], capture_output=True, text=True)
    batch_seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    summary = json.loads(run.stdout)

    import duckdb

    texts = [row[0] for row in duckdb.connect().execute(
        f"SELECT text FROM read_parquet('{source}') WHERE text IS NOT NULL").fetchall()]
    model = cascade.load()
    started = time.perf_counter()
    for i in range(0, len(texts), args.chunk):
        model.classify(texts[i:i + args.chunk], progress=False)
    classify_seconds = time.perf_counter() - started

    result = {
        "rows": args.rows, "null_rows": made["nulls"], "distinct_texts": summary["distinct_texts"],
        "batch_seconds": round(batch_seconds, 1), "batch_rows_per_s": round(args.rows / batch_seconds),
        "batch_peak_rss_mb": round(peak_mb),
        "classify_seconds": round(classify_seconds, 1), "classify_rows_per_s": round(len(texts) / classify_seconds),
        "speedup": round((args.rows / batch_seconds) / (len(texts) / classify_seconds), 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "measured": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/batch.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(
            "| path | rows | seconds | rows/s | peak RSS |\n|---|---|---|---|---|\n"
            f"| `cascade batch` (DuckDB, each distinct text once, resumable) | {args.rows:,} | {batch_seconds:,.0f} | "
            f"{args.rows / batch_seconds:,.0f} | {peak_mb:,.0f} MB |\n"
            f"| `classify()`, one call per {args.chunk:,} texts (non-null rows, no dedup, no file I/O) | "
            f"{len(texts):,} | {classify_seconds:,.0f} | {len(texts) / classify_seconds:,.0f} | - |\n\n"
            f"{made['nulls']:,} null rows, {summary['distinct_texts']:,} distinct texts; {result['machine']}; "
            f"{result['measured']}; `{result['command']}`.\n")
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
