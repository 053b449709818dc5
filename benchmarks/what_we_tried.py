"""What we tried to make the cascade faster at equal accuracy, each measured in this one run against the
same reference: the shipped neural stage alone (frozen all-MiniLM-L6-v2, INT8 with static activation scales,
+ its head, onnxruntime CPU), on the BANKING77 test split.

    python -m cascade.training.encoder --out runs/encoder     # [train]: the fp32 and INT8 encoder variants
    python benchmarks/what_we_tried.py --encoders runs/encoder [--out benchmarks/what_we_tried]

Rows whose files or packages are missing say so instead of a number. Timings: medians of interleaved rounds,
batch throughput (length-sorted batches of 64) and one text per call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade  # noqa: E402
from cascade.stages.head import LinearHead  # noqa: E402
from cascade.stages.neural import NeuralStage  # noqa: E402
from cascade.text import normalize  # noqa: E402


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def spacy_rows(rounds: int) -> list[dict]:
    """The cheap stage's word block tokenised by spaCy's blank English tokenizer against its own regex, both
    through scikit-learn (the fast path has no spaCy), trained on the train split, measured on test."""
    try:
        import spacy
    except ImportError:
        return [{"technique": "spaCy's tokenizer in the cheap stage", "shipped": False,
                 "why": "not measured: spaCy not installed (pip install spacy)"}]
    from sklearn.feature_extraction.text import TfidfVectorizer

    from cascade.training.cheap import CheapConfig, build_pipeline

    nlp = spacy.blank("en")
    train, test = cascade.load_banking77("train"), cascade.load_banking77("test")
    texts = [normalize(t) for t in train.texts]
    test_texts = [normalize(t) for t in test.texts]
    out = []
    for name in ("own regex tokenizer (shipped)", "spaCy blank-English tokenizer"):
        pipeline = build_pipeline(CheapConfig())
        if name.startswith("spaCy"):
            word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=None,
                                   tokenizer=lambda t: [tok.text for tok in nlp.tokenizer(t)])
            pipeline.named_steps["features"].transformer_list[0] = ("word", word)
        pipeline.fit(texts, train.labels)
        acc = float((pipeline.predict(test_texts) == np.array(test.labels)).mean())
        seconds = timed(lambda p=pipeline: p.predict_proba(test_texts), rounds)
        out.append({"technique": f"cheap stage words: {name}", "accuracy": acc,
                    "ms_per_text_batch": 1000 * seconds / len(test_texts), "shipped": not name.startswith("spaCy"),
                    "why": ("scikit-learn path for both (the fast path reads the regex's n-grams)"
                            if not name.startswith("spaCy") else
                            "a few texts more right, slower, and it would put spaCy in the core install and its "
                            "tokenizer in the fast path: not an option")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", type=Path, default=ROOT / "runs" / "encoder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = cascade.load()
    bundle = model.bundle
    test = cascade.load_banking77("test")
    y = np.array([model.labels.index(label) for label in test.labels])
    head = LinearHead.from_bytes(bundle.read_bytes(bundle.manifest["neural"]["head"]))
    rows = []

    def neural_row(name: str, path: Path, shipped: bool, why: str) -> None:
        if not path.is_file():
            rows.append({"technique": name, "shipped": shipped, "why": f"not measured: {path} missing ({why})"})
            return
        stage = NeuralStage(path, bundle.file("tokenizer.json"), 128, threads=2, batch_size=64, head=head)
        acc = float((stage.predict_proba(test.texts).argmax(1) == y).mean())
        batch_s = timed(lambda: stage.predict_proba(test.texts), args.rounds)
        one = test.texts[:200]
        one_s = timed(lambda: [stage.predict_proba([t]) for t in one], args.rounds)
        rows.append({"technique": name, "accuracy": acc, "ms_per_text_batch": 1000 * batch_s / len(test),
                     "ms_one_text": 1000 * one_s / len(one), "size_mb": path.stat().st_size / 1e6,
                     "shipped": shipped, "why": why})

    neural_row("reference: INT8, static activation scales (the shipped neural stage)", bundle.file("neural.onnx"),
               True, "same text, same answer in any batch; fastest here")
    neural_row("INT8, dynamic activation scales (onnxruntime's default)", args.encoders / "encoder-int8-dynamic.onnx",
               False, "scales computed per batch make an answer depend on its batch mates; batching must be off")
    neural_row("fp32 ONNX, fused (no quantization)", args.encoders / "encoder-fp32-optimized.onnx", False,
               "4x the size, slower, no more accurate with this head")

    # the cascade with and without the answer cache, on traffic where half the texts repeat
    rng = random.Random(0)
    traffic: list[str] = []
    for i in range(6000):  # every second text repeats one already sent
        traffic.append(rng.choice(traffic) if i % 2 else f"{test.texts[i % len(test)]} (order {i})")
    off = cascade.load(cache_size=0)
    for name, m, shipped, why in (("cascade, no cache", off, False, "baseline for the cache"),
                                  ("cascade + answer cache (50% repeated texts)", model, True,
                                   "repeats cost a lookup; bounded, thread-safe, invalidated on any setting change")):
        def run(m=m):
            m.cache.clear()
            for i in range(0, len(traffic), 256):
                m.classify(traffic[i:i + 256], progress=False)
        seconds = timed(run, args.rounds)
        probs, _ = m.route(test.texts)
        rows.append({"technique": name, "accuracy": float((probs.argmax(1) == y).mean()),
                     "ms_per_text_batch": 1000 * seconds / len(traffic), "shipped": shipped,
                     "why": why + (f" (hit rate {m.cache.hit_rate:.0%})" if m.cache.max_entries else "")})
    started = time.perf_counter()
    for text in test.texts:
        normalize(text)
    rows.append({"technique": "preprocessing: normalise a text (shared by both stages and the cache key)",
                 "ms_per_text_batch": 1000 * (time.perf_counter() - started) / len(test), "shipped": True,
                 "why": "applied by each stage and the cache: ~1-2% of a cheap-stage answer, left as is"})
    import onnxruntime as ort

    available = ort.get_available_providers()
    for provider, package in (("OpenVINOExecutionProvider", "onnxruntime-openvino"),
                              ("CUDAExecutionProvider", "onnxruntime-gpu"),
                              ("TensorrtExecutionProvider", "onnxruntime-gpu with TensorRT")):
        rows.append({"technique": f"runtime: {provider}", "shipped": False,
                     "why": ("available: measure with --provider" if provider in available else
                             f"not measured: needs {package} (and, for CUDA/TensorRT, a GPU); `--provider` refuses it "
                             f"clearly here (available: {', '.join(available)})")})
    rows += spacy_rows(args.rounds)
    rows.append({"technique": "pruning: drop layers 6 -> 4 -> 3, distil the full encoder's embeddings",
                 "shipped": False,
                 "why": "not tried yet: needs a distillation run per depth (torch, about an hour each here)"})
    result = {"rows": rows, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "measured": time.strftime("%Y-%m-%d"), "command": "python benchmarks/what_we_tried.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["| technique | accuracy | ms per text (batch) | ms one text | size MB | shipped | why |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            cell = lambda k, f: f.format(r[k]) if k in r else "–"  # noqa: E731
            lines.append(f"| {r['technique']} | {cell('accuracy', '{:.2%}')} | {cell('ms_per_text_batch', '{:.3f}')} | "
                         f"{cell('ms_one_text', '{:.3f}')} | {cell('size_mb', '{:.1f}')} | "
                         f"{'yes' if r['shipped'] else 'no'} | {r['why']} |")
        lines += ["", f"{result['machine']}; {result['measured']}; `{result['command']}`."]
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
