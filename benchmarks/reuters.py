"""Topic tagging on Reuters-21578 (ModApte): each stage alone and the cascade, side by side in one run.

    python benchmarks/reuters.py [--data-dir ../shared/datasets/reuters21578] [--bundle DIR] [--rounds 3]

Without ``--bundle`` it first builds one exactly as a user would, ``cascade train --multi-label`` on
train.csv with the default splits (timed), into a temporary folder. Then, on the 3,019 test articles,
which chose nothing: micro-F1, macro-F1, exact match and fall-through for the cheap stage alone (its
cut-offs), the INT8 neural stage alone (frozen encoder + per-topic head) and the cascade at the bundle's
threshold; batch throughput (all test texts in one call, interleaved rounds, median [min-max]) and
one-text p50 over 200 texts. Writes benchmarks/reuters_results.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import cascade
from cascade.evaluation import evaluate_tagging

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "reuters21578"
PUBLISHED = [("SVM (Yang & Liu 1999)", 0.860), ("kNN (Yang & Liu 1999)", 0.857),
             ("distilled BiLSTM (Adhikari et al. 2019)", 0.889), ("fine-tuned BERT-base (Adhikari et al. 2019)", 0.905)]


def _build(data_dir: Path, out: Path) -> float:
    from cascade.training.train import TrainConfig, train_bundle

    started = time.perf_counter()
    train_bundle(cascade.read_csv(data_dir / "train.csv", label_col="labels"), None, out,
                 config=TrainConfig(label_sep="|"), progress=False, data_name="Reuters-21578 ModApte train.csv")
    return time.perf_counter() - started


def _throughput(runs: dict[str, Callable[[list[str]], Any]], texts: list[str], rounds: int) -> dict[str, list[float]]:
    for run in runs.values():  # warm-up
        run(texts[:64])
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run(texts)
            out[name].append(len(texts) / (time.perf_counter() - started))
    return out


def _p50_ms(run: Callable[[list[str]], Any], texts: list[str]) -> float:
    times = []
    for text in texts:
        started = time.perf_counter()
        run([text])
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bundle", type=Path, default=None, help="a multi-label bundle (default: build one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("reuters_results.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cascade-reuters-") as work:
        bundle_path, build_s = args.bundle, None
        if bundle_path is None:
            bundle_path = Path(work) / "bundle"
            build_s = _build(args.data_dir, bundle_path)
        model = cascade.load(bundle_path, threads=2)
        test = cascade.read_csv(args.data_dir / "test.csv", label_col="labels")
        figures = evaluate_tagging(model, test)
        runs = {"cheap": model.cheap.predict_proba, "neural": model.neural.predict_proba,
                "cascade": lambda t: model.classify(t)}
        speed = _throughput(runs, test.texts, args.rounds)
        sample = test.texts[:: len(test) // 200][:200]
        p50 = {name: _p50_ms(run, sample) for name, run in runs.items()}
        files = model.bundle.manifest["files"] if model.bundle else {}
        size = {"cheap": sum(files[f]["bytes"] for f in ("cheap.onnx", "cheap_features.json")) / 1e6,
                "neural": sum(files[f]["bytes"] for f in ("neural.onnx", "tokenizer.json", "head.npz")) / 1e6,
                "cascade": sum(e["bytes"] for e in files.values()) / 1e6}
        manifest = model.bundle.manifest if model.bundle else {}
    result = {"machine": f"{platform.processor() or platform.machine()}, 2 threads", "build_seconds": build_s,
              "figures": figures, "texts_per_s": speed, "one_text_p50_ms": p50, "size_mb": size,
              "selection": manifest.get("metrics", {}).get("selection", {}),
              "splits": manifest.get("training", {}).get("splits", {}).get("sizes")}
    args.out.write_text(json.dumps(result, indent=1))
    med = {k: float(np.median(v)) for k, v in speed.items()}
    rows = [("cheap stage alone (TF-IDF + one-vs-rest logistic regression)", "cheap", 1.0),
            ("neural stage alone: frozen all-MiniLM-L6-v2 INT8 + per-topic head, first 128 tokens", "neural", 1.0),
            (f"**cascade at its threshold {model.threshold:.3f}**", "cascade", figures["fall_through_rate"])]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/reuters.py`"
             + (f" (build included: {build_s:.0f} s)" if build_s else "") + f"; {result['machine']}; "
             f"3,019 test articles; {args.rounds} interleaved rounds.", "",
             "| system | micro-F1 | macro-F1 | exact match | falls through | texts/s (batch) | one text p50 ms | size MB |",
             "|---|---|---|---|---|---|---|---|"]
    for label, key, fell in rows:
        lo, hi = min(speed[key]), max(speed[key])
        lines.append(f"| {label} | {figures[f'{key}_micro_f1']:.4f} | {figures[f'{key}_macro_f1']:.4f} | "
                     f"{figures[f'{key}_exact_match']:.4f} | {fell:.1%} | {med[key]:,.0f} [{lo:,.0f}-{hi:,.0f}] | "
                     f"{p50[key]:.3f} | {size[key]:.1f} |")
    for name, f1 in PUBLISHED:
        lines.append(f"| {name}, published | {f1:.3f} | | | | | | |")
    lines += ["", f"Cascade throughput: {med['cascade'] / med['neural']:.1f}× the INT8 neural stage alone."]
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
