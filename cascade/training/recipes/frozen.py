"""``cascade train``: a whole bundle on any label set in minutes, with the core install (no torch).

The neural stage is a frozen sentence encoder (all-MiniLM-L6-v2, INT8, built once by
:mod:`cascade.training.encoder` and shipped in the default bundle) with a logistic-regression head
fitted on the INT8 embeddings that inference will see. The cheap stage is fitted as always; the
threshold and the cheap stage's vote on texts that fall through are chosen on the selection texts, and
a certification split is set aside, untouched, for ``cascade calibrate`` (:mod:`cascade.splits`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from ...bundle import Bundle, atomic, check_output_folder, default_bundle_path, read_bundle, text_hash
from ...bundle.encoder_dir import ENCODER_FILE as ENCODER_DIR_FILE
from ...bundle.encoder_dir import is_encoder_dir, read_encoder_dir
from ...datasets import TextDataset
from ...errors import CascadeError
from ...evaluation import label_indices
from ...policy.multilabel import label_matrix
from ...progress import map_with_progress
from ...splits import CERTIFICATION_SHARE, SELECTION_SHARE, build_splits
from ...stages.head import FILE as HEAD_FILE
from ...stages.neural import NeuralStage
from ...stages.tokenization import check_windows
from ..assemble import BuildSpec, assemble, fit_and_export_cheap, step_bar
from ..cheap import MULTI_LABEL_CHEAP, CheapConfig
from ..checks import at_least_one_topic, check_labels, check_topics
from ..head import DEFAULT_C, choose_topic_head, fit_head

log = logging.getLogger(__name__)


EMBED_CHUNK = 512


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``cascade train``; the defaults were chosen on BANKING77 (the selection split)."""

    cheap: CheapConfig | None = None  # None: the task's default (CheapConfig(), or MULTI_LABEL_CHEAP)
    head_C: float = DEFAULT_C
    max_length: int | None = None  # tokens per text; None: the encoder bundle's
    min_texts_per_label: int | None = None  # None: 2 a label; 1 a multi-label topic (and a text without it)
    abstain: float | None = None  # "none of these": at most this share of in-scope selection texts rejected
    selection_share: float = SELECTION_SHARE  # carved out of the data when no selection texts are given
    certification_share: float = CERTIFICATION_SHARE  # set aside for `cascade calibrate`; 0: none
    label_sep: str | None = None  # multi-label: each label cell holds topics joined by this
    windows: int = 1  # the neural stage reads up to this many windows of max_length tokens per text
    min_topics: int | None = None  # multi-label: 0 lets a text get no topic, 1 gives each at least one; None:
    # 1 when every training text has a topic, else 0

    @property
    def cheap_config(self) -> CheapConfig:
        """The cheap stage's settings: ``cheap``, or the task's default."""
        if self.cheap is not None:
            return self.cheap
        return MULTI_LABEL_CHEAP if self.label_sep is not None else CheapConfig()

    def __post_init__(self) -> None:
        if self.cheap is not None and not isinstance(self.cheap, CheapConfig):
            raise TypeError(f"cheap must be a cascade.training.cheap.CheapConfig, got {type(self.cheap).__name__}")
        for name, value in (("head_C", self.head_C), ("cheap.C", self.cheap_config.C)):
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, Integral)
                                            or not 2 <= self.max_length <= 512):
            raise ValueError(f"max_length must be an integer from 2 to 512, got {self.max_length!r}")
        if self.abstain is not None and (isinstance(self.abstain, bool) or not isinstance(self.abstain, Real)
                                         or not 0.0 < self.abstain < 1.0):
            raise ValueError(f"abstain is the share of in-scope texts that may be rejected, in (0, 1); got {self.abstain!r}")
        self._check_shares()
        self._check_label_sep()
        check_windows(self.windows)
        self._check_multi_label()

    def _check_shares(self) -> None:
        for name in ("selection_share", "certification_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) < 0.9:
                raise ValueError(f"{name} must be a number in [0, 0.9), got {value!r}")
        if self.selection_share == 0:
            raise ValueError("selection_share must be above 0: the threshold and the mix are chosen on those texts")

    def _check_label_sep(self) -> None:
        if self.label_sep is not None and (not isinstance(self.label_sep, str) or not self.label_sep.strip()
                                           or len(self.label_sep) > 8):
            raise ValueError(f"label_sep must be a short non-blank string such as '|', got {self.label_sep!r}")

    def _check_multi_label(self) -> None:
        if self.min_topics is not None and (self.min_topics not in (0, 1) or isinstance(self.min_topics, bool)):
            raise ValueError(f"min_topics must be 0 (a text may get no topic) or 1, got {self.min_topics!r}")
        if self.min_topics is not None and self.label_sep is None:
            raise ValueError("min_topics is for multi-label bundles (label_sep / --multi-label)")
        if self.label_sep is not None and self.abstain is not None:
            raise ValueError("abstain ('none of these') is for single-label bundles: a multi-label bundle assigns "
                             "no topic whose probability misses its cut-off")


def embed_with_progress(stage: NeuralStage, texts: list[str], desc: str, progress: bool) -> np.ndarray:
    """Sentence embeddings of ``texts``, chunk by chunk behind a progress bar (the same numbers as one
    call: an embedding depends on its text only)."""
    return map_with_progress(stage.embed, texts, desc=desc, progress=progress, min_texts=0, chunk=EMBED_CHUNK)


@dataclass(frozen=True)
class EncoderSource:
    """Where ``cascade train`` takes its frozen encoder from, verified: the encoder's and its tokenizer's
    files, their SHA-256 (checked again as they are copied), what the encoder is, and where it came from (a
    bundle's digest, or an encoder folder's path)."""

    model_path: Path
    tokenizer_path: Path
    hashes: tuple[str, str]  # of the model, of the tokenizer
    info: dict[str, Any]
    origin: str

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])


def encoder_source(path: str | Path | None) -> EncoderSource:
    """The frozen encoder of an encoder folder (``python -m cascade.training.encoder --model ... --out``), or
    of a bundle (default: the shipped one): its ``encoder`` section (the shipped bundle carries one beside its
    fine-tuned stage), or its neural stage if that is a frozen encoder (any bundle ``cascade train`` wrote)."""
    if path is not None and is_encoder_dir(path):
        found = read_encoder_dir(path)
        return EncoderSource(found.model_path, found.tokenizer_path,
                             (found.hashes[ENCODER_DIR_FILE], found.hashes[NeuralStage.TOKENIZER_FILE]),
                             {k: v for k, v in found.info.items() if k not in ("format", "files")}, str(found.path))
    bundle = read_bundle(path if path is not None else default_bundle_path())
    if "encoder" in bundle.manifest:
        info = dict(bundle.manifest["encoder"])
        model_file = info["file"]
    elif bundle.manifest["neural"].get("type") == "frozen-encoder":
        info = {k: v for k, v in bundle.manifest["neural"].items()
                if k not in ("head", "head_C", "validation_accuracy", "selection_accuracy", "type")}
        model_file = NeuralStage.ONNX_FILE
    else:
        raise CascadeError(f"{bundle.path} has no frozen encoder (its neural stage is fine-tuned and it ships no "
                           "'encoder'); pass --encoder-from a bundle made by `cascade train`, an encoder folder, or "
                           "the shipped bundle")
    hashes = bundle.expected_hashes()
    return EncoderSource(bundle.file(model_file), bundle.file(NeuralStage.TOKENIZER_FILE),
                         (hashes[model_file], hashes[NeuralStage.TOKENIZER_FILE]), info, bundle.digest)


def train_bundle(data: TextDataset, selection: TextDataset | None, out: str | Path, *,
                 encoder_from: str | Path | None = None, config: TrainConfig = TrainConfig(),
                 progress: bool = True, data_name: str = "") -> Bundle:
    """Fit the cheap stage and a head on the frozen encoder's embeddings, choose the threshold and the
    cheap stage's vote on the selection texts, and write a bundle to ``out`` (atomically). ``selection``
    None: ``data`` is carved into train / selection / certification (``config``'s shares; see
    :func:`cascade.splits.carve_splits`), and the certification part is left for ``cascade calibrate``."""
    started = time.perf_counter()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_output_folder(out)
    splits = build_splits(data, selection, selection_share=config.selection_share,
                          certification_share=config.certification_share, label_sep=config.label_sep)
    log.info("splits: %s", splits.describe()["sizes"] if selection is None else "selection texts given")
    train, selection = splits.train, splits.selection
    sep = config.label_sep
    min_texts = config.min_texts_per_label if config.min_texts_per_label is not None else (1 if sep else 2)
    labels = (check_topics(train, selection, sep, min_texts) if sep is not None
              else check_labels(train, selection, min_texts))
    source = encoder_source(encoder_from)
    max_length = int(config.max_length or source.max_length)
    encoder_file, tokenizer_file = source.model_path, source.tokenizer_path
    try:  # the encoder is checked before any long work
        stage = NeuralStage(encoder_file, tokenizer_file, max_length, windows=config.windows)
        if stage.embedding_dim is None:
            raise ValueError("it outputs logits or pooled embeddings, not token states: an encoder from an older "
                             "cascade; use the shipped bundle or one `cascade train` wrote")
    except ValueError as exc:
        raise CascadeError(f"{encoder_file} cannot serve as the frozen encoder: {exc}") from None
    at_least_one = at_least_one_topic(train, sep, config.min_topics)
    with atomic.scratch_dir(Path(tempfile.gettempdir()), "cascade-train-") as work, \
            step_bar(3, "train: starting", progress) as bar:
        bar.set_description_str(f"fitting the cheap stage on {len(train)} texts")
        _, cheap_info = fit_and_export_cheap(train, selection, labels, config.cheap_config, work, sep,
                                              progress)
        bar.update()
        bar.set_description_str("embedding the training texts")
        embeddings = embed_with_progress(stage, train.texts, "embedding", progress)
        head_started = time.perf_counter()
        head_choice = None
        if sep is not None:
            held = embed_with_progress(stage, selection.texts, "embedding the selection texts", progress)
            head_started = time.perf_counter()
            head, head_choice = choose_topic_head(embeddings, label_matrix(train.labels, labels, sep), held,
                                                  label_matrix(selection.labels, labels, sep), C=config.head_C)
        else:
            head = fit_head(embeddings, label_indices(labels, train.labels), len(labels), C=config.head_C)
        head_seconds = time.perf_counter() - head_started
        (work / HEAD_FILE).write_bytes(head.to_bytes())
        bar.update()
        bar.set_description_str("choosing the threshold and writing the bundle")
        encoder_info = {k: v for k, v in source.info.items() if k not in ("file", "max_length", "build")}
        if "build" in source.info:
            encoder_info["encoder_build"] = {"note": "how the encoder was built and gated (on BANKING77), not this "
                                                     "bundle's figures", **source.info["build"]}
        manifest: dict[str, Any] = {
            "neural": {**encoder_info, "head_C": config.head_C},
            "training": {"data": data_name, "n_train": len(train), "splits": splits.describe(),
                         "command": "cascade train", "config": asdict(config), "cheap": cheap_info,
                         "head": {"C": config.head_C, "fit_seconds": round(head_seconds, 1),
                                  **({"class_weight_choice": head_choice} if head_choice else {})},
                         "seconds_before_writing": round(time.perf_counter() - started, 1),
                         "encoder_from": source.origin},
        }
        bundle = assemble(out, BuildSpec(labels=labels, cheap_dir=work, neural_model=encoder_file, tokenizer=tokenizer_file,
            max_length=max_length, selection=selection, manifest=manifest,
            train_hashes={text_hash(t) for t in train.texts}, head=work / HEAD_FILE, abstain=config.abstain,
            label_sep=sep, windows=config.windows,
            at_least_one=at_least_one,
            expected={NeuralStage.ONNX_FILE: source.hashes[0], NeuralStage.TOKENIZER_FILE: source.hashes[1]}))
        bar.update()
    log.info("cascade train: %s written in %.0fs", bundle.path, time.perf_counter() - started)
    return bundle
