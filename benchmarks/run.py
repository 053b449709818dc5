"""Side by side, in one run, on the BANKING77 test split: the cascade against what users would pick instead.

    python benchmarks/run.py --checkpoint runs/minilm-banking77 --fp32 runs/work/onnx/model-fp32-optimized.onnx
    python benchmarks/run.py --quick          # a smoke run (CI): few texts, one round, no plots
    python benchmarks/run.py --cascade pruned-3=runs/pruned-3-bundle   # another bundle's cascade beside

``openvino_int8`` and ``cascade[openvino]`` run the bundle's OpenVINO model (``--runtime openvino``); for a
bundle without one, a copy with one is built once into the benchmark cache (the [openvino-build] and [train]
extras), else they are skipped with the reason.

``cascade@selection-best`` is the shipped bundle at the most accurate threshold on its selection texts (the
one its build rule compared with; recorded in its manifest): a point on the frontier, not what ships.

Every system runs in this process with the same thread count; batch throughput and one-text latency are
measured in interleaved rounds (warm-up excluded) and reported as medians with [min-max]. Cold start
(import + load + first answer) and peak RSS come from a fresh child process per system. Writes
``results.json`` and ``results.md`` (and the scaling plots) next to this file, and README's table between
its benchmark markers. A --quick run writes its results to a new temporary folder (or --out), never over
the committed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from systems import System, Unavailable, load_system
from timing import interleaved, per_call_latencies

import cascade
from cascade.bundle import default_bundle_path
from cascade.evaluation import macro_f1

HERE = Path(__file__).resolve().parent
SYSTEMS = ["pytorch", "onnx_fp32", "onnx_int8", "openvino_int8", "sklearn", "cheap", "fasttext", "cascade",
           "cascade[openvino]", "cascade@0.4", "cascade@0.9", "cascade@selection-best"]


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores"


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent at fork)."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return kb / 1024


def child(args: argparse.Namespace) -> None:
    """In a fresh process: load and answer one text (the parent times spawn to first answer), then answer
    a batch and report the peak resident set."""
    system = load_system(args.cold, args)
    system.predict_one("I still have not received my new card")
    first_answer = time.time()
    system.predict(cascade.load_banking77("test").texts[: args.n])
    print(json.dumps({"first_answer": first_answer, "peak_rss_mb": peak_rss_mb()}))


def cold_start(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Cold start (process start + imports + load + first answer) and peak RSS, from a fresh process."""
    cmd = [sys.executable, __file__, "--cold", name, "--bundle", str(args.bundle), "--threads", str(args.threads),
           "--n", str(args.n)]
    for flag in ("checkpoint", "fp32"):
        if getattr(args, flag):
            cmd += [f"--{flag}", str(getattr(args, flag))]
    for spec in args.cascade:
        cmd += ["--cascade", spec]
    spawned = time.time()
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    return {"cold_start_s": out["first_answer"] - spawned, "peak_rss_mb": out["peak_rss_mb"]}


def cascade_spec(spec: str) -> str:
    """``--cascade NAME=BUNDLE``: checked here, so a typo fails before anything is measured."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path or any(c in name for c in "[]=@") or name == "openvino":
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME=BUNDLE, e.g. pruned-4=runs/pruned-4-bundle")
    if not (Path(path) / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(f"{spec!r}: {path} is not a cascade bundle (no manifest.json)")
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--checkpoint", type=Path, default=None, help="fine-tuned torch checkpoint (HF pipeline)")
    parser.add_argument("--fp32", type=Path, default=None, help="fp32 ONNX export of the same model")
    parser.add_argument("--cascade", action="append", default=[], metavar="NAME=BUNDLE", type=cascade_spec,
                        help="another bundle's cascade at its own threshold, and its neural stage alone, as systems "
                             "cascade[NAME] and neural[NAME] (repeatable)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="test texts for throughput (default: all)")
    parser.add_argument("--latency-n", type=int, default=300, help="texts timed one by one per round")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 texts, 1 round, no plots")
    parser.add_argument("--out", type=Path, default=None,
                        help="where results.json/results.md go (default: next to this file; --quick: a new "
                             "temporary folder)")
    parser.add_argument("--cold", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [spec.split("=", 1)[0] for spec in args.cascade]
    if len(set(names)) < len(names):
        parser.error(f"--cascade: each NAME once (got {', '.join(names)})")
    args.out = results_folder(args.out, args.quick)
    test = cascade.load_banking77("test")
    if args.quick:
        args.rounds, args.n, args.latency_n = 1, args.n or 200, 30
    args.n = args.n or len(test)
    if args.cold:
        child(args)
        return

    texts, gold = test.texts[: args.n], test.labels[: args.n]
    systems: dict[str, System] = {}
    skipped: dict[str, str] = {}
    others = [spec.split("=", 1)[0] for spec in args.cascade]
    for name in SYSTEMS + [f"{kind}[{other}]" for other in others for kind in ("neural", "cascade")]:
        try:
            systems[name] = load_system(name, args)
        except Unavailable as exc:
            skipped[name] = str(exc)
            print(f"skipping {name}: {exc}", file=sys.stderr)

    results: dict[str, dict] = {}
    labels = sorted(set(test.labels))
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for label in gold])
    for name, system in systems.items():
        pred = np.array([index.get(label, -1) for label in system.predict(texts)])
        results[name] = {"why": system.why, "accuracy": float((pred == y).mean()), "macro_f1": macro_f1(y, pred),
                         "size_mb": system.size_bytes / 1e6, "threads": system.threads}

    lat_texts = texts[: args.latency_n]

    def throughput(system: System):
        def run() -> float:
            start = time.perf_counter()
            system.predict(texts)
            return len(texts) / (time.perf_counter() - start)
        return run

    def latency(system: System):
        return lambda: per_call_latencies(system.predict_one, lat_texts)

    measures = {}
    for name, system in systems.items():
        measures[(name, "tput")] = throughput(system)
        measures[(name, "lat")] = latency(system)
    runs = interleaved(measures, rounds=args.rounds)
    for name in systems:
        tput = runs[(name, "tput")]
        lats = np.stack(runs[(name, "lat")]) * 1e3  # rounds x texts, ms
        p50s, p99s = np.median(lats, axis=1), np.percentile(lats, 99, axis=1)
        results[name].update({
            "texts_per_s": float(np.median(tput)), "texts_per_s_range": [float(tput.min()), float(tput.max())],
            "p50_ms": float(np.median(p50s)), "p50_ms_range": [float(p50s.min()), float(p50s.max())],
            "p99_ms": float(np.median(p99s)),
        })
        results[name].update(cold_start(name, args))

    for r in results.values():
        for ref in ("onnx_int8", "pytorch"):
            if ref in results:
                r[f"throughput_vs_{ref}"] = r["texts_per_s"] / results[ref]["texts_per_s"]
                r[f"p50_speedup_vs_{ref}"] = results[ref]["p50_ms"] / r["p50_ms"]

    meta = {"date": date.today().isoformat(), "machine": machine(), "threads": args.threads, "rounds": args.rounds,
            "n_texts": len(texts), "latency_texts": len(lat_texts), "quick": args.quick, "skipped": skipped,
            "command": "python benchmarks/run.py " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "systems": results}, indent=2) + "\n")
    table = render(meta, results)
    (args.out / "results.md").write_text(table)
    print(table)
    print(f"results written to {args.out}")
    if not args.quick and args.out.resolve() == HERE.resolve():  # other bundles' runs do not rewrite README
        update_readme(table)


def results_folder(out: Path | None, quick: bool) -> Path:
    """Where results go: ``out``; else a new temporary folder for a smoke run (the committed results stay),
    or this folder for a full run."""
    if out is not None:
        return out
    if quick:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="cascade-bench-quick-"))
    return HERE


def render(meta: dict, results: dict) -> str:
    rows = ["| system | why | accuracy | macro-F1 | texts/s (batch) | one text p50 ms | p99 ms | size MB | "
            "peak RSS MB | cold start s | × INT8 throughput | INT8 p50 / p50 | × PyTorch throughput | PyTorch p50 / p50 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lo, hi = r["texts_per_s_range"]
        rows.append(
            f"| {name} | {r['why']} | {r['accuracy']:.2%} | {r['macro_f1']:.4f} | {r['texts_per_s']:,.0f} "
            f"[{lo:,.0f}-{hi:,.0f}] | {r['p50_ms']:.3f} | {r['p99_ms']:.2f} | {r['size_mb']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['cold_start_s']:.2f} | {_ratio(r, 'throughput_vs_onnx_int8', 2)} | "
            f"{_ratio(r, 'p50_speedup_vs_onnx_int8', 2)} | "
            f"{_ratio(r, 'throughput_vs_pytorch', 1)} | {_ratio(r, 'p50_speedup_vs_pytorch', 1)} |")
    skipped = "".join(f"\n- {name} not run: {why}" for name, why in meta["skipped"].items())
    return (f"Measured {meta['date']} on {meta['machine']}, {meta['threads']} threads for every multi-threaded "
            f"system, {meta['n_texts']} BANKING77 test texts, {meta['rounds']} interleaved rounds after a warm-up "
            f"(medians, [min-max]); one-text latency over {meta['latency_texts']} texts, one call each. Command: "
            f"`{meta['command']}`.\n\n" + "\n".join(rows) + "\n" + skipped + "\n")


def _ratio(r: dict, key: str, digits: int) -> str:
    return f"{r[key]:.{digits}f}" if key in r else "–"


def update_readme(table: str) -> None:
    readme = HERE.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + table + end + rest.split(end, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    main()
