"""How the labelled-feedback monitor behaves: its false-alarm rate when the promise holds exactly, and how soon
it catches a drop, over simulated streams (the test of `cascade monitor` and `POST /v1/feedback`).

    python benchmarks/monitor_simulation.py [--streams 4000] [--texts 5000] [--out benchmarks/monitor_simulation]

Each stream is a sequence of right/wrong outcomes drawn at a true accuracy; the monitor tests "accuracy >=
promised" at alpha 0.05 after every outcome (:func:`cascade.calibration.sequential.log_capital_paths`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cascade.calibration.sequential import log_capital_paths

CASES = ((0.92, 0.92), (0.92, 0.93), (0.92, 0.91), (0.92, 0.89), (0.92, 0.87), (0.95, 0.92), (0.85, 0.80))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4000)
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for promised, true in CASES:
        x = (rng.random((args.streams, args.texts)) < true).astype(float)
        hit = log_capital_paths(x, promised) >= np.log(1 / args.alpha)
        fired = hit.any(axis=1)
        first = hit.argmax(axis=1)[fired] + 1
        rows.append({"promised": promised, "true": true, "alarm_rate": float(fired.mean()),
                     "median_texts_to_alarm": float(np.median(first)) if fired.any() else None,
                     "p90_texts_to_alarm": float(np.percentile(first, 90)) if fired.any() else None})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| promised | true accuracy | streams alarmed | labelled texts to the alarm: median | 90th percentile |",
             "|---|---|---|---|---|"]
    for r in rows:
        med = "–" if r["median_texts_to_alarm"] is None else f"{r['median_texts_to_alarm']:,.0f}"
        p90 = "–" if r["p90_texts_to_alarm"] is None else f"{r['p90_texts_to_alarm']:,.0f}"
        lines.append(f"| {r['promised']:.0%} | {r['true']:.0%} | {r['alarm_rate']:.1%} | {med} | {p90} |")
    lines += ["", f"{args.streams:,} simulated streams of {args.texts:,} labelled texts each, alpha {args.alpha}; "
              f"{time.strftime('%Y-%m-%d')}; `python benchmarks/monitor_simulation.py --out benchmarks/monitor_simulation`."]
    print("\n".join(lines))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "streams": args.streams, "texts": args.texts,
                                                             "alpha": args.alpha}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
