"""Topic tagging on Reuters-21578 (ModApte): each stage alone and the cascade, side by side in one run.

    python benchmarks/reuters.py [--data-dir ../shared/datasets/reuters21578] [--bundle DIR] [--rounds 3]
                                 [--fp32 ENCODER.onnx] [--pytorch]
    python benchmarks/reuters.py --bundle FINE_TUNED --fp32 WORK/onnx/model-fp32-optimized.onnx \
                                 --pytorch WORK/checkpoint --out benchmarks/reuters_results_finetuned.json

Without ``--bundle`` it first builds one exactly as a user would, ``cascade train --multi-label`` on
train.csv with the default splits (timed), into a temporary folder. It calibrates that bundle on its
certification split (what ``cascade calibrate --data train.csv`` uses) for exact-match and F1 targets,
and then measures on the 3,019 test articles, which chose nothing: micro-F1, macro-F1, exact match and
fall-through of the cheap stage alone (its cut-offs), the INT8 neural stage alone (frozen encoder +
per-topic head), the same head on the fp32 ONNX encoder (``--fp32``) and on sentence-transformers in
PyTorch (``--pytorch``, needs the [train] extra), and the cascade at its build threshold and at its
calibrated ``target_f1=0.90`` threshold (if certified); batch throughput (all test texts in one call,
interleaved rounds after a warm-up round, median [min-max]), one-text p50 over 200 texts; and every promise against what test
realised. Writes benchmarks/reuters_results.{json,md}.

Given a bundle from ``cascade finetune --multi-label`` (MiniLM fine-tuned with binary cross-entropy), the
neural rows are its INT8 classifier, the fp32 ONNX model it was quantized from (``--fp32``, in the build's
work folder) and the fine-tuned checkpoint in PyTorch (``--pytorch CHECKPOINT``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import cascade
from cascade.calibration import CalibrationWarning
from cascade.evaluation import evaluate_tagging
from cascade.policy.multilabel import assign, label_matrix, sigmoid, tagging_figures
from cascade.splits import certification_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved, per_call_latencies

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "reuters21578"
PUBLISHED = [("SVM (Yang & Liu 1999)", 0.860), ("kNN (Yang & Liu 1999)", 0.857),
             ("distilled BiLSTM (Adhikari et al. 2019)", 0.889), ("fine-tuned BERT-base (Adhikari et al. 2019)", 0.905)]
REQUESTS = [{"target_accuracy": t} for t in (0.75, 0.80, 0.85)] + [{"target_f1": t} for t in (0.85, 0.88, 0.90, 0.92)]
HEADLINE = {"target_f1": 0.90}


def _build(data_dir: Path, out: Path) -> float:
    from cascade.training.recipes.frozen import TrainConfig, train_bundle

    started = time.perf_counter()
    train_bundle(cascade.read_csv(data_dir / "train.csv", label_col="labels"), None, out,
                 config=TrainConfig(label_sep="|"), progress=False, data_name="Reuters-21578 ModApte train.csv")
    return time.perf_counter() - started


def _pytorch_embed() -> Callable[[list[str]], np.ndarray]:
    from sentence_transformers import SentenceTransformer

    from cascade.training.finetune import base_model_dir

    st = SentenceTransformer(str(base_model_dir()), device="cpu")
    st.max_seq_length = 128
    return lambda texts: st.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)


def _pytorch_classifier(checkpoint: Path, max_length: int) -> Callable[[list[str]], np.ndarray]:
    import torch
    import transformers

    from cascade.stages.tokenization import TextEncoder
    from cascade.training.finetune import predict_logits

    torch.set_num_threads(2)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    encoder = TextEncoder(checkpoint / "tokenizer.json", max_length)
    return lambda texts: sigmoid(predict_logits(net, encoder, texts, torch, batch_size=32))


def _calibrated(bundle: Path, cert: cascade.TextDataset) -> tuple[Any, list[Any]]:
    """Calibrate once on the certification split: the calibrator and its choice for each request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = cascade.calibrate(cascade.load(bundle, threads=2), cert.texts, cert.labels)
        return cal, [cal.choose(**request) for request in REQUESTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bundle", type=Path, default=None, help="a multi-label bundle (default: build one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fp32", type=Path, default=None, help="the fp32 ONNX model the INT8 one came from")
    parser.add_argument("--pytorch", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="also run in PyTorch: the head on sentence-transformers, or a fine-tuned bundle's "
                             "CHECKPOINT (needs the [train] extra)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("reuters_results.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cascade-reuters-") as work:
        bundle_path, build_s = args.bundle, None
        if bundle_path is None:
            bundle_path = Path(work) / "bundle"
            build_s = _build(args.data_dir, bundle_path)
        model = cascade.load(bundle_path, threads=2)
        if model.decisions is None or model.bundle is None:
            raise SystemExit(f"{bundle_path} is not a multi-label bundle")
        manifest, decisions, head = model.bundle.manifest, model.decisions, model.neural.head
        fine_tuned = head is None
        if fine_tuned and args.pytorch is True:
            raise SystemExit("a fine-tuned bundle: give --pytorch the checkpoint folder it was exported from")
        test = cascade.read_csv(args.data_dir / "test.csv", label_col="labels")
        y = label_matrix(test.labels, model.labels)
        cert = certification_split(cascade.read_csv(args.data_dir / "train.csv", label_col="labels"),
                                   manifest["training"]["splits"], "train.csv")
        cal, choices = _calibrated(bundle_path, cert)
        headline = choices[REQUESTS.index(HEADLINE)]
        calibrated = cal.model if headline.certified else None
        if headline.certified:
            cal.apply(headline)  # the calibrated row routes with the headline choice

        # the systems: name -> (what they do per call, the topic sets they give on test)
        neural_like: dict[str, Callable[[list[str]], np.ndarray]] = {"neural": model.neural.predict_proba}
        max_length, windows = model.neural.encoder.max_length, model.neural.encoder.windows
        if args.fp32 is not None:
            from cascade.stages.neural import NeuralStage

            fp32 = NeuralStage(args.fp32, model.bundle.file("tokenizer.json"), max_length, threads=2,
                               multi_label=True, windows=windows)
            neural_like["fp32"] = (fp32.predict_proba if fine_tuned
                                   else lambda t: sigmoid(head.logits(fp32.embed(t))))
        if args.pytorch and fine_tuned:
            neural_like["pytorch"] = _pytorch_classifier(Path(args.pytorch), max_length)
        elif args.pytorch:
            embed = _pytorch_embed()
            neural_like["pytorch"] = lambda t: sigmoid(head.logits(embed(t)))
        runs: dict[str, Callable[[list[str]], Any]] = {"cheap": model.cheap.predict_proba, **neural_like,
                                                      "cascade": lambda t: model.classify(t)}
        figures: dict[str, dict[str, float]] = {
            "cheap": tagging_figures(y, assign(model.cheap.predict_proba(test.texts), decisions.cheap, True)),
            **{name: tagging_figures(y, assign(run(test.texts), decisions.neural_alone, True))
               for name, run in neural_like.items()}}
        overall = evaluate_tagging(model, test)
        figures["cascade"] = {k.removeprefix("cascade_"): v for k, v in overall.items() if k.startswith("cascade_")}
        fell = {"cascade": overall["fall_through_rate"]}
        if calibrated is not None:
            runs["cascade_calibrated"] = lambda t: calibrated.classify(t)
            got = evaluate_tagging(calibrated, test)
            figures["cascade_calibrated"] = {k.removeprefix("cascade_"): v for k, v in got.items()
                                             if k.startswith("cascade_")}
            fell["cascade_calibrated"] = got["fall_through_rate"]
        def rate(run: Callable[[list[str]], Any]) -> Callable[[], float]:
            def measure() -> float:
                started = time.perf_counter()
                run(test.texts)
                return len(test) / (time.perf_counter() - started)
            return measure

        speed = {k: v.tolist() for k, v in interleaved({n: rate(r) for n, r in runs.items()}, args.rounds).items()}
        sample = test.texts[:: len(test) // 200][:200]
        p50 = {name: 1e3 * float(np.median(per_call_latencies(lambda t, r=run: r([t]), sample)))
               for name, run in runs.items()}
        realised = []
        for request, choice in zip(REQUESTS, choices):  # after the timings: each choice in turn, same calibration
            cal.apply(choice)
            got = evaluate_tagging(cal.model, test)
            mode = next(iter(request))
            realised.append({"mode": mode, "target": request[mode], "certified": choice.certified,
                             "threshold": choice.threshold, "promised_fall_through": choice.expected["fall_through_rate"],
                             "lower_bound": choice.expected.get("accuracy_lower_bound", choice.expected.get("f1_lower_bound")),
                             "realised": got["cascade_exact_match"] if mode == "target_accuracy" else got["cascade_mean_text_f1"],
                             "realised_fall_through": got["fall_through_rate"], "reason": choice.reason})
        files = manifest["files"]
        size = {"cheap": sum(files[f]["bytes"] for f in ("cheap.onnx", "cheap_features.json")) / 1e6,
                "neural": sum(files[f]["bytes"] for f in ("neural.onnx", "tokenizer.json", "head.npz") if f in files) / 1e6,
                "fp32": args.fp32.stat().st_size / 1e6 if args.fp32 else 0.0,
                "pytorch": (sum(f.stat().st_size for f in Path(args.pytorch).glob("*.safetensors")) / 1e6
                            if fine_tuned and args.pytorch else 90.9),
                "cascade": sum(e["bytes"] for e in files.values()) / 1e6}
        size["cascade_calibrated"] = size["cascade"]
    training = manifest.get("training", {})
    result = {"date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.processor() or platform.machine()}, 2 threads", "build_seconds": build_s,
              "fine_tuned": fine_tuned, "finetune": training.get("finetune"), "command": training.get("command"),
              "neural_reading": {"max_length": max_length, "windows": windows},
              "figures": figures, "fall_through": fell, "texts_per_s": speed, "one_text_p50_ms": p50, "size_mb": size,
              "promises": realised, "selection": manifest.get("metrics", {}).get("selection", {}),
              "splits": manifest.get("training", {}).get("splits", {}).get("sizes"), "threshold": model.threshold}
    args.out.write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result, args))
    print(markdown(result, args))


def names(result: dict[str, Any]) -> dict[str, str]:
    """The rows' names, for a frozen-encoder or a fine-tuned bundle."""
    r = result["neural_reading"]
    reading = (f"first {r['max_length']} tokens" if r["windows"] == 1
               else f"up to {r['windows']} windows of {r['max_length']} tokens")
    common = {"cheap": "cheap stage alone (TF-IDF + one-vs-rest logistic regression)",
              "cascade": "cascade at its build threshold", "cascade_calibrated": "**cascade calibrated: target_f1 0.90**"}
    if result["fine_tuned"]:
        return {**common, "neural": f"neural stage alone: all-MiniLM-L6-v2 fine-tuned (BCE), INT8 ({reading})",
                "fp32": "the same fine-tuned model, fp32 ONNX", "pytorch": "the same fine-tuned model in PyTorch"}
    return {**common, "neural": f"neural stage alone: frozen all-MiniLM-L6-v2, INT8, + per-topic head ({reading})",
            "fp32": "the same head on the fp32 ONNX encoder", "pytorch": "the same head on sentence-transformers (PyTorch)"}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    med = {k: float(np.median(v)) for k, v in result["texts_per_s"].items()}
    build = f" (build included: {result['build_seconds']:.0f} s)" if result["build_seconds"] else ""
    tuned = result["finetune"]
    if tuned and "seconds" in tuned:
        build = (f" on a bundle from `{result['command']} --multi-label` (fine-tuning: {tuned['config']['epochs']} epochs "
                 f"of {tuned['config']['max_length']} tokens in {tuned['seconds'] / 60:.0f} min, epoch {tuned['best_epoch']} "
                 "kept)")
    ft = result["fine_tuned"]
    lines = [f"Measured {result['date']} with `python benchmarks/reuters.py"
             + (" --bundle <fine-tuned>" if ft else "")
             + ((" --fp32 <model-fp32-optimized.onnx>" if ft else " --fp32 <encoder-fp32-optimized.onnx>") if args.fp32 else "")
             + ((" --pytorch <checkpoint>" if ft else " --pytorch") if args.pytorch else "")
             + f"`{build}; {result['machine']}; 3,019 test articles; {args.rounds} interleaved rounds after a warm-up round.", "",
             "| system | micro-F1 | macro-F1 | exact match | falls through | texts/s (batch) | one text p50 ms | size MB |",
             "|---|---|---|---|---|---|---|---|"]
    for key, f in result["figures"].items():
        runs = result["texts_per_s"][key]
        fell = result["fall_through"].get(key, 1.0 if key in ("neural", "fp32", "pytorch") else 0.0)
        lines.append(f"| {names(result)[key]} | {f['micro_f1']:.4f} | {f['macro_f1']:.4f} | {f['exact_match']:.4f} | "
                     f"{fell:.1%} | "
                     f"{med[key]:,.0f} [{min(runs):,.0f}-{max(runs):,.0f}] | {result['one_text_p50_ms'][key]:.3f} | "
                     f"{result['size_mb'][key]:.1f} |")
    for name, f1 in PUBLISHED:
        lines.append(f"| {name}, published | {f1:.3f} | | | | | | |")
    lines += ["", f"Cascade at its build threshold: {med['cascade'] / med['neural']:.1f}× the INT8 neural stage's "
              "throughput" + (f"; calibrated: {med['cascade_calibrated'] / med['neural']:.1f}×."
                              if "cascade_calibrated" in med else "."), "",
              "Promises (certified on the bundle's certification split, realised on test):", "",
              "| target | certified | threshold | fall-through promised → realised | lower bound | realised |",
              "|---|---|---|---|---|---|"]
    for p in result["promises"]:
        name = ("exact match" if p["mode"] == "target_accuracy" else "mean F1") + f" ≥ {p['target']:.0%}"
        held = "" if not p["certified"] else (" ✓" if p["realised"] >= p["target"] else " ✗")
        bound = f"{p['lower_bound']:.2%}" if p["lower_bound"] is not None else "none"
        lines.append(f"| {name} | {'yes' if p['certified'] else 'no'} | {p['threshold']:.3f} | "
                     f"{p['promised_fall_through']:.1%} → {p['realised_fall_through']:.1%} | {bound} | "
                     f"{p['realised']:.2%}{held} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
