"""The neural stage and the cascade on a GPU execution provider (CUDA, TensorRT), side by side with the CPU
in one run; on a machine without one it says so and exits 0.

    pip install onnxruntime-gpu        # instead of onnxruntime, on a machine with an NVIDIA GPU
    python benchmarks/gpu.py [--providers CUDAExecutionProvider TensorrtExecutionProvider] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def throughput(model: cascade.Cascade, texts: list[str], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        model.classify(texts, progress=False)
        times.append(time.perf_counter() - started)
    return len(texts) / statistics.median(times)


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", nargs="+", default=list(GPU_PROVIDERS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    available = ort.get_available_providers()
    wanted = [p for p in args.providers if p in available]
    if not wanted:
        print(f"skipped: none of {args.providers} is available in this onnxruntime build (available: {available}); "
              "install onnxruntime-gpu on a machine with an NVIDIA GPU")
        return
    texts = cascade.load_banking77("test").texts
    results = {}
    for provider in [*wanted, "CPUExecutionProvider"]:
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        model = cascade.load(providers=providers, cache_size=0)
        every = cascade.load(providers=providers, cache_size=0)
        every.threshold = 1.0  # the neural stage on every text
        results[provider] = {"cascade_texts_per_s": throughput(model, texts),
                             "neural_stage_texts_per_s": throughput(every, texts),
                             "session_providers": model.neural.session.get_providers()}
        print(provider, json.dumps(results[provider]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"results": results, "measured": time.strftime("%Y-%m-%d")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
