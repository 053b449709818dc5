"""``cascade train``: a whole bundle on any label set in minutes, with the core install (no torch).

The neural stage is a frozen sentence encoder (all-MiniLM-L6-v2, INT8, built once by
:mod:`cascade.training.encoder` and shipped in the default bundle) with a logistic-regression head
fitted on the INT8 embeddings that inference will see. The cheap stage is fitted as always; the
threshold and the cheap stage's vote on texts that fall through are chosen on validation.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..bundle import Bundle, atomic, check_output_folder, default_bundle_path, read_bundle, text_hash
from ..datasets import TextDataset
from ..errors import CascadeError
from ..evaluation import label_indices
from ..stages.head import FILE as HEAD_FILE
from ..stages.neural import NeuralStage
from .build import _fit_and_export_cheap, _step_bar, assemble
from .cheap import CheapConfig
from .head import DEFAULT_C, fit_head

log = logging.getLogger(__name__)

EMBED_CHUNK = 512


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``cascade train``; the defaults were chosen on the BANKING77 validation split."""

    cheap: CheapConfig = field(default_factory=CheapConfig)
    head_C: float = DEFAULT_C
    max_length: int | None = None  # tokens per text; None: the encoder bundle's
    min_texts_per_label: int = 2
    abstain: float | None = None  # "none of these": at most this share of in-scope validation texts rejected


def check_labels(train: TextDataset, validation: TextDataset, min_texts: int) -> list[str]:
    """The label set (sorted); a ValueError names every label with too few training texts and every
    validation label that training lacks."""
    counts = Counter(train.labels)
    few = sorted((n, label) for label, n in counts.items() if n < min_texts)
    if few:
        listed = ", ".join(f"{label!r} ({n})" for n, label in few[:10])
        raise ValueError(f"{len(few)} label(s) have fewer than {min_texts} training texts: {listed}; add texts or "
                         "drop those labels")
    unseen = sorted(set(validation.labels) - set(counts))
    if unseen:
        raise ValueError(f"{len(unseen)} validation label(s) never appear in training: {unseen[:10]}")
    return sorted(counts)


def embed_with_progress(stage: NeuralStage, texts: list[str], desc: str, progress: bool) -> np.ndarray:
    """Sentence embeddings of ``texts``, chunk by chunk behind a progress bar (the same numbers as one
    call: an embedding depends on its text only)."""
    out = np.empty((len(texts), stage.embedding_dim or 0), dtype=np.float32)
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), EMBED_CHUNK):
            out[start : start + EMBED_CHUNK] = stage.embed(texts[start : start + EMBED_CHUNK])
            bar.update(min(EMBED_CHUNK, len(texts) - start))
    return out


@dataclass(frozen=True)
class EncoderSource:
    """Where ``cascade train`` takes its frozen encoder from: a bundle's files, and what they are."""

    bundle: Bundle
    model_file: str
    info: dict[str, Any]

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])


def encoder_source(path: str | Path | None) -> EncoderSource:
    """The frozen encoder of a bundle (default: the shipped one): its ``encoder`` section (the shipped
    bundle carries one beside its fine-tuned stage), or its neural stage if that is a frozen encoder
    (any bundle ``cascade train`` wrote)."""
    bundle = read_bundle(path if path is not None else default_bundle_path())
    if "encoder" in bundle.manifest:
        info = dict(bundle.manifest["encoder"])
        return EncoderSource(bundle, info["file"], info)
    neural = bundle.manifest["neural"]
    if neural.get("type") == "frozen-encoder":
        info = {k: v for k, v in neural.items() if k not in ("head", "head_C", "validation_accuracy", "type")}
        return EncoderSource(bundle, NeuralStage.ONNX_FILE, info)
    raise CascadeError(f"{bundle.path} has no frozen encoder (its neural stage is fine-tuned and it ships no "
                       "'encoder'); pass --encoder-from a bundle made by `cascade train`, or the shipped one")


def train_bundle(train: TextDataset, validation: TextDataset, out: str | Path, *,
                 encoder_from: str | Path | None = None, config: TrainConfig = TrainConfig(),
                 progress: bool = True, data_name: str = "") -> Bundle:
    """Fit the cheap stage and a head on the frozen encoder's embeddings, choose the threshold and the
    cheap stage's vote on validation, and write a bundle to ``out`` (atomically)."""
    started = time.perf_counter()
    if config.abstain is not None and not 0.0 < config.abstain < 1.0:
        raise ValueError(f"abstain is the share of in-scope texts that may be rejected, in (0, 1); got {config.abstain}")
    check_output_folder(out)
    labels = check_labels(train, validation, config.min_texts_per_label)
    source = encoder_source(encoder_from)
    base = source.bundle
    max_length = int(config.max_length or source.max_length)
    encoder_file, tokenizer_file = base.file(source.model_file), base.file(NeuralStage.TOKENIZER_FILE)
    with atomic.scratch_dir(Path(tempfile.gettempdir()), "cascade-train-") as work, \
            _step_bar(3, "train: starting", progress) as bar:
        bar.set_description_str(f"fitting the cheap stage on {len(train)} texts")
        _, cheap_info = _fit_and_export_cheap(train, validation, labels, config.cheap, work)
        bar.update()
        bar.set_description_str("embedding the training texts")
        stage = NeuralStage(base.read_bytes(source.model_file), base.read_bytes(NeuralStage.TOKENIZER_FILE),
                            max_length)
        embeddings = embed_with_progress(stage, train.texts, "embedding", progress)
        head_started = time.perf_counter()
        head = fit_head(embeddings, label_indices(labels, train.labels), len(labels), C=config.head_C)
        head_seconds = time.perf_counter() - head_started
        (work / HEAD_FILE).write_bytes(head.to_bytes())
        bar.update()
        bar.set_description_str("choosing the threshold and writing the bundle")
        manifest: dict[str, Any] = {
            "neural": {**{k: v for k, v in source.info.items() if k not in ("file", "max_length")},
                       "head_C": config.head_C},
            "training": {"data": data_name, "n_train": len(train), "validation_size": len(validation),
                         "command": "cascade train", "config": asdict(config), "cheap": cheap_info,
                         "head": {"C": config.head_C, "fit_seconds": round(head_seconds, 1)},
                         "seconds_before_writing": round(time.perf_counter() - started, 1),
                         "encoder_from": base.digest},
        }
        bundle = assemble(
            out, labels=labels, cheap_dir=work, neural_model=encoder_file, tokenizer=tokenizer_file,
            max_length=max_length, validation=validation, manifest=manifest,
            train_hashes={text_hash(t) for t in train.texts}, head=work / HEAD_FILE, abstain=config.abstain,
            expected={NeuralStage.ONNX_FILE: base.expected_hashes()[source.model_file],
                      NeuralStage.TOKENIZER_FILE: base.expected_hashes()[NeuralStage.TOKENIZER_FILE]},
        )
        bar.update()
    log.info("cascade train: %s written in %.0fs", bundle.path, time.perf_counter() - started)
    return bundle
