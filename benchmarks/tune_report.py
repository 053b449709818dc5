"""Before and after `cascade tune` on BANKING77: the shipped bundle against one whose cheap stage is the
study's best (written by `cascade tune --out`), on the selection texts (what the study minimised) and on the
test split (reported only; it chose nothing).

    cascade tune --trials 50 --seed 0 --storage runs/tune/banking77.journal --study banking77-50 --out runs/tune/bundle
    python benchmarks/tune_report.py runs/tune/bundle [--out benchmarks/tune_results]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade
from cascade.policy.routing import fallthrough_answer
from cascade.tuning import fewest_falling


def figures(model: cascade.Cascade, data: cascade.TextDataset, target: float) -> dict[str, float]:
    y = np.array([model.labels.index(label) for label in data.labels])
    cheap = model.cheap.predict_proba(data.texts)
    neural = model.neural.predict_proba(data.texts)
    neural_ok = fallthrough_answer(cheap, neural, model.mix).argmax(1) == y
    probs, fallen = model.route(data.texts)
    return {"threshold": model.threshold, "accuracy": float((probs.argmax(1) == y).mean()),
            "fall_through": float(fallen.mean()), "cheap_accuracy": float((cheap.argmax(1) == y).mean()),
            "fewest_falling_at_target": fewest_falling(cheap, neural_ok, y, target, model.measure),
            "cheap_ms_per_text": cheap_ms(model, data.texts)}


def cheap_ms(model: cascade.Cascade, texts: list[str], n: int = 1000) -> float:
    times = []
    for text in texts[:n]:
        started = time.perf_counter()
        model.cheap.predict_proba([text])
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tuned", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    shipped, tuned = cascade.load(), cascade.load(args.tuned)
    selection, test = cascade.load_banking77("selection"), cascade.load_banking77("test")
    sel_target = figures(shipped, selection, 0.0)["accuracy"]  # the shipped cascade's, at its threshold
    test_target = figures(shipped, test, 0.0)["accuracy"]
    result = {"study": tuned.bundle.manifest["training"].get("tuned", {}),
              "tuned_config": tuned.bundle.manifest["training"]["cheap"]["config"],
              "selection": {"target_accuracy": sel_target, "shipped": figures(shipped, selection, sel_target),
                            "tuned": figures(tuned, selection, sel_target)},
              "test": {"target_accuracy": test_target, "shipped": figures(shipped, test, test_target),
                       "tuned": figures(tuned, test, test_target)},
              "measured": time.strftime("%Y-%m-%d"), "command": "python benchmarks/tune_report.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["| split | cheap stage | fewest falling through at the shipped cascade's accuracy "
                 "| cascade accuracy at its own threshold | falling through there | cheap accuracy | cheap ms per text |",
                 "|---|---|---|---|---|---|---|"]
        for split in ("selection", "test"):
            for name in ("shipped", "tuned"):
                f = result[split][name]
                fewest = f["fewest_falling_at_target"]
                shown = f"{fewest:.1%}" if fewest <= 1 else "unreachable"
                lines.append(f"| {split} ({result[split]['target_accuracy']:.2%} to reach) | {name} | {shown} | "
                             f"{f['accuracy']:.2%} (threshold {f['threshold']:.3f}) | {f['fall_through']:.1%} | "
                             f"{f['cheap_accuracy']:.2%} | {f['cheap_ms_per_text']:.3f} |")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
