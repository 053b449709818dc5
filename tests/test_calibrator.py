"""Every way of choosing, the infeasible paths, the guard rails, saving, plotting and the CLI."""

import json
import warnings

import numpy as np
import pytest

import cascade
from cascade.calibration import GRID, CalibrationWarning, Calibrator


@pytest.fixture()
def model(tiny_bundle):
    return cascade.load(tiny_bundle, threads=1)


@pytest.fixture()
def cal(model, tiny_val):
    return cascade.calibrate(model, tiny_val.texts, tiny_val.labels)


def test_calibrate_fits_and_reports(cal, tiny_val):
    report = cal.report()
    assert cal.n_fit_ + cal.n_certify_ == len(tiny_val) and 0.15 < cal.n_fit_ / len(tiny_val) < 0.45
    assert report["cheap_temperature"] > 0 and report["neural_temperature"] > 0
    assert set(report["aurc"]) == {"max_prob", "margin"}
    assert report["measure"] == min(report["aurc"], key=report["aurc"].get)
    for stage in ("cheap", "neural"):
        assert 0 <= report["ece"][stage]["after"] <= 1 and 0 <= report["ece"][stage]["before"] <= 1
    assert report["costs_ms_per_text"]["cheap"] > 0 and report["machine"]


def test_temperature_scaling_lowers_log_loss(cal, model, tiny_val):
    from cascade.calibration.calibrator import _fit_part

    y = np.array([model.labels.index(label) for label in tiny_val.labels])
    fit = _fit_part(tiny_val.texts)
    logits = model.cheap.logits([t for t, f in zip(tiny_val.texts, fit) if f])
    from scipy.special import log_softmax

    def nll(t):
        return -log_softmax(logits / t, axis=1)[np.arange(len(logits)), y[fit]].mean()

    assert nll(cal.temperatures_["cheap"]) <= nll(1.0) + 1e-9


def test_curve(cal):
    curve = cal.curve
    assert np.all(np.diff(curve.threshold) > 0) and np.all(np.diff(curve.fall_through_rate) > 0)
    costs = cal.costs_ms_
    np.testing.assert_allclose(curve.ms_per_text, costs["cheap"] + curve.fall_through_rate * costs["neural"])
    assert curve.fall_through_rate[0] == 0.0 and len(curve.rows()) == len(curve.threshold)


def test_target_accuracy_feasible_promise_is_a_lower_bound(cal):
    cheap_alone = cal.curve.accuracy[0]
    target = round(cheap_alone - 0.15, 2)
    choice = cal.choose(target_accuracy=target, confidence=0.9)
    assert choice.feasible and choice.mode == "target_accuracy" and choice.threshold in GRID
    assert choice.expected["accuracy_lower_bound"] >= target
    assert choice.expected["accuracy"] >= choice.expected["accuracy_lower_bound"]


def test_target_accuracy_infeasible_says_why_and_how_many_texts(cal):
    with pytest.warns(CalibrationWarning, match="cannot be promised"):
        choice = cal.choose(target_accuracy=0.999)
    assert not choice.feasible and not choice.certified
    assert "cannot be promised" in choice.reason and "Closest feasible" in choice.reason
    assert "accuracy_lower_bound" not in choice.expected and choice.expected["kind"] == "estimate"


def test_only_a_certified_choice_carries_a_lower_bound(cal):
    """fallthrough, latency and match-neural choices are estimates: nothing reads like a promise."""
    for choice in (cal.choose(fallthrough=0.3), cal.choose(latency_ms=100.0), cal.choose(match_neural=5.0)):
        assert not choice.certified and choice.expected["kind"] == "estimate"
        assert not any(key.endswith("_lower_bound") for key in choice.to_dict()["expected"])
    certified = cal.choose(target_accuracy=round(cal.curve.accuracy[0] - 0.15, 2), confidence=0.9)
    assert certified.certified and certified.to_dict()["certified"] and "accuracy_lower_bound" in certified.expected


def test_an_infeasible_target_writes_nothing_unless_asked(cal, tiny_bundle, tiny_val, tmp_path):
    import csv
    import subprocess
    import sys

    with pytest.warns(CalibrationWarning):
        choice = cal.choose(target_accuracy=0.999)
    with pytest.raises(cascade.CascadeError, match="not saved: .*allow_uncertified"):
        cal.save(tmp_path / "out", choice)
    assert not (tmp_path / "out").exists()
    assert cal.save(tmp_path / "out", choice, allow_uncertified=True).threshold == choice.threshold
    val = tmp_path / "val.csv"
    with val.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "category"), *zip(tiny_val.texts, tiny_val.labels)])
    run = subprocess.run([sys.executable, "-m", "cascade.cli", "calibrate", "--bundle", str(tiny_bundle), "--val",
                          str(val), "--target-accuracy", "0.999", "--out", str(tmp_path / "cli"), "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 3 and json.loads(run.stdout)["saved"] is None and not (tmp_path / "cli").exists()


def test_samples_needed():
    from cascade.calibration import clopper_pearson_lower, samples_needed

    n = samples_needed(0.95, 0.93, 0.95)
    assert n is not None and clopper_pearson_lower(np.floor(0.95 * n), n, 0.95) >= 0.93
    assert clopper_pearson_lower(np.floor(0.95 * (n - 50)), n - 50, 0.95) < 0.93
    assert samples_needed(0.92, 0.93, 0.95) is None


def test_fallthrough(cal):
    choice = cal.choose(fallthrough=0.2)
    assert choice.feasible and choice.expected["fall_through_rate"] <= 0.2
    assert choice.expected["fall_through_rate"] == max(r for r in cal.curve.fall_through_rate if r <= 0.2)
    assert cal.choose(fallthrough=0.0).expected["fall_through_rate"] == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        cal.choose(fallthrough=1.5)


def test_latency(cal):
    budget = cal.costs_ms_["cheap"] + 0.5 * cal.costs_ms_["neural"]
    choice = cal.choose(latency_ms=budget)
    assert choice.feasible and choice.expected["ms_per_text"] <= budget + 1e-12
    with pytest.warns(CalibrationWarning, match="over the"):
        tight = cal.choose(latency_ms=cal.costs_ms_["cheap"] / 10)
    assert not tight.feasible and tight.expected["fall_through_rate"] == 0.0


def test_match_neural(cal):
    choice = cal.choose(match_neural=1.0)
    neural_acc = cal.curve.accuracy[-1]
    assert choice.feasible and choice.expected["accuracy"] >= neural_acc - 0.01 - 1e-12


def test_exactly_one_rule(cal):
    with pytest.raises(ValueError, match="exactly one"):
        cal.choose()
    with pytest.raises(ValueError, match="exactly one"):
        cal.choose(target_accuracy=0.5, fallthrough=0.1)
    with pytest.raises(ValueError, match="confidence must be"):
        cal.choose(target_accuracy=0.5, confidence=1.0)


def test_unfitted_calibrator(model):
    with pytest.raises(RuntimeError, match="calibrate"):
        Calibrator(model).choose(fallthrough=0.1)


def test_guard_rail_overlap_with_training_data(model, tiny_train):
    with pytest.warns(CalibrationWarning, match="are training texts of this bundle"):
        cascade.calibrate(model, tiny_train.texts, tiny_train.labels)


def test_selection_texts_are_recorded_and_calibrating_on_them_warns(model, tiny_selection, tiny_val):
    recorded = model.bundle.train_hashes()
    assert all(recorded.chose(t) for t in tiny_selection.texts)
    assert not any(recorded.chose(t) for t in tiny_val.texts)
    with pytest.warns(CalibrationWarning, match="are selection texts of this bundle"):
        cal = cascade.calibrate(model, tiny_selection.texts, tiny_selection.labels)
    assert any("selection texts" in w for w in cal.warnings_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        cascade.calibrate(model, tiny_val.texts, tiny_val.labels)  # held-out texts: no warning


def test_guard_rail_unknown_labels(model, tiny_val):
    labels = list(tiny_val.labels)
    labels[0] = labels[1] = "not_a_bundle_label"
    with pytest.warns(CalibrationWarning, match="labels the bundle does not know"):
        cal = cascade.calibrate(model, tiny_val.texts, labels)
    assert any("does not know" in w for w in cal.warnings_)


def test_guard_rail_label_coverage(model, tiny_val):
    with pytest.warns(CalibrationWarning, match="cover only"):
        cascade.calibrate(model, tiny_val.texts[:60], tiny_val.labels[:60])


def test_bad_input(model, tiny_val):
    with pytest.raises(ValueError, match="texts but"):
        cascade.calibrate(model, tiny_val.texts, tiny_val.labels[:-1])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        cascade.calibrate(model, ["a", None], ["card_arrival", "card_arrival"])


def test_save_writes_bundle_and_routes_with_it(cal, tiny_bundle, tmp_path, tiny_val):
    choice = cal.choose(fallthrough=0.3)
    saved = cal.save(tmp_path / "calibrated", choice)
    manifest = saved.manifest
    assert manifest["threshold"] == choice.threshold
    assert manifest["calibration"]["choice"]["mode"] == "fallthrough"
    reloaded = cascade.load(saved.path, threads=1)
    assert reloaded.measure == cal.measure_ and reloaded.threshold == choice.threshold
    assert reloaded.cheap.temperature == cal.temperatures_["cheap"]
    stages = [p.stage for p in reloaded.classify(tiny_val.texts)]
    assert 0 < stages.count("neural") < len(stages)


def test_save_needs_a_choice(model, tiny_val):
    cal = cascade.calibrate(model, tiny_val.texts, tiny_val.labels)
    with pytest.raises(ValueError, match="choose"):
        cal.save()


def test_plot(cal, tmp_path):
    choice = cal.choose(fallthrough=0.25)
    path = cal.plot(tmp_path / "curve.png", choice)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_the_plot_shows_the_certified_bound_against_the_threshold(cal):
    """Issue 12: without the lower bound on a threshold axis, "infeasible" could not be seen."""
    from cascade.calibration.statistics import GRID

    choice = cal.choose(target_accuracy=0.999)
    assert not choice.feasible
    fig = cal.plot(choice=choice)
    third = fig.axes[2]
    lines = {line.get_label(): line for line in third.get_lines()}
    bound = lines["certified lower bound (95% confidence)"]
    assert "threshold" in third.get_xlabel() and list(bound.get_xdata()) == list(GRID)
    assert max(bound.get_ydata()) < 99.9 and "target (above the bound: infeasible)" in lines
    assert list(lines[f"chosen threshold {choice.threshold:.3f}"].get_xdata()) == [choice.threshold] * 2


def test_cli_calibrate(tiny_bundle, tiny_val, tmp_path, capsys):
    import csv

    from cascade.cli import main

    val = tmp_path / "val.csv"
    with val.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "category"), *zip(tiny_val.texts, tiny_val.labels)])
    out = tmp_path / "cal-bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        rc = main(["calibrate", "--val", str(val), "--bundle", str(tiny_bundle), "--fallthrough", "0.25",
                   "--plot", str(tmp_path / "c.png"), "--out", str(out), "--threads", "1"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["choice"]["feasible"] and (tmp_path / "c.png").is_file()
    assert cascade.read_bundle(out).manifest["calibration"]["measure"] == result["calibration"]["measure"]
    assert main(["calibrate", "--val", str(val), "--bundle", str(tiny_bundle), "--target-accuracy", "0.999"]) == 3
    assert "cannot be promised" in capsys.readouterr().err


def _rig(cal, bad_class: int, rng_seed: int = 0):
    """Replace the calibrator's scores by synthetic ones: 2,000 texts over 5 classes; the cheap stage is
    right 95% of the time, except on texts it assigns to ``bad_class`` (30%)."""
    rng = np.random.default_rng(rng_seed)
    n, k = 2000, len(cal.model.labels)
    pred = rng.integers(0, 5, n)
    cheap_p = np.full((n, k), 0.1 / (k - 1))
    cheap_p[np.arange(n), pred] = rng.uniform(0.5, 1.0, n)
    cheap_p /= cheap_p.sum(1, keepdims=True)
    ok = np.where(pred == bad_class, rng.random(n) < 0.3, rng.random(n) < 0.95)
    from cascade.calibration.scoring import Scored

    cal._fit = rng.random(n) < 0.3
    cal._scored = Scored({}, {}, cheap_p, cheap_p, ok, rng.random(n) < 0.9, pred)
    cal._policies = {False: cal._make_policy(())}
    return pred


def test_per_class_flags_the_sharply_worse_class(cal):
    pred = _rig(cal, bad_class=3)
    assert cal.flag_classes() == (cal.model.labels[3],)
    choice = cal.choose(fallthrough=0.5, per_class=True)
    assert choice.always_neural == (cal.model.labels[3],)
    share_bad = np.mean(pred[~cal._fit] == 3)
    assert choice.expected["fall_through_rate"] >= share_bad - 1e-12  # that class always falls through
    plain = cal.choose(fallthrough=0.5)
    assert plain.always_neural == () and cal.curve_for(True).fall_through_rate[0] > 0.0


def test_per_class_flags_nothing_when_classes_agree(cal):
    _rig(cal, bad_class=99)  # no class is worse
    assert cal.flag_classes() == ()


def test_router_sends_always_neural_classes_on(model, tiny_val):
    texts = tiny_val.texts[:40]
    cheap_labels = [p.label for p in model.classify(texts, threshold=0.0)]
    model.always_neural = [cheap_labels[0]]
    stages = [p.stage for p in model.classify(texts, threshold=0.0)]
    assert stages == ["neural" if label == cheap_labels[0] else "cheap" for label in cheap_labels]
    with pytest.raises(cascade.BundleError, match="does not have"):
        model.always_neural = ["no_such_label"]


def test_per_class_choice_is_saved_and_reloaded(cal, tmp_path):
    _rig(cal, bad_class=2)
    choice = cal.choose(fallthrough=0.6, per_class=True)
    saved = cal.save(tmp_path / "pc", choice)
    assert saved.manifest["calibration"]["always_neural"] == [cal.model.labels[2]]
    assert cascade.load(saved.path, threads=1).always_neural == (cal.model.labels[2],)


def test_a_calibrated_bundle_describes_itself_consistently(cal, tmp_path):
    choice = cal.choose(fallthrough=0.3)
    saved = cal.save(tmp_path / "c", choice)
    m = saved.manifest
    assert m["threshold"] == choice.threshold == m["metrics"]["calibration"]["threshold"]
    assert m["confidence"].startswith("cheap-stage") and (("margin" in cal.measure_) == ("minus" in m["confidence"]))
    assert m["metrics"]["selection"]["threshold"] != m["threshold"] or "calibration" in m["metrics"]
    assert m["calibration"]["measure"] == m["metrics"]["calibration"]["measure"] == cal.measure_
    # every measured figure says the threshold it was measured at (issue 12)
    assert all("threshold" in figures for figures in m["metrics"].values() if isinstance(figures, dict))


def test_a_promise_records_the_asked_confidence_apart_from_each_sequence_level(cal):
    """The error budget is split between the two test sequences: the saved figures once said
    "confidence": 0.975 where 0.95 was asked."""
    choice = cal.choose(target_accuracy=round(cal.curve.accuracy[0] - 0.15, 2), confidence=0.9)
    assert choice.certified and choice.request["confidence"] == 0.9
    assert "confidence" not in choice.expected and 0.9 <= choice.expected["bound_level_each_sequence"] <= 0.95


def test_an_unreachable_target_says_the_most_it_can_promise_and_what_the_bracket_means(cal):
    target = round(float(cal.curve.accuracy.max()) - 0.01, 3)
    with pytest.warns(CalibrationWarning):
        choice = cal.choose(target_accuracy=target, confidence=0.95)
    assert not choice.feasible
    assert "the most these texts can promise now" in choice.reason
    assert "labelled held-out texts in all, as calibration fits on 30% of them" in choice.reason
