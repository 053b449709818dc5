"""Distillation on BANKING77: half of the training split is held out as an unlabelled pool.

    cascade finetune --data labelled_half.csv --val val.csv --out runs/half-bundle --work-dir runs/half-work
    python experiments/distillation.py --base runs/half-bundle [--min-confidence 0.9]

``--base`` must be a bundle whose stages saw only the labelled half (``--write-csv DIR`` writes the two
CSVs the command above needs); otherwise its neural stage has seen the pool's labels and the figures
flatter distillation. Reported: the cheap stage's coverage at the neural stage's validation accuracy
(the share of texts it can keep while matching the transformer there) before and after, and the
cascade's test accuracy and fall-through rate at each bundle's validation-chosen threshold.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

import cascade

SALT = "distillation-pool:"


def write_csv(path: Path, data: cascade.TextDataset) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(zip(data.texts, data.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="bundle trained on the labelled half only")
    parser.add_argument("--min-confidence", type=float, default=None,
                        help="default: chosen on validation for 95%% pseudo-label accuracy")
    parser.add_argument("--write-csv", type=Path, help="write labelled_half.csv and val.csv here, then stop")
    args = parser.parse_args()

    labelled, pool = cascade.stratified_split(cascade.load_banking77("train"), 0.5, salt=SALT)
    val, test = cascade.load_banking77("selection"), cascade.load_banking77("test")
    if args.write_csv:
        args.write_csv.mkdir(parents=True, exist_ok=True)
        write_csv(args.write_csv / "labelled_half.csv", labelled)
        write_csv(args.write_csv / "val.csv", val)
        return
    if args.base is None:
        parser.error("--base is required (or --write-csv)")

    base = cascade.load(args.base)
    y_val = np.array([base.labels.index(label) for label in val.labels])
    neural_val_acc = float((base.neural.predict_proba(val.texts).argmax(1) == y_val).mean())
    work = Path(tempfile.mkdtemp(prefix="cascade-distill-"))
    before = cascade.train_cheap(labelled, val, work / "before", base=args.base, progress=False)
    after = cascade.distill(base, labelled, pool.texts, val, work / "after", min_confidence=args.min_confidence,
                            progress=False)
    info = after.manifest["training"]["distillation"]
    print(f"labelled {len(labelled)}, pool {len(pool)}: {info['n_pseudo_labelled']} pseudo-labelled with neural "
          f"confidence >= {info['min_confidence']:.3f}; neural stage validation accuracy {neural_val_acc:.2%}\n")
    print("| cheap stage trained on | cheap val accuracy | coverage at neural val accuracy | coverage at 95% "
          "| cascade test accuracy | test fall-through |\n|---|---|---|---|---|---|")
    for name, bundle in (("labelled half", before), ("labelled half + pseudo-labelled pool", after)):
        model = cascade.load(bundle.path)
        probs = model.cheap.predict_proba(val.texts)
        correct = probs.argmax(1) == y_val
        coverage = cascade.coverage_at_accuracy(probs.max(1), correct, neural_val_acc)
        figures = cascade.evaluate(model, test)
        at95 = cascade.coverage_at_accuracy(probs.max(1), correct, 0.95)
        print(f"| {name} | {correct.mean():.2%} | {coverage:.1%} | {at95:.1%} | {figures['cascade_accuracy']:.2%} | "
              f"{figures['fall_through_rate']:.1%} |")


if __name__ == "__main__":
    main()
