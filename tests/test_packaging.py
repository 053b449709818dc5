"""Packaging: the distribution name, the wheel's contents, and an editable install a type checker can see."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_the_distribution_name_is_the_one_every_hint_uses():
    """`cascade` on PyPI is an unrelated project: installing 'cascade[train]' would fetch it."""
    from cascade._optional import DISTRIBUTION

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "cascade-text"
    stale = []
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "cascade").rglob("*.py"),
                 *(ROOT / "notebooks").glob("*.ipynb")]:
        text = path.read_text(encoding="utf-8")
        if "'cascade[" in text or '"cascade[' in text or "install cascade" in text:
            stale.append(path.relative_to(ROOT))
    assert not stale, f"hints naming the wrong distribution in {stale}"


@pytest.mark.skipif(shutil.which("pip") is None and not (Path(sys.executable).parent / "pip").exists(),
                    reason="pip is needed to build the wheel")
def test_the_wheel_carries_the_default_bundle_and_nothing_of_the_clone(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(ROOT), "-w",
                            str(tmp_path)], capture_output=True, text=True)
    if built.returncode != 0 and "Could not find a version that satisfies" in built.stderr:
        pytest.skip("the build backend (hatchling) could not be fetched")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("cascade_text-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"cascade/default_bundle/{p.name}" for p in (ROOT / "artifacts").iterdir() if p.is_file()}
    assert shipped <= names
    assert "cascade/py.typed" in names and "cascade/data/banking77/train.csv" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "experiments", "runs", "notebooks", "artifacts")
                or n.endswith(".pyc") or "reuters" in n.lower()]


def test_a_type_checker_finds_the_installed_package(tmp_path, monkeypatch):
    """An editable install whose package a type checker cannot see makes py.typed useless (issue 12)."""
    mypy = pytest.importorskip("mypy.api")
    monkeypatch.chdir(tmp_path)  # away from the clone, as a user's project is
    snippet = tmp_path / "use.py"
    snippet.write_text("import cascade\nreveal_type(cascade.classify('a text'))\n")
    out, err, status = mypy.run([str(snippet), "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"),
                                 "--no-incremental"])
    assert "Cannot find implementation" not in out, out
    assert 'Revealed type is "cascade.model.Prediction"' in out, out + err
