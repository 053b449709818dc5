"""\"None of these\" on BANKING77 with the standard open-set protocol.

    python experiments/open_set.py [--seeds 3] [--share 0.05] [--out STEM]

For each seed, a random 75% of the 77 intents are known: `cascade.train` builds a bundle on their
training texts, with the "none of these" cut chosen on their validation texts so that at most ``share`` of
those in-scope texts are rejected. On the test split, texts of the other 25% of intents are unknown.
Reported per seed and averaged: in-scope accuracy (abstentions count as errors), in-scope accuracy of the
answers given, the in-scope rejected share, and unknown-text recall (the share answered "none of these").
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import cascade


def _subset(data: cascade.TextDataset, keep: set[str]) -> cascade.TextDataset:
    idx = [i for i, label in enumerate(data.labels) if label in keep]
    return cascade.TextDataset([data.texts[i] for i in idx], [data.labels[i] for i in idx])


def run(seed: int, share: float, work: Path) -> dict[str, float]:
    train, val, test = (cascade.load_banking77(s) for s in ("train", "selection", "test"))
    intents = sorted(set(train.labels))
    rng = np.random.default_rng(seed)
    known = set(rng.choice(intents, size=round(0.75 * len(intents)), replace=False).tolist())
    bundle = cascade.train(_subset(train, known), _subset(val, known), work / f"seed{seed}", abstain=share,
                           progress=False)
    model = cascade.load(bundle.path)
    answers = model.classify(test.texts)
    inside = np.array([label in known for label in test.labels])
    got = np.array([p.label if p.label is not None else "" for p in answers], dtype=object)
    gold = np.array(test.labels, dtype=object)
    abstained = got == ""
    return {
        "seed": seed, "known_intents": len(known), "in_scope_texts": int(inside.sum()), "unknown_texts": int((~inside).sum()),
        "abstain_below": bundle.manifest["abstain"]["below"],
        "in_scope_accuracy": float((got[inside] == gold[inside]).mean()),
        "in_scope_accuracy_of_answers": float((got[inside & ~abstained] == gold[inside & ~abstained]).mean()),
        "in_scope_rejected": float(abstained[inside].mean()),
        "unknown_recall": float(abstained[~inside].mean()),
        "validation_rejected": bundle.manifest["metrics"]["selection"]["abstained_share"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.05, help="in-scope validation texts that may be rejected")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("open_set"),
                        help="STEM of the result files STEM.json and STEM.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cascade-open-set-") as work:
        rows = [run(seed, args.share, Path(work)) for seed in range(args.seeds)]
    keys = ["in_scope_accuracy", "in_scope_accuracy_of_answers", "in_scope_rejected", "unknown_recall"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    command = ("python experiments/open_set.py " + " ".join(sys.argv[1:])).strip()
    today = datetime.date.today().isoformat()
    result = {"date": today, "command": command, "share": args.share, "seeds": rows, "mean": mean}
    print(json.dumps(result, indent=2))
    lines = ["| seed | in-scope accuracy (rejections count as errors) | accuracy of the answers given | in-scope rejected "
             "| unknown texts rejected |", "|---|---|---|---|---|"]
    for r in rows + [{"seed": "mean", **mean}]:
        lines.append(f"| {r['seed']} | {r['in_scope_accuracy']:.2%} | {r['in_scope_accuracy_of_answers']:.2%} | "
                     f"{r['in_scope_rejected']:.1%} | {r['unknown_recall']:.1%} |")
    lines += ["", f"Measured {today} with `{command}`."]
    print("\n" + "\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
