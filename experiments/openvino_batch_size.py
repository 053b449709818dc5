"""Issue 27: the neural stage's batch throughput on each runtime at several batch sizes, on the BANKING77 test
split (full stage path: tokenization, length-sorted batches, pooling, head), interleaved rounds.

    python experiments/openvino_batch_size.py --bundle BUNDLE_WITH_OPENVINO [--rounds 3] [--out STEM]

BUNDLE_WITH_OPENVINO: the shipped bundle with an OpenVINO model added (`cascade openvino --out DIR`).
onnxruntime runs its batch padded to the batch's longest text; OpenVINO its batch padded to a bucket.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # its timing helpers
from timing import interleaved

import cascade

SIZES = (16, 32, 64, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("openvino_batch_size"))
    args = parser.parse_args()
    texts = cascade.load_banking77("test").texts
    stages = {(runtime, size): cascade.load(args.bundle, runtime=runtime, threads=args.threads, batch_size=size,
                                            cache_size=0).neural
              for runtime in ("onnxruntime", "openvino") for size in SIZES}

    def measure(stage: Any) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            stage.embed(texts)
            return len(texts) / (time.perf_counter() - started)
        return run

    for stage in stages.values():
        stage.embed(texts[:500])  # warm-up: every bucket's kernels
    runs = interleaved({key: measure(stage) for key, stage in stages.items()}, rounds=args.rounds)
    tput = {key: float(np.median(v)) for key, v in runs.items()}
    best = {runtime: max(SIZES, key=lambda s: tput[(runtime, s)]) for runtime in ("onnxruntime", "openvino")}
    rows = ["| batch size | onnxruntime texts/s | openvino texts/s | openvino / onnxruntime |", "|---|---|---|---|"]
    rows += [f"| {s} | {tput[('onnxruntime', s)]:,.0f} | {tput[('openvino', s)]:,.0f} | "
             f"{tput[('openvino', s)] / tput[('onnxruntime', s)]:.2f} |" for s in SIZES]
    ratio = tput[("openvino", best["openvino"])] / tput[("onnxruntime", best["onnxruntime"])]
    command = ("python experiments/openvino_batch_size.py " + " ".join(sys.argv[1:])).replace(
        str(args.bundle), "BUNDLE_WITH_OPENVINO")  # no machine path in a committed file
    today = datetime.date.today().isoformat()
    rows += ["", f"Each at its best batch size (onnxruntime {best['onnxruntime']}, openvino {best['openvino']}): "
                 f"openvino {ratio:.2f}x. {len(texts):,} BANKING77 test texts, {args.threads} threads, medians of "
                 f"{args.rounds} interleaved rounds; measured {today} with `{command}`."]
    print("\n".join(rows))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"date": today, "command": command, "texts_per_s": {f"{r}@{s}": v for (r, s), v in tput.items()},
         "rounds": {f"{r}@{s}": [float(x) for x in v] for (r, s), v in runs.items()}, "best": best,
         "best_vs_best": ratio}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
