"""Issue 23's red-team pass: each case reproduced the bug before its fix. Promises checked on traffic must not
be fooled by certifying texts that are all right, tampered references, dates read as numbers, groups that swallow a
part, repeated feedback, or traffic that repeats one text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from adv_helpers import cascade_cli, edit_manifest

import cascade
from cascade.calibration.traffic import AnswerConfidence, check
from cascade.datasets import TextDataset, parse_time, read_csv
from cascade.serving.promises import FeedbackWatch


def test_certifying_texts_all_right_do_not_make_any_traffic_look_right():
    """Every certifying text right at a threshold put the ATC cut below every confidence: news sent to a banking
    model was estimated 100% right, and the promise certified."""
    rng = np.random.default_rng(0)
    certify = AnswerConfidence(np.ones(700), rng.uniform(-0.1, 0.0, 700), rng.uniform(-0.1, 0.0, 700))
    foreign = AnswerConfidence(np.ones(500), rng.uniform(-3.0, -1.0, 500), rng.uniform(-3.0, -1.0, 500))
    result = check(certify, np.ones(700), foreign, 0.5, 0.95)
    assert result.estimate == 0.0 and result.bound == 0.0
    alike = AnswerConfidence(np.ones(500), rng.uniform(-0.1, 0.0, 500), rng.uniform(-0.1, 0.0, 500))
    assert check(certify, np.ones(700), alike, 0.5, 0.95).estimate > 0.98  # traffic like them still reads right


def _reference(**change: object) -> dict:
    return {"threshold": 0.5, "atc_cut": -0.2, "certify_figure": 0.95, "figure": "accuracy", "promised": 0.9,
            "score": "negentropy", **change}


@pytest.mark.parametrize(("change", "field"), [
    ({"promised": 1.0}, "promised"),  # passed validation, then the server failed to start
    ({"figure": "mean_text_f1"}, "figure"),  # a tagger's figure on a single-label bundle
    ({"score": "set_prob"}, "score"),
    ({"threshold": 0.9}, "threshold"),  # a cut read at another routing than the bundle's
])
def test_a_reference_that_does_not_fit_its_bundle_is_refused(b: Path, change: dict, field: str):
    def put(reference: dict) -> None:
        def edit(manifest: dict) -> None:
            manifest["threshold"] = 0.5
            manifest.setdefault("calibration", {})["reference"] = reference
        edit_manifest(b, edit)

    put(_reference())
    cascade.load(b)  # the untampered reference loads
    put(_reference(**change))
    with pytest.raises(cascade.BundleError, match=f"calibration.reference.{field}"):
        cascade.load(b)


def test_numbers_and_dates_in_one_time_column_are_refused(tmp_path: Path):
    """'20251231' read as a number (a 1970 time) beside ISO dates: the newest texts went to training, silently."""
    assert parse_time("2025-12-31", "x", "ts")[1] == "date" and parse_time("20251231", "x", "ts")[1] == "number"
    path = tmp_path / "mixed.csv"
    path.write_text("text,category,ts\na,x,2025-12-30\nb,y,20251231\n")
    with pytest.raises(ValueError, match=r"mixed.csv:3: the time 'ts' is a number, but .*:2 holds a date"):
        read_csv(path, time_col="ts")
    path.write_text("text,category,ts\na,x,20251230\nb,y,20251231\n")
    assert read_csv(path, time_col="ts").times == [20251230.0, 20251231.0]  # all numbers: their order is kept


def test_a_group_that_holds_every_text_is_refused_before_training():
    """All texts in one group: a warning, a fitted cheap stage, then scikit-learn's 'Found array with 0 sample(s)'."""
    texts = [f"text number {i} about {label}" for label in "abc" for i in range(30)]
    labels = [label for label in "abc" for _ in range(30)]
    data = TextDataset(texts, labels, ["one customer"] * 90, None, "customer", None)
    with pytest.raises(ValueError, match=r"no texts can go to the selection part: the groups of column 'customer' "
                                         r"are too big.*largest holds 90 of 90"):
        cascade.carve_splits(data)


def test_one_label_swallowed_by_a_group_is_named_in_a_warning(caplog: pytest.LogCaptureFixture):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(90)]  # no two near-copies
    labels = [label for label in "abc" for _ in range(30)]
    groups = ["big"] * 30 + [f"g{i}" for i in range(60)]  # label a: one group of all its texts
    with caplog.at_level("WARNING", logger="cascade.splits"):
        parts = cascade.carve_splits(TextDataset(texts, labels, groups, None, "customer", None))
    assert "a" not in parts.selection.labels and "'a'" in caplog.text and "no selection texts" in caplog.text


def test_traffic_files_name_their_option_and_their_kind(tmp_path: Path, tiny_bundle: Path, tiny_val: TextDataset):
    val = tmp_path / "val.csv"
    val.write_text("text,category\n" + "".join(f'"{t}",{y}\n' for t, y in zip(tiny_val.texts, tiny_val.labels)))
    table = tmp_path / "traffic.csv"
    table.write_text("body\n" + "".join(f'"{t}"\n' for t in tiny_val.texts))
    run = cascade_cli("calibrate", "--bundle", str(tiny_bundle), "--val", str(val), "--target-accuracy", "0.5",
                      "--traffic", str(table))
    assert run.returncode == 2 and "pass the right --traffic-col" in run.stderr.decode()
    parquet = tmp_path / "traffic.parquet"
    parquet.write_bytes(b"PAR1\x00\x00PAR1")
    run = cascade_cli("calibrate", "--bundle", str(tiny_bundle), "--val", str(val), "--target-accuracy", "0.5",
                      "--traffic", str(parquet))
    assert run.returncode == 2 and "traffic.parquet" in run.stderr.decode() and "UTF-16" not in run.stderr.decode()
    few = tmp_path / "few.txt"
    few.write_text("\n".join(["the same text"] * 150 + [f"text {i}" for i in range(20)]))
    run = cascade_cli("calibrate", "--bundle", str(tiny_bundle), "--val", str(val), "--target-accuracy", "0.5",
                      "--traffic", str(few))
    assert run.returncode == 2 and "few.txt: 21 distinct texts" in run.stderr.decode()


def test_traffic_that_repeats_one_text_is_one_text(tiny_model, tiny_val: TextDataset):
    cal = cascade.calibrate(tiny_model, tiny_val.texts, tiny_val.labels)
    with pytest.raises(ValueError, match="1 distinct traffic texts"):
        cal.observe_traffic(["I lost my card"] * 150, progress=False)


def test_calibrate_data_on_a_carve_by_groups_given_in_python_says_what_to_do(tmp_path: Path):
    """The recorded column '(given)' was looked for in the file, with a hint to a flag calibrate does not have."""
    from cascade.cli.use import _certification_data

    args = argparse.Namespace(val=None, data=tmp_path / "x.csv", text_col="text", label_col="category")
    manifest = {"training": {"splits": {"group_col": "(given)", "certification_share": 0.1, "sizes": {}}}}
    with pytest.raises(ValueError, match="given in Python, not read from a column.*--val"):
        _certification_data(args, manifest)


def test_feedback_counts_a_text_once_however_often_it_is_posted():
    """One text posted 20 times with a wrong label tripped the alarm: 20 errors from one draw."""
    watch = FeedbackWatch(0.9, "accuracy")
    for _ in range(20):
        texts = ["the same text"]
        fresh = [t for t, new in zip(texts, watch.unseen(texts)) if new]
        if fresh:
            watch.record(fresh, np.zeros(len(fresh)))
    assert watch.state.n == 1 and not watch.state.violated
    assert watch.unseen(["a", "b", "a", "the same text"]) == [True, True, False, False]
    state, counted = watch.record(["a", "a"], np.zeros(2))  # a concurrent repeat is dropped at record time too
    assert counted == 1 and state.n == 2


def test_cascade_monitor_skips_repeated_texts(tmp_path: Path, tiny_bundle: Path, tiny_val: TextDataset):
    path = tmp_path / "feedback.jsonl"
    rows = [{"text": tiny_val.texts[0], "category": tiny_val.labels[0]}] * 5 + \
        [{"text": t, "category": y} for t, y in zip(tiny_val.texts[1:30], tiny_val.labels[1:30])]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    run = cascade_cli("monitor", "--bundle", str(tiny_bundle), "--data", str(path), "--target", "0.5")
    summary = json.loads(run.stdout.decode().splitlines()[-1])["summary"]
    assert summary["repeated_texts_skipped"] == 4 and summary["n"] == 30
