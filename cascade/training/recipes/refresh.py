"""``cascade train-cheap``: a new cheap stage on data for the same labels, keeping a bundle's neural stage
(its mix, its "none of these" share and a tagger's cut-offs are chosen again on the selection texts)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ...bundle import Bundle, atomic, check_output_folder, default_bundle_path, read_bundle, text_hash
from ...bundle.store import HASHES_FORMAT
from ...datasets import TextDataset
from ...policy.multilabel import split_labels
from ...splits import CERTIFICATION_SHARE, SELECTION_SHARE, build_splits
from ...stages.neural import NeuralStage
from ..assemble import BuildSpec, assemble, fit_and_export_cheap, step_bar
from ..cheap import MULTI_LABEL_CHEAP, CheapConfig

log = logging.getLogger(__name__)


def _train_hashes(base: Bundle) -> set[str]:
    """The base bundle's training-text hashes, if they are of the current kind (older ones cannot be merged)."""
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
            step_bar(2, "train-cheap: starting", progress) as bar:
        bar.set_description_str(f"fitting and exporting on {len(train)} texts")
        _, cheap_info = fit_and_export_cheap(train, selection, labels, config, Path(work), label_sep, progress)
        bar.update()
        bar.set_description_str("choosing the threshold and writing the bundle")
        manifest = {k: v for k, v in base_bundle.manifest.items()
                    if k in ("neural", "training")}
        head_name = base_bundle.manifest["neural"].get("head")
        manifest["training"] = {"data": data_name, "n_train": len(train), "splits": splits.describe(),
                                "command": "cascade train-cheap", "cheap": cheap_info, "base": base_bundle.digest,
                                "base_training": manifest.get("training", {}), **(extra_training or {})}
        share = base_bundle.manifest.get("abstain", {}).get("max_rejected_share")
        bundle = assemble(out, BuildSpec(
            labels=labels, cheap_dir=Path(work), neural_model=base_bundle.file(NeuralStage.ONNX_FILE),
            tokenizer=base_bundle.file(NeuralStage.TOKENIZER_FILE),
            max_length=int(base_bundle.manifest["neural"]["max_length"]), selection=selection,
            manifest=manifest, train_hashes=_train_hashes(base_bundle) | {text_hash(t) for t in train.texts},
            expected={name: sha for name, sha in base_bundle.expected_hashes().items()
                      if name in (NeuralStage.ONNX_FILE, NeuralStage.TOKENIZER_FILE, head_name)},
            head=base_bundle.file(head_name) if head_name else None, abstain=share, label_sep=label_sep,
            windows=int(base_bundle.manifest["neural"].get("windows", 1)),
            at_least_one=bool(base_bundle.manifest.get("decisions", {}).get("at_least_one", True))))
        bar.update()
    return bundle
