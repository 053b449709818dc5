"""Two bundles on the same BANKING77 splits: which design wins on validation, and what each gives on test.

    python experiments/compare_designs.py --a artifacts --b runs/finetuned

The choice uses validation only: an exact McNemar test on the validation texts the two cascades answer
differently; if it cannot tell them apart (p >= 0.05), the cheaper one (less falling through) is kept.
Test figures are reported after the choice, for the record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

import cascade


def _figures(model: cascade.Cascade, data: cascade.TextDataset) -> tuple[np.ndarray, dict[str, float]]:
    right = np.array([p.label for p in model.classify(data.texts)]) == np.array(data.labels)
    _, fell = model.route(data.texts)
    return right, {"accuracy": float(right.mean()), "fall_through_rate": float(fell.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="a bundle")
    parser.add_argument("--b", type=Path, required=True, help="another bundle, same labels")
    args = parser.parse_args()
    models = {"a": cascade.load(args.a), "b": cascade.load(args.b)}
    val, test = cascade.load_banking77("selection"), cascade.load_banking77("test")
    out: dict[str, dict] = {}
    right = {}
    for name, model in models.items():
        right[name], v = _figures(model, val)
        _, t = _figures(model, test)
        out[name] = {"bundle": str(getattr(args, name)), "neural": model.bundle.manifest["neural"].get("type", "fine-tuned"),
                     "validation": v, "test": t}
    only_a = int((right["a"] & ~right["b"]).sum())
    only_b = int((~right["a"] & right["b"]).sum())
    p = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    if p < 0.05:
        winner = "a" if only_a > only_b else "b"
        why = f"significantly more accurate on validation (p = {p:.3f})"
    else:
        winner = min(out, key=lambda k: out[k]["validation"]["fall_through_rate"])
        why = f"indistinguishable on validation (p = {p:.2f}); the one with less falling through"
    out["mcnemar"] = {"right_only_a": only_a, "right_only_b": only_b, "p": p, "winner": winner, "why": why}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
