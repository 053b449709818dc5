"""Is bfloat16 autocast worth it for fine-tuning the large recipe's encoder on this CPU? Time training steps
of all-mpnet-base-v2 with a fresh 77-way head on BANKING77 texts, float32 against bfloat16 autocast.

    python experiments/bf16_step.py --model <all-mpnet-base-v2 folder> [--steps 4] [--out STEM]

Each step is forward, backward and an AdamW update on 32 training texts (the same batches for both); the first
step of each precision includes one-time setup. Needs the [train] extra. Writes STEM.json and STEM.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    import transformers

    from cascade import load_banking77
    from cascade.stages.tokenization import TextEncoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bf16_step"))
    args = parser.parse_args()
    data = load_banking77("train")
    encoder = TextEncoder(args.model / "tokenizer.json", 128)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(args.model), num_labels=77,
                                                                            attn_implementation="eager")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    rows = encoder.token_ids(data.texts[: 32 * args.steps])
    generator = torch.Generator().manual_seed(0)
    seconds: dict[str, list[float]] = {}
    for precision in ("float32", "bfloat16"):
        seconds[precision] = []
        for step in range(args.steps):
            ids, mask = encoder.pad(rows[step * 32:(step + 1) * 32])
            y = torch.randint(0, 77, (len(ids),), generator=generator)
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), labels=y)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds[precision].append(time.perf_counter() - started)
    command = ("python experiments/bf16_step.py " + " ".join(sys.argv[1:])).strip().replace(str(args.model), "MODEL")
    today = datetime.date.today().isoformat()
    median = {k: float(np.median(v[1:])) for k, v in seconds.items()}
    result = {"date": today, "command": command, "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads(), "seconds_per_step": seconds, "median_after_first": median}
    lines = ["| precision | seconds per step of 32 texts (each step) | median after the first |", "|---|---|---|"]
    lines += [f"| {k} | {', '.join(f'{x:.2f}' for x in v)} | {median[k]:.2f} |" for k, v in seconds.items()]
    lines += ["", f"bfloat16 autocast: {median['float32'] / median['bfloat16']:.1f}x faster a step. Measured {today} "
                  f"with `{command}`."]
    print("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
