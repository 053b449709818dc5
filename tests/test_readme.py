"""README.md's and the documentation's examples run verbatim: their Python blocks in reading order (README,
then the site's pages in navigation order), in one namespace, as a reader following along would; README's
first console session (the answers it shows must be the answers the shipped bundle gives); and the site
builds with ``mkdocs build --strict`` (no broken link, no missing page or included result file)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _blocks(kind: str, path: Path = README) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def _pages() -> list[Path]:
    """The site's pages in navigation order (mkdocs.yml's nav: one ``- Title: page.md`` a line)."""
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.M)
    return [ROOT / "docs" / page for page in nav]


def test_every_page_is_in_the_navigation():
    assert sorted(p.name for p in _pages()) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.slow
def test_the_python_examples_run_verbatim(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the calibration example draws its curve
    pytest.importorskip("ray.data")  # the scale-out example
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASCADE_BUNDLE", raising=False)
    blocks = [(README.name, code) for code in _blocks("python")]
    blocks += [(page.name, code) for page in _pages() for code in _blocks("python", page)]
    assert len(blocks) >= 5
    namespace: dict = {}
    try:
        for i, (where, code) in enumerate(blocks):
            exec(compile(code, f"{where} python block {i + 1}", "exec"), namespace)
    finally:
        if "ray" in namespace:  # the scale-out example started a local Ray
            namespace["ray"].shutdown()
    assert (tmp_path / "curve.png").is_file() and (tmp_path / "my-bundle" / "manifest.json").is_file()
    assert (tmp_path / "my-first-bundle" / "manifest.json").is_file()
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


def test_readme_is_a_front_door():
    """Short, with the own-labels quick start on its first screen."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    assert any(line.startswith("## Your own labels") for line in lines[:40])


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "site" / "results" / "index.html").is_file()


@pytest.mark.slow
def test_the_own_labels_quick_start_runs(tmp_path, monkeypatch):
    """README's "Your own labels" commands, verbatim, on a small file of six BANKING77 intents (the server,
    which would not return, excepted)."""
    import csv

    import cascade

    block = next(b for b in _blocks("bash") if "cascade train --data tickets.csv" in b)
    keep = {"card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed", "terminate_account",
            "age_limit"}
    for name, split in (("tickets.csv", "train"), ("held_out.csv", "test")):
        data = cascade.load_banking77(split)
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("text", "category"),
                                      *((t, lab) for t, lab in zip(data.texts, data.labels) if lab in keep)])
    (tmp_path / "new_tickets.csv").write_text("text\nI still have not received my new card\nhow old must I be?\n",
                                             encoding="utf-8")
    monkeypatch.delenv("CASCADE_BUNDLE", raising=False)
    cli = str(Path(sys.executable).parent / "cascade")
    ran = []
    for line in block.splitlines():
        command = line.split("  #")[0].strip()
        command = command.split("&& ", 1)[1] if command.startswith("pip install") and "&& " in command else command
        if not command.startswith("cascade ") or command.startswith("cascade serve"):  # serve would not return
            continue
        if command.startswith("cascade batch"):
            pytest.importorskip("duckdb")
        run = subprocess.run(f"{shlex.quote(cli)} {command.removeprefix('cascade ')}", shell=True, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (command, run.stderr[-2000:])
        ran.append(command.split()[1])
    assert ran == ["train", "evaluate", "calibrate", "classify", "batch"]
    assert json.loads(run.stdout)["rows"] > 0


def test_the_test_split_copies_readme_reports_are_counted():
    """Issue 26: README says how many BANKING77 test texts are copies of training or selection texts; the
    figure is counted here, from the data, with the rule the builds use (cascade.text.dedup_key)."""
    from cascade.banking77 import load_banking77
    from cascade.text import dedup_key

    seen = {dedup_key(t) for part in ("train", "selection") for t in load_banking77(part).texts}
    copies = sum(dedup_key(t) in seen for t in load_banking77("test").texts)
    stated = re.search(r"(\d+) of the 3,080 test texts are copies", (ROOT / "README.md").read_text())
    assert stated is not None and int(stated.group(1)) == copies
