"""What we tried to make the cascade faster at equal accuracy, each measured in this one run against the
same reference: the shipped neural stage alone (frozen all-MiniLM-L6-v2, INT8 with static activation scales,
+ its head, onnxruntime CPU), on the BANKING77 test split.

    python -m cascade.training.encoder --out runs/encoder     # [train]: the fp32 and INT8 encoder variants
    python experiments/runtime_variants.py --encoders runs/encoder   # QDQ, OpenVINO (pip install openvino nncf)
    python -m cascade.training.pruning --layers 3 --out runs/pruned-3   # [train], also --layers 4
    python experiments/what_we_tried.py --encoders runs/encoder --pruned runs/pruned-4 runs/pruned-3 \
        [--out experiments/what_we_tried]

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
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade
from cascade.stages.head import LinearHead
from cascade.stages.neural import NeuralStage
from cascade.text import normalize


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class OpenVINOSession:
    """Stands in for the neural stage's onnxruntime session, so tokens, batches, pooling and head are the
    stage's own and only the runtime differs."""

    def __init__(self, path: Path, threads: int, precision: str) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision})
        self.request = self.compiled.create_infer_request()

    def run(self, _outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.request.infer(feeds)[0]]


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


def pruned_rows(folders: list[Path], model: cascade.Cascade, y: np.ndarray,
                measure: Callable[[str, NeuralStage, float, bool, str], dict],
                timed_traffic: Callable[[cascade.Cascade], float]) -> list[dict]:
    """Each pruned, distilled encoder (python -m cascade.training.pruning) with a head fitted on its own
    embeddings of the training texts: alone, and as the cascade's neural stage at the shipped threshold."""
    if not folders:
        return [{"technique": "pruning: keep 4 or 3 of the 6 layers, distil the full encoder's embeddings",
                 "shipped": False, "why": "not measured: pass --pruned with python -m cascade.training.pruning's folders"}]
    from cascade.training.head import fit_head
    from cascade.training.pruning import DISTILLATION_INFO_FILE

    rows: list[dict] = []
    train, test = cascade.load_banking77("train"), cascade.load_banking77("test")
    y_train = np.array([model.labels.index(label) for label in train.labels])
    tokenizer = model.bundle.file("tokenizer.json")
    for folder in folders:
        build = json.loads((folder / "encoder" / "build.json").read_text())
        info = json.loads((folder / "model" / DISTILLATION_INFO_FILE).read_text())
        path = folder / "encoder" / f"encoder-int8-{build['activation_scales'].removeprefix('static-')}.onnx"
        embeddings = NeuralStage(path, tokenizer, 128, threads=2, batch_size=64).embed(train.texts)
        head = fit_head(embeddings, y_train, len(model.labels), C=float(model.bundle.manifest["neural"]["head_C"]))
        stage = NeuralStage(path, tokenizer, 128, threads=2, batch_size=64, head=head)
        kept = len(info["layers"])
        rows.append(measure(f"pruning: {kept} of 6 layers (layers {info['layers']}), distilled, INT8 static scales, own head",
                stage, path.stat().st_size / 1e6, False,
                f"distilled on BANKING77's texts only: a banking encoder, while `cascade train` needs the general one "
                f"for other labels, so shipping it adds a second encoder to the wheel; distance to the full encoder's "
                f"embeddings {info['best_val_distance']:.3f} on selection texts ({info['val_distance_before']:.3f} "
                f"before distilling; {info['seconds'] / 60:.0f} min on this machine)"))
        pruned = cascade.load(cache_size=0)
        pruned.neural = stage
        probs, _ = pruned.route(test.texts)
        rows.append({"technique": f"cascade with the {kept}-layer stage, no cache, shipped threshold",
                     "accuracy": float((probs.argmax(1) == y).mean()), "ms_per_text_batch": timed_traffic(pruned),
                     "shipped": False, "why": "same traffic as 'cascade, no cache'"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", type=Path, default=ROOT / "runs" / "encoder")
    parser.add_argument("--pruned", type=Path, nargs="*", default=[],
                        help="work folders of python -m cascade.training.pruning")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = cascade.load()
    bundle = model.bundle
    test = cascade.load_banking77("test")
    y = np.array([model.labels.index(label) for label in test.labels])
    head = LinearHead.from_bytes(bundle.read_bytes(bundle.manifest["neural"]["head"]))
    rows = []

    def measure(name: str, stage: NeuralStage, size_mb: float, shipped: bool, why: str) -> dict:
        acc = float((stage.predict_proba(test.texts).argmax(1) == y).mean())
        batch_s = timed(lambda: stage.predict_proba(test.texts), args.rounds)
        one = test.texts[:200]
        one_s = timed(lambda: [stage.predict_proba([t]) for t in one], args.rounds)
        return {"technique": name, "accuracy": acc, "ms_per_text_batch": 1000 * batch_s / len(test),
                "ms_one_text": 1000 * one_s / len(one), "size_mb": size_mb, "shipped": shipped, "why": why}

    def missing(name: str, path: Path, why: str) -> bool:
        if path.is_file():
            return False
        rows.append({"technique": name, "shipped": False, "why": f"not measured: {path} missing ({why})"})
        return True

    def neural_row(name: str, path: Path, shipped: bool, why: str) -> None:
        if not missing(name, path, why):
            stage = NeuralStage(path, bundle.file("tokenizer.json"), 128, threads=2, batch_size=64, head=head)
            rows.append(measure(name, stage, path.stat().st_size / 1e6, shipped, why))

    def openvino_row(name: str, path: Path, precision: str, why: str) -> None:
        try:
            import openvino as ov
        except ImportError:
            rows.append({"technique": name, "shipped": False, "why": "not measured: pip install openvino nncf"})
            return
        if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            rows.append({"technique": name, "shipped": False,
                         "why": "not measured: this CPU has no bf16 (OpenVINO would run f32 under that name)"})
            return
        if not missing(name, path, "python experiments/runtime_variants.py"):
            stage = NeuralStage(args.encoders / "encoder-fp32.onnx", bundle.file("tokenizer.json"), 128, threads=2,
                                batch_size=64, head=head)
            stage.session = OpenVINOSession(path, 2, precision)
            size = (path.stat().st_size + path.with_suffix(".bin").stat().st_size) / 1e6
            rows.append(measure(name, stage, size, False, why))

    neural_row("reference: the shipped neural stage (6-layer encoder, INT8, static activation scales)",
               bundle.file("neural.onnx"), True, "same text, same answer in any batch")
    neural_row("INT8, dynamic activation scales (onnxruntime's default)", args.encoders / "encoder-int8-dynamic.onnx",
               False, "scales computed per batch make an answer depend on its batch mates; batching must be off")
    neural_row("fp32 ONNX, fused (no quantization)", args.encoders / "encoder-fp32-optimized.onnx", False,
               "4x the size, slower, no more accurate with this head")
    neural_row("INT8, static QDQ (onnxruntime quantize_static, min-max calibration)",
               args.encoders / "encoder-int8-qdq.onnx", False,
               "less accurate than the shipped scales (min-max ranges: onnxruntime's percentile calibrator needs "
               "equal-length texts), slower one text at a time")
    openvino_row("runtime: OpenVINO, fp32", args.encoders / "encoder-fp32-ov.xml", "f32",
                 "OpenVINO's own runtime (pip install openvino) on the unfused export: slower than INT8, 4x its size")
    openvino_row("runtime: OpenVINO, bf16 (this CPU has AVX-512 BF16)", args.encoders / "encoder-fp32-ov.xml",
                 "bf16", "OpenVINO's default where the CPU has bf16 (not on AVX2-only machines); 4x INT8's size")
    openvino_row("runtime: OpenVINO, INT8 (NNCF, calibrated on 300 training texts)",
                 args.encoders / "encoder-int8-nncf-ov.xml", "f32",
                 "the fastest batch path here, slower one text at a time; shipping it means openvino at run time, "
                 "nncf at build time and a second model format in the bundle: left for its own issue")

    # the cascade with and without the answer cache, on traffic where half the texts repeat
    rng = random.Random(0)
    traffic: list[str] = []
    for i in range(6000):  # every second text repeats one already sent
        traffic.append(rng.choice(traffic) if i % 2 else f"{test.texts[i % len(test)]} (order {i})")
    off = cascade.load(cache_size=0)
    def timed_traffic(m: cascade.Cascade) -> float:
        def run() -> None:
            m.cache.clear()
            for i in range(0, len(traffic), 256):
                m.classify(traffic[i:i + 256], progress=False)
        return 1000 * timed(run, args.rounds) / len(traffic)

    for name, m, shipped, why in (("cascade, no cache", off, False, "baseline for the cache"),
                                  ("cascade + answer cache (50% repeated texts)", model, True,
                                   "repeats cost a lookup; bounded, thread-safe, invalidated on any setting change")):
        ms = timed_traffic(m)
        probs, _ = m.route(test.texts)
        rows.append({"technique": name, "accuracy": float((probs.argmax(1) == y).mean()),
                     "ms_per_text_batch": ms, "shipped": shipped,
                     "why": why + (f" (hit rate {m.cache.hit_rate:.0%})" if m.cache.max_entries else "")})
    started = time.perf_counter()
    for text in test.texts:
        normalize(text)
    rows.append({"technique": "preprocessing: normalise a text (shared by both stages and the cache key)",
                 "ms_per_text_batch": 1000 * (time.perf_counter() - started) / len(test), "shipped": True,
                 "why": "applied by each stage and the cache: ~1-2% of a cheap-stage answer, left as is"})
    import onnxruntime as ort

    available = ort.get_available_providers()
    separate = ("onnxruntime-openvino, a separate onnxruntime build that replaces onnxruntime (the OpenVINO rows "
                "above use OpenVINO's own runtime instead)")
    for provider, package in (("OpenVINOExecutionProvider", separate),
                              ("CUDAExecutionProvider", "onnxruntime-gpu and a GPU (benchmarks/gpu.py)"),
                              ("TensorrtExecutionProvider", "onnxruntime-gpu with TensorRT and a GPU (benchmarks/gpu.py)")):
        rows.append({"technique": f"runtime: onnxruntime's {provider}", "shipped": False,
                     "why": ("available: measure with --provider" if provider in available else
                             f"not measured: needs {package}; `--provider` refuses it clearly here (available: "
                             f"{', '.join(available)})")})
    rows += spacy_rows(args.rounds)
    rows += pruned_rows(args.pruned, model, y, measure, timed_traffic)
    reference = rows[0]
    for r in rows[1:]:  # every encoder variant against the reference, as measured in this run
        if "ms_one_text" in r:
            r["why"] += (f" [{reference['ms_per_text_batch'] / r['ms_per_text_batch']:.2f}x the reference's batch "
                         f"speed, {reference['ms_one_text'] / r['ms_one_text']:.2f}x its one-text speed, "
                         f"{100 * (r['accuracy'] - reference['accuracy']):+.2f} points]")
    result = {"rows": rows, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "measured": time.strftime("%Y-%m-%d"), "command": "python experiments/what_we_tried.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["| technique | accuracy | ms per text (batch) | ms one text | size MB | shipped | why |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            cell = lambda k, f, r=r: f.format(r[k]) if k in r else "–"  # noqa: E731
            lines.append(f"| {r['technique']} | {cell('accuracy', '{:.2%}')} | {cell('ms_per_text_batch', '{:.3f}')} | "
                         f"{cell('ms_one_text', '{:.3f}')} | {cell('size_mb', '{:.1f}')} | "
                         f"{'yes' if r['shipped'] else 'no'} | {r['why']} |")
        lines += ["", f"{result['machine']}; {result['measured']}; `{result['command']}`."]
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
