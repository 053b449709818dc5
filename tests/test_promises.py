"""Issue 23: promises checked against the texts users send next. The traffic estimate (ATC) declines under a
shift and is silent without one; group and time columns shape the carve; the anytime-valid monitor of
labelled feedback keeps its error rate and catches a drop; `cascade calibrate --traffic` and `cascade monitor`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest

import cascade
from cascade.banking77 import load_banking77
from cascade.calibration import CalibrationWarning
from cascade.calibration.sequential import PromiseMonitor, log_capital_paths
from cascade.calibration.traffic import AnswerConfidence, atc_cut, check
from cascade.datasets import TextDataset


def cascade_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], capture_output=True, timeout=600)


# the estimate itself, on synthetic confidences

def test_atc_recovers_the_accuracy_of_traffic_drawn_like_the_certifying_texts_and_falls_under_a_shift():
    rng = np.random.default_rng(0)

    def draw(n: int, hard: float) -> tuple[AnswerConfidence, np.ndarray]:
        conf = np.clip(rng.beta(8 - 6 * hard, 1.5 + 3 * hard, n), 0, 1)  # a calibrated stage: P(right) = conf
        right = rng.random(n) < conf
        return AnswerConfidence(conf, conf, conf), right.astype(float)

    certify, outcome = draw(4000, 0.0)
    same, same_truth = draw(4000, 0.0)
    hard, hard_truth = draw(4000, 0.5)
    on_same = check(certify, outcome, same, 0.5, 0.95)
    on_hard = check(certify, outcome, hard, 0.5, 0.95)
    assert abs(on_same.estimate - same_truth.mean()) < 0.02  # no shift: the estimate is the accuracy
    # under this shift ATC falls far below its no-shift figure (here below the truth: a promise is declined)
    assert on_hard.estimate < on_same.estimate - 0.1 and on_hard.bound < hard_truth.mean()
    assert on_same.bound <= on_same.estimate
    conf = np.linspace(0, 1, 101)
    assert np.mean(conf > atc_cut(conf, np.r_[np.ones(80), np.zeros(21)])) == pytest.approx(0.8, abs=0.011)


# the whole path, on the shipped bundle

@pytest.fixture(scope="module")
def calibrated():
    model = cascade.load(threads=1)
    cert = load_banking77("certification")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return model, cascade.calibrate(model, cert.texts, cert.labels)


def _scrambled(texts: list[str], seed: int = 0) -> list[str]:
    """Texts unlike any the bundle was built or certified on: the words of banking questions shuffled across
    texts (the same vocabulary, no longer a question anyone asks)."""
    rng = random.Random(seed)
    words = " ".join(texts).split()
    return [" ".join(rng.choice(words) for _ in range(len(t.split()))) for t in texts]


def test_traffic_like_the_certifying_texts_changes_nothing(calibrated):
    model, cal = calibrated
    plain = cal.choose(target_accuracy=0.90)
    cal.observe_traffic(load_banking77("selection").texts, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # silent: no shift warning, no decline
        aware = cal.choose(target_accuracy=0.90)
    assert plain.certified and aware.certified and aware.threshold == plain.threshold
    traffic = aware.expected["traffic"]
    assert traffic["bound"] >= 0.90 and abs(traffic["estimate"] - traffic["certify_figure"]) < 0.02
    assert cal.traffic_["shift"]["p_value"] > 0.01
    assert aware.expected["supported_lower_bound"] == pytest.approx(min(aware.expected["accuracy_lower_bound"],
                                                                         traffic["bound"]))


@pytest.mark.slow
def test_traffic_unlike_the_certifying_texts_declines_the_promise_with_both_figures(calibrated):
    model, cal = calibrated
    assert cal.choose(target_accuracy=0.90).certified  # certified on the certifying texts alone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        cal.observe_traffic(_scrambled(load_banking77("test").texts[:1000]), progress=False)
        choice = cal.choose(target_accuracy=0.90)
    assert not choice.certified and not choice.feasible
    assert "does not support it" in choice.reason and "estimated accuracy" in choice.reason
    assert any("does not look like the certifying texts" in str(w.message) for w in caught)
    assert choice.expected["traffic"]["estimate"] < 0.8
    with pytest.raises(cascade.CascadeError, match="not saved"):
        cal.save(None, choice)


def test_traffic_needs_enough_texts_and_a_calibration_first(calibrated):
    model, cal = calibrated
    with pytest.raises(ValueError, match="at least 100"):
        cal.observe_traffic(["a text"] * 10, progress=False)
    with pytest.raises(RuntimeError, match="calibrate"):
        cascade.calibration.Calibrator(model).observe_traffic(["a"] * 200)


def test_a_saved_promise_carries_the_reference_the_server_estimates_with(calibrated, tmp_path):
    model, cal = calibrated
    cal.observe_traffic(load_banking77("selection").texts, progress=False)
    choice = cal.choose(target_accuracy=0.90)
    bundle = cal.save(tmp_path / "b", choice)
    reference = bundle.manifest["calibration"]["reference"]
    assert reference["promised"] == 0.90 and reference["figure"] == "accuracy" and reference["score"] == "negentropy"
    assert cascade.load(tmp_path / "b").bundle.manifest["calibration"]["reference"] == reference
    assert bundle.manifest["calibration"]["choice"]["expected"]["traffic"]["n_traffic"] == len(load_banking77("selection"))


def test_abstaining_bundles_report_the_traffics_rejected_share(tmp_path, tiny_train, tiny_selection, tiny_val):
    model = cascade.load(cascade.train(tiny_train, tiny_selection, tmp_path / "abst", abstain=0.05,
                                       progress=False).path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = cascade.calibrate(model, tiny_val.texts, tiny_val.labels)
        cal.observe_traffic(load_banking77("test").texts[:300], progress=False)
        choice = cal.choose(fallthrough=0.2)
    abstain = choice.expected["traffic"]["abstain"]
    assert abstain["asked_rejected_share"] == 0.05 and 0.0 <= abstain["traffic_rejected_share"] <= 1.0


# group and time columns

def test_no_group_straddles_two_parts_and_the_newest_texts_certify():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(20_000)]
    texts, labels, groups, times = [], [], [], []
    for label in ("a", "b", "c", "d"):
        for i in range(100):  # unrelated texts (no near-copies), two by each customer, each at its own time
            texts.append(" ".join(rng.choice(vocabulary, 8)))
            labels.append(label)
            groups.append(f"{label}-customer-{i // 2}")
            times.append(float(rng.integers(0, 10**6)))
    order = {g: max(t for t, h in zip(times, groups) if h == g) for g in set(groups)}
    parts = cascade.carve_splits(TextDataset(texts, labels, groups, times, "customer", "created"))
    part_of = {t: name for name in ("train", "selection", "certification") for t in getattr(parts, name).texts}
    seen: dict[str, set[str]] = {}
    for text, group in zip(texts, groups):
        seen.setdefault(group, set()).add(part_of[text])
    assert all(len(names) == 1 for names in seen.values())  # no customer on two sides
    for label in ("a", "b", "c", "d"):  # per label: the newest customers certify, the next newest select
        newest = {name: [order[g] for g, names in seen.items() if g.startswith(label) and name in names]
                  for name in ("train", "selection", "certification")}
        assert min(newest["certification"]) > max(newest["selection"])
        assert min(newest["selection"]) > max(newest["train"])
    assert parts.settings["group_col"] == "customer" and parts.settings["time_col"] == "created"


def test_calibrate_data_reads_the_group_and_time_columns_the_build_carved_by(tmp_path):
    import csv

    from cascade.splits import certification_split

    data = load_banking77("train_full").per_label(12)
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category", "customer", "created"])
        for i, (t, y) in enumerate(zip(data.texts, data.labels)):
            w.writerow([t, y, f"c{i // 2}", f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}"])
    read = cascade.read_csv(path, group_col="customer", time_col="created")
    carved = cascade.carve_splits(read)
    found = certification_split(read, carved.describe())
    assert found.texts == carved.certification.texts
    with pytest.raises(ValueError, match="carved by group column 'customer'"):
        certification_split(cascade.read_csv(path), carved.describe())
    with pytest.raises(ValueError, match="ISO 8601"):
        bad = tmp_path / "bad.csv"
        bad.write_text("text,category,created\nhello,a,yesterday\n")
        cascade.read_csv(bad, time_col="created")


# the anytime-valid monitor of labelled feedback

def test_the_alarm_keeps_its_error_rate_when_the_promise_holds():
    """Simulated streams at exactly the promised accuracy (the hardest case that keeps the promise): the
    alarm fires in at most alpha of them, over 4,000 labelled texts each."""
    rng = np.random.default_rng(1)
    x = (rng.random((1500, 4000)) < 0.92).astype(float)
    fired = (log_capital_paths(x, 0.92) >= np.log(1 / 0.05)).any(axis=1).mean()
    assert fired <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1500)


def test_the_alarm_catches_a_three_point_drop_within_2000_texts():
    rng = np.random.default_rng(2)
    x = (rng.random((1000, 2000)) < 0.89).astype(float)
    fired = (log_capital_paths(x, 0.92) >= np.log(1 / 0.05)).any(axis=1).mean()
    assert fired >= 0.9


def test_the_monitor_equals_the_vectorised_paths_and_bounds_the_mean():
    rng = np.random.default_rng(3)
    x = (rng.random(3000) < 0.88).astype(float)
    monitor = PromiseMonitor(0.92, 0.05)
    state = monitor.update(x)
    path = log_capital_paths(x[None, :], 0.92)[0]
    assert state.log_capital == pytest.approx(path[-1])
    assert state.violated and state.violated_after == int(np.argmax(path >= np.log(20))) + 1
    assert state.lower <= 0.88 <= state.upper and state.upper < 0.92
    with pytest.raises(ValueError, match="between 0 and 1"):
        monitor.update([1.5])


def test_cascade_monitor_reads_labelled_feedback_and_exits_3_on_a_violation(tmp_path):
    test = load_banking77("test")
    path = tmp_path / "feedback.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "category": y}) for t, y in zip(test.texts[:600], test.labels)))
    ok = cascade_cli("monitor", "--data", str(path), "--target", "0.80", "--every", "300")
    lines = [json.loads(line) for line in ok.stdout.decode().splitlines()]
    assert ok.returncode == 0 and len(lines) == 3 and lines[-1]["summary"]["n"] == 600
    assert not lines[-1]["summary"]["violated"] and lines[-1]["summary"]["source"] == "--target"
    bad = cascade_cli("monitor", "--data", str(path), "--target", "0.99")
    assert bad.returncode == 3 and "violated" in bad.stderr.decode()
    none = cascade_cli("monitor", "--data", str(path))  # the shipped bundle promises nothing
    assert none.returncode == 0 and "no promise" in none.stdout.decode()
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"text": "hi", "category": "no_such_intent"}))
    refused = cascade_cli("monitor", "--data", str(wrong))
    assert refused.returncode == 2 and "no_such_intent" in refused.stderr.decode()


@pytest.mark.slow
def test_cascade_calibrate_traffic_prints_both_figures_and_without_it_the_premise(tmp_path):
    traffic = tmp_path / "recent.txt"
    traffic.write_text("\n".join(_scrambled(load_banking77("test").texts[:600])))
    declined = cascade_cli("calibrate", "--target-accuracy", "0.90", "--traffic", str(traffic))
    out = json.loads(declined.stdout)
    assert declined.returncode == 3 and not out["choice"]["certified"] and "traffic" in out["choice"]["expected"]
    assert "does not support it" in declined.stderr.decode()
    plain = cascade_cli("calibrate", "--target-accuracy", "0.90")
    assert plain.returncode == 0 and "note: a promise holds for texts drawn like the certifying texts" in \
        plain.stderr.decode()
    missing = cascade_cli("calibrate", "--target-accuracy", "0.90", "--traffic", str(tmp_path / "none.txt"))
    assert missing.returncode == 2 and "none.txt" in missing.stderr.decode()
