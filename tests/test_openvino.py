"""The OpenVINO runtime (issue 27): a bundle's optional OpenVINO INT8 model, built by ``cascade openvino``,
hashed and validated like every file, run with ``runtime="openvino"``; the same answer for a text in any
batch; clear errors without the model or the extra; bundles without it unchanged.

Tests that run OpenVINO skip cleanly when the ``[openvino]`` / ``[openvino-build]`` extras are absent."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import cascade
from cascade.bundle import read_bundle
from cascade.bundle.manifest import validate_manifest
from cascade.cli import main
from cascade.datasets import TextDataset
from cascade.errors import BundleError
from cascade.serving.settings import ServeSettings
from cascade.stages.openvino import MODEL_FILE, WEIGHTS_FILE, bucket_length

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_NNCF = HAS_OPENVINO and importlib.util.find_spec("nncf") is not None
needs_build = pytest.mark.skipif(not HAS_NNCF, reason="needs the [openvino-build] extra (openvino, nncf)")


@pytest.fixture(scope="module")
def tiny_data(tiny_train: TextDataset, tiny_selection: TextDataset) -> TextDataset:
    """The texts the tiny bundles were built from: training and selection texts."""
    return TextDataset(tiny_train.texts + tiny_selection.texts, tiny_train.labels + tiny_selection.labels)


@pytest.fixture(scope="module")
def ov_tiny(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_bundle: Path, tiny_data: TextDataset) -> Path:
    """The tiny frozen-encoder bundle with an OpenVINO model of its (fp32) encoder added."""
    if not HAS_NNCF:
        pytest.skip("needs the [openvino-build] extra (openvino, nncf)")
    from cascade.training.openvino import add_openvino

    out = tmp_path_factory.mktemp("openvino") / "tiny-ov"
    add_openvino(tiny_encoder_bundle, tiny_data, out, fp32=tiny_encoder_bundle / "neural.onnx", tolerance=1.0,
                 threads=1)
    return out


def test_a_text_is_padded_to_its_own_bucket() -> None:
    assert [bucket_length(n) for n in (1, 15, 16, 17, 32, 33, 512)] == [16, 16, 16, 32, 32, 48, 512]


def test_the_openvino_runtime_on_a_bundle_without_its_model_says_how_to_add_one(tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match="has no OpenVINO model.*cascade openvino --bundle"):
        cascade.load(tiny_bundle, runtime="openvino")
    with pytest.raises(ValueError, match="runtime must be one of"):
        cascade.load(tiny_bundle, runtime="ov")
    with pytest.raises(ValueError, match="onnxruntime's"):
        cascade.load(tiny_bundle, runtime="openvino", providers=["CPUExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="runtime must be one of"):
        ServeSettings(runtime="tensorrt")


def test_without_the_extra_the_error_names_it(ov_tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what a missing package looks like to import
    with pytest.raises(ImportError, match=r"pip install 'cascade-text\[openvino\]'"):
        cascade.load(ov_tiny, runtime="openvino")


def test_train_with_openvino_fails_before_training_without_the_extra(tiny_data: TextDataset, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    _write_csv(data, tiny_data)
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--openvino"]) == 2
    assert "cascade-text[openvino" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_bundles_without_an_openvino_model_are_unchanged(tiny_bundle: Path) -> None:
    shipped = read_bundle(cascade.load().bundle.path)
    assert "openvino" not in shipped.manifest and MODEL_FILE not in shipped.manifest["files"]
    model = cascade.load(tiny_bundle, threads=1)
    assert model.runtime == "onnxruntime" and model.threshold == read_bundle(tiny_bundle).threshold


@needs_build
def test_round_trip_adds_two_hashed_files_and_keeps_the_onnxruntime_answers(
        tiny_encoder_bundle: Path, ov_tiny: Path, tiny_val: TextDataset) -> None:
    bundle = read_bundle(ov_tiny)
    before = read_bundle(tiny_encoder_bundle)
    assert set(bundle.manifest["files"]) - set(before.manifest["files"]) == {MODEL_FILE, WEIGHTS_FILE}
    section = bundle.manifest["openvino"]
    assert section["beside_threshold"] == bundle.threshold == before.threshold
    assert set(section["selection"]) == {"onnxruntime", "openvino"} and section["gate"]["passed"] is True
    ort_old = cascade.load(tiny_encoder_bundle, threads=1, cache_size=0)
    ort_new = cascade.load(ov_tiny, threads=1, cache_size=0)
    ov = cascade.load(ov_tiny, runtime="openvino", threads=1, cache_size=0)
    assert ov.runtime == "openvino" and ov.threshold == section["threshold"] and "on openvino" in repr(ov)
    texts = tiny_val.texts
    assert np.array_equal(ort_old.route(texts)[0], ort_new.route(texts)[0])
    # the same encoder, INT8 on OpenVINO against fp32 on onnxruntime: close, not equal
    np.testing.assert_allclose(ov.neural.predict_proba(texts), ort_new.neural.predict_proba(texts), atol=2e-2)
    assert [p.label for p in ov.classify(texts[:5])] and ov.classify(texts[0]).label in ov.labels


@needs_build
def test_info_shows_both_runtimes(ov_tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--bundle", str(ov_tiny)]) == 0
    out = capsys.readouterr().out
    assert "runtimes:  onnxruntime: threshold" in out and "openvino: threshold" in out
    card = (ov_tiny / "MODEL_CARD.md").read_text()
    assert "OpenVINO INT8 model" in card


@needs_build
def test_a_tampered_openvino_file_is_refused(ov_tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ov_tiny, copy)
    weights = copy / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{WEIGHTS_FILE} does not match its SHA-256"):
        cascade.load(copy, runtime="openvino")


def test_the_manifest_section_is_validated(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    good = {"model": "cheap.onnx", "weights": "tokenizer.json", "threshold": 0.5, "beside_threshold": 0.4}
    validate_manifest({**manifest, "openvino": good})
    for bad, field in [({**good, "model": "../neural.openvino.xml"}, "openvino.model"),
                       ({**good, "weights": "nowhere.bin"}, "openvino.weights"),
                       ({**good, "weights": "cheap.onnx"}, "openvino.weights"),
                       ({**good, "threshold": 1.5}, "openvino.threshold"),
                       ({k: v for k, v in good.items() if k != "beside_threshold"}, "openvino.beside_threshold"),
                       ({**good, "extra": 1}, "openvino"),
                       ({**good, "selection": []}, "openvino.selection")]:
        with pytest.raises(BundleError, match=field.replace(".", r"\.")):
            validate_manifest({**manifest, "openvino": bad})


@needs_build
def test_a_threshold_set_later_is_used_by_both_runtimes(ov_tiny: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from cascade.bundle import update_manifest

    copy = tmp_path / "recalibrated"
    shutil.copytree(ov_tiny, copy)
    update_manifest(copy, {"threshold": 0.123})
    model = cascade.load(copy, runtime="openvino", threads=1)
    assert model.threshold == 0.123 and "after its OpenVINO model was added" in caplog.text


@needs_build
def test_the_cli_builds_and_runs_it(tiny_encoder_bundle: Path, tiny_data: TextDataset, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    _write_csv(data, tiny_data)
    out = tmp_path / "ov"
    args = ["openvino", "--bundle", str(tiny_encoder_bundle), "--out", str(out), "--data", str(data),
            "--fp32", str(tiny_encoder_bundle / "neural.onnx"), "--tolerance", "1", "--threads", "1"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["gate"]["passed"] is True and (out / MODEL_FILE).is_file()
    assert main(["classify", "--bundle", str(out), "--runtime", "openvino", "--threads", "1", "card lost"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"]
    assert main(["evaluate", "--bundle", str(out), "--runtime", "openvino", "--threads", "1", "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == read_bundle(out).manifest["openvino"]["threshold"]
    assert main(["openvino", "--bundle", str(tiny_encoder_bundle), "--out", str(tmp_path / "x"), "--data", str(data),
                 "--tolerance", "1"]) == 2  # a tiny encoder that is not all-MiniLM-L6-v2 and no --fp32
    assert "pass --base-model DIR" in capsys.readouterr().err
    assert main(args + ["--digest", "sha256:" + "0" * 64]) == 2  # a pinned digest is kept to, before any work
    assert "is not the pinned" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    _write_csv(wrong, TextDataset(["an unrelated text", "another one"], ["a", "b"]))
    assert main(args[:5] + ["--out", str(tmp_path / "y"), "--data", str(wrong), *args[7:]]) == 2
    assert "give the data file the bundle was built from" in capsys.readouterr().err


@needs_build
def test_a_tagger_with_windows_gets_an_openvino_model_too(tagger: Path, tiny_encoder_bundle: Path,
                                                          tmp_path: Path) -> None:
    from builders import tagging_data

    from cascade.training.openvino import add_openvino

    bundle = add_openvino(tagger, tagging_data(240), tmp_path / "ov", fp32=tiny_encoder_bundle / "neural.onnx",
                          tolerance=1.0, threads=1)
    section = bundle.manifest["openvino"]
    assert section["gate"]["figure"] == "neural_micro_f1" and section["threshold"] == bundle.threshold
    model = cascade.load(bundle.path, runtime="openvino", threads=1, cache_size=0)
    texts = tagging_data(40, seed=5).texts  # long enough to be read as two windows
    together = model.neural.predict_proba(texts)
    assert np.array_equal(together, np.vstack([model.neural.predict_proba([t]) for t in texts]))
    assert all(isinstance(p.labels, tuple) for p in model.classify(texts[:3]))


@needs_build
def test_a_resumed_batch_job_never_mixes_runtimes(ov_tiny: Path) -> None:
    from cascade.batch import model_identity

    ort = cascade.load(ov_tiny, threads=1)
    ov = cascade.load(ov_tiny, runtime="openvino", threads=1)
    assert model_identity(ort) == ort.bundle.digest  # jobs started before runtimes existed still resume
    assert model_identity(ov) != model_identity(ort)


def _write_csv(path: Path, data: TextDataset) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(data.texts, data.labels))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NNCF or importlib.util.find_spec("torch") is None,
                    reason="needs the [openvino-build] and [train] extras")
def test_the_shipped_encoder_on_openvino_gives_each_text_the_same_answer_in_any_batch(tmp_path: Path) -> None:
    """The real encoder, quantized by NNCF: every test text gets the same bits alone, in a batch and shuffled;
    its accuracy on the selection texts passed the gate (0.3 points of onnxruntime's)."""
    from cascade.training.openvino import add_openvino

    bundle = add_openvino(cascade.load().bundle.path, cascade.load_banking77("train_full"), tmp_path / "ov", threads=2)
    gate = bundle.manifest["openvino"]["gate"]
    assert gate["passed"] and gate["openvino"] >= gate["onnxruntime"] - 0.003
    stage = cascade.load(bundle.path, runtime="openvino", threads=2, cache_size=0).neural
    texts = cascade.load_banking77("test").texts
    together = stage.predict_proba(texts)
    alone = np.vstack([stage.predict_proba([t]) for t in texts])
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = stage.predict_proba([texts[i] for i in order])
    assert np.array_equal(alone, together) and np.array_equal(shuffled, together[order])
