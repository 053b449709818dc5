"""`cascade batch` on a generated 1,000,000-row Parquet file (30% duplicate texts, some nulls): peak memory
and rows/s, with each runtime (`--runtime onnxruntime`, `--runtime openvino`), against the same rows through
`classify()`, one call per chunk, in the same run.

    python benchmarks/batch.py [--rows 1000000] [--runtimes onnxruntime,openvino,openvino@onnxruntime]
                               [--out benchmarks/batch_results]

Each runtime runs at its own threshold; ``openvino@onnxruntime`` runs OpenVINO at onnxruntime's threshold,
so the same texts reach the neural stage and only the engine differs. The OpenVINO runs use the bundle's
OpenVINO model, or a copy of the shipped bundle with one, built once into the benchmark cache
(``systems.openvino_bundle``); without the extras they are skipped and say why.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
from systems import Unavailable, openvino_bundle

import cascade
from cascade.banking77 import load_banking77

# Runs `cascade batch` and prints the child's own peak RSS (kB) on stderr's last line.
_CHILD = ("import resource, sys\nfrom cascade.cli import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
          "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nraise SystemExit(code)\n")


def run_batch(source: Path, out: Path, bundle: Path, runtime: str, chunk: int, threshold: float | None) -> dict:
    """One `cascade batch` run in a child process: seconds, its summary, its peak RSS."""
    started = time.perf_counter()
    extra = ["--threshold", repr(threshold)] if threshold is not None else []
    run = subprocess.run([sys.executable, "-c", _CHILD, "batch", str(source), "--out", str(out), "--chunk-size",
                          str(chunk), "--bundle", str(bundle), "--runtime", runtime, *extra],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    return {"seconds": seconds, "summary": json.loads(run.stdout),
            "peak_mb": int(run.stderr.strip().splitlines()[-1]) / 1024}


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
    parser.add_argument("--runtimes", default="onnxruntime,openvino,openvino@onnxruntime",
                        help="comma-separated runs of `cascade batch`: a runtime at its own threshold, or "
                             "openvino@onnxruntime: OpenVINO at onnxruntime's threshold")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    base = cascade.read_bundle(args.bundle if args.bundle is not None else cascade.load().bundle.path)
    bundles, skipped = {}, {}
    for spec in args.runtimes.split(","):
        if spec not in ("onnxruntime", "openvino", "openvino@onnxruntime"):
            parser.error(f"--runtimes: unknown run {spec!r}")
        try:
            bundles[spec] = base.path if spec == "onnxruntime" else openvino_bundle(base).path
        except Unavailable as exc:
            skipped[spec] = str(exc)
            print(f"skipping {spec}: {exc}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="cascade-batch-bench-"))
    source = work / "rows.parquet"
    made = generate(source, args.rows)
    print("generated", made, flush=True)
    runs = {spec: run_batch(source, work / f"out-{i}.parquet", path, spec.split("@")[0], args.chunk,
                            base.threshold if spec.endswith("@onnxruntime") else None)
            for i, (spec, path) in enumerate(bundles.items())}

    import duckdb

    texts = [row[0] for row in duckdb.connect().execute(
        f"SELECT text FROM read_parquet('{source}') WHERE text IS NOT NULL").fetchall()]
    model = cascade.load(base.path)
    started = time.perf_counter()
    for i in range(0, len(texts), args.chunk):
        model.classify(texts[i:i + args.chunk], progress=False)
    classify_seconds = time.perf_counter() - started

    first = next(iter(runs.values()))
    result = {
        "rows": args.rows, "null_rows": made["nulls"], "distinct_texts": first["summary"]["distinct_texts"],
        "batch": {runtime: {"seconds": round(r["seconds"], 1), "rows_per_s": round(args.rows / r["seconds"]),
                            "peak_rss_mb": round(r["peak_mb"])} for runtime, r in runs.items()},
        "classify_seconds": round(classify_seconds, 1), "classify_rows_per_s": round(len(texts) / classify_seconds),
        "skipped": skipped,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "measured": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/batch.py " + " ".join(sys.argv[1:]),
    }
    if "onnxruntime" in runs:
        result["speedup_vs_classify"] = round((args.rows / runs["onnxruntime"]["seconds"])
                                              / (len(texts) / classify_seconds), 2)
        for spec in ("openvino", "openvino@onnxruntime"):
            if spec in runs:
                result[f"{spec}_vs_onnxruntime"] = round(runs["onnxruntime"]["seconds"] / runs[spec]["seconds"], 2)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        rows = ["| path | rows | seconds | rows/s | peak RSS |", "|---|---|---|---|---|"]
        rows += [f"| `cascade batch --runtime {spec.split('@')[0]}`"
                 + (f" at onnxruntime's threshold ({base.threshold:.4f})" if "@" in spec else " at its own threshold")
                 + f" (DuckDB, each distinct text once, resumable) | {args.rows:,} | {r['seconds']:,.0f} | "
                 f"{args.rows / r['seconds']:,.0f} | {r['peak_mb']:,.0f} MB |" for spec, r in runs.items()]
        rows.append(f"| `classify()` (onnxruntime), one call per {args.chunk:,} texts (non-null rows, no dedup, no "
                    f"file I/O) | {len(texts):,} | {classify_seconds:,.0f} | {len(texts) / classify_seconds:,.0f} | - |")
        args.out.with_suffix(".md").write_text(
            "\n".join(rows) + f"\n\n{made['nulls']:,} null rows, {result['distinct_texts']:,} distinct texts"
            + "".join(f"; {runtime} not run: {why}" for runtime, why in skipped.items())
            + f"; {result['machine']}; {result['measured']}; `{result['command']}`.\n")
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
