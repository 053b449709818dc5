"""Structured pruning (keep some layers, distil the full encoder's embeddings) on a tiny random BERT built
on the fly (needs [train]): the student learns, is saved as a model folder, and keeps the export-parity
check every encoder has."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cascade.errors import CascadeError  # noqa: E402
from cascade.training.pruning import DISTILLATION_INFO_FILE, DistilConfig, distil_pruned_encoder, kept_layers  # noqa: E402

from builders import make_tokenizer  # noqa: E402

MAX_LENGTH = 32


def test_kept_layers_are_evenly_spaced_with_first_and_last():
    assert kept_layers(6, 3) == [0, 2, 5]
    assert kept_layers(6, 4) == [0, 2, 3, 5]
    assert kept_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert kept_layers(6, 1) == [5]
    for bad in (0, 7):
        with pytest.raises(CascadeError, match="choose 1 to 6"):
            kept_layers(6, bad)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_train, tiny_val) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    tok = make_tokenizer(root / "tokenizer.json", tiny_train.texts + tiny_val.texts)
    from tokenizers import Tokenizer

    config = transformers.BertConfig(vocab_size=Tokenizer.from_file(str(tok)).get_vocab_size(), hidden_size=32,
                                     num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64, initializer_range=0.2)
    torch.manual_seed(0)  # wide random weights: each layer changes the embeddings, as in a trained encoder
    transformers.BertModel(config).save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def student(tmp_path_factory, teacher, tiny_train, tiny_val):
    torch.set_num_threads(1)
    config = DistilConfig(epochs=3, learning_rate=2e-3, batch_size=16, max_length=MAX_LENGTH)
    out = tmp_path_factory.mktemp("student")
    return distil_pruned_encoder(out, 2, tiny_train.texts, tiny_val.texts, config, base_model=teacher, progress=False)


def test_distillation_brings_the_pruned_encoder_closer_to_the_full_one(student):
    assert student.layers == [0, 3]
    assert len(student.history) == 3
    assert student.best_val_distance == min(h["val_distance"] for h in student.history)
    assert student.best_val_distance < 0.5 * student.val_distance_before
    saved = json.loads((student.model_dir / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2
    info = json.loads((student.model_dir / DISTILLATION_INFO_FILE).read_text())
    assert info["best_epoch"] == student.best_epoch and info["layers"] == [0, 3]
    assert (student.model_dir / "tokenizer.json").is_file()


def test_pruned_encoder_keeps_the_export_parity_check(tmp_path, student, tiny_val):
    from cascade.training.encoder import check_encoder_export, export_encoder

    path = export_encoder(student.model_dir, tmp_path / "encoder.onnx")
    assert check_encoder_export(student.model_dir, path, tiny_val.texts[:30], MAX_LENGTH) < 1e-4


def test_distillation_that_never_helps_keeps_the_pruned_encoder_as_cut(tmp_path, teacher, tiny_train, tiny_val):
    """Keeping every layer, the cut is the full encoder and training can only move away from it: epoch 0
    (before any training) is what is saved."""
    config = DistilConfig(epochs=1, learning_rate=0.1, warmup_ratio=0.0, batch_size=16, max_length=MAX_LENGTH)
    result = distil_pruned_encoder(tmp_path, 4, tiny_train.texts, tiny_val.texts, config, base_model=teacher,
                                   progress=False)
    assert result.history[0]["val_distance"] > result.val_distance_before
    assert result.best_epoch == 0 and result.best_val_distance == result.val_distance_before
    reloaded = transformers.AutoModel.from_pretrained(str(tmp_path))
    cut = transformers.AutoModel.from_pretrained(str(teacher))
    assert torch.equal(reloaded.encoder.layer[3].output.dense.weight, cut.encoder.layer[3].output.dense.weight)


def test_distillation_refuses_empty_texts(tmp_path, teacher, tiny_val):
    with pytest.raises(CascadeError, match="training and validation texts"):
        distil_pruned_encoder(tmp_path, 2, [], tiny_val.texts, base_model=teacher, progress=False)
