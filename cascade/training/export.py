"""Turn a fine-tuned checkpoint into the neural stage: ONNX export, graph fusion, INT8 quantization.

1. :func:`export_onnx` traces the torch model with the TorchScript exporter and eager attention. (The
   default SDPA attention and the torch.export-based exporter give graphs in which onnxruntime's
   transformer optimizer fuses no Attention node.) The export is checked against torch on padded batches
   of several shapes.
2. :func:`optimize` runs ``onnxruntime.transformers.optimizer`` and returns how many Attention,
   LayerNorm and GELU fusions happened.
3. :func:`quantize` applies dynamic INT8 quantization. :data:`QUANT_MODES` is the documented fallback
   order: the first mode whose validation accuracy stays within ``tolerance`` of fp32 is kept, and if
   none does, the optimized fp32 model is shipped and the build says so.
4. The kept INT8 model's activation scales are then fixed (:mod:`cascade.training.activation_scales`),
   so a text's answer never depends on its batch-mates; the percentile is chosen on validation, and the
   dynamic model is kept (run one text at a time) if no fixed-scale model stays within ``tolerance``.

On x86 CPUs with AVX2 but no VNNI (the machine this was built for), onnxruntime multiplies uint8
activations by int8 weights with an instruction whose 16-bit intermediate sums can saturate; 7-bit
weights (``reduce_range``) or uint8 weights avoid that.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..stages.tokenization import TextEncoder
from .activation_scales import PERCENTILES, activation_ranges, freeze_activation_scales

log = logging.getLogger(__name__)

FUSED_OPS = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "LayerNormalization",
             "BiasGelu", "FastGelu", "Gelu")


@dataclass(frozen=True)
class QuantMode:
    """One way to quantize, in the order they are tried."""

    name: str
    weight_type: str  # "int8" or "uint8"
    per_channel: bool
    reduce_range: bool
    op_types: tuple[str, ...] | None = None  # None: every op type onnxruntime can quantize


QUANT_MODES: tuple[QuantMode, ...] = (
    QuantMode("int8-per-channel-7bit", "int8", per_channel=True, reduce_range=True),
    QuantMode("uint8-per-channel", "uint8", per_channel=True, reduce_range=False),
    QuantMode("int8-per-channel-7bit-matmul-only", "int8", per_channel=True, reduce_range=True,
              op_types=("MatMul", "Attention")),
)
FP32_FALLBACK = "fp32-optimized"


@dataclass
class NeuralBuild:
    """What :func:`build_neural` produced and measured."""

    model_path: Path
    fp32_path: Path
    mode: str
    fusions: dict[str, int]
    val_accuracy_fp32: float
    val_accuracy: float
    tried: list[dict[str, Any]] = field(default_factory=list)
    activation_scales: str = "dynamic"


def export_onnx(checkpoint_dir: str | Path, out_path: str | Path, opset: int = 17) -> Path:
    """Export a ``*ForSequenceClassification`` checkpoint to ONNX (inputs ``input_ids``,
    ``attention_mask``; output ``logits``; batch and sequence axes dynamic)."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint_dir), attn_implementation="eager"
    ).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    out_path = Path(out_path)
    # The tracer warns that the attention-mask code is traced for one shape and that the legacy exporter
    # is deprecated; check_export proves the graph right on other shapes, so those warnings are noise.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        torch.onnx.export(
            model, (ids, mask), str(out_path),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return out_path


def check_export(checkpoint_dir: str | Path, onnx_path: str | Path, texts: list[str], max_length: int,
                 atol: float = 1e-3) -> float:
    """Max |logit difference| between torch and the ONNX export on ``texts``, run in padded batches of
    mixed lengths; raises if it exceeds ``atol``."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
    import onnxruntime as ort

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint_dir), attn_implementation="eager"
    ).eval()
    encoder = TextEncoder(Path(checkpoint_dir) / "tokenizer.json", max_length)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in (1, 3, 16):  # unsorted batches: every row but the longest is padded
        for start in range(0, len(texts), size):
            ids, mask = encoder.encode(texts[start : start + size])
            with torch.inference_mode():
                want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
            got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            worst = max(worst, float(np.abs(got - want).max()))
    if worst > atol:
        raise RuntimeError(f"ONNX export differs from torch by {worst:.2e} (> {atol:.0e}) on padded batches")
    return worst


def optimize(in_path: str | Path, out_path: str | Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse attention, LayerNorm and GELU subgraphs; return the fused-op counts."""
    # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(in_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    stats = model.get_fused_operator_statistics()
    fusions = {op: int(stats.get(op, 0)) for op in FUSED_OPS}
    model.save_model_to_file(str(out_path))
    log.info("transformer optimizer fusions: %s", fusions)
    if fusions["Attention"] == 0:
        log.warning("no Attention node was fused: the export's attention pattern was not recognised")
    return fusions


def quantize(in_path: str | Path, out_path: str | Path, mode: QuantMode) -> Path:
    """Dynamic (weights-only calibration-free) INT8 quantization of an optimized graph."""
    # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs "Please consider to run pre-processing before quantization" on the root logger for
    # every graph; that pre-processing is shape inference and folding, which the optimizer above has done
    drop = _DropMessage("consider to run pre-processing before quantization")
    logging.getLogger().addFilter(drop)
    try:
        quantize_dynamic(
            str(in_path), str(out_path),
            weight_type=QuantType.QInt8 if mode.weight_type == "int8" else QuantType.QUInt8,
            per_channel=mode.per_channel,
            reduce_range=mode.reduce_range,
            op_types_to_quantize=list(mode.op_types) if mode.op_types else None,
            # The fused contrib ops defeat ONNX shape inference; tensors of unknown type are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(drop)
    return Path(out_path)


class _DropMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def build_neural(
    checkpoint_dir: str | Path,
    work_dir: str | Path,
    accuracy_of: Callable[[Path], float],
    *,
    check_texts: list[str],
    max_length: int,
    tolerance: float = 0.005,
    calibration_texts: list[str] | None = None,
    metric: str = "accuracy",
) -> NeuralBuild:
    """Export, check, optimize and quantize; ``accuracy_of(model_path)`` scores a model on validation
    (higher is better: accuracy, or a tagger's micro-F1, named by ``metric`` in logs and records);
    ``calibration_texts`` (training texts; default ``check_texts``) fix the activation scales."""
    transformers = require("transformers", "train")
    config = transformers.AutoConfig.from_pretrained(str(checkpoint_dir))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    raw = export_onnx(checkpoint_dir, work_dir / "model-fp32.onnx")
    diff = check_export(checkpoint_dir, raw, check_texts, max_length)
    log.info("ONNX export matches torch: max |logit diff| %.2e", diff)
    fp32 = work_dir / "model-fp32-optimized.onnx"
    fusions = optimize(raw, fp32, config.num_attention_heads, config.hidden_size)
    fp32_acc = accuracy_of(fp32)
    log.info("fp32 optimized validation %s: %.4f", metric, fp32_acc)
    tried: list[dict[str, Any]] = []
    for mode in QUANT_MODES:
        path = quantize(fp32, work_dir / f"model-{mode.name}.onnx", mode)
        acc = accuracy_of(path)
        ok = acc >= fp32_acc - tolerance
        tried.append({"mode": mode.name, f"val_{metric}": acc, "bytes": path.stat().st_size, "kept": ok})
        log.info("quantization %s: validation %s %.4f (%s)", mode.name, metric, acc,
                 "kept" if ok else f"more than {tolerance:.1%} below fp32")
        if ok:
            build = NeuralBuild(path, fp32, mode.name, fusions, fp32_acc, acc, tried)
            return fix_scales(build, Path(checkpoint_dir) / "tokenizer.json", max_length,
                              calibration_texts or check_texts, accuracy_of, fp32_acc - tolerance, metric=metric)
    log.warning("no INT8 mode kept accuracy within %.1f points of fp32; shipping the fp32 model",
                100 * tolerance)
    return NeuralBuild(fp32, fp32, FP32_FALLBACK, fusions, fp32_acc, fp32_acc, tried)


def fix_scales(build: NeuralBuild, tokenizer: Path, max_length: int, texts: list[str],
                accuracy_of: Callable[[Path], float], floor: float, max_texts: int = 2000,
                metric: str = "accuracy") -> NeuralBuild:
    """Replace the dynamic activation scales by fixed ones (the most accurate percentile on validation),
    if that model's validation accuracy stays at or above ``floor``."""
    step = max(1, len(texts) // max_texts)
    ranges = activation_ranges(build.model_path, tokenizer, max_length, texts[::step][:max_texts])
    results: list[tuple[float, int, Path, float]] = []
    for percentile in PERCENTILES:
        path = freeze_activation_scales(build.model_path, build.model_path.with_name(
            f"{build.model_path.stem}-static-p{percentile}.onnx"), ranges, percentile)
        acc = accuracy_of(path)
        build.tried.append({"mode": f"{build.mode}+static-p{percentile}", f"val_{metric}": acc,
                            "bytes": path.stat().st_size, "kept": False})
        log.info("fixed activation scales at the %s percentile: validation %s %.4f", percentile, metric, acc)
        results.append((acc, -len(results), path, percentile))
    acc, _, path, percentile = max(results)  # the most accurate; ties to the widest range
    if acc < floor:
        log.warning("no fixed-scale model stayed within tolerance (best %.4f); keeping dynamic scales, "
                    "run one text at a time", acc)
        return build
    for entry in build.tried:
        entry["kept"] = entry["mode"] == f"{build.mode}+static-p{percentile}"
    return NeuralBuild(path, build.fp32_path, build.mode, build.fusions, build.val_accuracy_fp32, acc, build.tried,
                       activation_scales=f"static-p{percentile}")
