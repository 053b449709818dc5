"""A larger frozen encoder as the neural stage, beside the shipped one: `cascade train` on each, same data, same
carve, figures on BANKING77's test split (which chooses nothing), costs measured side by side in one run.

    python -m cascade.training.encoder --model DIR --weights-sha256 HEX --out WORK --encoder-out ENCODER
    python benchmarks/large_encoder.py --encoder ENCODER [--out benchmarks/large_encoder]

Each recipe is built as README tells a user (``cascade.train`` on ``train.csv``, the package's own carve), then
scored on the test split: each stage alone, the cascade at the threshold the build chose, the share falling
through. Costs: milliseconds per text of the neural stage alone and of the whole cascade (``classify``) on the
test texts in batches of 256, each the best of ``--repeats`` runs, the recipes alternating; and build seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import cascade
from cascade.bundle.encoder_dir import read_encoder_dir
from cascade.calibration import cheapest_same_as_best
from cascade.evaluation import StageScores, score_stages, summarize
from cascade.policy.routing import confidence
from cascade.splits import build_splits
from cascade.training.mixing import fit_mix
from cascade.training.recipes.frozen import train_bundle

BATCH = 256
MIX_KINDS = ("neural", "linear", "product")


def _combiner_rows(model: Any, selection: Any, test: Any) -> dict[str, dict[str, Any]]:
    """Each combiner alone, as the build would use it: fitted on the selection texts, the threshold chosen
    there by the build rule; then read on test."""
    sel, tst = score_stages(model, selection), score_stages(model, test)
    out = {}
    for kind in MIX_KINDS:
        mix = fit_mix(sel.cheap, sel.neural, sel.y, confidence(sel.cheap), kinds=(kind,)).mix
        scored = StageScores(sel.cheap, sel.neural, sel.y, mix)
        rule = cheapest_same_as_best(confidence(sel.cheap), sel.cheap.argmax(1) == sel.y,
                                     scored.fallen.argmax(1) == sel.y)
        best = rule.best_threshold
        on_test = StageScores(tst.cheap, tst.neural, tst.y, mix)
        out[kind] = {"mix": mix.to_manifest(), "threshold": rule.threshold,
                     "fallen_alone_selection": float((scored.fallen.argmax(1) == sel.y).mean()),
                     "test": summarize(on_test, rule.threshold),
                     "test_at_most_accurate": summarize(on_test, best)}
    return out


def _ms_per_text(run: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        run(texts[i:i + BATCH])
    return 1000 * (time.perf_counter() - started) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, required=True, help="an encoder folder (cascade.training.encoder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("large_encoder"))
    parser.add_argument("--quick", action="store_true", help="a smoke run on a few texts a label (figures mean nothing)")
    args = parser.parse_args()

    data, test = cascade.load_banking77("train_full"), cascade.load_banking77("test")
    if args.quick:
        data, test, args.repeats = data.per_label(20), test.per_label(3), 1
    recipes = {"shipped encoder (all-MiniLM-L6-v2 INT8)": None,
               f"{read_encoder_dir(args.encoder).info.get('base_model', 'encoder')} INT8": args.encoder}
    rows: dict[str, dict[str, Any]] = {}
    models = {}
    with tempfile.TemporaryDirectory(prefix="cascade-large-") as work:
        for i, (name, encoder) in enumerate(recipes.items()):
            started = time.perf_counter()
            bundle = train_bundle(data, None, Path(work) / f"r{i}", encoder_from=encoder, progress=False,
                                  data_name="BANKING77 train.csv")
            seconds = time.perf_counter() - started
            model = cascade.load(bundle.path, cache_size=0)  # every text answered, as new traffic is
            figures = summarize(score_stages(model, test), model.threshold)
            size = sum((bundle.path / f).stat().st_size for f in bundle.manifest["files"])
            rows[name] = {"build_seconds": round(seconds, 1), "bundle_mb": round(size / 1e6, 1),
                          "threshold": model.threshold, "test": figures,
                          "selection": bundle.manifest["metrics"]["selection"]}
            models[name] = model
            selection = build_splits(data, None).selection  # the carve train_bundle made
            if len(selection) != bundle.manifest["metrics"]["selection"]["n_texts"]:
                raise SystemExit("the selection carve differs from the build's")
            rows[name]["combiners"] = _combiner_rows(model, selection, test)
            print(f"{name}: built in {seconds:.0f}s; test {figures['cascade_accuracy']:.2%} at "
                  f"{figures['fall_through_rate']:.1%}", flush=True)
        texts = test.texts
        for name in rows:  # warm
            models[name].classify(texts[:BATCH], progress=False)
        costs: dict[str, dict[str, list[float]]] = {name: {"cheap": [], "neural": [], "cascade": []} for name in rows}
        for _ in range(args.repeats):  # the recipes alternate, so a passing load falls on both
            for name, model in models.items():
                costs[name]["cheap"].append(_ms_per_text(model.cheap.logits, texts))
                costs[name]["neural"].append(_ms_per_text(model.neural.logits, texts))
                costs[name]["cascade"].append(_ms_per_text(lambda t, m=model: m.classify(t, progress=False), texts))
    for name in rows:
        rows[name]["ms_per_text"] = {k: round(min(v), 4) for k, v in costs[name].items()}
    reference = rows[next(iter(rows))]["ms_per_text"]["neural"]
    encoder = read_encoder_dir(args.encoder).info
    result = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "command": "python benchmarks/large_encoder.py --encoder ENCODER", "batch": BATCH,
              "reference_ms": reference, "recipes": rows,
              # how the encoder was made and gated (its command names this machine's folders: left out)
              "encoder_build": {k: ({n: x for n, x in v.items() if n != "command"} if k == "build" else v)
                                for k, v in encoder.items() if k != "files"}}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"Measured {result['date']} with `{result['command']}` (BANKING77; built on train.csv with the package's "
             "carve; figures on the test split, which chose nothing; ms per text in batches of 256, best of "
             f"{args.repeats}; cost relative to the shipped encoder's neural stage alone).", "",
             "| recipe | cheap | neural alone | cascade | falls through | neural ms/text | cascade ms/text | cascade cost "
             "vs MiniLM stage | bundle MB | build s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        t, ms = row["test"], row["ms_per_text"]
        lines.append(f"| {name} | {t['cheap_accuracy']:.2%} | {t['neural_accuracy']:.2%} | "
                     f"**{t['cascade_accuracy']:.2%}** | {t['fall_through_rate']:.1%} | {ms['neural']:.3f} | "
                     f"{ms['cascade']:.3f} | {ms['cascade'] / reference:.2f}× | {row['bundle_mb']} | "
                     f"{row['build_seconds']:.0f} |")
    lines += ["", "Combiners for texts that fall through, each fitted on the selection texts with the threshold the build "
              "rule chooses there (and, beside it, the most accurate selection threshold); test figures; cost "
              "estimated from the stage costs above (cheap + share falling through × neural), relative to the MiniLM "
              "stage alone. The build keeps the one with the lowest cross-validated log-loss (★).", "",
              "| recipe | combiner | weights | cascade | falls through | est. cost | at the most accurate threshold | "
              "falls through | est. cost |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        ms = row["ms_per_text"]
        chosen = row["selection"].get("mix_choice", {}).get("chosen")
        for kind, c in row["combiners"].items():
            cost = [(ms["cheap"] + t["fall_through_rate"] * ms["neural"]) / reference
                    for t in (c["test"], c["test_at_most_accurate"])]
            weights = ", ".join(f"{k.split('_')[0]} {v:.3g}" for k, v in c["mix"].items() if k != "kind")
            lines.append(f"| {name} | {kind}{' ★' if kind == chosen else ''} | {weights} | "
                         f"{c['test']['cascade_accuracy']:.2%} | {c['test']['fall_through_rate']:.1%} | {cost[0]:.2f}× | "
                         f"{c['test_at_most_accurate']['cascade_accuracy']:.2%} | "
                         f"{c['test_at_most_accurate']['fall_through_rate']:.1%} | {cost[1]:.2f}× |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
