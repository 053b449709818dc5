"""The lint and type configuration in pyproject.toml holds for the whole tree (issue 26): ruff (pyflakes,
pycodestyle, import order, pyupgrade, bugbear, no function above cyclomatic complexity 20) and mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    pytest.importorskip("ruff")
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "cascade", "tests", "benchmarks", "experiments"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_ruff_is_configured_to_catch_complexity(tmp_path):
    """The complexity rule is on: a function with 21 branches fails the project's configuration."""
    pytest.importorskip("ruff")
    body = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(21))
    (tmp_path / "complex.py").write_text(f"def f(x: int) -> int:\n{body}\n    return -1\n")
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                          str(tmp_path / "complex.py")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "C901" in run.stdout, run.stdout


@pytest.mark.slow
def test_mypy_passes(tmp_path):
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
                                str(ROOT / "cascade")])
    assert status == 0, out[-4000:] + err[-2000:]
