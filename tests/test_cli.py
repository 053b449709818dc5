import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.cli import main


def test_classify_arguments_print_json_lines(tiny_bundle, capsys):
    assert main(["classify", "my card is lost", "where is my money", "--bundle", str(tiny_bundle),
                 "--top-k", "2", "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all({"label", "score", "stage", "top_k"} <= set(d) for d in lines)


def test_classify_stdin(tiny_bundle):
    texts = ["my card is lost", "", "exchange rate 🙂", "refund please"]
    run = subprocess.run([sys.executable, "-m", "cascade.cli", "classify", "-", "--bundle", str(tiny_bundle),
                          "--threshold", "1.0"], input="\n".join(texts) + "\n", capture_output=True, text=True,
                         check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == len(texts) and {d["stage"] for d in lines} == {"neural"}


def test_info_prints_a_summary_with_the_label_names(tiny_bundle, capsys):
    """It once printed 255 lines of JSON without the labels."""
    import cascade

    labels = cascade.read_bundle(tiny_bundle).labels
    assert main(["info", "--bundle", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "task:      single-label classification, 77 labels" in out and ", ".join(labels) in out
    assert "threshold: " in out and "promise:   none" in out and "digest:    sha256:" in out


def test_info(tiny_bundle, capsys):
    assert main(["info", "--json", "--bundle", str(tiny_bundle)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_labels"] == 77 and "labels" not in info and "files" in info
    assert main(["info", "--bundle", str(tiny_bundle), "--full"]) == 0
    assert len(json.loads(capsys.readouterr().out)["labels"]) == 77


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["info", "--bundle", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cascade info: error:" in err and "no manifest.json" in err
    assert main(["classify", "x", "--bundle", str(tmp_path / "nope")]) == 2


def test_help_for_every_command():
    for cmd in ("classify", "info", "calibrate", "bench", "train-cheap", "finetune"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0


def _write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["utterance", "intent"])
        writer.writerows(zip(texts, labels))
    return path


def test_train_cheap_from_csv(tmp_path, tiny_bundle, tiny_train, tiny_val, capsys):
    data = _write_csv(tmp_path / "train.csv", tiny_train.texts, tiny_train.labels)
    val = _write_csv(tmp_path / "val.csv", tiny_val.texts, tiny_val.labels)
    out = tmp_path / "retrained"
    assert main(["train-cheap", "--data", str(data), "--val", str(val), "--text-col", "utterance",
                 "--label-col", "intent", "--base", str(tiny_bundle), "--out", str(out), "--no-char"]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["cheap"]["config"]["char_ngrams"] is None
    assert manifest["training"]["cheap"]["parity_on_selection"]["fast_argmax_agreement"] == 1.0
    base = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["files"]["neural.onnx"]["sha256"] == base["files"]["neural.onnx"]["sha256"]


def test_train_cheap_refuses_labels_the_neural_stage_lacks(tmp_path, tiny_bundle, tiny_train, capsys):
    data = _write_csv(tmp_path / "train.csv", tiny_train.texts + ["hello"] * 3,
                      tiny_train.labels + ["greeting"] * 3)
    assert main(["train-cheap", "--data", str(data), "--text-col", "utterance", "--label-col", "intent",
                 "--base", str(tiny_bundle), "--out", str(tmp_path / "o")]) == 2
    assert "not in the base bundle's labels" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_version_and_verbose_after_the_command(tiny_bundle, capsys):
    """Issue 12: there was no `cascade --version`, and `-v` was refused after the subcommand."""
    import cascade

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"cascade {cascade.__version__}"
    assert main(["info", "--bundle", str(tiny_bundle), "-v"]) == 0
    assert main(["-v", "info", "--bundle", str(tiny_bundle)]) == 0
    from cascade.errors import CascadeError

    with pytest.raises(CascadeError):  # -v after the command shows the traceback, as before it
        main(["info", "--bundle", str(tiny_bundle / "missing"), "-v"])


def test_help_documents_the_exit_codes_and_info_has_a_description(capsys):
    """Issue 12: exit codes were undocumented and `cascade info --help` had no description."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0  done", "1  internal error", "2  usage error", "3  calibrate"):
        assert code in out
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    assert "Print a summary of a bundle" in capsys.readouterr().out


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, tiny_bundle, tiny_train, tiny_val, capsys):
    """Issue 12: progress bars went to logs and pipes (a fine-tune's log filled with carriage returns)."""
    from cascade.progress import progress_bar

    data = _write_csv(tmp_path / "train.csv", tiny_train.texts, tiny_train.labels)
    val = _write_csv(tmp_path / "val.csv", tiny_val.texts, tiny_val.labels)
    assert main(["train-cheap", "--data", str(data), "--val", str(val), "--text-col", "utterance",
                 "--label-col", "intent", "--base", str(tiny_bundle), "--out", str(tmp_path / "o"), "--no-char"]) == 0
    assert "\r" not in capsys.readouterr().err  # pytest's stderr is not a terminal
    bar = progress_bar(range(3), progress=True)  # a log-line bar where the cascade logger logs INFO; never a drawn one
    assert bar.disable or type(bar).__name__ == "LoggedBar"
    assert progress_bar(range(3), progress=False).disable


def test_evaluate_per_class_gives_each_labels_figures(tiny_bundle, tiny_val, tmp_path, capsys):
    import csv

    path = tmp_path / "held.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "category"), *zip(tiny_val.texts, tiny_val.labels)])
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--data", str(path), "--per-class"]) == 0
    figures = json.loads(capsys.readouterr().out)
    rows = figures["per_class"]
    assert set(rows) == set(tiny_val.labels) and sum(r["support"] for r in rows.values()) == len(tiny_val)
    recall = sum(r["recall"] * r["support"] for r in rows.values()) / len(tiny_val)
    assert recall == pytest.approx(figures["cascade_accuracy"])  # single-label: recall-weighted = accuracy
    shares = sum(r["fall_through_share"] * r["support"] for r in rows.values()) / len(tiny_val)
    assert shares == pytest.approx(figures["fall_through_rate"])
