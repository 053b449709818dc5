"""Commands that build a bundle: train-cheap, train, finetune."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..banking77 import banking77_labels, load_banking77
from ..bundle import check_output_folder, default_bundle_path, read_bundle
from ..datasets import TextDataset, read_csv
from ..splits import carve_splits
from ..stages.neural import check_threads
from .parser import label_sep
from .streams import utf8_stdout

BUNDLED_NAME = "BANKING77 (bundled)"


def _load_training_data(args: argparse.Namespace) -> tuple[TextDataset, TextDataset | None, list[str], str]:
    """(data, selection texts or None to carve them, labels, name) of a build command."""
    if args.data is None:
        if args.val is not None or args.group_col is not None or args.time_col is not None:
            raise ValueError("--val, --group-col and --time-col need --data (the bundled BANKING77 is carved by the "
                             "package's own rule)")
        return load_banking77("train_full"), None, banking77_labels(), BUNDLED_NAME
    if args.val is not None and (args.group_col is not None or args.time_col is not None):
        raise ValueError("--group-col and --time-col shape the carve of --data; with --val nothing is carved")
    data = read_csv(args.data, args.text_col, args.label_col, group_col=args.group_col, time_col=args.time_col)
    selection = read_csv(args.val, args.text_col, args.label_col) if args.val is not None else None
    return data, selection, sorted(set(data.labels)), str(args.data)



def cmd_train_cheap(args: argparse.Namespace) -> int:

    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from ..training.cheap import MULTI_LABEL_CHEAP, CheapConfig
    from ..training.recipes.refresh import train_cheap

    sep = label_sep(args)
    train, val, _, name = _load_training_data(args)
    config = None  # the task's default
    if args.C is not None or args.no_char:
        config = MULTI_LABEL_CHEAP if args.multi_label else CheapConfig()
        config = replace(config, C=args.C if args.C is not None else config.C,
                         char_ngrams=None if args.no_char else config.char_ngrams)
    bundle = train_cheap(train, val, args.out, base=args.base, config=config, data_name=name,
                         label_sep=sep if args.multi_label else None,
                         selection_share=args.selection_share, certification_share=args.certification_share)
    _print_summary(bundle.path, bundle.manifest)
    return 0


def cmd_train(args: argparse.Namespace) -> int:

    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from ..training.recipes.frozen import TrainConfig, train_bundle

    train, val, _, name = _load_training_data(args)
    config = TrainConfig()
    if args.head_C is not None:
        config = replace(config, head_C=args.head_C)

    if args.max_length is not None:
        config = replace(config, max_length=args.max_length)
    if args.abstain is not None:
        config = replace(config, abstain=args.abstain)
    sep = label_sep(args)
    if args.multi_label:
        config = replace(config, label_sep=sep)
    if args.C is not None:
        config = replace(config, cheap=replace(config.cheap_config, C=args.C))
    if args.windows is not None:
        config = replace(config, windows=args.windows)
    if args.min_topics is not None:
        config = replace(config, min_topics=args.min_topics)
    config = replace(config, selection_share=args.selection_share, certification_share=args.certification_share)
    if args.openvino:
        # lazy: the [openvino-build] extra loads only for a build that adds an OpenVINO model
        from ..training.openvino import add_openvino, check_build_extras

        check_build_extras(needs_torch=True)  # before the long work
    bundle = train_bundle(train, val, args.out, encoder_from=args.encoder_from, config=config, data_name=name)
    if args.openvino:
        every = train if val is None else TextDataset(train.texts + val.texts, train.labels + val.labels)
        bundle = add_openvino(bundle.path, every, threads=None)
    _print_summary(bundle.path, bundle.manifest)
    return 0


def cmd_openvino(args: argparse.Namespace) -> int:

    # lazy: the [openvino-build] extra loads only for a build that adds an OpenVINO model
    from ..training.openvino import add_openvino, check_build_extras

    check_threads(args.threads)
    source = args.bundle if args.bundle is not None else default_bundle_path()
    manifest = read_bundle(source, verify=False, digest=args.digest).manifest  # the build verifies every file
    check_build_extras(needs_torch=args.fp32 is None)
    check_output_folder(args.out if args.out is not None else source)  # before the long work
    if args.data is not None:
        data = read_csv(args.data, args.text_col, args.label_col)
    elif manifest.get("training", {}).get("data") == BUNDLED_NAME:
        data = load_banking77("train_full")
    else:
        raise ValueError("give --data: the labelled file this bundle was built from")
    bundle = add_openvino(source, data, args.out, fp32=args.fp32, base_model=args.base_model,
                          calibration_texts=args.calibration_texts, tolerance=args.tolerance, threads=args.threads,
                          digest=args.digest)
    section = bundle.manifest["openvino"]
    utf8_stdout().write(json.dumps({"bundle": str(bundle.path), "digest": bundle.digest,
                                    "threshold": {"onnxruntime": bundle.threshold, "openvino": section["threshold"]},
                                    "gate": section["gate"]}, indent=2) + "\n")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:

    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from ..training.finetune import MULTI_LABEL_FINETUNE, FinetuneConfig
    from ..training.recipes.finetuned import finetune_bundle

    check_threads(args.threads)
    sep = label_sep(args) if args.multi_label or args.label_sep is not None else None
    train, val, labels, name = _load_training_data(args)
    overrides = {k: v for k, v in {
        "epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
        "max_length": args.max_length, "threads": args.threads, "seed": args.seed, "bf16": args.bf16 or None,
    }.items() if v is not None}
    base = MULTI_LABEL_FINETUNE if sep is not None else FinetuneConfig()
    bundle = finetune_bundle(train, val, None if sep is not None else labels, args.out, work_dir=args.work_dir,
                             checkpoint=args.checkpoint, finetune_config=replace(base, **overrides), data_name=name,
                             selection_share=args.selection_share, certification_share=args.certification_share,
                             label_sep=sep, windows=args.windows, base_model=args.base_model)
    _print_summary(bundle.path, bundle.manifest)
    return 0


def _print_summary(path: Path, manifest: dict[str, Any]) -> None:
    sel = manifest["metrics"]["selection"]
    sizes = manifest["training"]["splits"].get("sizes")
    abstain = (f"; 'none of these' under {sel['abstain_below']:.3f} ({sel['abstained_share']:.1%} of selection)"
               if "abstain_below" in sel else "")
    kept = ("(untouched: `cascade calibrate --data` certifies on them)" if sizes and sizes["certification"]
            else "(none: certify on held-out texts with `cascade calibrate --val`)")
    split_line = (f"splits: {sizes['train']:,} train, {sizes['selection']:,} selection, {sizes['certification']:,} "
                  f"certification {kept}\n" if sizes else "")
    measure = "micro_f1" if manifest.get("task") == "multi-label" else "accuracy"
    name = "micro-F1" if measure == "micro_f1" else "accuracy"
    sys.stdout.write(
        f"wrote {path}: threshold {manifest['threshold']:.4f}; {name} on the selection texts: cheap "
        f"{sel[f'cheap_{measure}']:.2%}, neural {sel[f'neural_{measure}']:.2%}, cascade "
        f"{sel[f'cascade_{measure}']:.2%} with {sel['fall_through_rate']:.1%} falling through{abstain}\n{split_line}"
    )
    if "neural_adds_nothing" in sel:
        sys.stdout.write(f"note: {sel['neural_adds_nothing']}\n")


def cmd_tune(args: argparse.Namespace) -> int:

    # lazy: scikit-learn (2-3 s to import) loads only when a build runs
    from ..training.recipes.refresh import train_cheap
    from ..tuning import tune

    if args.out is not None:
        check_output_folder(args.out)  # before the trials, not after
    data, selection, _, name = _load_training_data(args)
    if selection is None:
        parts = carve_splits(data, args.selection_share, args.certification_share)
        train, selection = parts.train, parts.selection
    else:
        train = data
    result = tune(train, selection, trials=args.trials, base=args.base, storage=args.storage, study=args.study,
                  seed=args.seed)
    summary: dict[str, Any] = {
        "study": result.study, "trials": result.trials, "pruned": result.pruned,
        "target_accuracy": result.target_accuracy, "base_fall_through": result.base_fall_through,
        "best_fall_through": result.best_fall_through, "target_reached": result.reachable,
        "best_trial": result.best_trial,
        "best_cheap_ms_per_text": result.best_cheap_ms_per_text, "best_config": asdict(result.best_config),
    }
    if args.out is not None:
        bundle = train_cheap(train, selection, args.out, base=args.base, config=result.best_config, data_name=name,
                             extra_training={"tuned": {k: v for k, v in summary.items() if k != "best_config"}})
        summary["bundle"] = str(bundle.path)
    utf8_stdout().write(json.dumps(summary, indent=2) + "\n")
    return 0
