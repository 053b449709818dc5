"""Multi-label bundles under attack: tampered manifests, re-calibration, odd labels and separators (issue 11 red team)."""

from __future__ import annotations

import numpy as np
import pytest
from adv_helpers import copy_bundle, edit_manifest

import cascade
from cascade.errors import BundleError


def test_multi_label_manifest_is_validated(tagger, tmp_path):
    for change, match in [
        (lambda m: m.pop("decisions"), "decisions.cheap"),
        (lambda m: m["decisions"].update(cheap=[0.5]), "one cut-off per label"),
        (lambda m: m["decisions"]["fallen"].__setitem__(0, 0.0), r"decisions.fallen\[0\]"),
        (lambda m: m.update(task="several"), "must be one of"),
        (lambda m: m.update(abstain={"below": 0.2}), "single-label bundles"),
        (lambda m: m.update(calibration={"measure": "max_prob"}), "calibration.measure"),
        (lambda m: m["neural"].update(windows=99), "neural.windows"),
    ]:
        b = copy_bundle(tagger, tmp_path / f"b{len(list(tmp_path.iterdir()))}")
        edit_manifest(b, change)
        with pytest.raises(BundleError, match=match):
            cascade.load(b, threads=1)


def test_single_label_bundle_cannot_claim_to_be_multi_label(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    n = len(cascade.read_bundle(b).labels)
    edit_manifest(b, lambda m: m.update(task="multi-label", decisions={"cheap": [0.5] * n, "fallen": [0.5] * n,
                                                                       "at_least_one": True}))
    with pytest.raises(BundleError, match="disagree on the task"):
        cascade.load(b, threads=1)




def test_calibrating_a_tagger_again_moves_no_cut_off_twice(tagger, tmp_path):
    """Red team (issue 11): each calibration moved the already-moved cut-offs again; after a few, the
    neural stage's sets had collapsed (micro-F1 0.908 -> 0.534)."""
    from builders import tagging_data

    cert, test = tagging_data(300, seed=21), tagging_data(200, seed=22)
    before = cascade.evaluate(cascade.load(tagger, threads=1), test)
    path = tagger
    for i in range(3):
        cal = cascade.calibrate(cascade.load(path, threads=1), cert.texts, cert.labels)
        path = cal.save(tmp_path / f"c{i}", cal.choose(fallthrough=0.3)).path
        after = cascade.evaluate(cascade.load(path, threads=1), test)
        # temperatures change the probabilities, never the sets each stage assigns
        for key in ("cheap_micro_f1", "neural_micro_f1", "neural_exact_match", "cheap_exact_match"):
            assert after[key] == before[key], (i, key)


def test_red_team_findings_on_taggers(tagger, tmp_path, caplog):
    """Red team (issue 11): an empty topic set kept no 'labels' key; list labels crashed evaluate; unknown
    decision fields loaded; evaluating on training texts said nothing."""
    import json

    from builders import tagging_data

    from cascade.policy.multilabel import Decisions

    model = cascade.load(tagger, threads=1)
    # a prediction with no topic (training texts may have none) still carries 'labels' and 'scores'
    model.decisions = Decisions(model.decisions.cheap, model.decisions.fallen, at_least_one=False)
    empty = model._tag(np.full((1, len(model.labels)), 0.0), np.array([False]), np.array([[0]]))[0]
    assert empty.to_dict()["labels"] == [] and empty.to_dict()["scores"] == []
    json.dumps(empty.to_dict())
    data = tagging_data(30, seed=9)
    with pytest.raises(TypeError, match=r"labels\[0\] is list"):
        cascade.evaluate(model, cascade.TextDataset(data.texts, [y.split("|") for y in data.labels]))
    b = copy_bundle(tagger, tmp_path / "b")
    edit_manifest(b, lambda m: m["decisions"].update(evil=1))
    with pytest.raises(BundleError, match="decisions' has unknown fields"):
        cascade.load(b, threads=1)
    train_texts = tagging_data(240).texts[:20]
    with caplog.at_level("WARNING"):
        cascade.evaluate(model, cascade.TextDataset(train_texts, tagging_data(240).labels[:20]))
    assert "training or selection texts of this bundle" in caplog.text


def test_a_tagger_evaluates_with_its_own_separator(tmp_path, tiny_encoder_bundle):
    from builders import tagging_data

    from cascade.training.cheap import CheapConfig

    data = tagging_data(200)
    semi = cascade.TextDataset(data.texts, [y.replace("|", ";") for y in data.labels])
    b = cascade.train(semi, None, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False, label_sep=";",
                      cheap=CheapConfig(min_df=1))
    model = cascade.load(b.path, threads=1)
    assert model.label_sep == ";"
    test = tagging_data(40, seed=8)
    figures = cascade.evaluate(model, cascade.TextDataset(test.texts, [y.replace("|", ";") for y in test.labels]))
    assert figures["cascade_micro_f1"] > 0.5


def test_label_sep_without_multi_label_is_refused(tmp_path, capsys):
    from cascade.cli import main

    assert main(["train", "--label-sep", ";", "--out", str(tmp_path / "x")]) == 2
    assert "--label-sep needs --multi-label" in capsys.readouterr().err


def test_multi_topic_texts_reach_every_part_and_the_certification_texts_are_fingerprinted():
    """Red team (issue 11): splits stratified by the whole label cell kept rare topic combinations (most
    multi-topic texts) out of selection and certification; a file with a few texts edited re-carved 'the
    same' because only the sizes were compared."""
    from builders import tagging_data

    from cascade.policy.multilabel import split_labels
    from cascade.splits import carve_splits, certification_split

    data = tagging_data(600, seed=4)
    parts = carve_splits(data, 0.15, 0.15, label_sep="|")
    share = [np.mean([len(split_labels(y)) > 1 for y in p.labels]) for p in (parts.train, parts.certification)]
    assert share[1] > 0.5 * share[0] > 0
    edited = cascade.TextDataset([t + (" extra" if t in parts.certification.texts[:3] else "") for t in data.texts],
                                 data.labels)
    recorded = parts.describe()
    with pytest.raises(ValueError, match="certification texts differ"):
        certification_split(edited, recorded)
    assert certification_split(data, recorded) == parts.certification


def test_an_unknown_topic_counts_as_missed_not_as_an_error(tagger, caplog):
    """Red team (issue 11): a topic the bundle never saw stopped `cascade evaluate` (single-label counts
    such texts as errors); it now counts as a topic every stage misses, with a warning."""
    from builders import tagging_data

    model = cascade.load(tagger, threads=1)
    data = tagging_data(60, seed=12)
    base = cascade.evaluate(model, data)
    labels = list(data.labels)
    labels[0] += "|brandnew"
    with caplog.at_level("WARNING"):
        got = cascade.evaluate(model, cascade.TextDataset(data.texts, labels))
    assert "does not know" in caplog.text and got["unknown_topics"] == 1
    assert got["cheap_micro_f1"] < base["cheap_micro_f1"] and got["cheap_exact_match"] <= base["cheap_exact_match"]


def test_calibrating_with_an_unknown_topic_counts_it_as_missed(tagger):
    """Found in issue 11: calibrating a tagger on texts with a topic it never saw raised (evaluate and a
    single-label calibration warn and count such texts as errors); now the topic is missed by both stages:
    no set is exactly right and the text's F1 drops, with a warning."""
    from builders import tagging_data

    from cascade.calibration import CalibrationWarning

    data = tagging_data(200, seed=21)
    base = cascade.calibrate(cascade.load(tagger, threads=1), data.texts, data.labels)
    labels = list(data.labels)
    for i in range(0, 200, 4):
        labels[i] += "|brandnew"
    with pytest.warns(CalibrationWarning, match="does not know"):
        cal = cascade.calibrate(cascade.load(tagger, threads=1), data.texts, labels)
    hit = np.arange(200) % 4 == 0  # the texts are distinct: both calibrations kept all 200, in order
    assert not cal._scored.cheap_ok[hit].any() and not cal._scored.neural_ok[hit].any()
    assert (cal._scored.cheap_f1[hit] < base._scored.cheap_f1[hit]).all()
    assert np.array_equal(cal._scored.cheap_f1[~hit], base._scored.cheap_f1[~hit])
    with pytest.raises(ValueError, match="none of the calibration topics"):
        cascade.calibrate(cascade.load(tagger, threads=1), data.texts, ["brandnew"] * 200)


def test_a_taggers_plot_shows_what_target_f1_promised(tagger):
    """Found in issue 11: the plot of a tagger's calibration drew exact match only, and put a target_f1
    choice at its exact match, not at the mean F1 it promised."""
    pytest.importorskip("matplotlib")
    from builders import tagging_data

    data = tagging_data(200, seed=22)
    cal = cascade.calibrate(cascade.load(tagger, threads=1), data.texts, data.labels)
    choice = cal.choose(target_f1=0.5)
    fig = cal.plot(None, choice)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert "cascade, mean per-text F1" in lines and "cascade, exact match" in lines
    chosen = next(line for label, line in lines.items() if label.startswith("chosen"))
    assert chosen.get_ydata()[0] == pytest.approx(100 * choice.expected["mean_text_f1"])
    assert lines["target"].get_ydata()[0] == pytest.approx(50.0)
