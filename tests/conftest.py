"""Shared fixtures: tiny data, a tiny tokenizer and ONNX classifier, and a tiny bundle, built on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_neural_onnx, make_tokenizer

from cascade.banking77 import banking77_labels, load_banking77
from cascade.datasets import TextDataset

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return banking77_labels()


@pytest.fixture(scope="session")
def tiny_train() -> TextDataset:
    return load_banking77("train").per_label(8)


@pytest.fixture(scope="session")
def tiny_selection() -> TextDataset:
    """The texts the tiny bundles chose their settings on."""
    return load_banking77("selection").per_label(3)


@pytest.fixture(scope="session")
def tiny_val() -> TextDataset:
    """Held-out labelled texts the tiny bundles never saw (what calibration certifies on)."""
    return load_banking77("certification").per_label(3)


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory, tiny_train: TextDataset, labels: list[str]) -> dict[str, Path]:
    """Files of a tiny bundle: cheap stage fitted on tiny data, random tiny neural stage."""
    from cascade.training.cheap import CheapConfig, export_cheap, fit_cheap

    root = tmp_path_factory.mktemp("parts")
    pipeline = fit_cheap(tiny_train, labels, CheapConfig(min_df=1))
    export_cheap(pipeline, root)
    tok = make_tokenizer(root / "tokenizer.json", tiny_train.texts)
    from tokenizers import Tokenizer

    vocab_size = Tokenizer.from_file(str(tok)).get_vocab_size()
    make_neural_onnx(root / "neural.onnx", vocab_size, len(labels))
    return {"dir": root, "tokenizer": tok, "neural": root / "neural.onnx"}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_parts: dict[str, Path], tiny_selection: TextDataset,
                tiny_train: TextDataset, labels: list[str]) -> Path:
    from cascade.bundle import text_hash
    from cascade.training.assemble import BuildSpec, assemble

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    assemble(out, BuildSpec(labels=labels, cheap_dir=tiny_parts["dir"], neural_model=tiny_parts["neural"],
             tokenizer=tiny_parts["tokenizer"], max_length=16, selection=tiny_selection,
             manifest={"training": {"data": "tiny test data"}}, threads=1,
             train_hashes={text_hash(t) for t in tiny_train.texts}))
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle: Path):
    import cascade

    return cascade.load(tiny_bundle, threads=1)


@pytest.fixture(scope="session")
def tiny_encoder_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_parts: dict[str, Path], tiny_selection: TextDataset,
                        tiny_train: TextDataset, labels: list[str]) -> Path:
    """A tiny bundle with a frozen-encoder neural stage (random tiny encoder, head fitted on tiny data):
    what ``cascade train`` reuses the encoder of."""
    from builders import make_encoder_onnx
    from tokenizers import Tokenizer

    from cascade.bundle import text_hash
    from cascade.evaluation import label_indices
    from cascade.stages.head import FILE as HEAD_FILE
    from cascade.stages.neural import NeuralStage
    from cascade.training.assemble import BuildSpec, assemble
    from cascade.training.head import fit_head

    root = tmp_path_factory.mktemp("encoder")
    vocab_size = Tokenizer.from_file(str(tiny_parts["tokenizer"])).get_vocab_size()
    encoder = make_encoder_onnx(root / "neural.onnx", vocab_size)
    stage = NeuralStage(encoder, tiny_parts["tokenizer"], 16, threads=1)
    head = fit_head(stage.embed(tiny_train.texts), label_indices(labels, tiny_train.labels), len(labels))
    (root / HEAD_FILE).write_bytes(head.to_bytes())
    out = tmp_path_factory.mktemp("bundles") / "tiny-encoder"
    assemble(out, BuildSpec(labels=labels, cheap_dir=tiny_parts["dir"], neural_model=encoder, tokenizer=tiny_parts["tokenizer"],
             max_length=16, selection=tiny_selection, manifest={"training": {"data": "tiny test data"}}, threads=1,
             train_hashes={text_hash(t) for t in tiny_train.texts}, head=root / HEAD_FILE))
    return out


@pytest.fixture(scope="session")
def tagger(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_bundle: Path) -> Path:
    """A small multi-label bundle (four topics, one or two a text; tiny encoder, two windows)."""
    from builders import tagging_data

    import cascade
    from cascade.training.cheap import CheapConfig

    out = tmp_path_factory.mktemp("tagger") / "b"
    cascade.train(tagging_data(240), None, out, encoder_from=tiny_encoder_bundle, progress=False, label_sep="|",
                  windows=2, cheap=CheapConfig(min_df=1))
    return out
