"""`cascade train`: a whole bundle on a label set of one's own, without torch; the head and the mix
round-trip through a bundle; errors for labels with too few texts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cascade
from cascade.datasets import TextDataset
from cascade.policy.mix import Mix
from cascade.stages.head import LinearHead

TOPICS = {
    "weather": ["rain tomorrow in the north", "sunny skies all week", "a storm is coming tonight",
                "snow on the mountains", "heat wave warning issued", "fog over the bay this morning"],
    "cooking": ["bake the bread for forty minutes", "chop the onions finely", "simmer the sauce slowly",
                "season the soup with salt", "roast vegetables in the oven", "whisk eggs and sugar"],
    "football": ["the striker scored twice", "a red card in the final minute", "the keeper saved a penalty",
                 "league table after the derby", "coach praises young midfielder", "transfer window opens"],
}


def _topic_data(repeat: int = 3) -> tuple[TextDataset, TextDataset]:
    texts, labels = [], []
    for label, examples in TOPICS.items():
        for r in range(repeat):
            for t in examples:
                texts.append(f"{t} {'again ' * r}".strip())
                labels.append(label)
    val_t = ["heavy rain and wind expected", "stir the sauce and add pepper", "the striker missed a penalty"]
    return TextDataset(texts, labels), TextDataset(val_t, ["weather", "cooking", "football"])


def _write_csv(path: Path, data: TextDataset) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "topic"])
        w.writerows(zip(data.texts, data.labels))
    return path


def test_train_builds_a_bundle_on_new_labels_without_torch(tmp_path, tiny_encoder_bundle):
    train, val = _topic_data()
    code = ("import sys\n"
            "class NoTorch:  # as if torch and transformers were not installed\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers'):\n"
            "            raise ImportError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from cascade.cli import main\n"
            f"sys.exit(main(['train', '--data', {str(_write_csv(tmp_path / 't.csv', train))!r}, "
            f"'--val', {str(_write_csv(tmp_path / 'v.csv', val))!r}, '--label-col', 'topic', "
            f"'--out', {str(tmp_path / 'mine')!r}, '--encoder-from', {str(tiny_encoder_bundle)!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "torch" not in run.stderr
    model = cascade.load(tmp_path / "mine", threads=1)
    assert model.labels == ["cooking", "football", "weather"]
    m = model.bundle.manifest
    assert m["neural"]["type"] == "frozen-encoder" and m["neural"]["head"] == "head.npz"
    assert model.neural.head is not None and model.neural.n_classes == 3
    assert model.classify("the keeper saved it", threshold=1.0).label in model.labels


def test_head_and_mix_round_trip_through_a_bundle(tmp_path, tiny_encoder_bundle):
    train, val = _topic_data()
    bundle = cascade.train(train, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False)
    model = cascade.load(bundle.path, threads=1)
    head = LinearHead.from_bytes((bundle.path / "head.npz").read_bytes())
    np.testing.assert_array_equal(head.weight, model.neural.head.weight)
    mix = Mix.from_manifest(bundle.manifest.get("mix", {}))
    assert model.mix == mix
    texts = val.texts + ["something else entirely"]
    probs, mask = model.route(texts, threshold=1.0)
    cheap = model.cheap.predict_proba(texts)
    neural = model.neural.predict_proba(texts)
    np.testing.assert_allclose(probs, mix.answer(cheap, neural))


def test_a_product_mix_round_trips_through_a_bundle_as_plain_numbers(tmp_path, tiny_encoder_bundle, monkeypatch):
    """The stacker is two numbers in the manifest (no pickle, no extra file); the loaded bundle answers texts
    that fall through with exactly that product of experts, and the build records what it was chosen by."""
    import cascade.training.assemble as assemble
    from cascade.training.mixing import fit_mix

    monkeypatch.setattr(assemble, "fit_mix", lambda *a, **k: fit_mix(*a, **k, kinds=("product",)))
    train, val = _topic_data()
    bundle = cascade.train(train, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False)
    written = json.loads((bundle.path / "manifest.json").read_text())
    assert written["mix"]["kind"] == "product" and set(written["mix"]) == {"kind", "cheap_weight", "neural_weight",
                                                                            "rule"}
    assert all(isinstance(written["mix"][k], float) for k in ("cheap_weight", "neural_weight"))
    assert written["metrics"]["selection"]["mix_choice"]["chosen"] == "product"
    assert not [p for p in bundle.path.iterdir() if p.suffix in (".pkl", ".pickle", ".joblib")]
    model = cascade.load(bundle.path, threads=1)
    assert model.mix == Mix("product", written["mix"]["cheap_weight"], written["mix"]["neural_weight"])
    texts = val.texts[:20]
    probs, _ = model.route(texts, threshold=1.0)
    a, b = model.mix.cheap_weight, model.mix.neural_weight
    want = model.cheap.predict_proba(texts) ** a * model.neural.predict_proba(texts) ** b
    np.testing.assert_allclose(probs, want / want.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mix", [Mix("linear", 0.5), Mix("product", 0.7, 1.3)], ids=["linear", "product"])
def test_the_mix_is_what_calibration_certifies(tmp_path, tiny_encoder_bundle, tiny_val, mix):
    model = cascade.load(tiny_encoder_bundle, threads=1)
    model.mix = mix
    cal = cascade.calibrate(model, tiny_val.texts, tiny_val.labels)
    choice = cal.choose(fallthrough=1.0)
    got = [p.label for p in model.classify(tiny_val.texts, threshold=1.0)]
    from cascade.calibration.calibrator import _fit_part

    certify = ~_fit_part(tiny_val.texts)
    acc = np.mean([g == y for g, y, c in zip(got, tiny_val.labels, certify) if c])
    # temperatures change the mix a little, so the certified accuracy is that of the calibrated model
    cal.apply(choice)
    got = [p.label for p in model.classify(tiny_val.texts, threshold=1.0)]
    acc = np.mean([g == y for g, y, c in zip(got, tiny_val.labels, certify) if c])
    assert choice.expected["accuracy"] == pytest.approx(acc)


def test_labels_with_too_few_texts_are_named(tmp_path, tiny_encoder_bundle):
    train, val = _topic_data()
    train = TextDataset(train.texts + ["a lonely text"], train.labels + ["rare_topic"])
    with pytest.raises(ValueError, match=r"'rare_topic' \(1\)"):
        cascade.train(train, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False)
    val = TextDataset(val.texts + ["x"], val.labels + ["unseen_topic"])
    with pytest.raises(ValueError, match="never appear in training: \\['unseen_topic'\\]"):
        cascade.train(_topic_data()[0], val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False)


def test_a_fine_tuned_bundle_is_not_an_encoder(tmp_path, tiny_bundle):
    train, val = _topic_data()
    with pytest.raises(cascade.CascadeError, match="has no frozen encoder"):
        cascade.train(train, val, tmp_path / "b", encoder_from=tiny_bundle, progress=False)


def test_fine_tuned_bundles_still_load_and_answer(tiny_bundle):
    model = cascade.load(tiny_bundle, threads=1)
    assert model.neural.head is None and json.loads((tiny_bundle / "manifest.json").read_text())["neural"].get(
        "type", "fine-tuned") == "fine-tuned"
    assert model.classify("card", threshold=1.0).stage == "neural"


def test_a_bad_head_file_is_refused(tmp_path, tiny_encoder_bundle):
    import hashlib
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_encoder_bundle, b)
    buffer = __import__("io").BytesIO()
    np.savez(buffer, weight=np.zeros((3, 2), np.float32), bias=np.zeros(2, np.float32))
    data = buffer.getvalue()
    (b / "head.npz").write_bytes(data)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["head.npz"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(cascade.BundleError, match="head expects 3-dimensional"):
        cascade.load(b)


def test_none_of_these_on_obviously_unrelated_texts(tmp_path, tiny_encoder_bundle):
    train, val = _topic_data()
    bundle = cascade.train(train, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False, abstain=0.34)
    cut = bundle.manifest["abstain"]["below"]
    assert 0 < cut < 1 and bundle.manifest["metrics"]["selection"]["abstained_share"] <= 0.34
    model = cascade.load(bundle.path, threads=1)
    for text in ["qwxz vvkp zzyq", "0000 1111 2222", "🙂🙃"]:  # no word of any topic
        p = model.classify(text)
        assert p.label is None and p.reason.startswith("none of these") and p.to_dict()["label"] is None
    answered = [p.label for p in model.classify(train.texts)]
    assert sum(a is not None for a in answered) > 0.9 * len(answered)


def test_an_abstain_share_out_of_range_is_refused(tmp_path, tiny_encoder_bundle):
    train, val = _topic_data()
    with pytest.raises(ValueError, match="share of in-scope texts that may be rejected"):
        cascade.train(train, val, tmp_path / "b", encoder_from=tiny_encoder_bundle, progress=False, abstain=1.5)


def test_the_build_says_when_the_transformer_adds_nothing(tmp_path, tiny_encoder_bundle):
    """Issue 24: `cascade train` chose threshold 0.000 on a user's topics and nothing said the transformer was
    never called. The tiny random encoder adds nothing to a cheap stage that gets these topics right."""
    train, val = _topic_data()
    run = subprocess.run([sys.executable, "-m", "cascade.cli", "train", "--data", str(_write_csv(tmp_path / "t.csv", train)),
                          "--val", str(_write_csv(tmp_path / "v.csv", val)), "--label-col", "topic", "--out",
                          str(tmp_path / "b"), "--encoder-from", str(tiny_encoder_bundle)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    selection = json.loads((tmp_path / "b" / "manifest.json").read_text())["metrics"]["selection"]
    note = selection["neural_adds_nothing"]
    assert "no threshold beats the cheap stage alone (accuracy " in note and "ms" in note
    assert f"note: {note}" in run.stdout
    assert "**Effectively its cheap stage**" in (tmp_path / "b" / "MODEL_CARD.md").read_text()
    info = subprocess.run([sys.executable, "-m", "cascade.cli", "info", "--json", "--bundle", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(info.stdout)["effectively_its_cheap_stage"] == note


@pytest.mark.parametrize(("figures", "says"), [
    ({"fall_through_rate": 0.0, "rule": {"best_accuracy": 0.95, "best_fall_through_rate": 0.2, "p_value": 0.3}},
     "the threshold chosen sends no text on: the most accurate one (accuracy 95.00% against the cheap stage's 90.00%"),
    ({"fall_through_rate": 0.1, "rule": {"best_accuracy": 0.90}}, "no threshold beats the cheap stage alone"),
    ({"fall_through_rate": 0.1, "rule": {"best_accuracy": 0.93}}, None),  # it earns its place
])
def test_adds_nothing_names_the_reason_and_both_figures(figures, says):
    from cascade.evaluation import neural_adds_nothing

    note = neural_adds_nothing({"n_texts": 500, "cheap_accuracy": 0.90, "neural_accuracy": 0.88,
                                "cascade_accuracy": 0.90, **figures}, {"cheap": 0.02, "neural": 0.7})
    assert (note is None) if says is None else (says in note and "88.00%" in note and "0.700 ms" in note)


def test_train_config_checks_keep_their_order():
    """Review find (issue 26): splitting TrainConfig's checks moved the window check before the separator's,
    so a config wrong in both named the windows; the separator's error comes first, as before."""
    from cascade.training.recipes.frozen import TrainConfig

    with pytest.raises(ValueError, match="label_sep must be a short non-blank string"):
        TrainConfig(label_sep="", windows=0)
