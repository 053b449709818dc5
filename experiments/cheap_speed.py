"""The cheap stage's speed, side by side in one run: scikit-learn's own ``predict_proba``, cascade's
fast path and onnxruntime on ``cheap.onnx``, all the same model (fitted here with the shipped config).

    python experiments/cheap_speed.py [--rounds 5] [--n 1000] [--out STEM]

Reports single-text latency (p50/p99 over one call per text, microseconds) and batch throughput
(texts/s, one call on the whole set), medians over interleaved rounds with [min-max].
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # its timing helpers
from timing import interleaved, per_call_latencies, spread

import cascade
from cascade.stages.cheap import CheapStage
from cascade.training.cheap import CheapConfig, export_cheap, fit_cheap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=1000, help="test texts used per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("cheap_speed"),
                        help="STEM of the result files STEM.json and STEM.md")
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text)
        lines.append(text)


    labels = cascade.read_bundle(cascade.bundle.default_bundle_path()).labels
    pipeline = fit_cheap(cascade.load_banking77("train"), labels, CheapConfig())
    work = Path(tempfile.mkdtemp())
    export_cheap(pipeline, work)
    stage = CheapStage.load(work)
    texts = cascade.load_banking77("test").texts[: args.n]

    single = {
        "scikit-learn predict_proba": lambda t: pipeline.predict_proba([t]),
        "cascade fast path": lambda t: stage.predict_proba([t]),
        "onnxruntime (cheap.onnx)": lambda t: stage.predict_proba_onnx([t]),
    }
    batch = {
        "scikit-learn predict_proba": lambda: pipeline.predict_proba(texts),
        "cascade fast path": lambda: stage.predict_proba(texts),
        "onnxruntime (cheap.onnx)": lambda: np.vstack([stage.predict_proba_onnx(texts[i : i + 64])
                                                       for i in range(0, len(texts), 64)]),
    }

    def p(name: str, q: float):
        return lambda: float(np.percentile(per_call_latencies(single[name], texts), q) * 1e6)

    def tput(name: str):
        def run() -> float:
            start = time.perf_counter()
            batch[name]()
            return len(texts) / (time.perf_counter() - start)
        return run

    measures = {}
    for name in single:
        measures[f"{name}|p50"] = p(name, 50)
        measures[f"{name}|tput"] = tput(name)
    res = interleaved(measures, rounds=args.rounds)
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{len(texts)} BANKING77 test texts; {args.rounds} interleaved rounds after 1 warm-up\n")
    say("| cheap stage | one text p50 (µs) | batch texts/s |\n|---|---|---|")
    for name in single:
        say(f"| {name} | {spread(res[name + '|p50'])} | {spread(res[name + '|tput'])} |")
    fast, sk = res["cascade fast path|p50"], res["scikit-learn predict_proba|p50"]
    say(f"\nfast path vs scikit-learn: {np.median(sk) / np.median(fast):.1f}x lower p50 latency, "
          f"{np.median(res['cascade fast path|tput']) / np.median(res['scikit-learn predict_proba|tput']):.2f}x "
          f"batch throughput")
    lat = per_call_latencies(single["cascade fast path"], texts) * 1e6
    say(f"fast path one-text p99 (warm): {np.percentile(lat, 99):.0f} µs")
    # The fast path remembers each word's char n-gram ids. A fresh stage on unseen texts shows the cost
    # before any word is cached (a server's first requests).
    fresh = CheapStage.load(work)
    unseen = cascade.load_banking77("selection").texts
    cold = per_call_latencies(lambda t: fresh.predict_proba([t]), unseen) * 1e6
    say(f"fast path, empty word cache, {len(unseen)} unseen selection texts: p50 {np.median(cold):.0f} µs, "
          f"p99 {np.percentile(cold, 99):.0f} µs")

    command = ("python experiments/cheap_speed.py " + " ".join(sys.argv[1:])).strip()
    today = datetime.date.today().isoformat()
    say(f"\nMeasured {today} with `{command}`.")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"date": today, "command": command, "rounds": {k: [float(x) for x in v] for k, v in res.items()},
         "fast_path_p99_us": float(np.percentile(lat, 99)), "cold_p50_us": float(np.median(cold)),
         "cold_p99_us": float(np.percentile(cold, 99))}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
