"""cascade.CascadeClassifier: a scikit-learn estimator that works in Pipeline and cross_val_score."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import cascade
from cascade.banking77 import load_banking77

LABELS = ["card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_card"]


@pytest.fixture(scope="module")
def data():
    full = load_banking77("train")
    keep = [i for i, label in enumerate(full.labels) if label in LABELS]
    texts = np.array([full.texts[i] for i in keep], dtype=object)
    # integer classes: classes_ and predict must give back the caller's own values
    y = np.array([LABELS.index(full.labels[i]) * 10 for i in keep])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(keep))[:240]
    return texts[order], y[order]


def _estimator(tiny_encoder_bundle, **params):
    return cascade.CascadeClassifier(encoder_from=tiny_encoder_bundle, threads=1, **params)


def test_fit_predict_score_follow_scikit_learn(data, tiny_encoder_bundle):
    X, y = data
    est = _estimator(tiny_encoder_bundle)
    assert est.fit(X[:180], y[:180]) is est
    assert list(est.classes_) == [0, 10, 20, 30]
    proba = est.predict_proba(X[180:])
    assert proba.shape == (60, 4) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    pred = est.predict(X[180:])
    assert set(pred) <= {0, 10, 20, 30} and np.array_equal(pred, est.classes_[proba.argmax(axis=1)])
    assert est.score(X[180:], y[180:]) > 0.5
    # the same answers as the bundle it wrote, through cascade's own API
    model = cascade.load(est.bundle_path_)
    assert [int(p.label) for p in model.classify(list(X[180:]))] == list(pred)
    assert pickle.loads(pickle.dumps(est)).predict(X[180:]).tolist() == pred.tolist()


def test_it_works_in_a_pipeline_and_cross_val_score(data, tiny_encoder_bundle):
    X, y = data
    pipe = make_pipeline(FunctionTransformer(lambda texts: [t.lower() for t in texts]),
                         _estimator(tiny_encoder_bundle))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.4)


def test_params_clone_and_validation(data, tiny_encoder_bundle):
    est = _estimator(tiny_encoder_bundle, C=5.0, threshold=1.0)
    assert clone(est).get_params() == est.get_params() and est.get_params()["C"] == 5.0
    X, y = data
    with pytest.raises(ValueError, match="one label per text"):
        est.fit(X[:10], y[:9])
    with pytest.raises(TypeError, match="not one str"):
        est.fit("a text", [1])
    with pytest.raises(Exception, match="not fitted"):
        est.predict(X[:3])
    fitted = clone(est).fit(X[:120], y[:120])
    assert {p.stage for p in fitted.model_.classify(list(X[:5]), threshold=1.0)} == {"neural"}


CHECKS = ("check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
          "check_set_params", "check_estimator_repr", "check_do_not_raise_errors_in_init_or_set_params",
          "check_estimator_cloneable", "check_mixin_order", "check_valid_tag_types", "check_estimator_tags_renamed")


@pytest.mark.parametrize("check", CHECKS)
def test_scikit_learn_estimator_checks_that_apply_pass(check, tiny_encoder_bundle):
    """check_estimator skips a string-input estimator whole (its checks feed numeric arrays); these are the
    checks that need no data, run one by one."""
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check)("CascadeClassifier", _estimator(tiny_encoder_bundle))
