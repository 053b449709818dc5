"""README.md's examples run verbatim: its Python blocks in order, in one namespace, and its first console
session (the answers it shows must be the answers the shipped bundle gives)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_python_examples_run_verbatim(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the calibration example draws its curve
    pytest.importorskip("ray.data")  # the scale-out example
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASCADE_BUNDLE", raising=False)
    blocks = _blocks("python")
    assert len(blocks) >= 3
    namespace: dict = {}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    finally:
        if "ray" in namespace:  # the scale-out example started a local Ray
            namespace["ray"].shutdown()
    assert (tmp_path / "curve.png").is_file() and (tmp_path / "my-bundle" / "manifest.json").is_file()
    assert namespace["model"].bundle.digest == namespace["saved"].digest


def test_the_first_console_session_shows_what_the_shipped_bundle_answers(tmp_path, monkeypatch):
    monkeypatch.delenv("CASCADE_BUNDLE", raising=False)
    session = _blocks("console")[0].splitlines()
    cli = str(Path(sys.executable).parent / "cascade")
    (tmp_path / "texts.txt").write_text("I still have not received my new card\nhow do I top up?\n")
    i = 0
    while i < len(session):
        command = session[i]
        assert command.startswith("$ cascade "), command
        shown = []
        i += 1
        while i < len(session) and not session[i].startswith("$ "):
            shown.append(session[i])
            i += 1
        line = command[2:].split("  #")[0]
        run = subprocess.run(f"{shlex.quote(cli)} {line.removeprefix('cascade ')}", shell=True, cwd=tmp_path,
                             capture_output=True, text=True, check=True)
        for got, want in zip(run.stdout.splitlines(), shown, strict=True):
            got_d, want_d = json.loads(got), json.loads(want)
            assert (got_d["label"], got_d["stage"]) == (want_d["label"], want_d["stage"])
            assert got_d["score"] == pytest.approx(want_d["score"], abs=1e-4)
