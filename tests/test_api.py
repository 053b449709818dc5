"""Package hygiene: a light import, no heavy optional imports, no print or assert for validation."""

import ast
import subprocess
import sys
from pathlib import Path

import cascade

PACKAGE = Path(cascade.__file__).parent


def test_public_api():
    for name in cascade.__all__:
        assert hasattr(cascade, name), name
    assert callable(cascade.classify) and callable(cascade.load)
    assert (PACKAGE / "py.typed").is_file()


def test_import_loads_no_heavy_module():
    code = ("import sys, cascade; heavy = {'torch', 'transformers', 'onnxruntime', 'sklearn', 'onnx', 'fastapi'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_library_code_has_no_print_or_assert():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Assert), f"{path}:{node.lineno}: assert in library code"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                raise AssertionError(f"{path}:{node.lineno}: print in library code")


def test_missing_extra_names_the_extra(monkeypatch):
    import pytest

    from cascade._optional import require

    with pytest.raises(ImportError, match=r"pip install .cascade-text\[train\]."):
        require("surely_not_an_installed_module_xyz", "train")
