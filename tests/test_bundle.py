"""Bundles: every hash checked on load, errors name the file, saves are atomic."""

import json
import shutil
from pathlib import Path

import pytest

import cascade
from cascade.bundle import FORMAT_VERSION, MANIFEST, read_bundle, update_manifest, write_bundle
from cascade.errors import BundleError


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(tiny_bundle, dest)
    return dest


def _files(bundle: Path) -> dict[str, Path]:
    return {name: bundle / name for name in json.loads((bundle / MANIFEST).read_text())["files"]}


def test_manifest_describes_every_file(tiny_bundle):
    b = read_bundle(tiny_bundle)
    m = b.manifest
    assert m["format_version"] == FORMAT_VERSION
    assert set(m["files"]) == {"cheap.onnx", "cheap_features.json", "neural.onnx", "tokenizer.json", "train_hashes.json",
                               "MODEL_CARD.md"}
    assert all(len(e["sha256"]) == 64 and e["bytes"] > 0 for e in m["files"].values())
    assert {"numpy", "onnxruntime", "scikit-learn"} <= set(m["versions"])
    assert 0.0 <= b.threshold <= 1.0 and len(b.labels) == 77
    assert "selection" in m["metrics"]
    assert not any(p.suffix in (".pkl", ".joblib", ".pickle") for p in tiny_bundle.iterdir())


@pytest.mark.parametrize("name", ["cheap.onnx", "cheap_features.json", "neural.onnx", "tokenizer.json"])
def test_tampered_file_is_refused_by_name(bundle_copy, name):
    with (bundle_copy / name).open("ab") as fh:
        fh.write(b" ")
    with pytest.raises(BundleError, match=f"{name} does not match its SHA-256"):
        cascade.load(bundle_copy)


def test_missing_file_is_refused_by_name(bundle_copy):
    (bundle_copy / "neural.onnx").unlink()
    with pytest.raises(BundleError, match="neural.onnx is missing"):
        read_bundle(bundle_copy)


def test_not_a_bundle_and_bad_manifest(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="no manifest.json"):
        read_bundle(tmp_path)
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(bundle_copy)


def test_other_format_version_is_refused(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format version 2 is not supported"):
        read_bundle(bundle_copy)


def test_manifest_must_list_required_files(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    del m["files"]["tokenizer.json"]
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="lists no tokenizer.json"):
        read_bundle(bundle_copy)


def test_failed_save_leaves_existing_bundle_untouched(bundle_copy, tmp_path):
    before = {p.name: p.read_bytes() for p in bundle_copy.iterdir()}
    files = _files(bundle_copy)
    files["neural.onnx"] = tmp_path / "does-not-exist.onnx"
    manifest = read_bundle(bundle_copy).manifest
    with pytest.raises(BundleError, match="source file for neural.onnx not found"):
        write_bundle(bundle_copy, files, manifest)
    assert {p.name: p.read_bytes() for p in bundle_copy.iterdir()} == before
    assert [p.name for p in bundle_copy.parent.iterdir() if p.name.startswith(".")] == []
    read_bundle(bundle_copy)


def test_interrupted_save_leaves_existing_bundle_untouched(bundle_copy, monkeypatch):
    import cascade.bundle.atomic as atomic_mod

    before = {p.name: p.read_bytes() for p in bundle_copy.iterdir()}

    def boom(scratch, path, own_files):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_mod, "swap_into_place", boom)
    with pytest.raises(KeyboardInterrupt):
        update_manifest(bundle_copy, {"threshold": 0.123})
    assert {p.name: p.read_bytes() for p in bundle_copy.iterdir()} == before
    assert [p.name for p in bundle_copy.parent.iterdir() if p.name.startswith(".")] == []


def test_update_manifest_replaces_atomically(bundle_copy):
    b = update_manifest(bundle_copy, {"threshold": 0.25})
    assert b.threshold == 0.25 and read_bundle(bundle_copy).threshold == 0.25
    assert [p.name for p in bundle_copy.parent.iterdir() if p.name.startswith(".")] == []
    assert (bundle_copy.stat().st_mode & 0o777) != 0o700


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(bundle_copy, tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match=r"is not a cascade bundle \(it has no manifest.json\); refusing"):
        write_bundle(other, _files(bundle_copy), read_bundle(bundle_copy).manifest)
    assert (other / "notes.txt").read_text() == "keep me"


def test_every_save_writes_a_model_card_that_agrees_with_the_manifest(tiny_bundle, tiny_val, tmp_path):
    """Issue 12: a bundle carries a model card (labels, data, metrics with their threshold, use, licence)."""
    import cascade
    from cascade.bundle import read_bundle, update_manifest

    bundle = read_bundle(tiny_bundle)
    card = bundle.file("MODEL_CARD.md").read_text(encoding="utf-8")
    assert "MODEL_CARD.md" in bundle.manifest["files"]  # hashed and verified like every file
    for needle in ("## Training data", "## Intended use", "## Licences", "Apache-2.0",
                   f"{bundle.manifest['threshold']:.4f}", bundle.labels[0]):
        assert needle in card, needle
    model = cascade.load(tiny_bundle)
    cal = cascade.calibrate(model, tiny_val.texts, tiny_val.labels)
    choice = cal.choose(fallthrough=0.5)
    saved = cal.save(tmp_path / "calibrated", choice)
    new_card = saved.file("MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"Routing threshold: {choice.threshold:.4f}" in new_card and "Calibration (`cascade calibrate`" in new_card
    renamed = update_manifest(tmp_path / "calibrated", {"threshold_rule": "set by hand"})
    assert "chosen by: set by hand" in renamed.file("MODEL_CARD.md").read_text(encoding="utf-8")
