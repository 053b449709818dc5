"""Every generated table in README and the docs is what its committed result file renders to (issue 26):
the table is regenerated here from the JSON and compared with the committed Markdown."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_benchmark_table_in_readme_and_the_docs_is_results_json():
    run = _script("run")
    data = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    table = run.render(data["meta"], data["systems"])
    assert (ROOT / "benchmarks" / "results.md").read_text() == table
    readme = (ROOT / "README.md").read_text()
    assert "<!-- bench:start -->\n" + table + "<!-- bench:end -->" in readme


@pytest.mark.parametrize("name", ["reuters_results", "reuters_results_finetuned"])
def test_the_reuters_tables_are_their_result_files(name):
    reuters = _script("reuters")
    result = json.loads((ROOT / "benchmarks" / f"{name}.json").read_text())
    speeds = result["texts_per_s"]
    args = argparse.Namespace(fp32="fp32" in speeds, pytorch="pytorch" in speeds, rounds=len(speeds["cheap"]))
    assert reuters.markdown(result, args) == (ROOT / "benchmarks" / f"{name}.md").read_text()


def test_a_changed_figure_is_caught():
    run = _script("run")
    data = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    name = next(iter(data["systems"]))
    data["systems"][name]["accuracy"] += 0.01
    assert run.render(data["meta"], data["systems"]) != (ROOT / "benchmarks" / "results.md").read_text()


def test_the_docs_include_result_tables_rather_than_copy_them():
    """A docs page shows a result file's table by including the file (pymdownx.snippets), never as a copy
    that a rerun would leave stale: no table row of a committed result file appears in a page's own text."""
    results = sorted((ROOT / "benchmarks").glob("*.md")) + sorted((ROOT / "experiments").glob("*.md"))
    copied = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for result in results:
            rows = [line for line in result.read_text(encoding="utf-8").splitlines()
                    if line.startswith("| ") and not line.startswith("|---") and line.count("|") > 3]
            header = rows[:1]  # a header row alone may repeat a column layout; a data row may not
            copied += [f"{page.name}: {row[:60]}" for row in rows if row not in header and row in text]
    assert not copied, copied
