"""Do promises survive the next texts users send? The default workflow, replayed with and without --traffic.

    python benchmarks/replay_promises.py [--seeds 4] [--subsets 4] [--reuters-seeds 2] [--out benchmarks/replay_promises.json]

Each replicate does what README tells a user to do: carve the training file with the package's default rule
(:func:`cascade.carve_splits`; the salt is the replicate's, so each draws other selection and certification
texts), build a bundle with ``cascade.train``, and calibrate it on the certification split for every target
(confidence 0.95). The data set's test file stands for the texts users send next, and chose nothing: a
random half of it (per replicate) is the unlabelled *traffic* given to ``observe_traffic`` (what ``cascade
calibrate --traffic`` does), the other half *checks* every promise. Each promise is made twice, from the same
certification texts: without traffic (the old workflow) and with it; a promise is kept when the figure
realised on the check half reaches its target. Declined promises are counted too: a promise never made is
better than one broken. The ATC estimate of the traffic at each threshold chosen is set beside the figure
realised on the check half and on the traffic half itself (the halves differ by chance alone).

Replicates: the shipped bundle calibrated as README says, on its own certification split, with other
traffic/check halves (``--shipped-seeds``); BANKING77 with all 77 intents (``--seeds``) and with random
subsets of 40 (``--subsets``), each its own carve and build; and
Reuters-21578 (``--reuters-seeds``, from ``--reuters-dir`` when it exists: research use only, never shipped),
promising exact match (``target_accuracy``) and mean per-text F1 (``target_f1``). The build rule's figures
on the whole BANKING77 test split are kept beside, as before.
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
from cascade.calibration.feedback import check_feedback_labels, outcomes
from cascade.evaluation import score_stages, summarize
from cascade.policy.routing import confidence as routing_confidence
from cascade.training.recipes.frozen import TrainConfig, train_bundle

TARGETS = (0.85, 0.88, 0.90, 0.91, 0.92, 0.93, 0.94)
REUTERS_EXACT = (0.70, 0.75, 0.78, 0.80, 0.82)
REUTERS_F1 = (0.85, 0.87, 0.89, 0.91)
REUTERS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "reuters21578"


def _subset(data: cascade.TextDataset, keep: set[str]) -> cascade.TextDataset:
    rows = [(t, y) for t, y in zip(data.texts, data.labels) if y in keep]
    return cascade.TextDataset([t for t, _ in rows], [y for _, y in rows])


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def _realised(model: Any, cal: Any, choice: Any, texts: list[str], labels: list[Any], figure: str) -> dict[str, float]:
    cal.apply(choice)
    predictions = model.classify(texts, progress=False)
    fell = np.mean([p.stage == "neural" for p in predictions])
    return {"figure": float(outcomes(predictions, labels, figure).mean()), "fall_through": float(fell)}


def _promises(model: Any, cal: Any, rules: list[tuple[str, float]], check_texts: list[str], check_labels: list[Any],
              confidence: float, traffic_half: tuple[list[str], list[Any]] | None) -> list[dict[str, Any]]:
    """Each rule's promise, made from the certification texts alone (``traffic_half`` None) or with the traffic
    observed (``traffic_half``: its texts and, for the benchmark's eyes only, their labels), realised on the check
    half; with traffic, the figure realised on the traffic half itself is kept too, which separates the
    estimate's own error from the difference between the two halves."""
    with_traffic = traffic_half is not None
    rows = []
    for mode, target in rules:
        choice = cal.choose(**{mode: target}, confidence=confidence)
        figure = "mean_text_f1" if mode == "target_f1" else ("exact_match" if model.multi_label else "accuracy")
        traffic = choice.expected.get("traffic") or {}
        row = {"mode": mode, "target": target, "traffic": with_traffic, "made": choice.certified,
               "threshold": choice.threshold, "estimate": traffic.get("estimate"), "traffic_bound": traffic.get("bound"),
               "reason": "" if choice.certified else choice.reason[:300]}
        realised = _realised(model, cal, choice, check_texts, check_labels, figure)
        row |= {"realised": realised["figure"], "realised_fall_through": realised["fall_through"],
                "expected_fall_through": choice.expected["fall_through_rate"]}
        if traffic_half is not None:
            row["realised_on_traffic"] = _realised(model, cal, choice, *traffic_half, figure)["figure"]
        if choice.certified:
            row["kept"] = realised["figure"] >= target
        rows.append(row)
    return rows


def replicate(name: str, data: cascade.TextDataset, test: cascade.TextDataset, salt: str, seed: int, work: Path,
              rules: list[tuple[str, float]], confidence: float, config: TrainConfig,
              build_rule: bool) -> dict[str, Any]:
    splits = cascade.carve_splits(data, salt=salt, label_sep=config.label_sep)
    started = time.perf_counter()
    bundle = train_bundle(splits.train, splits.selection, work / name, config=config, progress=False)
    build_seconds = time.perf_counter() - started
    model = cascade.load(bundle.path)
    traffic_idx, check_idx = _halves(len(test), seed)
    check_texts = [test.texts[i] for i in check_idx]
    check_labels = check_feedback_labels(model, [test.labels[i] for i in check_idx])
    traffic = ([test.texts[i] for i in traffic_idx], check_feedback_labels(model, [test.labels[i] for i in traffic_idx]))
    out: dict[str, Any] = {"name": name, "salt": salt, "seed": seed, "n_labels": len(model.labels),
                           "sizes": splits.describe()["sizes"], "test_texts": len(test), "traffic_texts": len(traffic_idx),
                           "check_texts": len(check_idx), "build_seconds": build_seconds}
    if build_rule:
        scores = score_stages(model, test)
        rule = bundle.manifest["metrics"]["selection"]["rule"]
        sel = score_stages(model, splits.selection)
        alone = cheapest_same_as_best(routing_confidence(sel.cheap), sel.cheap.argmax(1) == sel.y,
                                      sel.fallen.argmax(1) == sel.y, max_drop=1.0)
        out["build"] = {"chosen": summarize(scores, rule["threshold"]),
                        "most_accurate": summarize(scores, rule["best_threshold"]),
                        "mcnemar_alone": summarize(scores, alone.threshold), "selection": rule}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = cascade.calibrate(model, splits.certification.texts, splits.certification.labels)
        plain = _promises(model, cal, rules, check_texts, check_labels, confidence, None)
        cal.observe_traffic(traffic[0], progress=False)
        out["shift"] = cal.traffic_["shift"]
        aware = _promises(model, cal, rules, check_texts, check_labels, confidence, traffic)
    out["promises"] = plain + aware
    return out


def shipped_replicate(seed: int, rules: list[tuple[str, float]], confidence: float) -> dict[str, Any]:
    """The shipped bundle as README calibrates it (on its certification split), with another half of the test
    split as traffic each time."""
    model = cascade.load()
    cert, test = cascade.load_banking77("certification"), cascade.load_banking77("test")
    traffic_idx, check_idx = _halves(len(test), seed)
    check_texts = [test.texts[i] for i in check_idx]
    check_labels = check_feedback_labels(model, [test.labels[i] for i in check_idx])
    traffic = ([test.texts[i] for i in traffic_idx], check_feedback_labels(model, [test.labels[i] for i in traffic_idx]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = cascade.calibrate(model, cert.texts, cert.labels)
        plain = _promises(model, cal, rules, check_texts, check_labels, confidence, None)
        cal.observe_traffic(traffic[0], progress=False)
        shift = cal.traffic_["shift"]
        aware = _promises(model, cal, rules, check_texts, check_labels, confidence, traffic)
    return {"name": f"shipped-{seed}", "salt": "", "seed": seed, "n_labels": len(model.labels),
            "sizes": {"certification": len(cert)}, "test_texts": len(test), "traffic_texts": len(traffic_idx),
            "check_texts": len(check_idx), "shift": shift, "promises": plain + aware}


def _estimates(replicate: dict[str, Any]) -> list[tuple[float, float, float]]:
    """(estimate, realised on the check half, realised on the traffic half) at each distinct threshold a
    replicate chose with traffic, for its first kind of promise (accuracy or exact match)."""
    seen: dict[float, tuple[float, float, float]] = {}
    for p in replicate["promises"]:
        if p["traffic"] and p["estimate"] is not None and p["mode"] == "target_accuracy":
            seen[p["threshold"]] = (p["estimate"], p["realised"], p["realised_on_traffic"])
    return list(seen.values())


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [(f"Measured {time.strftime('%Y-%m-%d')} with `{command}` ({len(results)} replicates; promises at "
              "confidence 95%, certified on each replicate's certification split carved from the training file; half "
              "of each test file, chosen at random per replicate, is the unlabelled traffic, the other half checks "
              "every promise)."), ""]
    for data_name in sorted({r["dataset"] for r in results}):
        rs = [r for r in results if r["dataset"] == data_name]
        lines += [f"**{data_name}** ({len(rs)} replicates)", "",
                  ("| promise | without traffic: made | kept | realised: min / median | with traffic: made | kept | "
                   "realised: min / median | declined with traffic |"), "|---|---|---|---|---|---|---|---|"]
        keys = sorted({(p["mode"], p["target"]) for r in rs for p in r["promises"]})
        for mode, target in keys:
            cells = []
            for traffic in (False, True):
                rows = [p for r in rs for p in r["promises"] if (p["mode"], p["target"], p["traffic"]) ==
                        (mode, target, traffic)]
                made = [p for p in rows if p["made"]]
                real = [p["realised"] for p in made]
                cells += [f"{len(made)} of {len(rows)}", f"{sum(p['kept'] for p in made)} of {len(made)}" if made else "–",
                          f"{_pct(min(real))} / {_pct(float(np.median(real)))}" if real else "–"]
            label = ("accuracy" if mode == "target_accuracy" and data_name.startswith("BANKING77") else
                     "exact match" if mode == "target_accuracy" else "mean F1")
            declined = len([p for r in rs for p in r["promises"] if (p["mode"], p["target"], p["traffic"]) ==
                            (mode, target, True) and not p["made"]])
            lines.append(f"| {label} ≥ {target:.0%} | " + " | ".join(cells) + f" | {declined} |")
        for traffic in (False, True):
            made = [p for r in rs for p in r["promises"] if p["traffic"] == traffic and p["made"]]
            kept = sum(p["kept"] for p in made)
            every = [p for r in rs for p in r["promises"] if p["traffic"] == traffic]
            lines.append("")
            lines.append(f"{'With' if traffic else 'Without'} traffic: **{kept} of {len(made)} promises kept** "
                         f"({kept / max(len(made), 1):.1%}); {len(every) - len(made)} of {len(every)} asked "
                         "were declined.")
        lines += ["", "ATC estimate on the traffic half against the figure realised on the check half and on the "
                  "traffic half itself, at each distinct threshold chosen with traffic (points; the two halves differ by "
                  "about a point by chance alone, so the traffic-half columns are the estimate's own error):", "",
                  "| replicate | seed | traffic like the certifying texts? (KS p) | thresholds | check half: mean / "
                  "largest error | traffic half: mean / largest error |", "|---|---|---|---|---|---|"]
        for r in rs:
            rows = _estimates(r)
            if rows:
                on_check = [e - c for e, c, _ in rows]
                on_traffic = [e - t for e, _, t in rows]
                lines.append(f"| {r['name']} | {r['seed']} | {r['shift']['p_value']:.2g} | {len(rows)} | "
                             f"{100 * float(np.mean(on_check)):+.2f} / {100 * float(max(on_check, key=abs)):+.2f} | "
                             f"{100 * float(np.mean(on_traffic)):+.2f} / {100 * float(max(on_traffic, key=abs)):+.2f} |")
        every = [row for r in rs for row in _estimates(r)]
        if every:
            for column, i in (("check", 1), ("traffic", 2)):
                err = np.abs([row[0] - row[i] for row in every])
                lines.append(f"| all, on the {column} half | | | {len(err)} | mean absolute {100 * err.mean():.2f}, "
                             f"within 1 point: {np.mean(err <= 0.01):.0%} | |")
        lines.append("")
    build = [r for r in results if "build" in r]
    if build:
        def at(f: dict) -> str:
            return f"{_pct(f['cascade_accuracy'])} @ {f['fall_through_rate']:.1%}"

        lines += ["The build's threshold rule on the BANKING77 replicates (accuracy @ fall-through on the whole test "
                  "split):", "", ("| replicate | labels | selection texts | the build's rule | the McNemar test alone "
                                   "(no cap) | most accurate on selection | neural stage alone |"),
                  "|---|---|---|---|---|---|---|"]
        for r in build:
            b = r["build"]
            lines.append(f"| {r['name']} | {r['n_labels']} | {r['sizes']['selection']:,} | {at(b['chosen'])} | "
                         f"{at(b['mcnemar_alone'])} | {at(b['most_accurate'])} | {_pct(b['chosen']['neural_accuracy'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4, help="BANKING77 replicates with all 77 intents")
    parser.add_argument("--subsets", type=int, default=4, help="BANKING77 replicates on random subsets of the intents")
    parser.add_argument("--subset-size", type=int, default=40)
    parser.add_argument("--reuters-seeds", type=int, default=2, help="Reuters-21578 replicates (0: none)")
    parser.add_argument("--shipped-seeds", type=int, default=8,
                        help="the shipped bundle on its certification split, with this many traffic/check halves")
    parser.add_argument("--reuters-dir", type=Path, default=REUTERS)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("replay_promises.json"))
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one small BANKING77 replicate, no Reuters (the figures mean nothing)")
    args = parser.parse_args()

    full, test = cascade.load_banking77("train_full"), cascade.load_banking77("test")
    if args.quick:
        full, test = full.per_label(40), test.per_label(10)
        args.seeds, args.subsets, args.reuters_seeds, args.shipped_seeds = 1, 0, 0, 0
    labels = sorted(set(full.labels))
    rng = np.random.default_rng(0)
    single = [("target_accuracy", t) for t in TARGETS]
    plans = [("BANKING77", f"all-{s}", full, test, f"replay-{s}:", s, single, TrainConfig(), True)
             for s in range(args.seeds)]
    for s in range(args.subsets):
        keep = set(rng.choice(labels, size=args.subset_size, replace=False).tolist())
        plans.append(("BANKING77", f"subset-{s}", _subset(full, keep), _subset(test, keep), f"replay-subset-{s}:",
                      100 + s, single, TrainConfig(), True))
    if args.reuters_seeds and (args.reuters_dir / "train.csv").is_file():
        r_train = cascade.read_csv(args.reuters_dir / "train.csv", label_col="labels")
        r_test = cascade.read_csv(args.reuters_dir / "test.csv", label_col="labels")
        rules = [("target_accuracy", t) for t in REUTERS_EXACT] + [("target_f1", t) for t in REUTERS_F1]
        for s in range(args.reuters_seeds):
            plans.append(("Reuters-21578", f"reuters-{s}", r_train, r_test, f"replay-reuters-{s}:", 200 + s, rules,
                          TrainConfig(label_sep="|"), False))
    results = []
    for seed in range(args.shipped_seeds):
        started = time.perf_counter()
        results.append({"dataset": "BANKING77, the shipped bundle", **shipped_replicate(300 + seed, single,
                                                                                      args.confidence)})
        print(f"shipped-{seed}: {time.perf_counter() - started:.0f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="cascade-replay-") as work:
        for dataset, name, data, held_out, salt, seed, rules, config, build_rule in plans:
            started = time.perf_counter()
            result = replicate(name, data, held_out, salt, seed, Path(work), rules, args.confidence, config, build_rule)
            results.append({"dataset": dataset, **result})
            print(f"{name}: {time.perf_counter() - started:.0f}s", flush=True)
    command = "python benchmarks/replay_promises.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("seeds", args.seeds), ("subsets", args.subsets),
                                                      ("reuters_seeds", args.reuters_seeds),
                                                      ("shipped_seeds", args.shipped_seeds))
        if v != {"seeds": 4, "subsets": 4, "reuters_seeds": 2, "shipped_seeds": 8}[k])
    table = markdown(results, command)
    args.out.write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
