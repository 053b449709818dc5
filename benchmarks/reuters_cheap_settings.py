"""Which regularisation suits the multi-label cheap stage? C against micro-F1 on Reuters selection texts.

    python benchmarks/reuters_cheap_settings.py [--data-dir ../shared/datasets/reuters21578] [--C 5 20 50 100]

The featurizer is the cheap stage's default (word 1-2-grams + char_wb 1-4-grams, min_df 2, sublinear
TF), fitted once on the training part of the package's default carve; one-vs-rest logistic regression
(liblinear) is fitted for each C and scored on the selection texts with cut-offs chosen there (the same
rule the build uses, so every C gets the same optimism). The test split is not read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

import cascade
from cascade.multilabel import (
    assign,
    choose_cutoffs,
    label_matrix,
    tagging_figures,
    topics_of,
)
from cascade.text import normalize
from cascade.training.cheap import CheapConfig, build_pipeline

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "reuters21578"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--C", type=float, nargs="+", default=[5.0, 20.0, 50.0, 100.0])
    args = parser.parse_args()
    parts = cascade.carve_splits(cascade.read_csv(args.data_dir / "train.csv", label_col="labels"), label_sep="|")
    topics = topics_of(parts.train.labels)
    y_train, y_sel = label_matrix(parts.train.labels, topics), label_matrix(parts.selection.labels, topics)
    features = build_pipeline(CheapConfig()).named_steps["features"]
    x_train = features.fit_transform([normalize(t) for t in parts.train.texts]).tocsr()
    x_train.sort_indices()
    x_sel = features.transform([normalize(t) for t in parts.selection.texts])
    rows = []
    for c in args.C:
        started = time.perf_counter()
        clf = OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear"), n_jobs=2).fit(x_train, y_train)
        seconds = time.perf_counter() - started
        probs = clf.predict_proba(x_sel)
        cutoffs, _ = choose_cutoffs(probs, y_sel)
        figures = tagging_figures(y_sel, assign(probs, cutoffs, at_least_one=True))
        rows.append({"C": c, "fit_seconds": seconds, **figures})
        print(f"C={c:g}: micro-F1 {figures['micro_f1']:.4f}, macro-F1 {figures['macro_f1']:.4f}, exact "
              f"{figures['exact_match']:.4f}, fitted in {seconds:.0f}s", flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
