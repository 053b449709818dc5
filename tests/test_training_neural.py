"""Fine-tune -> ONNX export -> fusion -> INT8 on a tiny random BERT built on the fly (needs [train])."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cascade.stages.neural import NeuralStage  # noqa: E402
from cascade.training.export import FP32_FALLBACK, QUANT_MODES, build_neural  # noqa: E402
from cascade.training.finetune import FinetuneConfig, finetune  # noqa: E402

from builders import make_tokenizer  # noqa: E402

MAX_LENGTH = 32


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, tiny_train, tiny_val, labels) -> Path:
    root = tmp_path_factory.mktemp("tiny-bert")
    tok = make_tokenizer(root / "tokenizer.json", tiny_train.texts + tiny_val.texts)
    from tokenizers import Tokenizer

    config = transformers.BertConfig(
        vocab_size=Tokenizer.from_file(str(tok)).get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_bert, tiny_train, tiny_val, labels):
    out = tmp_path_factory.mktemp("tuned")
    config = FinetuneConfig(epochs=2, learning_rate=1e-3, batch_size=16, max_length=MAX_LENGTH, threads=1)
    return finetune(tiny_train, tiny_val, labels, out, config, base_model=tiny_bert, progress=False)


def test_finetune_saves_best_checkpoint_and_history(tuned):
    assert len(tuned.history) == 2 and 1 <= tuned.best_epoch <= 2
    assert tuned.best_val_accuracy == max(h["val_accuracy"] for h in tuned.history)
    assert tuned.history[1]["train_loss"] < tuned.history[0]["train_loss"]
    saved = json.loads((tuned.checkpoint_dir / "cascade_training.json").read_text())
    assert saved["best_epoch"] == tuned.best_epoch and (tuned.checkpoint_dir / "tokenizer.json").is_file()


def test_export_optimize_quantize(tmp_path, tuned, tiny_val, labels):
    y = np.array([labels.index(label) for label in tiny_val.labels])
    tok = tuned.checkpoint_dir / "tokenizer.json"

    def accuracy_of(path):
        return float((NeuralStage(path, tok, MAX_LENGTH, threads=1).predict_proba(tiny_val.texts).argmax(1) == y).mean())

    build = build_neural(tuned.checkpoint_dir, tmp_path, accuracy_of, check_texts=tiny_val.texts[:40],
                         max_length=MAX_LENGTH, tolerance=0.05)
    assert build.fusions["Attention"] == 2 and build.fusions["SkipLayerNormalization"] >= 2
    assert build.fusions["EmbedLayerNormalization"] == 1
    assert build.mode in [m.name for m in QUANT_MODES] + [FP32_FALLBACK]
    assert build.tried and build.tried[0]["mode"] == QUANT_MODES[0].name
    if build.mode != FP32_FALLBACK:
        assert build.model_path.stat().st_size < build.fp32_path.stat().st_size
        assert build.val_accuracy >= build.val_accuracy_fp32 - 0.05
    fp32 = NeuralStage(build.fp32_path, tok, MAX_LENGTH, threads=1).predict_proba(tiny_val.texts)
    int8 = NeuralStage(build.model_path, tok, MAX_LENGTH, threads=1).predict_proba(tiny_val.texts)
    assert np.abs(fp32 - int8).max() < 0.05


def test_export_matches_torch_on_padded_batches(tmp_path, tuned, tiny_val):
    from cascade.training.export import check_export, export_onnx

    path = export_onnx(tuned.checkpoint_dir, tmp_path / "m.onnx")
    assert check_export(tuned.checkpoint_dir, path, tiny_val.texts[:30], MAX_LENGTH) < 1e-3


def test_finetune_bundle_from_checkpoint(tmp_path, tuned, tiny_train, tiny_val, labels):
    import cascade
    from cascade.training.build import finetune_bundle
    from cascade.training.cheap import CheapConfig

    bundle = finetune_bundle(tiny_train, tiny_val, labels, tmp_path / "bundle", work_dir=tmp_path / "work",
                             checkpoint=tuned.checkpoint_dir, cheap_config=CheapConfig(min_df=1),
                             tolerance=0.05, data_name="tiny")
    m = bundle.manifest
    assert m["neural"]["fusions"]["Attention"] == 2 and m["neural"]["max_length"] == MAX_LENGTH
    assert m["training"]["finetune"]["best_epoch"] == tuned.best_epoch
    assert set(m["metrics"]["selection"]) >= {"cheap_accuracy", "neural_accuracy", "cascade_accuracy"}
    model = cascade.load(bundle.path, threads=1)
    assert model.classify("card not arrived", threshold=1.0).stage == "neural"


def test_checkpoint_with_other_labels_is_refused(tmp_path, tuned, tiny_train, tiny_val, labels):
    from cascade.training.build import finetune_bundle

    other = tmp_path / "ckpt"
    shutil.copytree(tuned.checkpoint_dir, other)
    with pytest.raises(ValueError, match="other labels"):
        finetune_bundle(tiny_train, tiny_val, list(reversed(labels)), tmp_path / "b", work_dir=tmp_path / "w",
                        checkpoint=other)


def test_encoder_export_matches_sentence_transformers_pooling(tmp_path, tiny_bert, tiny_val):
    """The frozen-encoder export: ONNX token states pooled by the neural stage equal torch's pooled
    sentence embeddings on padded batches (what the build script checks before quantizing)."""
    from cascade.training.encoder import check_encoder_export, export_encoder

    path = export_encoder(tiny_bert, tmp_path / "encoder.onnx")
    assert check_encoder_export(tiny_bert, path, tiny_val.texts[:30], MAX_LENGTH) < 1e-4
    stage = NeuralStage(path, tiny_bert / "tokenizer.json", MAX_LENGTH, threads=1)
    emb = stage.embed(tiny_val.texts[:10])
    assert stage.embedding_dim == 32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb, np.vstack([stage.embed([t]) for t in tiny_val.texts[:10]]))
