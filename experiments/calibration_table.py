"""Promises against reality: calibrate the shipped bundle on the BANKING77 certification split, choose a
threshold for each target accuracy, then measure on the test split (which chose nothing).

    python experiments/calibration_table.py [--targets 0.90 0.92 0.94] [--confidence 0.95] [--plot PNG] [--out STEM]

Writes STEM.json and STEM.md (default: experiments/calibration_table), dated, with the command.

ms per text is the wall time of ``classify`` on all 3,080 test texts in one call, divided by 3,080.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import cascade
from cascade.calibration import CalibrationWarning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.90, 0.91, 0.92, 0.93, 0.94])
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--plot", type=Path, default=None, help="save the curve with the first feasible choice")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("calibration_table"),
                        help="STEM of the result files STEM.json and STEM.md")
    args = parser.parse_args()
    lines: list[str] = []
    rows: list[dict] = []

    def say(text: str) -> None:
        print(text)
        lines.append(text)


    model = cascade.load(cache_size=0)  # every pass computes its answers (the answer cache would time lookups)
    val, test = cascade.load_banking77("certification"), cascade.load_banking77("test")
    cal = cascade.calibrate(model, val.texts, val.labels)
    report = cal.report()
    say(f"calibrated on {len(val)} certification texts ({cal.n_fit_} fit, {cal.n_certify_} certify): measure "
          f"{report['measure']} (AURC {report['aurc']}), temperatures cheap {report['cheap_temperature']:.3f} / "
          f"neural {report['neural_temperature']:.3f}; ECE cheap {report['ece']['cheap']['before']:.3f} -> "
          f"{report['ece']['cheap']['after']:.3f}, neural {report['ece']['neural']['before']:.3f} -> "
          f"{report['ece']['neural']['after']:.3f} (on the certify part)\n")
    say("| target accuracy | feasible | threshold | fall-through (certify part → test) | promised accuracy "
          "(lower bound) | realised test accuracy | realised ms per text |\n|---|---|---|---|---|---|---|")
    y = np.array([model.labels.index(label) for label in test.labels])
    plotted = False
    reasons: list[str] = []
    for target in args.targets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            choice = cal.choose(target_accuracy=target, confidence=args.confidence)
        cal.apply(choice)
        model.classify(test.texts[:64])  # warm-up
        start = time.perf_counter()
        preds = model.classify(test.texts)
        ms = 1e3 * (time.perf_counter() - start) / len(test)
        acc = float(np.mean([model.labels.index(p.label) == t for p, t in zip(preds, y)]))
        fall = float(np.mean([p.stage == "neural" for p in preds]))
        promise = f"≥ {target:.0%}" if choice.certified else "none: cannot be certified (reason below)"
        if not choice.certified:
            reasons.append(f"{target:.0%}: {choice.reason}")
        held = "" if not choice.feasible else (" ✓" if acc >= target else " ✗")
        rows.append({"target": target, "feasible": choice.feasible, "certified": choice.certified,
                     "threshold": choice.threshold, "expected_fall_through": choice.expected["fall_through_rate"],
                     "test_fall_through": fall, "test_accuracy": acc, "ms_per_text": ms, "reason": choice.reason})
        say(f"| {target:.0%} | {'yes' if choice.feasible else 'no'} | {choice.threshold:.3f} | "
              f"{choice.expected['fall_through_rate']:.1%} → {fall:.1%} | {promise} | {acc:.2%}{held} | {ms:.3f} |")
        if args.plot and choice.feasible and not plotted:
            cal.plot(args.plot, choice)
            plotted = True
    for reason in reasons:
        say("\n" + reason)
    say(f"\nconfidence {args.confidence:.0%}; {report['machine']}; neural threads {report['neural_threads']}; "
          f"per-stage costs at calibration: cheap {report['costs_ms_per_text']['cheap']:.3f} ms, neural "
          f"{report['costs_ms_per_text']['neural']:.3f} ms per text")
    command = "python experiments/calibration_table.py " + " ".join(sys.argv[1:])
    today = datetime.date.today().isoformat()
    lines += ["", f"Measured {today} with `{command.strip()}`."]
    args.out.with_suffix(".json").write_text(json.dumps({"date": today, "command": command.strip(), "report": report,
                                                         "rows": rows}, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
