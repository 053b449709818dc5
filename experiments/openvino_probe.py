"""Issue 27's first question: how does OpenVINO run the shipped encoder against onnxruntime, in batches and
one text at a time, and do fixed sequence-length buckets make one-text calls cheaper?

    python experiments/openvino_probe.py --fp32 ENCODER_FP32_ONNX [--bundle artifacts] [--rounds 3] [--out STEM]

``--fp32``: the plain fp32 export of the shipped encoder (``python -m cascade.training.encoder --out DIR``
leaves ``DIR/encoder-fp32.onnx``). OpenVINO cannot read the bundle's INT8 model itself (onnxruntime's
QAttention and dynamic-range QuantizeLinear), so its INT8 model is made by NNCF post-training quantization of
the fp32 export, calibrated on 300 BANKING77 training texts. Every system runs through the shipped bundle's
tokenizer, batching, mean pooling and head (only the encoder call differs) on the BANKING77 test split:
accuracy, batch throughput (batches of 32, length-sorted, 3 interleaved rounds) and one-text p50 over 300
texts. "buckets" pads one text to the next of 16/32/64/128 tokens and runs a model compiled for that
static shape. Needs ``pip install openvino nncf``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # its timing helpers
from timing import interleaved, per_call_latencies

import cascade
from cascade.stages.neural import mean_pool

BUCKETS = (16, 32, 64, 128)


def _ov_runner(compiled: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    request = compiled.create_infer_request()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = request.infer({"input_ids": ids, "attention_mask": mask})
        return mean_pool(np.asarray(next(iter(out.values()))), mask)

    return run


def _bucketed(core: Any, model: Any, threads: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A runner that pads a batch to the next bucket length and uses a model compiled for that shape."""
    compiled = {}
    for length in BUCKETS:
        shaped = model.clone()
        shaped.reshape({"input_ids": [1, length], "attention_mask": [1, length]})
        compiled[length] = _ov_runner(core.compile_model(shaped, "CPU", {"INFERENCE_NUM_THREADS": threads}))

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if len(ids) != 1:
            raise ValueError("the bucketed runner takes one text a call")
        length = next(b for b in BUCKETS if b >= ids.shape[1])
        pad = length - ids.shape[1]
        return compiled[length](np.pad(ids, ((0, 0), (0, pad))), np.pad(mask, ((0, 0), (0, pad))))

    return run


def main() -> None:
    import nncf
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("openvino_probe"))
    parser.add_argument("--quick", action="store_true", help="300 test texts, one round (a smoke run)")
    args = parser.parse_args()
    test = cascade.load_banking77("test")
    if args.quick:
        test, args.rounds = test.head(300), 1
    train = cascade.load_banking77("train")
    model = cascade.load(args.bundle, threads=args.threads, cache_size=0)
    stage = model.neural
    y = np.array([model.labels.index(label) for label in test.labels])
    core = ov.Core()
    fp32 = core.read_model(str(args.fp32))
    calibration = [stage.encoder.pad([row]) for row in stage.encoder.token_ids(train.texts[::26][:300])]
    started = time.perf_counter()
    int8 = nncf.quantize(fp32, nncf.Dataset(calibration, lambda b: {"input_ids": b[0], "attention_mask": b[1]}),
                         model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    quantize_s = time.perf_counter() - started
    config = {"INFERENCE_NUM_THREADS": args.threads}
    runners = {"onnxruntime int8 (shipped)": stage._raw,
               "openvino fp32": _ov_runner(core.compile_model(fp32, "CPU", config)),
               "openvino int8 (nncf)": _ov_runner(core.compile_model(int8, "CPU", config)),
               "openvino int8 (nncf), buckets": _bucketed(core, int8, args.threads)}
    ort_raw = stage._raw

    def embed_with(name: str, texts: list[str]) -> np.ndarray:
        stage._raw = runners[name]
        try:
            return stage.embed(texts)
        finally:
            stage._raw = ort_raw

    batched = [name for name in runners if not name.endswith("buckets")]
    accuracy, embeddings = {}, {}
    for name in batched:
        embeddings[name] = embed_with(name, test.texts)
        accuracy[name] = float((stage.head.logits(embeddings[name]).argmax(1) == y).mean())
    lat_texts = test.texts[::10][:300]
    one = {name: [] for name in runners}
    for name in runners:  # one text a call; the same answer as in a batch?
        stage.batch_size, stage._raw = 1, runners[name]
        try:
            alone = np.vstack([stage.embed([t]) for t in lat_texts[:100]])
        finally:
            stage.batch_size, stage._raw = 32, ort_raw
        ref = embeddings[name if name in embeddings else "openvino int8 (nncf)"][::10][:100]
        one[name] = float(np.abs(alone - ref).max())

    def throughput(name: str) -> Callable[[], float]:
        def measure() -> float:
            started = time.perf_counter()
            embed_with(name, test.texts)
            return len(test.texts) / (time.perf_counter() - started)
        return measure

    def latency(name: str) -> Callable[[], float]:
        def measure() -> float:
            stage.batch_size, stage._raw = 1, runners[name]
            try:
                return float(np.median(per_call_latencies(lambda t: stage.embed([t]), lat_texts)) * 1e3)
            finally:
                stage.batch_size, stage._raw = 32, ort_raw
        return measure

    speed = interleaved({**{f"{n}|tput": throughput(n) for n in batched}, **{f"{n}|p50": latency(n) for n in runners}},
                        rounds=args.rounds)
    ref = "onnxruntime int8 (shipped)"
    rows = ["| system | test accuracy | texts/s (batches of 32) | × onnxruntime | one text p50 ms | × onnxruntime "
            "p50 | max abs diff, one text a call vs in a batch |", "|---|---|---|---|---|---|---|"]
    for name in runners:
        tput = float(np.median(speed[f"{name}|tput"])) if name in batched else None
        p50 = float(np.median(speed[f"{name}|p50"]))
        rows.append(f"| {name} | {accuracy.get(name, accuracy['openvino int8 (nncf)']):.2%} | "
                    + (f"{tput:,.0f} | {tput / float(np.median(speed[ref + '|tput'])):.2f}" if tput else "– | –")
                    + f" | {p50:.3f} | {float(np.median(speed[ref + '|p50'])) / p50:.2f} | {one[name]:.1e} |")
    command = ("python experiments/openvino_probe.py " + " ".join(sys.argv[1:])).strip().replace(str(args.fp32),
                                                                                               "ENCODER_FP32")
    today = datetime.date.today().isoformat()
    rows += ["", f"NNCF quantization took {quantize_s:.0f} s. openvino {ov.__version__}, nncf {nncf.__version__}; "
                 f"{platform.processor() or platform.machine()}, {args.threads} threads; {args.rounds} interleaved "
                 f"rounds. Measured {today} with `{command}`."]
    print("\n".join(rows))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"date": today, "command": command, "accuracy": accuracy, "one_vs_batch_max_diff": one,
         "rounds": {k: [float(x) for x in v] for k, v in speed.items()}, "quantize_seconds": quantize_s},
        indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
