"""Do promises survive? Build with the package's default splits, calibrate, measure on the untouched test split.

    python benchmarks/replay_promises.py [--seeds 4] [--subsets 4] [--subset-size 40] [--out benchmarks/replay_promises.json]

Each replicate carves BANKING77's train.csv with :func:`cascade.carve_splits` (the default shares; the
salt is the seed, so each replicate draws other selection and certification texts), builds a bundle
with ``cascade.train`` on train / selection, calibrates it on the certification split with
``--target-accuracy`` for every target (confidence 0.95), and measures each certified choice on the
BANKING77 test split, which chose nothing. Replicates are full 77-intent runs (one per seed) and runs on
random subsets of the intents (test restricted to them). It also records the build rule's effect: the
test figures at the threshold the build chose and at the most accurate threshold on the selection texts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import cascade
from cascade.calibration import CalibrationWarning, cheapest_same_as_best
from cascade.evaluation import score_stages, summarize
from cascade.router import confidence as routing_confidence
from cascade.training.train import TrainConfig, train_bundle

TARGETS = (0.85, 0.88, 0.90, 0.91, 0.92, 0.93, 0.94)


def _subset(data: cascade.TextDataset, keep: set[str]) -> cascade.TextDataset:
    rows = [(t, y) for t, y in zip(data.texts, data.labels) if y in keep]
    return cascade.TextDataset([t for t, _ in rows], [y for _, y in rows])


def replicate(name: str, data: cascade.TextDataset, test: cascade.TextDataset, salt: str, work: Path,
              targets: tuple[float, ...], confidence: float) -> dict[str, Any]:
    splits = cascade.carve_splits(data, salt=salt)
    bundle = train_bundle(splits.train, splits.selection, work / name, config=TrainConfig(), progress=False)
    model = cascade.load(bundle.path)
    scores = score_stages(model, test)
    rule = bundle.manifest["metrics"]["selection"]["rule"]
    sel = score_stages(model, splits.selection)  # the rule without its cap on the accuracy given up
    test_alone = cheapest_same_as_best(routing_confidence(sel.cheap), sel.cheap.argmax(1) == sel.y, sel.fallen.argmax(1) == sel.y,
                                       max_drop=1.0)
    build = {"chosen": summarize(scores, rule["threshold"]), "most_accurate": summarize(scores, rule["best_threshold"]),
             "mcnemar_alone": summarize(scores, test_alone.threshold), "selection": rule}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = cascade.calibrate(model, splits.certification.texts, splits.certification.labels)
        choices = [cal.choose(target_accuracy=target, confidence=confidence) for target in targets]
    cal.apply(choices[0])  # the temperatures and the measure (the same for every choice) now score the texts
    calibrated = score_stages(model, test)
    promises = []
    for target, choice in zip(targets, choices):
        row = {"target": target, "certified": choice.certified, "threshold": choice.threshold,
               "expected_fall_through": choice.expected["fall_through_rate"]}
        if choice.certified:
            realised = summarize(calibrated, choice.threshold, cal.measure_)
            row |= {"lower_bound": choice.expected["accuracy_lower_bound"],
                    "realised_accuracy": realised["cascade_accuracy"],
                    "realised_fall_through": realised["fall_through_rate"],
                    "kept": realised["cascade_accuracy"] >= target}
        promises.append(row)
    return {"name": name, "salt": salt, "n_labels": len(set(data.labels)), "sizes": splits.describe()["sizes"],
            "test_texts": len(test), "build": build, "promises": promises}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [(f"Measured {time.strftime('%Y-%m-%d')} with `{command}` ({len(results)} replicates; promises at "
             "confidence 95%, certified on each replicate's certification split, realised on BANKING77 test)."), "",
             ("| target | certified in | kept (realised ≥ target) | realised test accuracy: min / median | "
             "fall-through promised → realised (median) |"), "|---|---|---|---|---|"]
    for target in sorted({p["target"] for r in results for p in r["promises"]}):
        rows = [p for r in results for p in r["promises"] if p["target"] == target]
        done = [p for p in rows if p["certified"]]
        if not done:
            lines.append(f"| {target:.0%} | 0 of {len(rows)} | – | – | – |")
            continue
        acc = [p["realised_accuracy"] for p in done]
        lines.append(f"| {target:.0%} | {len(done)} of {len(rows)} | {sum(p['kept'] for p in done)} of {len(done)} | "
                     f"{_pct(min(acc))} / {_pct(float(np.median(acc)))} | "
                     f"{100 * float(np.median([p['expected_fall_through'] for p in done])):.1f}% → "
                     f"{100 * float(np.median([p['realised_fall_through'] for p in done])):.1f}% |")
    made = [p for r in results for p in r["promises"] if p["certified"]]
    kept = sum(p["kept"] for p in made)
    lines += ["", f"Promises kept: **{kept} of {len(made)}** ({kept / max(len(made), 1):.0%}).", "",
              "The build's threshold rule on the same replicates (accuracy @ fall-through on the test split):", "",
              ("| replicate | labels | selection texts | the build's rule | the McNemar test alone (no cap) | "
              "most accurate on selection | neural stage alone |"), "|---|---|---|---|---|---|---|"]
    at = lambda f: f"{_pct(f['cascade_accuracy'])} @ {f['fall_through_rate']:.1%}"
    for r in results:
        b = r["build"]
        lines.append(f"| {r['name']} | {r['n_labels']} | {r['sizes']['selection']:,} | {at(b['chosen'])} | "
                     f"{at(b['mcnemar_alone'])} | {at(b['most_accurate'])} | {_pct(b['chosen']['neural_accuracy'])} |")
    mean = lambda key, f: float(np.mean([r["build"][key][f] for r in results]))
    lines.append(f"| mean | | | {_pct(mean('chosen', 'cascade_accuracy'))} @ {mean('chosen', 'fall_through_rate'):.1%} | "
                 f"{_pct(mean('mcnemar_alone', 'cascade_accuracy'))} @ {mean('mcnemar_alone', 'fall_through_rate'):.1%} | "
                 f"{_pct(mean('most_accurate', 'cascade_accuracy'))} @ {mean('most_accurate', 'fall_through_rate'):.1%} | "
                 f"{_pct(mean('chosen', 'neural_accuracy'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4, help="full 77-intent replicates")
    parser.add_argument("--subsets", type=int, default=4, help="replicates on random subsets of the intents")
    parser.add_argument("--subset-size", type=int, default=40)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("replay_promises.json"))
    args = parser.parse_args()

    full, test = cascade.load_banking77("train_full"), cascade.load_banking77("test")
    labels = sorted(set(full.labels))
    rng = np.random.default_rng(0)
    plans = [(f"all-{s}", full, test, f"replay-{s}:") for s in range(args.seeds)]
    for s in range(args.subsets):
        keep = set(rng.choice(labels, size=args.subset_size, replace=False).tolist())
        plans.append((f"subset-{s}", _subset(full, keep), _subset(test, keep), f"replay-subset-{s}:"))
    results = []
    with tempfile.TemporaryDirectory(prefix="cascade-replay-") as work:
        for name, data, held_out, salt in plans:
            started = time.perf_counter()
            results.append(replicate(name, data, held_out, salt, Path(work), TARGETS, args.confidence))
            print(f"{name}: {time.perf_counter() - started:.0f}s", flush=True)
    command = "python benchmarks/replay_promises.py" + (f" --seeds {args.seeds} --subsets {args.subsets}"
                                                          if (args.seeds, args.subsets) != (4, 4) else "")
    table = markdown(results, command)
    args.out.write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
