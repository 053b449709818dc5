"""Shared fixtures: tiny data, a tiny tokenizer and ONNX classifier, and a tiny bundle, built on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_neural_onnx, make_tokenizer

from cascade.datasets import TextDataset, banking77_labels, load_banking77

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return banking77_labels()


@pytest.fixture(scope="session")
def tiny_train() -> TextDataset:
    return load_banking77("train").per_label(8)


@pytest.fixture(scope="session")
def tiny_val() -> TextDataset:
    return load_banking77("validation").per_label(3)


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
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_parts: dict[str, Path], tiny_val: TextDataset,
                tiny_train: TextDataset, labels: list[str]) -> Path:
    from cascade.bundle import text_hash
    from cascade.training.build import assemble

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    assemble(out, labels=labels, cheap_dir=tiny_parts["dir"], neural_model=tiny_parts["neural"],
             tokenizer=tiny_parts["tokenizer"], max_length=16, validation=tiny_val,
             manifest={"training": {"data": "tiny test data"}}, threads=1,
             train_hashes={text_hash(t) for t in tiny_train.texts})
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle: Path):
    import cascade

    return cascade.load(tiny_bundle, threads=1)
