"""A new user's pass over `cascade train` and friends: each surprise reproduced."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from adv_helpers import cascade_cli, copy_bundle, edit_manifest, replace_file
from test_train import _topic_data

import cascade
from cascade.datasets import TextDataset
from cascade.errors import BundleError


@pytest.fixture()
def abstaining(tmp_path, tiny_encoder_bundle) -> Path:
    train, val = _topic_data()
    return cascade.train(train, val, tmp_path / "p1", encoder_from=tiny_encoder_bundle, progress=False,
                         abstain=0.34).path


def test_calibrate_rechooses_the_none_of_these_cut(abstaining, tmp_path):
    train, val = _topic_data(repeat=4)
    model = cascade.load(abstaining, threads=1)
    cal = cascade.calibrate(model, train.texts, train.labels)
    saved = cal.save(tmp_path / "cal", cal.choose(fallthrough=0.5))
    m = saved.manifest
    assert m["abstain"]["max_rejected_share"] == 0.34 and "re-chosen" in m["abstain"]["rule"]
    assert model.abstain_below == m["abstain"]["below"]
    rejected = np.mean([p.label is None for p in cascade.load(saved.path, threads=1).classify(train.texts)])
    assert rejected <= 0.34 + 0.05


def test_train_cheap_keeps_abstention_and_records_its_own_training(abstaining, tmp_path):
    train, val = _topic_data(repeat=2)
    out = cascade.train_cheap(train, val, tmp_path / "c", base=abstaining, progress=False)
    m = out.manifest
    assert m["abstain"]["max_rejected_share"] == 0.34
    assert m["training"]["command"] == "cascade train-cheap" and m["training"]["n_train"] == len(train)
    assert m["training"]["base"] == cascade.read_bundle(abstaining).digest


def test_the_shipped_bundle_is_not_replaced_by_accident(tiny_encoder_bundle, monkeypatch):
    from cascade.bundle import check_output_folder
    from cascade.bundle.store import CHECKOUT_BUNDLE

    monkeypatch.delenv("CASCADE_REBUILD_SHIPPED", raising=False)
    with pytest.raises(BundleError, match="is the shipped default bundle"):
        check_output_folder(CHECKOUT_BUNDLE)
    monkeypatch.setenv("CASCADE_REBUILD_SHIPPED", "1")
    assert check_output_folder(CHECKOUT_BUNDLE) == CHECKOUT_BUNDLE


def test_the_bundle_inside_an_installed_package_is_never_written(tmp_path, monkeypatch):
    """Issue 12: `cascade calibrate --save` with no path must not rewrite the bundle a wheel installed,
    even with the rebuild switch on."""
    from cascade.bundle import check_output_folder, store

    packaged = tmp_path / "site-packages" / "cascade" / "default_bundle"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(store, "PACKAGED_BUNDLE", packaged)
    monkeypatch.setenv("CASCADE_REBUILD_SHIPPED", "1")
    assert store.shipped_bundle_path() == packaged
    with pytest.raises(BundleError, match="inside the installed package.*--out"):
        check_output_folder(packaged)


def test_training_data_problems_are_named_in_cascade_words(tmp_path, tiny_encoder_bundle, caplog):
    train, val = _topic_data()
    one = TextDataset(train.texts, ["x"] * len(train))
    with pytest.raises(ValueError, match="1 label\\(s\\).*at least 2"):
        cascade.train(one, TextDataset(val.texts, ["x"] * 3), tmp_path / "a", encoder_from=tiny_encoder_bundle,
                      progress=False)
    empty = TextDataset([""] * len(train), train.labels)
    with pytest.raises(ValueError, match="no word or character n-gram"):
        cascade.train(empty, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False)
    with caplog.at_level("WARNING"):
        cascade.train(train, TextDataset(train.texts[:30], train.labels[:30]), tmp_path / "c",
                      encoder_from=tiny_encoder_bundle, progress=False)
    assert "are also training texts" in caplog.text and "only 30 selection texts" in caplog.text


@pytest.mark.parametrize("config,match", [
    ({"head_C": 0}, "head_C must be a finite positive"), ({"head_C": float("inf")}, "head_C"),
    ({"abstain": "0.05"}, "abstain is the share"), ({"cheap": {"C": 5}}, "CheapConfig"),
    ({"max_length": 2.5}, "max_length must be an integer"),
])
def test_bad_settings_fail_before_any_work(tmp_path, tiny_encoder_bundle, config, match):
    train, val = _topic_data()
    with pytest.raises((ValueError, TypeError), match=match):
        cascade.train(train, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False, **config)


def test_selection_and_certification_may_be_left_to_the_package(tmp_path, tiny_encoder_bundle):
    train, _ = _topic_data(repeat=4)
    bundle = cascade.train(train, None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False)
    splits = bundle.manifest["training"]["splits"]
    sizes = splits["sizes"]
    assert sizes["selection"] > 0 and sizes["certification"] > 0 and sum(sizes.values()) == len(train)
    assert bundle.manifest["training"]["n_train"] == sizes["train"]
    recorded = bundle.train_hashes()
    cert = cascade.carve_splits(train, splits["selection_share"], splits["certification_share"]).certification
    assert cert.texts and not any(t in recorded or recorded.chose(t) for t in cert.texts)


def test_calibrate_data_certifies_on_the_split_the_build_set_aside(tmp_path, tiny_encoder_bundle, capsys):
    import csv
    import json

    from cascade.cli import main

    train, _ = _topic_data(repeat=4)
    data = tmp_path / "mine.csv"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "category"), *zip(train.texts, train.labels)])
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--encoder-from",
                 str(tiny_encoder_bundle)]) == 0
    assert "certification" in capsys.readouterr().out
    rc = main(["calibrate", "--bundle", str(tmp_path / "b"), "--data", str(data), "--fallthrough", "0.3"])
    out, err = capsys.readouterr()
    assert rc == 0 and "selection texts" not in err and "training texts" not in err
    size = cascade.read_bundle(tmp_path / "b").manifest["training"]["splits"]["sizes"]["certification"]
    report = json.loads(out)["calibration"]
    assert report["n_fit"] + report["n_certify"] + report["n_duplicates_dropped"] == size
    other = tmp_path / "other.csv"
    other.write_text("text,category\n" + "".join(f"t{i} word,{'ab'[i % 2]}\n" for i in range(40)))
    assert main(["calibrate", "--bundle", str(tmp_path / "b"), "--data", str(other), "--fallthrough", "0.3"]) == 2
    assert "does not carve into the splits" in capsys.readouterr().err
    assert main(["calibrate", "--bundle", str(tmp_path / "b"), "--fallthrough", "0.3"]) != 0
    assert "give --data" in capsys.readouterr().err


def _npy(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr)
    return buffer.getvalue()


@pytest.mark.parametrize("data", [b"this is not a zip at all", _npy(np.zeros((24, 3), np.float32)),
                                  _npy(np.array([{"a": 1}], dtype=object))])
def test_a_corrupt_head_names_the_file(tmp_path, tiny_encoder_bundle, data):
    b = copy_bundle(tiny_encoder_bundle, tmp_path / "b")
    replace_file(b, "head.npz", data)
    with pytest.raises(BundleError, match="head.npz"):
        cascade.load(b)


def test_neural_type_and_head_must_agree(tmp_path, tiny_encoder_bundle):
    b = copy_bundle(tiny_encoder_bundle, tmp_path / "b")
    edit_manifest(b, lambda m: m["neural"].__setitem__("type", "fine-tuned"))
    with pytest.raises(BundleError, match="belongs to a frozen-encoder stage only"):
        cascade.load(b)
    edit_manifest(b, lambda m: m["neural"].pop("head"))
    with pytest.raises(BundleError, match="sentence encoder .* gives it no head"):
        cascade.load(b)


def test_schema_messages_show_the_wrong_type(tmp_path, tiny_bundle):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    edit_manifest(b, lambda m: m["neural"].__setitem__("max_length", "128"))
    with pytest.raises(BundleError, match="got '128'"):
        cascade.load(b)


def test_the_summary_line_shows_abstention(tmp_path, tiny_encoder_bundle):
    train, val = _topic_data()
    data = tmp_path / "t.csv"
    data.write_text("text,category\n" + "".join(f"{t},{y}\n" for t, y in zip(train.texts, train.labels)))
    run = cascade_cli("train", "--data", str(data), "--out", str(tmp_path / "o"), "--encoder-from",
                      str(tiny_encoder_bundle), "--abstain", "0.2")
    assert run.returncode == 0, run.stderr
    assert b"'none of these' under" in run.stdout
