"""Severe 2 and bundle trust: file names stay inside the bundle, the whole manifest is validated, the
featurizer spec is bounded, and a pinned digest refuses every other bundle."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from adv_helpers import cascade_cli, copy_bundle, edit_manifest, replace_file

import cascade
from cascade.bundle import read_bundle
from cascade.errors import BundleError


@pytest.fixture()
def b(tmp_path, tiny_bundle) -> Path:
    return copy_bundle(tiny_bundle, tmp_path / "nest" / "deeper" / "b")


# --- path escapes -----------------------------------------------------------------------------------

ESCAPES = ["../../.bashrc", "../secret", "/etc/hostname", "sub/file", "a\\b", "evil\x00.onnx", ".hidden", "..",
           "manifest.json"]


@pytest.mark.parametrize("name", ESCAPES)
def test_file_names_that_leave_the_bundle_are_refused_at_load(b, tmp_path, name):
    target = tmp_path / "secret"
    target.write_text("attacker's file")
    data = target.read_bytes()
    edit_manifest(b, lambda m: m["files"].__setitem__(name, {"sha256": hashlib.sha256(data).hexdigest(),
                                                              "bytes": len(data)}))
    with pytest.raises(BundleError, match="is not an allowed file name"):
        read_bundle(b)
    with pytest.raises(BundleError, match="is not an allowed file name"):
        cascade.load(b)


def test_calibrator_save_cannot_copy_a_file_from_outside(tmp_path, tiny_bundle, tiny_val):
    """The red team's case: an entry '../../.bashrc' with a matching hash, then cal.save(path)."""
    b = copy_bundle(tiny_bundle, tmp_path / "x" / "y" / "b")
    model = cascade.load(b, threads=1)
    cal = cascade.calibrate(model, tiny_val.texts, tiny_val.labels)
    choice = cal.choose(fallthrough=0.5)
    bashrc = tmp_path / ".bashrc"
    bashrc.write_text("rm -rf ~")
    data = bashrc.read_bytes()
    edit_manifest(b, lambda m: m["files"].__setitem__("../../.bashrc", {"sha256": hashlib.sha256(data).hexdigest(),
                                                                         "bytes": len(data)}))
    model.bundle = model.bundle.__class__(b, json.loads((b / "manifest.json").read_text()), "")
    out = tmp_path / "out" / "c"
    with pytest.raises(BundleError, match="not an allowed file name"):
        cal.save(out, choice)
    assert not out.exists() and not (tmp_path / "out" / ".bashrc").exists()


def test_a_symlink_inside_the_bundle_is_refused(b, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((b / "tokenizer.json").read_bytes())
    (b / "tokenizer.json").unlink()
    (b / "tokenizer.json").symlink_to(outside)
    with pytest.raises(BundleError, match="symlink"):
        cascade.load(b)


# --- the whole manifest is validated ------------------------------------------------------------------

def _set(path: str, value):
    def change(m):
        keys = path.split(".")
        node = m
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return change


BAD_MANIFESTS = [
    (_set("threshold", True), "threshold"),
    (_set("threshold", "0.5"), "threshold"),
    (_set("threshold", 1.5), "threshold"),
    (_set("threshold", -0.1), "threshold"),
    (_set("calibration.cheap_temperature", 0), "calibration.cheap_temperature"),
    (_set("calibration.cheap_temperature", -1.0), "calibration.cheap_temperature"),
    (_set("calibration.neural_temperature", "1"), "calibration.neural_temperature"),
    (_set("calibration.measure", "entropy"), "calibration.measure"),
    (_set("calibration.always_neural", ["no_such_label"]), "calibration.always_neural"),
    (_set("neural.max_length", 100000), "neural.max_length"),
    (_set("neural.max_length", "128"), "neural.max_length"),
    (_set("neural", {}), "neural.max_length"),
    (_set("neural", None), "neural"),
    (_set("labels", "card_arrival"), "labels"),
    (_set("labels", [1, 2, 3]), "labels[0]"),
    (lambda m: m["labels"].__setitem__(1, m["labels"][0]), "labels"),
    (lambda m: m["labels"].__setitem__(0, ""), "labels[0]"),
    (lambda m: m.pop("labels"), "labels"),
    (lambda m: m.pop("threshold"), "threshold"),
    (lambda m: m.pop("files"), "files"),
    (_set("files", []), "files"),
    (lambda m: m["files"]["cheap.onnx"].__setitem__("sha256", 5), "files.cheap.onnx.sha256"),
    (lambda m: m["files"]["cheap.onnx"].pop("bytes"), "files.cheap.onnx"),
    (lambda m: m["files"]["cheap.onnx"].__setitem__("bytes", "big"), "files.cheap.onnx.bytes"),
    (_set("versions", {"numpy": 2}), "versions"),
    (_set("training", []), "training"),
    (_set("surprise", 1), "unknown fields"),
    (_set("format_version", True), "format version"),
]


@pytest.mark.parametrize("change,field", BAD_MANIFESTS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_MANIFESTS)])
def test_every_bad_manifest_is_one_clear_error_naming_the_field(b, change, field):
    edit_manifest(b, change)
    with pytest.raises(BundleError) as info:
        cascade.load(b)
    assert field in str(info.value)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"\"text\"", b"{not json", b"\xff\xfe{}", b"{\"threshold\": NaN}"])
def test_manifests_that_are_not_objects_are_refused(b, raw):
    (b / "manifest.json").write_bytes(raw)
    with pytest.raises(BundleError):
        read_bundle(b)


def test_cli_reports_a_bad_manifest_in_one_line(b):
    edit_manifest(b, _set("threshold", True))
    run = cascade_cli("classify", "hello", "--bundle", str(b))
    assert run.returncode == 2 and b"Traceback" not in run.stderr
    assert len(run.stderr.decode().strip().splitlines()) == 1 and b"threshold" in run.stderr


# --- the featurizer spec is bounded ----------------------------------------------------------------

def _edit_features(b: Path, change) -> None:
    spec = json.loads((b / "cheap_features.json").read_text())
    change(spec)
    replace_file(b, "cheap_features.json", json.dumps(spec).encode())


BAD_SPECS = [
    (lambda s: s["blocks"][0].__setitem__("token_pattern", r"(a+)+$"), "token_pattern"),
    (lambda s: s["blocks"][0].__setitem__("token_pattern", r"(?u)\b\w\w+\b|(x*)*y"), "token_pattern"),
    (lambda s: s["blocks"][-1].__setitem__("ngram_range", [1, 50]), "ngram_range"),
    (lambda s: s["blocks"][0].__setitem__("ngram_range", [1, 10]), "ngram_range"),
    (lambda s: s["blocks"][0].__setitem__("ngram_range", ["1", 2]), "ngram_range"),
    (lambda s: s["blocks"][0]["idf"].__setitem__(0, float("nan")), "idf"),
    (lambda s: s["blocks"][0]["idf"].pop(), "idf"),
    (lambda s: s["blocks"][0].__setitem__("analyzer", "char"), "analyzer"),
    (lambda s: s.__setitem__("blocks", []), "blocks"),
    (lambda s: s.__setitem__("blocks", [s["blocks"][0]] * 9), "blocks"),
    (lambda s: s.__setitem__("format", "other/1"), "format"),
]


@pytest.mark.parametrize("change,field", BAD_SPECS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_SPECS)])
def test_featurizer_specs_outside_safe_bounds_are_refused(b, change, field):
    _edit_features(b, change)
    with pytest.raises(BundleError) as info:
        cascade.load(b)
    assert "cheap_features.json" in str(info.value) and field in str(info.value)


@pytest.mark.parametrize("change", [
    lambda t: t.__setitem__("pre_tokenizer", {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated",
                                              "invert": False}),
    lambda t: t.__setitem__("normalizer", {"type": "Replace", "pattern": {"Regex": "(x*)*y"}, "content": ""}),
    lambda t: t["model"].__setitem__("max_input_chars_per_word", 10_000_000),
])
def test_tokenizer_specs_that_could_cost_unbounded_time_are_refused(b, change):
    spec = json.loads((b / "tokenizer.json").read_text())
    change(spec)
    replace_file(b, "tokenizer.json", json.dumps(spec).encode())
    with pytest.raises(BundleError, match="tokenizer.json"):
        cascade.load(b)


def test_a_corrupt_onnx_file_with_a_matching_hash_is_a_clear_error(b):
    replace_file(b, "neural.onnx", b"not a model")
    with pytest.raises(BundleError, match="neural.onnx"):
        cascade.load(b)


# --- the bundle digest -------------------------------------------------------------------------------

def test_digest_pins_the_bundle(b, capsys):
    model = cascade.load(b, threads=1)
    digest = model.bundle.digest
    assert digest.startswith("sha256:") and len(digest) == 71
    assert cascade.load(b, digest=digest, threads=1).bundle.digest == digest
    assert cascade.load(b, digest=digest.split(":")[1].upper(), threads=1)  # prefix and case are optional
    from cascade.cli import main

    assert main(["info", "--json", "--bundle", str(b)]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == digest
    # an edit that keeps the manifest valid (swapped labels) changes the digest: the pin refuses it
    edit_manifest(b, lambda m: m["labels"].__setitem__(slice(0, 2), m["labels"][1::-1]))
    cascade.load(b, threads=1)  # still a valid bundle...
    with pytest.raises(BundleError, match="is not the pinned"):
        cascade.load(b, digest=digest)  # ...but not the one pinned
    run = cascade_cli("classify", "hello", "--bundle", str(b), "--digest", digest)
    assert run.returncode == 2 and b"is not the pinned" in run.stderr


@pytest.mark.parametrize("digest", ["sha256:123", "md5:" + "0" * 64, "", 42])
def test_a_malformed_digest_is_a_clear_error(b, digest):
    with pytest.raises(ValueError, match="digest"):
        cascade.load(b, digest=digest)


def test_nan_never_reaches_json_output(b):
    """cheap_temperature 0 once gave NaN scores and invalid JSON lines; now the manifest is refused."""
    edit_manifest(b, _set("calibration.cheap_temperature", 0.0))
    run = cascade_cli("classify", "hello", "--bundle", str(b))
    assert run.returncode == 2 and b"NaN" not in run.stdout


def test_scores_are_finite_json_for_extreme_but_valid_temperatures(b):
    for t in (1e-3, 1e3):
        edit_manifest(b, _set("calibration.cheap_temperature", t))
        run = cascade_cli("classify", "hello", "card", "--bundle", str(b), "--threads", "1")
        assert run.returncode == 0, run.stderr
        for line in run.stdout.decode().splitlines():
            assert math.isfinite(json.loads(line)["score"])
