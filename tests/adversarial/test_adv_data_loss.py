"""Severe 1: no command replaces or deletes a folder that is not provably a cascade bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from adv_helpers import cascade_cli, copy_bundle, tree

import cascade
from cascade.bundle import read_bundle, write_bundle
from cascade.errors import BundleError


def _decoy(root: Path) -> Path:
    """The red team's case: a project folder that merely contains a file named manifest.json."""
    p = root / "p"
    (p / "src").mkdir(parents=True)
    (p / "manifest.json").write_text('{"name": "app"}')
    (p / "src" / "app.js").write_text("code")
    return p


def _val_csv(path: Path, data) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(zip(data.texts, data.labels))
    return path


def test_calibrate_out_refuses_a_folder_with_a_foreign_manifest(tmp_path, tiny_bundle, tiny_val):
    p = _decoy(tmp_path)
    before = tree(p)
    run = cascade_cli("calibrate", "--bundle", str(tiny_bundle), "--val", str(_val_csv(tmp_path / "v.csv", tiny_val)),
                      "--fallthrough", "0.1", "--out", str(p), "--threads", "1")
    assert run.returncode == 2, run.stderr
    assert b"is not a cascade bundle" in run.stderr and b"Traceback" not in run.stderr
    assert tree(p) == before


def test_train_cheap_out_refuses_a_folder_with_a_foreign_manifest(tmp_path, tiny_bundle, tiny_train, tiny_val):
    from cascade.training.cheap import CheapConfig
    from cascade.training.recipes.refresh import train_cheap

    p = _decoy(tmp_path)
    before = tree(p)
    with pytest.raises(BundleError, match="is not a cascade bundle"):
        train_cheap(tiny_train, tiny_val, p, base=tiny_bundle, config=CheapConfig(min_df=1), progress=False)
    assert tree(p) == before


def test_calibrator_save_refuses_a_folder_with_a_foreign_manifest(tmp_path, tiny_model, tiny_val):
    p = _decoy(tmp_path)
    before = tree(p)
    cal = cascade.calibrate(tiny_model, tiny_val.texts, tiny_val.labels)
    choice = cal.choose(fallthrough=0.5)
    with pytest.raises(BundleError, match="is not a cascade bundle"):
        cal.save(p, choice)
    assert tree(p) == before


@pytest.mark.parametrize("extra", ["notes.txt", "sub/file.txt"])
def test_a_bundle_with_foreign_files_is_not_replaced(tmp_path, tiny_bundle, extra):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    (b / extra).parent.mkdir(exist_ok=True)
    (b / extra).write_text("mine")
    before = tree(b)
    bundle = read_bundle(b)
    files = {n: bundle.file(n) for n in bundle.manifest["files"]}
    with pytest.raises(BundleError, match="not part of the bundle"):
        write_bundle(b, files, {k: v for k, v in bundle.manifest.items() if k != "files"})
    assert tree(b) == before


def test_a_symlinked_target_is_not_followed(tmp_path, tiny_bundle):
    real = copy_bundle(tiny_bundle, tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    bundle = read_bundle(real)
    with pytest.raises(BundleError, match="is a symlink"):
        write_bundle(link, {n: bundle.file(n) for n in bundle.manifest["files"]}, bundle.manifest)


def test_a_real_bundle_is_replaced_and_nothing_else_is_touched(tmp_path, tiny_bundle):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    (tmp_path / "neighbour.txt").write_text("keep")
    bundle = read_bundle(b)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "files"}
    manifest["threshold"] = 0.321
    write_bundle(b, {n: bundle.file(n) for n in bundle.manifest["files"]}, manifest,
                 expected=bundle.expected_hashes())
    assert read_bundle(b).threshold == 0.321
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "neighbour.txt"]


def test_output_folder_problems_are_found_before_the_long_work(tmp_path, tiny_bundle, tiny_train, tiny_val, monkeypatch):
    """train-cheap refuses a bad --out before fitting anything."""
    import cascade.training.recipes.refresh as refresh

    fitted = []
    monkeypatch.setattr(refresh, "fit_and_export_cheap", lambda *a, **k: fitted.append(1))
    with pytest.raises(BundleError):
        refresh.train_cheap(tiny_train, tiny_val, _decoy(tmp_path), base=tiny_bundle, progress=False)
    assert fitted == []
    assert json.loads((tmp_path / "p" / "manifest.json").read_text()) == {"name": "app"}
