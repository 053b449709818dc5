"""Fine-tune -> ONNX export -> fusion -> INT8 on a tiny random BERT built on the fly (needs [train])."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from builders import make_tokenizer

from cascade.stages.neural import NeuralStage
from cascade.training.export import FP32_FALLBACK, QUANT_MODES, build_neural
from cascade.training.finetune import FinetuneConfig, finetune

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
    assert tuned.metric == "accuracy" and tuned.best_val_score == max(h["val_accuracy"] for h in tuned.history)
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
    from cascade.training.cheap import CheapConfig
    from cascade.training.recipes.finetuned import finetune_bundle

    bundle = finetune_bundle(tiny_train, tiny_val, labels, tmp_path / "bundle", work_dir=tmp_path / "work",
                             checkpoint=tuned.checkpoint_dir, cheap_config=CheapConfig(min_df=1),
                             tolerance=0.05, data_name="tiny")
    m = bundle.manifest
    assert m["neural"]["fusions"]["Attention"] == 2 and m["neural"]["max_length"] == MAX_LENGTH
    assert m["training"]["finetune"]["best_epoch"] == tuned.best_epoch
    assert set(m["metrics"]["selection"]) >= {"cheap_accuracy", "neural_accuracy", "cascade_accuracy"}
    assert "selection_accuracy" in m["neural"] and m["training"]["command"] == "cascade finetune"
    model = cascade.load(bundle.path, threads=1)
    assert model.classify("card not arrived", threshold=1.0).stage == "neural"


def test_checkpoint_with_other_labels_is_refused(tmp_path, tuned, tiny_train, tiny_val, labels):
    from cascade.training.recipes.finetuned import finetune_bundle

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


EPOCHS, LR, HEAD_LR = 10, 2e-3, 1e-2  # a random tiny BERT needs more steps than MiniLM


@pytest.fixture(scope="module")
def topic_bert(tmp_path_factory) -> tuple[Path, object, object]:
    """A tiny random BERT over the topic-tagging vocabulary, and the data (train, selection)."""
    from builders import tagging_data
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("topic-bert")
    train, selection = tagging_data(240, seed=1), tagging_data(120, seed=2)
    tok = make_tokenizer(root / "tokenizer.json", train.texts + selection.texts)
    config = transformers.BertConfig(vocab_size=Tokenizer.from_file(str(tok)).get_vocab_size(), hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(str(root))
    return root, train, selection


def test_multi_label_finetune_learns_topics_with_bce(tmp_path, topic_bert):
    from cascade.policy.multilabel import topics_of

    base, train, selection = topic_bert
    topics = topics_of(train.labels)
    config = FinetuneConfig(epochs=EPOCHS, learning_rate=LR, head_learning_rate=HEAD_LR, batch_size=16,
                            max_length=MAX_LENGTH, threads=1)
    result = finetune(train, selection, topics, tmp_path / "ckpt", config, base_model=base, progress=False,
                      label_sep="|")
    saved = json.loads((result.checkpoint_dir / "config.json").read_text())
    assert saved["problem_type"] == "multi_label_classification" and result.metric == "micro_f1"
    assert result.best_val_score == max(h["val_micro_f1"] for h in result.history)
    assert result.best_val_score > 0.8  # four topics with their own words: learnable in 3 epochs
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_multi_label_head_starts_at_topic_priors(tmp_path, topic_bert):
    """Epoch 0's sigmoid per topic is its training frequency, not 0.5 for every topic."""
    from cascade.policy.multilabel import label_matrix, sigmoid, topics_of
    from cascade.stages.tokenization import TextEncoder
    from cascade.training.finetune import predict_logits

    base, train, selection = topic_bert
    topics = topics_of(train.labels)
    config = FinetuneConfig(epochs=1, learning_rate=1e-12, head_learning_rate=1e-12, warmup_ratio=0.0,
                            max_length=MAX_LENGTH, threads=1)
    result = finetune(train, selection, topics, tmp_path / "ckpt", config, base_model=base, progress=False,
                      label_sep="|")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(result.checkpoint_dir))
    probs = sigmoid(predict_logits(model, TextEncoder(base / "tokenizer.json", MAX_LENGTH), train.texts, torch))
    prior = label_matrix(train.labels, topics).mean(axis=0)
    assert np.abs(probs.mean(axis=0) - prior).max() < 0.1


def test_multi_label_finetune_bundle_round_trip(tmp_path, topic_bert):
    import cascade
    from cascade.training.cheap import CheapConfig
    from cascade.training.recipes.finetuned import finetune_bundle

    base, train, selection = topic_bert
    ckpt = tmp_path / "ckpt"
    finetune(train, selection, sorted({"grain", "money", "oil", "ship"}), ckpt,
             FinetuneConfig(epochs=EPOCHS, learning_rate=LR, head_learning_rate=HEAD_LR, batch_size=16,
                            max_length=MAX_LENGTH, threads=1), base_model=base, progress=False, label_sep="|")
    bundle = finetune_bundle(train, selection, None, tmp_path / "bundle", work_dir=tmp_path / "work",
                             checkpoint=ckpt, cheap_config=CheapConfig(min_df=1), tolerance=0.05, label_sep="|",
                             windows=2, progress=False)
    m = bundle.manifest
    assert m["task"] == "multi-label" and m["neural"]["windows"] == 2 and "selection_micro_f1" in m["neural"]
    assert all("val_micro_f1" in t for t in m["neural"]["quantization_tried"])
    model = cascade.load(bundle.path, threads=1)
    assert model.multi_label and model.labels == ["grain", "money", "oil", "ship"]
    text = "crude barrel opec refinery dollar yen currency said the"
    alone = model.classify(text, threshold=1.0)
    assert alone.stage == "neural" and alone.labels and set(alone.labels) <= set(model.labels)
    assert [p.labels for p in model.classify([text, "wheat corn", text], threshold=1.0)][::2] == [alone.labels] * 2
    with pytest.raises(ValueError, match="fine-tuned for topic tagging"):
        finetune_bundle(train, selection, None, tmp_path / "b2", work_dir=tmp_path / "w2", checkpoint=ckpt)
    with pytest.raises(ValueError, match="topics given and the training texts' differ"):
        finetune_bundle(train, selection, ["grain", "oil"], tmp_path / "b3", work_dir=tmp_path / "w3",
                        checkpoint=ckpt, label_sep="|")


def test_cli_finetune_multi_label_from_checkpoint(tmp_path, topic_bert, capsys):
    import csv

    import cascade
    from cascade.cli import main

    base, train, selection = topic_bert
    ckpt = tmp_path / "ckpt"
    finetune(train, selection, ["grain", "money", "oil", "ship"], ckpt,
             FinetuneConfig(epochs=2, max_length=MAX_LENGTH, threads=1), base_model=base, progress=False,
             label_sep="|")
    data = tmp_path / "topics.csv"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "category"), *zip(train.texts + selection.texts,
                                                            [lab.replace("|", ";") for lab in train.labels + selection.labels])])
    out = tmp_path / "bundle"
    assert main(["finetune", "--data", str(data), "--multi-label", "--label-sep", ";", "--checkpoint", str(ckpt),
                 "--out", str(out), "--windows", "2"]) == 0
    model = cascade.load(out, threads=1)
    assert model.multi_label and model.label_sep == ";" and model.bundle.manifest["neural"]["windows"] == 2
    assert "wrote" in capsys.readouterr().out
    assert main(["finetune", "--data", str(data), "--label-sep", ";", "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "b2")]) != 0
    assert "--label-sep needs --multi-label" in capsys.readouterr().err


def test_finetune_logs_its_kept_epoch_and_no_expected_warnings(tmp_path, topic_bert, caplog):
    """Issue 12: the fine-tune's log never stated the best epoch, and showed transformers' "MISSING/MISMATCH
    ... newly initialized" report and onnxruntime's "consider pre-processing" warning, both expected here."""
    from cascade.training.export import QUANT_MODES, export_onnx, quantize

    base, train, selection = topic_bert
    with caplog.at_level("INFO"):
        result = finetune(train, selection, ["grain", "money", "oil", "ship"], tmp_path / "ckpt",
                          FinetuneConfig(epochs=2, max_length=MAX_LENGTH, threads=1), base_model=base,
                          progress=False, label_sep="|")
        quantize(export_onnx(result.checkpoint_dir, tmp_path / "m.onnx"), tmp_path / "q.onnx", QUANT_MODES[0])
    assert f"kept epoch {result.best_epoch} of 2" in caplog.text
    noisy = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
             and ("newly initialized" in r.getMessage() or "MISMATCH" in r.getMessage()
                  or "pre-processing before quantization" in r.getMessage())]
    assert not noisy


def test_finetune_help_shows_the_defaults_it_uses(capsys):
    from cascade.cli import main
    from cascade.training.finetune import MULTI_LABEL_FINETUNE, FinetuneConfig

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    config = FinetuneConfig()
    for flag, value in (("--epochs", config.epochs), ("--lr", f"{config.learning_rate:g}"),
                        ("--batch-size", config.batch_size), ("--seed", config.seed), ("--max-length", config.max_length)):
        assert f"(default: {value}" in text.split(flag, 2)[-1][:400], flag
    assert f"output layer: {MULTI_LABEL_FINETUNE.head_learning_rate:g}" in text


def test_an_mpnet_encoder_exports_equal_to_torch_and_its_pooling_is_checked(tmp_path, tiny_train, tiny_val):
    """Issue 24: any sentence encoder, exported the same way: a tiny random MPNet (MPNet's tokenizer adds <s> ...
    </s> with RobertaProcessing, which the neural stage's tokenizer check refused before)."""
    from tokenizers import Tokenizer

    from cascade.errors import CascadeError
    from cascade.training.encoder import check_encoder_export, check_pooling, export_encoder

    root = tmp_path / "tiny-mpnet"
    root.mkdir()
    tok = make_tokenizer(root / "tokenizer.json", tiny_train.texts + tiny_val.texts, mpnet=True)
    config = transformers.MPNetConfig(vocab_size=Tokenizer.from_file(str(tok)).get_vocab_size(), hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                      max_position_embeddings=64 + 2, pad_token_id=1)
    torch.manual_seed(0)
    transformers.MPNetModel(config).save_pretrained(str(root))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                 "pooling_mode_mean_tokens": True}))
    assert check_pooling(root) == "mean"
    path = export_encoder(root, tmp_path / "mpnet.onnx")
    assert check_encoder_export(root, path, tiny_val.texts[:30], MAX_LENGTH) < 1e-4
    stage = NeuralStage(path, tok, MAX_LENGTH, threads=1)
    emb = stage.embed(tiny_val.texts[:10])
    assert np.allclose(emb, np.vstack([stage.embed([t]) for t in tiny_val.texts[:10]]), atol=1e-6)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(CascadeError, match="pooling \\['cls_token'\\].*mean of the token states"):
        check_pooling(root)


def test_the_encoder_build_tries_each_quantization_and_gates_on_the_head(tmp_path, tiny_bert, tiny_train, tiny_val,
                                                                          labels):
    """build_encoder quantizes every way of ENCODER_QUANT_MODES at every percentile, scores each by its head's
    accuracy and its embeddings' cosine to fp32, keeps the best, and refuses to build below the gate."""
    from cascade.bundle.encoder_dir import read_encoder_dir, write_encoder_dir
    from cascade.errors import CascadeError
    from cascade.training.activation_scales import PERCENTILES
    from cascade.training.encoder import ENCODER_QUANT_MODES, build_encoder

    build = build_encoder(tmp_path / "w", tiny_train, tiny_val, labels, max_length=MAX_LENGTH, tolerance=1.0,
                          model_dir=tiny_bert)
    assert len(build.tried) == len(ENCODER_QUANT_MODES) * len(PERCENTILES)
    assert {t["quantization"] for t in build.tried} == set(ENCODER_QUANT_MODES)
    assert all(0.0 < t["embedding_cosine_to_fp32"] <= 1.0 + 1e-6 for t in build.tried)
    assert build.head_val_accuracy == max(t["head_val_accuracy"] for t in build.tried)
    folder = write_encoder_dir(tmp_path / "enc", build.model_path, build.tokenizer_path,
                               {"max_length": MAX_LENGTH, "quantization": build.quantization})
    assert read_encoder_dir(folder.path).info["quantization"] in ENCODER_QUANT_MODES
    with pytest.raises(CascadeError, match="not building it"):  # a gate no INT8 encoder can pass
        build_encoder(tmp_path / "w2", tiny_train, tiny_val, labels, max_length=MAX_LENGTH, tolerance=-1.0,
                      model_dir=tiny_bert)


def _tiny_mpnet(root: Path, texts: list[str]) -> Path:
    """A tiny random MPNet folder laid out as sentence-transformers ship one (model, tokenizer.json)."""
    from tokenizers import Tokenizer

    root.mkdir()
    tok = make_tokenizer(root / "tokenizer.json", texts, mpnet=True)
    config = transformers.MPNetConfig(vocab_size=Tokenizer.from_file(str(tok)).get_vocab_size(), hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                      max_position_embeddings=64 + 2, pad_token_id=1)
    torch.manual_seed(0)
    transformers.MPNetModel(config).save_pretrained(str(root))
    return root


def test_cli_finetunes_an_mpnet_base_model_in_bf16(tmp_path, tiny_train, tiny_val, capsys):
    """Issue 24: `cascade finetune --base-model DIR` fine-tunes any BERT- or MPNet-family folder (the large
    recipe's all-mpnet-base-v2), `--bf16` trains under bfloat16 autocast, and the bundle names its base; the
    export is checked against torch on the way (build_neural)."""
    import csv

    import cascade
    from cascade.cli import main

    base = _tiny_mpnet(tmp_path / "tiny-mpnet", tiny_train.texts + tiny_val.texts)
    data = tmp_path / "data.csv"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *zip(tiny_train.texts + tiny_val.texts,
                                                         tiny_train.labels + tiny_val.labels)])
    out = tmp_path / "bundle"
    assert main(["finetune", "--data", str(data), "--base-model", str(base), "--bf16", "--epochs", "1",
                 "--lr", "0.001", "--max-length", str(MAX_LENGTH), "--threads", "1", "--out", str(out),
                 "--work-dir", str(tmp_path / "work")]) == 0
    model = cascade.load(out, threads=1)
    manifest = model.bundle.manifest
    assert manifest["neural"]["base_model"] == "tiny-mpnet, fine-tuned"
    assert manifest["training"]["finetune"]["config"]["bf16"] is True
    assert {p.label for p in model.classify(tiny_val.texts[:5])} <= set(model.labels)
    capsys.readouterr()
    assert main(["finetune", "--data", str(data), "--base-model", str(tmp_path), "--out", str(tmp_path / "b2"),
                 "--work-dir", str(tmp_path / "work2")]) != 0
    err = capsys.readouterr().err
    assert f"the base model {tmp_path} has no config.json or tokenizer.json" in err and "b2" not in err
