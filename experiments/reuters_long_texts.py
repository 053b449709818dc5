"""How should the transformer read long documents? Head truncation against windows, on Reuters selection texts.

    python experiments/reuters_long_texts.py [--data-dir ../shared/datasets/reuters21578] [--train 3000]
    python experiments/reuters_long_texts.py --bundle FINE_TUNED_TAGGER   # a `cascade finetune --multi-label` bundle

For each way of reading a text (the first 128, 256 or 512 tokens; or up to 4 or 8 windows of 128 tokens
whose embeddings are averaged), the shipped frozen INT8 encoder embeds ``--train`` training texts and the
selection texts carved by the package's default rule; a per-topic logistic head is fitted on the
training embeddings and scored on the selection texts (cut-off 0.5 for every topic, at least one topic;
the same for every setting, so only the reading differs). ms per text is the median of 3 timings of
embedding 200 selection texts in one call (2 threads). Each row's micro-F1 gain over the first comes with
its paired bootstrap standard deviation (2,000 resamples of the selection texts). Nothing here touches the
test split.

With ``--bundle`` (a fine-tuned tagger, carved from the same train.csv) the bundle's own INT8 classifier
reads the selection texts each way (logits of windows averaged, weighted by tokens) and is scored the same
way; no head is fitted. Its selection texts chose its epoch and quantization, so its figures are a
comparison of readings, not an estimate of test figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import cascade
from cascade.bundle import default_bundle_path
from cascade.policy.multilabel import assign, label_matrix, tagging_figures, topics_of
from cascade.stages.neural import NeuralStage
from cascade.training.head import fit_multi_label_head

SETTINGS = [("head 128", 128, 1), ("head 256", 256, 1), ("head 512", 512, 1), ("4 windows of 128", 128, 4),
            ("8 windows of 128", 128, 8)]
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "reuters21578"


def paired_gain(y: np.ndarray, base: np.ndarray, other: np.ndarray, rounds: int = 2000) -> tuple[float, float]:
    """micro-F1 of ``other`` minus ``base`` on the same texts, and its paired bootstrap standard deviation."""
    y, base, other = y.astype(bool), base.astype(bool), other.astype(bool)

    def micro(rows: np.ndarray, pred: np.ndarray) -> float:
        tp = (y[rows] & pred[rows]).sum()
        return float(2 * tp / max(1, y[rows].sum() + pred[rows].sum()))

    rng = np.random.default_rng(0)
    every = np.arange(len(y))
    draws = [micro(r, other) - micro(r, base) for r in (rng.integers(0, len(y), len(y)) for _ in range(rounds))]
    return micro(every, other) - micro(every, base), float(np.std(draws))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=3000, help="training texts the heads are fitted on")
    parser.add_argument("--bundle", type=Path, default=None, help="a fine-tuned tagger: read with its classifier")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: reuters_long_texts.json (reuters_long_texts_finetuned.json with --bundle)")
    args = parser.parse_args()
    name = "reuters_long_texts_finetuned.json" if args.bundle else "reuters_long_texts.json"
    args.out = args.out or Path(__file__).with_name(name)

    data = cascade.read_csv(args.data_dir / "train.csv", label_col="labels")
    parts = cascade.carve_splits(data, label_sep="|")
    topics = topics_of(data.labels)
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.choice(len(parts.train), size=min(args.train, len(parts.train)), replace=False))
    train_texts = [parts.train.texts[i] for i in train_idx]
    y_train = label_matrix([parts.train.labels[i] for i in train_idx], topics)
    keep = (y_train.sum(axis=0) > 0) & (y_train.sum(axis=0) < len(y_train))
    y_train = y_train[:, keep]
    sel = parts.selection
    y_sel = label_matrix(sel.labels, topics)[:, keep]
    bundle = cascade.read_bundle(args.bundle or default_bundle_path())
    if args.bundle is not None:
        if bundle.manifest.get("task") != "multi-label" or "head" in bundle.manifest["neural"]:
            raise SystemExit(f"{args.bundle} is not a fine-tuned tagger (cascade finetune --multi-label)")
        keep = np.ones(len(bundle.labels), dtype=bool)
        y_sel = label_matrix(sel.labels, bundle.labels)  # the build refused selection topics it never trained on
    rows: list[dict[str, object]] = []
    first = np.zeros(0)
    for name, max_length, windows in SETTINGS:
        stage = NeuralStage(bundle.read_bytes("neural.onnx"), bundle.read_bytes("tokenizer.json"), max_length,
                            windows=windows, threads=2, multi_label=args.bundle is not None)
        started = time.perf_counter()
        if args.bundle is not None:
            probs = stage.predict_proba(sel.texts)
        else:
            head = fit_multi_label_head(stage.embed(train_texts), y_train)
            probs = 1.0 / (1.0 + np.exp(-head.logits(stage.embed(sel.texts))))
        build_s = time.perf_counter() - started
        chosen = assign(probs, np.full(probs.shape[1], 0.5), at_least_one=True)
        figures = tagging_figures(y_sel, chosen)
        first = first if rows else chosen
        gain, sd = paired_gain(y_sel, first, chosen)
        sample = sel.texts[:: max(1, len(sel) // 200)][:200]
        times = []
        for _ in range(3):
            t = time.perf_counter()
            stage.predict_proba(sample) if args.bundle is not None else stage.embed(sample)
            times.append(time.perf_counter() - t)
        ms = 1e3 * float(np.median(times)) / len(sample)
        rows.append({"setting": name, "max_length": max_length, "windows": windows, **figures, "ms_per_text": ms,
                     "micro_f1_gain_over_first": gain, "gain_bootstrap_sd": sd,
                     "seconds_embedding_and_fitting": build_s})
        print(f"{name}: micro-F1 {figures['micro_f1']:.4f}, macro-F1 {figures['macro_f1']:.4f}, exact "
              f"{figures['exact_match']:.4f}, {ms:.2f} ms/text", flush=True)
    args.out.write_text(json.dumps({"bundle": bundle.digest if args.bundle else None,
                                    "train_texts": 0 if args.bundle else len(train_texts), "selection_texts": len(sel),
                                    "topics": int(keep.sum()), "rows": rows}, indent=1))
    print(f"\n{0 if args.bundle else len(train_texts)} training texts, {len(sel)} selection texts, {int(keep.sum())} topics\n")
    print("| reading | micro-F1 | macro-F1 | exact match | ms per text | micro-F1 gain over the first (bootstrap sd) |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['micro_f1']:.4f} | {r['macro_f1']:.4f} | {r['exact_match']:.4f} | "
              f"{r['ms_per_text']:.2f} | {100 * r['micro_f1_gain_over_first']:+.2f} ({100 * r['gain_bootstrap_sd']:.2f}) |")


if __name__ == "__main__":
    main()
