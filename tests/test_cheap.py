"""The cheap stage's export must equal scikit-learn: same argmax everywhere, probabilities within 1e-5."""

import json

import numpy as np
import pytest

from cascade.stages.cheap import CheapStage, read_linear_classifier
from cascade.training.cheap import PARITY_ATOL, CheapConfig, check_parity, export_cheap, fit_cheap


@pytest.fixture(scope="module")
def fitted(tiny_train, labels):
    return fit_cheap(tiny_train, labels, CheapConfig(min_df=1))


@pytest.mark.parametrize("config", [CheapConfig(min_df=1), CheapConfig(min_df=1, char_ngrams=None),
                                    CheapConfig(min_df=2, char_ngrams=(2, 5), C=5.0)])
def test_export_parity_on_validation(tmp_path, tiny_train, tiny_val, labels, config):
    pipeline = fit_cheap(tiny_train, labels, config)
    export_cheap(pipeline, tmp_path)
    report = check_parity(pipeline, CheapStage.load(tmp_path), tiny_val.texts)
    assert report.ok, report
    assert report.onnx_max_abs_diff <= PARITY_ATOL and report.fast_max_abs_diff <= PARITY_ATOL
    assert report.onnx_argmax_agreement == report.fast_argmax_agreement == 1.0


def test_single_text_path_equals_batch_path(tmp_path, fitted, tiny_val):
    export_cheap(fitted, tmp_path)
    stage = CheapStage.load(tmp_path)
    batch = stage.predict_proba(tiny_val.texts[:50])
    one_by_one = np.vstack([stage.predict_proba([t]) for t in tiny_val.texts[:50]])
    # both accumulate float32 weights, in different orders
    np.testing.assert_allclose(one_by_one, batch, atol=1e-6)
    np.testing.assert_allclose(batch.sum(1), 1.0)


def test_export_is_pickle_free(tmp_path, fitted):
    features, model = export_cheap(fitted, tmp_path)
    assert json.loads(features.read_text())["format"] == "cascade.tfidf/1"
    import onnx

    onnx.checker.check_model(onnx.load(str(model)))


def test_class_order_follows_labels(tmp_path, fitted, labels, tiny_train):
    export_cheap(fitted, tmp_path)
    stage = CheapStage.load(tmp_path)
    pred = stage.predict_proba(tiny_train.texts[:100]).argmax(1)
    truth = np.array([labels.index(y) for y in tiny_train.labels[:100]])
    assert (pred == truth).mean() > 0.9  # training texts: fitted well, in the labels' order


def test_missing_or_unknown_labels_are_refused(tiny_train, labels):
    with pytest.raises(ValueError, match="have no training text"):
        fit_cheap(tiny_train.head(20), labels)
    with pytest.raises(ValueError, match="not in the label list"):
        fit_cheap(tiny_train, labels[:-1])


def test_shape_mismatch_is_refused(tmp_path, fitted):
    export_cheap(fitted, tmp_path)
    stage = CheapStage.load(tmp_path)
    coef, intercept, _ = read_linear_classifier(tmp_path / CheapStage.ONNX_FILE)
    with pytest.raises(ValueError, match="does not fit"):
        CheapStage(stage.featurizer, coef[:, :-1], intercept)
