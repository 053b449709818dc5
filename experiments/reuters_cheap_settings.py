"""Which regularisation suits the multi-label cheap stage? C against micro-F1 on Reuters selection texts.

    python experiments/reuters_cheap_settings.py [--data-dir ../shared/datasets/reuters21578] [--C 5 20 50 100]
    python experiments/reuters_cheap_settings.py --solvers    # liblinear's primal against its dual solver

With ``--solvers``: eight topics of falling frequency fitted at C=100, unweighted and with balanced topic
weights, by liblinear's dual and primal solvers, one core, timed, with the unconverged fits counted and the
largest difference between their probabilities on the selection texts; written to
``reuters_solvers.json``.

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
from cascade.policy.multilabel import assign, choose_cutoffs, label_matrix, tagging_figures, topics_of
from cascade.text import normalize
from cascade.training.cheap import CheapConfig, build_pipeline

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "reuters21578"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--C", type=float, nargs="+", default=[5.0, 20.0, 50.0, 100.0])
    parser.add_argument("--solvers", action="store_true", help="time liblinear's primal and dual solvers instead")
    args = parser.parse_args()
    parts = cascade.carve_splits(cascade.read_csv(args.data_dir / "train.csv", label_col="labels"), label_sep="|")
    topics = topics_of(parts.train.labels)
    y_train, y_sel = label_matrix(parts.train.labels, topics), label_matrix(parts.selection.labels, topics)
    features = build_pipeline(CheapConfig()).named_steps["features"]
    x_train = features.fit_transform([normalize(t) for t in parts.train.texts]).tocsr()
    x_train.sort_indices()
    x_sel = features.transform([normalize(t) for t in parts.selection.texts])
    if args.solvers:
        compare_solvers(x_train, y_train, x_sel)
        return
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


def compare_solvers(x_train, y_train, x_sel) -> None:
    import platform
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning

    order = np.argsort(-y_train.sum(axis=0), kind="stable")
    picked = [int(order[i]) for i in (0, 2, 5, 10, 20, 40, 60, 80) if i < len(order)]
    rows = []
    for weight in (None, "balanced"):
        probs = {}
        for dual in (True, False):
            started, unconverged, out = time.perf_counter(), 0, []
            for k in picked:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    model = LogisticRegression(C=100.0, solver="liblinear", dual=dual, max_iter=1000,
                                               class_weight=weight).fit(x_train, y_train[:, k])
                unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
                out.append(model.predict_proba(x_sel)[:, 1])
            probs[dual] = np.stack(out)
            rows.append({"class_weight": weight, "solver": "dual" if dual else "primal",
                         "seconds": round(time.perf_counter() - started, 2), "unconverged": unconverged,
                         "topics": len(picked), "positives": [int(y_train[:, k].sum()) for k in picked]})
            print(rows[-1], flush=True)
        rows[-1]["max_probability_difference"] = float(np.abs(probs[True] - probs[False]).max())
    out = Path(__file__).resolve().parent / "reuters_solvers.json"
    out.write_text(json.dumps({"command": "python experiments/reuters_cheap_settings.py --solvers",
                               "machine": platform.machine(), "features": int(x_train.shape[1]),
                               "texts": int(x_train.shape[0]), "rows": rows}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
