"""The answer cache on traffic where half the texts repeat an earlier one, side by side with the cache off,
in one run; and what normalising a text costs (the one preprocessing both stages share).

    python benchmarks/cache.py [--texts 20000] [--out benchmarks/cache_results]

Texts: BANKING77 test questions made distinct by an order number; every second text repeats one drawn
from those already sent. One text per call (serving) and 256 per call (batch jobs); rounds interleaved,
medians reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade
from cascade.text import normalize


def traffic(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    base = cascade.load_banking77("test").texts
    sent: list[str] = []
    for i in range(n):
        if i % 2 and sent:
            sent.append(rng.choice(sent))
        else:
            sent.append(f"{rng.choice(base)} (order {i})")
    return sent


def run(model: cascade.Cascade, texts: list[str], per_call: int) -> float:
    model.cache.clear()
    started = time.perf_counter()
    for i in range(0, len(texts), per_call):
        chunk = texts[i:i + per_call]
        model.classify(chunk if per_call > 1 else chunk[0], progress=False)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    texts = traffic(args.texts)
    on, off = cascade.load(), cascade.load(cache_size=0)
    assert on.classify(texts[:500]) == off.classify(texts[:500])
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for per_call in (1, 256):
            for name, model in (("on", on), ("off", off)):
                rates.setdefault(f"{name}-{per_call}", []).append(run(model, texts, per_call))
    hit_rate = on.cache.hit_rate
    started = time.perf_counter()
    for text in texts:
        normalize(text)
    normalize_us = 1e6 * (time.perf_counter() - started) / len(texts)
    result = {key: statistics.median(v) for key, v in rates.items()}
    result.update(hit_rate=hit_rate, normalize_us_per_text=normalize_us, texts=len(texts),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores", measured=time.strftime("%Y-%m-%d"),
                  command="python benchmarks/cache.py " + " ".join(sys.argv[1:]))
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(
            "| texts per call | cache off: texts/s | cache on: texts/s | ratio |\n|---|---|---|---|\n"
            + "".join(f"| {k} | {result[f'off-{k}']:,.0f} | {result[f'on-{k}']:,.0f} | "
                      f"{result[f'on-{k}'] / result[f'off-{k}']:.2f}x |\n" for k in (1, 256))
            + f"\n{len(texts):,} texts, half repeating an earlier one (hit rate {hit_rate:.1%}); normalising a text: "
              f"{normalize_us:.1f} µs; medians of {args.rounds} interleaved rounds; {result['machine']}; "
              f"{result['measured']}; `{result['command']}`.\n")


if __name__ == "__main__":
    main()
