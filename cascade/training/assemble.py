"""The one assembler every build recipe ends with: fit and export the cheap stage, choose on the selection
texts how a text that falls through is answered and the threshold (by :data:`cascade.calibration.BUILD_RULE`),
and write the bundle atomically with the hashes of its training and selection texts.

Every build chooses its settings on the *selection* texts only, and never sees the certification texts that
``cascade calibrate`` certifies promises on (:mod:`cascade.splits`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import TRAIN_HASHES_FILE, Bundle, text_hash, write_bundle, write_train_hashes
from ..calibration import BUILD_RULE, cheapest_same_as_best
from ..datasets import TextDataset
from ..errors import CascadeError
from ..evaluation import StageScores, label_indices, neural_adds_nothing, summarize
from ..policy.mix import NEURAL_ALONE, Mix
from ..policy.multilabel import Decisions, assign, choose_cutoffs, label_matrix, set_confidence, stage_figures
from ..policy.routing import abstain_cut, confidence, fallthrough_answer
from ..progress import progress_bar
from ..stages.cheap import CheapStage
from ..stages.head import FILE as HEAD_FILE
from ..stages.head import LinearHead
from ..stages.neural import NeuralStage
from ..stages.timing import ms_per_text
from .cheap import CheapConfig, check_parity, export_cheap, fit_cheap
from .mixing import fit_mix

log = logging.getLogger(__name__)


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


def fit_and_export_cheap(train: TextDataset, selection: TextDataset, labels: list[str], config: CheapConfig,
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


@dataclass(frozen=True)
class BuildSpec:
    """What a recipe hands :func:`assemble`: the stages' files and what to choose on.

    ``labels``: the label (or topic) order; ``cheap_dir``: the exported cheap stage; ``neural_model``,
    ``tokenizer``, ``max_length``, ``windows``: the neural stage (``head``: its head file when it is a frozen
    encoder; ``threads``: onnxruntime's while choosing); ``selection``: the texts every choice is made on;
    ``manifest``: the recipe's own sections (``neural``, ``training``); ``train_hashes``: the training texts'
    hashes; ``expected``: the SHA-256 of files taken from a verified bundle, checked again as they are copied;
    ``mix``: fit the cheap stage's vote on texts that fall through (else the neural stage answers them alone);
    ``abstain``: let the bundle answer "none of these", rejecting at most this share of in-scope selection
    texts; ``label_sep``: a tagger (label cells hold topics joined by it; ``at_least_one``: a text always gets
    a topic)."""

    labels: list[str]
    cheap_dir: Path
    neural_model: Path
    tokenizer: Path
    max_length: int
    selection: TextDataset
    manifest: dict[str, Any]
    train_hashes: set[str]
    threads: int | None = None
    expected: dict[str, str] | None = None
    head: Path | None = None
    mix: bool = True
    abstain: float | None = None
    label_sep: str | None = None
    at_least_one: bool = True
    windows: int = 1


def assemble(out: str | Path, spec: BuildSpec) -> Bundle:
    """Choose on ``spec.selection`` how texts that fall through are answered and the threshold (and a
    tagger's cut-offs, or the "none of these" cut), then write the bundle to ``out`` atomically, with the
    hashes of the training and selection texts (so calibration can warn about data that chose the bundle)."""
    labels, cheap_dir, neural_model, tokenizer = spec.labels, spec.cheap_dir, spec.neural_model, spec.tokenizer
    max_length, selection, manifest, head, label_sep = (spec.max_length, spec.selection, spec.manifest, spec.head,
                                                        spec.label_sep)
    mix, abstain, windows = spec.mix, spec.abstain, spec.windows
    cheap = CheapStage.load(cheap_dir)
    linear = LinearHead.from_bytes(head.read_bytes()) if head is not None else None
    neural = NeuralStage(neural_model, tokenizer, max_length, threads=spec.threads, head=linear,
                         multi_label=label_sep is not None, windows=windows)
    decisions = None
    if label_sep is not None:
        if abstain is not None:
            raise ValueError("'none of these' (abstain) is for single-label bundles: a multi-label one already "
                             "assigns no topic whose probability misses its cut-off")
        threshold, sel_metrics, decisions = _choose_multi_label(cheap, neural, labels, selection, label_sep,
                                                                spec.at_least_one, mix)
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
    write_train_hashes(cheap_dir / TRAIN_HASHES_FILE, spec.train_hashes, {text_hash(t) for t in selection.texts})
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
    return write_bundle(out, files, full, expected=spec.expected)


def step_bar(total: int, desc: str, progress: bool) -> Any:
    return progress_bar(total=total, desc=desc, progress=progress, bar_format="{desc} [{n}/{total} done]")
