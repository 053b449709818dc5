"""Give a fine-tuned BANKING77 bundle built before scales were fixed (dynamic, per-batch activation
scales: answers that move with batch-mates, or run one text at a time) fixed scales and current text hashes.

    python experiments/fix_activation_scales.py --bundle runs/finetuned --work runs/fix-scales
    python benchmarks/evaluate_bundle.py --bundle runs/finetuned --write

This is how the fine-tuned bundle compared in README was brought up to date. It runs the same
step a fresh ``cascade finetune`` now runs (:func:`cascade.training.export.fix_scales`: ranges measured
on BANKING77 training texts, the percentile chosen on validation, kept only within 0.5 points of the
fp32 model's validation accuracy), rewrites ``train_hashes.json`` with the near-duplicate-aware hash,
re-chooses the threshold on validation by the bundle's rule and writes the bundle atomically. The INT8
weights are unchanged. The test split is not read here.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cascade
from cascade.bundle import TRAIN_HASHES_FILE, read_bundle, text_hash, write_bundle, write_train_hashes
from cascade.evaluation import label_indices
from cascade.stages.neural import NeuralStage
from cascade.training.assemble import _choose_threshold
from cascade.training.export import NeuralBuild, fix_scales

TOLERANCE = 0.005


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the candidate models")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    bundle = read_bundle(args.bundle)
    neural_info = bundle.manifest["neural"]
    if neural_info.get("activation_scales", "dynamic") != "dynamic":
        raise SystemExit(f"{args.bundle} already has fixed activation scales")
    args.work.mkdir(parents=True, exist_ok=True)
    dynamic = args.work / "model-dynamic.onnx"
    dynamic.write_bytes(bundle.read_bytes("neural.onnx"))
    tokenizer = args.work / "tokenizer.json"
    tokenizer.write_bytes(bundle.read_bytes("tokenizer.json"))
    max_length = int(neural_info["max_length"])
    train, val = cascade.load_banking77("train"), cascade.load_banking77("selection")
    y = label_indices(bundle.labels, val.labels)

    def accuracy_of(path: Path) -> float:
        stage = NeuralStage(path, tokenizer, max_length)
        return float((stage.predict_proba(val.texts).argmax(1) == y).mean())

    build = NeuralBuild(dynamic, dynamic, neural_info["quantization"], neural_info["fusions"],
                        neural_info["validation_accuracy_fp32"], accuracy_of(dynamic),
                        [dict(t) for t in neural_info.get("quantization_tried", [])])
    fixed = fix_scales(build, tokenizer, max_length, train.texts, accuracy_of,
                       build.val_accuracy_fp32 - TOLERANCE)
    if fixed.activation_scales == "dynamic":
        raise SystemExit("no fixed-scale model kept validation accuracy; the bundle is left as it is")

    model = cascade.load(args.bundle)
    neural = NeuralStage(fixed.model_path, tokenizer, max_length)
    threshold, val_metrics = _choose_threshold(model.cheap, neural, bundle.labels, val)
    write_train_hashes(args.work / TRAIN_HASHES_FILE, {text_hash(t) for t in train.texts})
    files = {name: bundle.file(name) for name in bundle.manifest["files"]}
    files["neural.onnx"] = fixed.model_path
    files[TRAIN_HASHES_FILE] = args.work / TRAIN_HASHES_FILE
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version", "created")}
    manifest["threshold"] = threshold
    manifest["neural"] = {**neural_info, "activation_scales": fixed.activation_scales,
                          "validation_accuracy_dynamic": build.val_accuracy,
                          "validation_accuracy": fixed.val_accuracy, "quantization_tried": fixed.tried}
    old_test = bundle.manifest.get("metrics", {}).get("test", {})
    carried = {k: old_test[k] for k in ("neural_fp32_accuracy", "neural_fp32_bytes") if k in old_test}
    manifest["metrics"] = {"validation": val_metrics, **({"test": carried} if carried else {})}
    expected = {k: v for k, v in bundle.expected_hashes().items() if k not in ("neural.onnx", TRAIN_HASHES_FILE)}
    out = write_bundle(args.bundle, files, manifest, expected=expected)
    print(f"wrote {out.path}: activation scales {fixed.activation_scales}, neural validation accuracy "
          f"{build.val_accuracy:.4f} (dynamic) -> {fixed.val_accuracy:.4f}, threshold {threshold:.4f}, "
          f"cascade validation {val_metrics['cascade_accuracy']:.4f} at {val_metrics['fall_through_rate']:.1%}; "
          f"digest {out.digest}")


if __name__ == "__main__":
    main()
