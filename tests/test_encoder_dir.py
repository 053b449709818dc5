"""Encoder folders (issue 24): an encoder built on its own, with its own tokenizer, that `cascade train
--encoder-from` builds a cascade on; written atomically, every field validated, every file checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cascade
from cascade.bundle import read_bundle
from cascade.bundle.encoder_dir import ENCODER_JSON, read_encoder_dir, write_encoder_dir

INFO = {"max_length": 16, "base_model": "a tiny random encoder", "quantization": "none", "activation_scales": "none",
        "build": {"note": "made by the test"}}


@pytest.fixture()
def folder(tmp_path: Path, tiny_encoder_bundle: Path) -> Path:
    bundle = read_bundle(tiny_encoder_bundle)
    return write_encoder_dir(tmp_path / "encoder", bundle.file("neural.onnx"), bundle.file("tokenizer.json"), INFO).path


def test_train_builds_on_an_encoder_folder(tmp_path: Path, folder: Path, tiny_train, tiny_selection):
    out = cascade.train(tiny_train, tiny_selection, tmp_path / "b", encoder_from=folder, progress=False)
    manifest = out.manifest
    assert manifest["training"]["encoder_from"] == str(folder)
    assert manifest["neural"]["base_model"] == "a tiny random encoder" and manifest["neural"]["max_length"] == 16
    assert out.expected_hashes()["neural.onnx"] == read_encoder_dir(folder).hashes["encoder.onnx"]
    model = cascade.load(out.path, threads=1)
    assert model.classify("my card has not arrived", threshold=1.0).stage == "neural"


def test_a_changed_file_is_refused(folder: Path, tmp_path: Path, tiny_train, tiny_selection):
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace("[UNK]", "[UNX]"))
    with pytest.raises(cascade.BundleError, match="tokenizer.json does not match its SHA-256"):
        cascade.train(tiny_train, tiny_selection, tmp_path / "b", encoder_from=folder, progress=False)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(max_length=4096), "max_length must be an integer from 2 to 512"),
    (lambda d: d.update(max_length=float("nan")), "max_length"),
    (lambda d: d.update(extra=1), "unknown fields"),
    (lambda d: d["files"].update({"../outside.onnx": {"sha256": "0" * 64}}), "files must list exactly"),
    (lambda d: d["files"]["encoder.onnx"].update(sha256="ABC"), "64 lowercase hex digits"),
    (lambda d: d.update(format="cascade-encoder/9"), "format must be"),
    (lambda d: d.update(base_model=["not", "a", "string"]), "base_model must be a string"),
])
def test_every_field_of_the_description_is_checked(folder: Path, change, says):
    info = json.loads((folder / ENCODER_JSON).read_text())
    change(info)
    (folder / ENCODER_JSON).write_text(json.dumps(info))
    with pytest.raises(cascade.BundleError, match=says):
        read_encoder_dir(folder)


def test_a_folder_is_never_written_over(folder: Path, tiny_encoder_bundle: Path):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bundle = read_bundle(tiny_encoder_bundle)
    with pytest.raises(FileExistsError, match="exists"):
        write_encoder_dir(folder, bundle.file("neural.onnx"), bundle.file("tokenizer.json"), INFO)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch folder left behind


def test_the_folder_gets_the_permissions_of_any_new_folder(folder: Path):
    """Written through mkdtemp, the folder was private (0700) whatever the umask."""
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    probe = folder.parent / "probe"
    probe.mkdir()
    assert folder.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777
