"""Fixed activation scales for a dynamically quantized model: the same text gets the same answer.

Dynamic INT8 quantization (``DynamicQuantizeLinear``) picks each activation's scale from the whole
batch, so a text's score moved with its batch-mates (29 of 3,080 BANKING77 test labels changed between
batched and one-at-a-time runs of the shipped model). :func:`freeze_activation_scales` replaces every
``DynamicQuantizeLinear`` node by a ``QuantizeLinear`` with a constant scale and zero point, measured on
calibration texts: the weights stay exactly as they were, and each text's result depends on that text
alone. The range of each activation is a percentile of its per-text ranges; the percentile is chosen on
validation by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..stages.neural import default_threads
from ..stages.tokenization import TextEncoder

log = logging.getLogger(__name__)

PERCENTILES = (99.99, 99.9, 99.5)  # tried in this order; the most accurate on validation is kept


def activation_ranges(model_path: Path, tokenizer: Path, max_length: int, texts: Sequence[str],
                      threads: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per ``DynamicQuantizeLinear`` node: the (min, max) of its input on each text, run one text at a
    time (no padding, so only real tokens count)."""
    # lazy: onnx and its tools load only for builds
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    nodes = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not nodes:
        raise ValueError(f"{model_path} has no DynamicQuantizeLinear node: nothing to freeze")
    for n in nodes:
        model.graph.output.extend([helper.make_tensor_value_info(n.output[1], TensorProto.FLOAT, []),
                                   helper.make_tensor_value_info(n.output[2], TensorProto.UINT8, [])])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    encoder = TextEncoder(tokenizer, max_length)
    lows: dict[str, list[float]] = {n.name: [] for n in nodes}
    highs: dict[str, list[float]] = {n.name: [] for n in nodes}
    for row in encoder.token_ids(list(texts)):
        ids, mask = encoder.pad([row])
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in {i.name for i in session.get_inputs()}:
            feeds["token_type_ids"] = np.zeros_like(ids)
        out = dict(zip(names, session.run(None, feeds)))
        for n in nodes:
            scale, zero = float(out[n.output[1]]), int(out[n.output[2]])
            lows[n.name].append(-zero * scale)
            highs[n.name].append((255 - zero) * scale)
    return {name: (np.array(lows[name]), np.array(highs[name])) for name in lows}


def freeze_activation_scales(model_path: Path, out_path: Path,
                             ranges: dict[str, tuple[np.ndarray, np.ndarray]], percentile: float) -> Path:
    """Write ``model_path`` with each DynamicQuantizeLinear replaced by a QuantizeLinear whose uint8
    scale and zero point cover the ``percentile`` of the per-text ranges (values beyond saturate)."""
    # lazy: onnx and its tools load only for builds
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    nodes = []
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        lows, highs = ranges[node.name]
        lo = min(0.0, float(np.percentile(lows, 100.0 - percentile)))
        hi = max(0.0, float(np.percentile(highs, percentile)))
        scale = max(hi - lo, 1e-8) / 255.0
        zero = int(np.clip(round(-lo / scale), 0, 255))
        quantized, scale_name, zero_name = node.output
        model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name),
                                        numpy_helper.from_array(np.array(zero, dtype=np.uint8), zero_name)])
        nodes.append(helper.make_node("QuantizeLinear", [node.input[0], scale_name, zero_name], [quantized],
                                      name=f"{node.name}_static"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out_path))
    return out_path
