"""How cost scales: ms per text for each stage as texts grow (8 to 512 tokens) and as batches grow
(1 to 256), and the cascade's ms per text as its fall-through rate grows. Writes three PNGs here.

    python experiments/scaling.py [--checkpoint DIR] [--fp32 ONNX] [--reps 3]

Each point is the median of ``--reps`` timings. Lengths are exact token counts of the MiniLM tokenizer,
cut from BANKING77 test texts run together; the neural stages read up to 512 tokens here.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import cascade
from cascade.bundle import default_bundle_path
from cascade.policy.routing import confidence
from cascade.stages.cheap import CheapStage
from cascade.stages.neural import NeuralStage
from cascade.stages.tokenization import TextEncoder

HERE = Path(__file__).resolve().parent
LENGTHS = [8, 16, 32, 64, 128, 256, 512]
BATCHES = [1, 4, 16, 64, 256]


def ms_per_text(fn: Callable[[list[str]], object], texts: list[str], reps: int) -> float:
    fn(texts[:2])  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(texts)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)) / len(texts)


def texts_of_length(encoder: TextEncoder, pool: list[str], tokens: int, count: int) -> list[str]:
    """``count`` texts of exactly ``tokens`` tokens ([CLS] and [SEP] included)."""
    corpus = " ".join(pool)
    starts = np.linspace(0, len(corpus) // 2, count).astype(int)
    out = []
    for s in starts:
        s = corpus.find(" ", s) + 1
        enc = encoder.tokenizer.encode(corpus[s : s + 8 * tokens + 64])
        out.append(corpus[s : s + enc.offsets[tokens - 2][1]])  # offsets[0] is [CLS]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--fp32", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bundle = cascade.read_bundle(args.bundle)
    tok = bundle.file("tokenizer.json")
    cheap = CheapStage.load(bundle.path)
    stages: dict[str, Callable[[int], Callable[[list[str]], object]]] = {
        "cheap stage": lambda b: cheap.predict_proba,
        "ONNX INT8 (neural stage)": lambda b: NeuralStage(bundle.file("neural.onnx"), tok, 512, threads=args.threads,
                                                           batch_size=b).predict_proba,
    }
    if args.fp32:
        stages["ONNX fp32"] = lambda b: NeuralStage(args.fp32, tok, 512, threads=args.threads, batch_size=b).predict_proba
    if args.checkpoint:
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        pipe = transformers.pipeline("text-classification", model=str(args.checkpoint), device=-1)
        stages["PyTorch fp32 (HF pipeline)"] = lambda b: (lambda texts: pipe(texts, truncation=True, max_length=512,
                                                                               batch_size=b))
    test = cascade.load_banking77("test").texts
    encoder = TextEncoder(tok, 512)

    def log_log_plot(xs: list[int], curves: dict[str, list[float]], xlabel: str, title: str, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for name, ys in curves.items():
            ax.plot(xs, ys, "o-", label=name)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="ms per text", title=title)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    by_length = {name: [ms_per_text(make(32), texts_of_length(encoder, test, n, 32), args.reps) for n in LENGTHS]
                 for name, make in stages.items()}
    print("length", {name: dict(zip(LENGTHS, np.round(ys, 4))) for name, ys in by_length.items()}, flush=True)
    log_log_plot(LENGTHS, by_length, "tokens per text (batches of 32)", "cost against text length",
                 args.out / "scaling_length.png")

    def in_calls_of(fn: Callable[[list[str]], object], b: int) -> Callable[[list[str]], object]:
        return lambda ts: [fn(ts[i : i + b]) for i in range(0, len(ts), b)]

    by_batch = {name: [ms_per_text(in_calls_of(make(b), b), test[:256], args.reps) for b in BATCHES]
                for name, make in stages.items()}
    print("batch", {name: dict(zip(BATCHES, np.round(ys, 4))) for name, ys in by_batch.items()}, flush=True)
    log_log_plot(BATCHES, by_batch, "texts per call (BANKING77 test texts)", "cost against batch size",
                 args.out / "scaling_batch.png")

    model = cascade.load(bundle.path, threads=args.threads, cache_size=0)
    conf = confidence(model.cheap.predict_proba(test), model.measure)
    xs, ys = [], []
    for q in np.linspace(0, 1, 11):
        threshold = float(min(np.quantile(conf, q) + 1e-12, 1.0)) if q > 0 else 0.0
        fall = float(np.mean(conf < threshold))
        xs.append(100 * fall)
        ys.append(ms_per_text(lambda ts, t=threshold: model.classify(ts, threshold=t), test, args.reps))
    print("cascade fall-through", dict(zip(np.round(xs, 1), np.round(ys, 4))), flush=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(xs, ys, "o-", label="cascade (3,080 test texts per call)")
    shipped = float(np.mean(conf < model.threshold)) * 100
    ax.axvline(shipped, color="gray", ls="--", lw=0.8, label=f"shipped threshold ({shipped:.0f}% fall through)")
    ax.set(xlabel="texts falling through to the neural stage (%)", ylabel="ms per text",
           title="cascade cost against fall-through rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "scaling_fallthrough.png", dpi=110)


if __name__ == "__main__":
    main()
