"""The first hour on a user's own data (issue 25): arguments and missing extras are refused before any
long work, with one line that names the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.calibration.rules import check_request
from cascade.cli import main

MISSING = "no-such-bundle-folder"  # a check that ran after loading would complain about this instead


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--target-accuracy", "95", "write 0.95"),
    ("--target-accuracy", "nan", "target_accuracy must be between 0 and 1"),
    ("--target-f1", "1.5", "target_f1 must be between 0 and 1"),
    ("--target-f1", "nan", "target_f1 must be between 0 and 1"),
    ("--fallthrough", "20", "write 0.2"),
    ("--latency-ms", "inf", "latency_ms must be a positive number"),
    ("--match-neural", "-1", "match_neural"),
])
def test_calibrate_refuses_a_bad_target_before_loading_anything(tmp_path: Path, capsys, flag, value, needle):
    code = main(["calibrate", "--bundle", str(tmp_path / MISSING), "--data", str(tmp_path / "none.csv"),
                 flag, value, "--save"])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert MISSING not in err and "none.csv" not in err


def test_calibrate_refuses_a_bad_confidence_before_loading_anything(tmp_path: Path, capsys):
    code = main(["calibrate", "--bundle", str(tmp_path / MISSING), "--data", str(tmp_path / "none.csv"),
                 "--target-accuracy", "0.9", "--confidence", "95"])
    assert code == 2
    assert "confidence must be in [0.5, 1)" in capsys.readouterr().err


def test_calibrate_plot_without_matplotlib_fails_first_and_names_the_extra(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code = main(["calibrate", "--bundle", str(tmp_path / MISSING), "--data", str(tmp_path / "none.csv"),
                 "--target-accuracy", "0.9", "--save", "--plot", str(tmp_path / "curve.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert "[plot]" in err and MISSING not in err
    assert not (tmp_path / "curve.png").exists()


def test_target_f1_on_a_single_label_bundle_is_refused_before_calibrating(tiny_bundle: Path, tmp_path: Path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,category\nhello,a\n", encoding="utf-8")
    code = main(["calibrate", "--bundle", str(tiny_bundle), "--data", str(data), "--target-f1", "0.9"])
    assert code == 2
    assert "--target-f1 is for multi-label bundles" in capsys.readouterr().err


def test_check_request_returns_the_one_rule_and_its_value():
    assert check_request(target_accuracy=0.9) == ("target_accuracy", 0.9)
    assert check_request(fallthrough=0) == ("fallthrough", 0.0)
    with pytest.raises(ValueError, match="give exactly one of"):
        check_request(target_accuracy=0.9, fallthrough=0.1)
    with pytest.raises(ValueError, match="give exactly one of"):
        check_request()


def test_batch_out_naming_a_folder_is_refused_before_any_work_even_with_overwrite(tmp_path: Path):
    pytest.importorskip("duckdb")
    from cascade.batch import batch

    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n", encoding="utf-8")
    folder = tmp_path / "answers.csv"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="is a folder; give the output a file name"):
        batch(source, folder, model=object(), overwrite=True)  # the model is never reached
    assert (folder / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_batch_into_a_missing_folder_fails_before_any_work(tmp_path: Path):
    pytest.importorskip("duckdb")
    from cascade.batch import batch

    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n", encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OSError, match="not a folder"):
        batch(source, blocker / "answers.csv", model=object())


def test_tune_on_fewer_texts_than_twice_the_base_labels_runs(tiny_bundle: Path, tiny_selection, caplog):
    """It failed with numpy's "Cannot take a larger sample than population"; each trial is now a log line."""
    pytest.importorskip("optuna")
    from cascade.datasets import TextDataset
    from cascade.tuning import tune

    two = sorted(set(tiny_selection.labels))[:2]
    train = TextDataset([f"text {i} about {two[i % 2]}" for i in range(80)], [two[i % 2] for i in range(80)])
    with caplog.at_level("INFO", logger="cascade.tuning"):
        result = tune(train, tiny_selection, trials=2, base=tiny_bundle, progress=False)
    assert result.trials == 2
    lines = [m for m in caplog.messages if m.startswith("tune: trial ")]
    assert len(lines) == 2 and re.search(r"; 2 of 2 done, \d+ s$", lines[-1])


def _run_module(module: str, *args: str, block: str | None = None) -> subprocess.CompletedProcess[str]:
    # a finder that refuses the module, as when it is not installed (a None in sys.modules instead would show
    # scipy a "torch" it then fails to inspect)
    refuse = ("import sys, importlib.abc\n"
              "class Refuse(importlib.abc.MetaPathFinder):\n"
              "    def find_spec(self, name, path, target=None):\n"
              f"        if name.split('.')[0] == {block!r}: raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
              "sys.meta_path.insert(0, Refuse())\n")
    code = (refuse if block else "") + \
        f"import runpy, sys; sys.argv = ['x', *{list(args)!r}]; runpy.run_module({module!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "needle"), [
    (["--layers", "3", "--out", "w", "--learning-rate", "inf"], "--learning-rate inf"),
    (["--layers", "3", "--out", "w", "--threads", "999"], "--threads 999"),
    (["--layers", "3", "--out", ""], "--out: give a new work folder"),
])
def test_pruning_refuses_bad_arguments(args, needle, tmp_path: Path):
    run = _run_module("cascade.training.pruning", *args)
    assert run.returncode == 2
    assert needle in run.stderr


@pytest.mark.parametrize("module", ["cascade.training.pruning", "cascade.training.encoder"])
def test_training_modules_without_the_train_extra_say_which_extra(module: str, tmp_path: Path):
    args = ["--layers", "3", "--out", str(tmp_path / "w")] if module.endswith("pruning") else ["--out", str(tmp_path / "w")]
    run = _run_module(module, *args, block="torch")
    assert run.returncode == 2, run.stderr[-2000:]
    assert "[train]" in run.stderr and "Traceback" not in run.stderr


def test_label_cells_with_spaces_are_joined_and_reported(tmp_path: Path, caplog):
    from cascade.datasets import read_csv

    path = tmp_path / "d.csv"
    path.write_text("text,category\na,refund\nb,refund \nc, card\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="cascade.datasets"):
        data = read_csv(path)
    assert data.labels == ["refund", "refund", "card"]
    assert "2 label cell(s) had spaces around them" in caplog.text and "'refund '" in caplog.text


def test_a_label_holding_a_line_break_is_refused_with_its_line(tmp_path: Path):
    from cascade.datasets import read_csv

    path = tmp_path / "d.csv"
    path.write_text('text,category\na,refund\nb,"ref\nund"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.csv:3: the label .* control character"):
        read_csv(path)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "category": "x\\ty"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.jsonl:1: the label"):
        read_csv(jsonl)


def test_training_refuses_labels_built_by_hand_with_a_line_break_or_spaces():
    from cascade.datasets import TextDataset
    from cascade.training.checks import check_labels

    good = TextDataset(["a"] * 3 + ["b"] * 3, ["x"] * 3 + ["y"] * 3)
    for bad in ("y\nz", " y"):
        data = TextDataset(["a"] * 3 + ["b"] * 3, ["x"] * 3 + [bad] * 3)
        with pytest.raises(ValueError, match="line break or another control character"):
            check_labels(data, good, 1)


def test_a_label_or_labels_column_is_used_when_category_is_absent(tmp_path: Path):
    from cascade.datasets import read_csv

    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\n", encoding="utf-8")
    assert read_csv(one).labels == ["x"]
    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text('{"text": "a", "labels": "x|y"}\n', encoding="utf-8")
    assert read_csv(tagged).labels == ["x|y"]
    both = tmp_path / "both.csv"
    both.write_text("text,label,labels\na,x,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="both 'label' and 'labels'"):
        read_csv(both)
    neither = tmp_path / "neither.csv"
    neither.write_text("text,tag\na,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no label column .*pass --label-col"):
        read_csv(neither)
    preferred = tmp_path / "preferred.csv"
    preferred.write_text("text,category,label\na,x,y\n", encoding="utf-8")
    assert read_csv(preferred).labels == ["x"]


def test_outside_a_terminal_long_work_logs_its_steps_and_a_heartbeat(monkeypatch, caplog):
    """A logged build once went 11 minutes without a line between two steps."""
    import time

    from cascade import progress

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    with caplog.at_level("INFO", logger="cascade"):
        with progress.progress_bar(total=2, desc="train: starting", progress=True) as bar:
            bar.set_description_str("fitting the cheap stage")
            time.sleep(0.1)
            bar.update()
            bar.set_description_str("embedding the training texts")
            bar.update()
    lines = [r.getMessage() for r in caplog.records if r.name == "cascade.progress"]
    assert lines[0].startswith("fitting the cheap stage (")
    assert any(line.startswith("fitting the cheap stage: 1/2 after") and "left" in line for line in lines)
    assert any(line.startswith("embedding the training texts (") for line in lines)


def test_progress_off_or_a_quiet_logger_logs_nothing(monkeypatch, caplog):
    from cascade import progress

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    with caplog.at_level("WARNING", logger="cascade"):
        for _ in progress.progress_bar(range(3), desc="x", progress=True):
            pass
    with caplog.at_level("INFO", logger="cascade"):
        for _ in progress.progress_bar(range(3), desc="y", progress=False):
            pass
    assert not [r for r in caplog.records if r.name == "cascade.progress"]


def test_batch_on_a_full_disk_says_so_in_plain_words(tmp_path: Path, tiny_bundle: Path, capsys):
    """It was "internal error ... TransactionException" (exit 1): a full disk is the user's condition."""
    pytest.importorskip("duckdb")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        source = tmp_path / "in.csv"
        rows = [f"text {i} " + "card payment transfer " * 150 for i in range(400)]  # about 1.4 MB of text
        source.write_text("text\n" + "\n".join(rows) + "\n", encoding="utf-8")
        code = main(["batch", str(source), "--bundle", str(tiny_bundle), "--out", str(mnt / "a.csv"), "--threads", "1"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "no space left on the disk" in err and "internal error" not in err
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_an_empty_csv_cell_reads_the_same_in_batch_and_classify(tmp_path: Path, tiny_bundle: Path, capsys):
    """It was "empty text" in `classify --input` and "no text (null)" in `batch`."""
    import json

    pytest.importorskip("duckdb")
    import cascade

    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,my card has not arrived\n2,\n", encoding="utf-8")
    cascade.batch(source, tmp_path / "o.jsonl", model=cascade.load(tiny_bundle, threads=1), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[1]["error"] == "empty text"
    assert main(["classify", "--bundle", str(tiny_bundle), "--input", str(source)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[1])["error"] == "empty text"


def test_a_taggers_csv_output_joins_topics_as_its_labels_were(tmp_path: Path, tagger: Path):
    """It wrote DuckDB's list syntax, `[trade]`, where the input used `trade|grain`."""
    import csv

    pytest.importorskip("duckdb")
    import cascade

    model = cascade.load(tagger, threads=1)
    source = tmp_path / "in.csv"
    source.write_text("text\nwheat and corn exports rose\n", encoding="utf-8")
    cascade.batch(source, tmp_path / "o.csv", model=model, progress=False)
    row = next(csv.DictReader((tmp_path / "o.csv").open(encoding="utf-8")))
    expected = model.classify("wheat and corn exports rose")
    assert row["labels"] == "|".join(expected.labels) and "[" not in row["labels"]
    assert len(row["scores"].split("|")) == len(expected.labels)


def test_a_csv_column_with_an_empty_header_is_refused_before_work(tmp_path: Path):
    pytest.importorskip("duckdb")
    from cascade.batch import batch

    source = tmp_path / "in.csv"
    source.write_text("text,,note\nhello,1,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="column 2 has an empty header"):
        batch(source, tmp_path / "o.csv", model=object())


def test_the_info_summary_escapes_control_characters_a_bundle_holds():
    """The summary prints label names raw where the JSON escaped them: a bundle must not drive the terminal."""
    from cascade.bundle.card import summary

    text = summary({"labels": ["ok", "evil\x1b[2J"], "threshold": 0.5}, "b\x07", "sha256:0")
    assert "\x1b" not in text and "\x07" not in text and "evil\\x1b[2J" in text


def test_a_trial_left_running_by_a_killed_worker_does_not_hold_the_cap(tmp_path: Path, tiny_bundle: Path,
                                                                       tiny_selection):
    """Red team: a worker killed mid-trial leaves it marked running for good; counted against the cap, it
    stopped every rerun after a 10-minute wait and then failed with "No trials are completed yet"."""
    import socket

    optuna = pytest.importorskip("optuna")
    from cascade.datasets import TextDataset
    from cascade.tuning import storage_of, tune

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    journal = str(tmp_path / "t.journal")
    study = optuna.create_study(study_name="s", storage=storage_of(journal))
    stuck = study.ask()  # stays RUNNING, as a killed worker leaves it
    study._storage.set_trial_user_attr(stuck._trial_id, "worker", f"{socket.gethostname()}:{dead.pid}")
    two = sorted(set(tiny_selection.labels))[:2]
    train = TextDataset([f"text {i} about {two[i % 2]}" for i in range(80)], [two[i % 2] for i in range(80)])
    result = tune(train, tiny_selection, trials=1, base=tiny_bundle, storage=journal, study="s", progress=False)
    assert result.trials == 1


def test_csv_headers_batch_cannot_keep_are_refused_in_one_line(tmp_path: Path, tiny_bundle: Path, capsys):
    """Red team: a first field over 128 KiB was an "internal error"; a BOM hid an empty header; a duplicate
    name came out renamed."""
    pytest.importorskip("duckdb")
    from cascade.batch import batch

    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeff,text\n1,hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="column 1 has an empty header"):
        batch(bom, tmp_path / "o.csv", model=object())
    twice = tmp_path / "twice.csv"
    twice.write_text("id,text,id\n1,hello,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['id'\] appear more than once"):
        batch(twice, tmp_path / "o.csv", model=object())
    long = tmp_path / "long.csv"
    long.write_text("x" * 200_000 + "\nhello\n", encoding="utf-8")
    assert main(["batch", str(long), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "o.csv")]) == 2
    assert "internal error" not in capsys.readouterr().err


def test_the_info_summary_never_rounds_a_promise_up():
    """Red team: a 99.999% target and a 0.999 confidence showed as 100.00% and 100%."""
    from cascade.bundle.card import promise

    choice = {"request": {"target_accuracy": 0.99999, "confidence": 0.999}, "certified": True,
              "expected": {"accuracy_lower_bound": 0.999995}}
    text = promise({"calibration": {"choice": choice}})
    assert "at least 99.999%" in text and "confidence 99.9%" in text and "lower bound 99.9995%" in text
    assert "100" not in text
