"""Test-split figures of a bundle: each stage alone, the cascade at its threshold, file sizes.

    python benchmarks/evaluate_bundle.py [--bundle artifacts] [--fp32 PATH] [--write]

``--fp32`` also scores the fp32 ONNX export the INT8 model was quantized from (not shipped: it is
91 MB; ``cascade finetune`` leaves it in its work folder). ``--write`` stores the figures in the
bundle's manifest under ``metrics.test`` (atomically). The test split chooses nothing: the threshold
and every setting were fixed on the validation split before this runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

import cascade
from cascade.bundle import default_bundle_path, update_manifest
from cascade.evaluation import label_indices, score_stages, summarize
from cascade.stages.neural import NeuralStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--fp32", type=Path, default=None, help="fp32 ONNX model to score as well")
    parser.add_argument("--write", action="store_true", help="store the figures in the bundle's manifest")
    args = parser.parse_args()

    model = cascade.load(args.bundle)
    test = cascade.load_banking77("test")
    started = time.perf_counter()
    scores = score_stages(model, test)
    figures = summarize(scores, model.threshold)
    if args.fp32 is not None:
        fp32 = NeuralStage(args.fp32, model.bundle.file("tokenizer.json"), model.neural.encoder.max_length)
        y = label_indices(model.labels, test.labels)
        figures["neural_fp32_accuracy"] = float((fp32.predict_proba(test.texts).argmax(1) == y).mean())
        figures["neural_fp32_bytes"] = args.fp32.stat().st_size
    figures["file_bytes"] = {name: e["bytes"] for name, e in model.bundle.manifest["files"].items()}
    figures["total_bytes"] = sum(figures["file_bytes"].values())
    figures["split"] = "BANKING77 test (3,080 texts)"
    figures["measured"] = f"{date.today().isoformat()} on {platform.machine()}, python benchmarks/evaluate_bundle.py"

    rows = [
        ("cheap stage alone", figures["cheap_accuracy"], figures["cheap_macro_f1"]),
        ("neural stage alone (INT8)", figures["neural_accuracy"], figures["neural_macro_f1"]),
        (f"cascade at threshold {model.threshold:.3f}", figures["cascade_accuracy"], figures["cascade_macro_f1"]),
    ]
    if "neural_fp32_accuracy" in figures:
        rows.insert(2, ("neural stage alone (fp32 ONNX)", figures["neural_fp32_accuracy"], float("nan")))
    print("| system | accuracy | macro-F1 |\n|---|---|---|")
    for name, acc, f1 in rows:
        print(f"| {name} | {acc:.2%} | {'' if np.isnan(f1) else f'{f1:.4f}'} |")
    print(f"\nfall-through rate: {figures['fall_through_rate']:.1%}; files: "
          + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in figures["file_bytes"].items())
          + f"; total {figures['total_bytes'] / 1e6:.1f} MB; scored in {time.perf_counter() - started:.0f}s")
    if args.write:
        previous = model.bundle.manifest.get("metrics", {}).get("test", {})
        if args.fp32 is None:  # keep the fp32 figures measured before (they do not depend on this bundle's INT8 model)
            figures.update({k: previous[k] for k in ("neural_fp32_accuracy", "neural_fp32_bytes") if k in previous})
        metrics = {**model.bundle.manifest.get("metrics", {}), "test": figures}
        update_manifest(model.bundle.path, {"metrics": metrics})
        print(f"stored in {model.bundle.path / 'manifest.json'}")
    else:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
