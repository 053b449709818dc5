"""The portable featurizer must cut exactly the n-grams scikit-learn's analyzers cut."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from cascade.banking77 import load_banking77
from cascade.stages.featurizer import FeatureBlock, Featurizer

ODD_TEXTS = [
    "", "   ", "a", "I'm   still\twaiting!!", "Ünïcödé ÇAFÉ straße İstanbul", "🙂 emoji 🙂🙂", "مرحبا بالعالم",
    "zero\u200bwidth and\u202eRTL", "ctrl\x00\x07chars", "x" * 300, "a b c d e f", "top-up top_up top up",
]


@pytest.mark.parametrize("analyzer,ngram_range", [("word", (1, 2)), ("word", (1, 3)), ("word", (2, 2)),
                                                  ("char_wb", (1, 4)), ("char_wb", (2, 5)), ("char_wb", (3, 3))])
def test_ngrams_match_sklearn(analyzer, ngram_range):
    texts = load_banking77("selection").texts[:300] + ODD_TEXTS
    reference = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range).build_analyzer()
    block = FeatureBlock(analyzer=analyzer, ngram_range=ngram_range, terms=[], idf=np.empty(0))
    for text in texts:
        assert sorted(block.ngrams(text.lower())) == sorted(reference(text)), text


def test_transform_matches_sklearn_feature_union():
    from sklearn.pipeline import FeatureUnion

    from cascade.training.cheap import featurizer_from_pipeline

    train = load_banking77("train").per_label(10)
    union = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2)),
    ]).fit(train.texts)

    class _Pipe:  # featurizer_from_pipeline only reads named_steps["features"]
        named_steps = {"features": union}

    featurizer = featurizer_from_pipeline(_Pipe())  # type: ignore[arg-type]
    texts = load_banking77("selection").texts[:200] + ODD_TEXTS
    ours = featurizer.transform(texts).toarray()
    want = union.transform(texts).toarray()
    np.testing.assert_allclose(ours, want, atol=1e-12)


def test_json_round_trip(tmp_path):
    block = FeatureBlock("word", (1, 2), ["card", "my card"], np.array([1.5, 2.0]))
    f = Featurizer([block, FeatureBlock("char_wb", (2, 3), [" c", "ca"], np.array([1.0, 1.1]))])
    f.save(tmp_path / "f.json")
    g = Featurizer.load(tmp_path / "f.json")
    for text in ["My card", "ca ca card", ""]:
        a, b = f.transform_one(text), g.transform_one(text)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="unsupported analyzer"):
        FeatureBlock("char", (1, 2), [], np.empty(0))
    with pytest.raises(ValueError, match="ngram_range .* must satisfy"):
        FeatureBlock("word", (2, 1), [], np.empty(0))
    with pytest.raises(ValueError, match="2 terms and 1 idf weights"):
        FeatureBlock("word", (1, 1), ["a", "b"], np.ones(1))
    with pytest.raises(ValueError, match="unknown featurizer format"):
        Featurizer.from_dict({"format": "other/9", "blocks": []})


def test_text_with_no_known_ngram_is_all_zero():
    f = Featurizer([FeatureBlock("word", (1, 1), ["card"], np.ones(1))])
    idx, values = f.transform_one("nothing here")
    assert len(idx) == 0 and len(values) == 0
    assert f.transform(["nothing", "card"]).toarray().tolist() == [[0.0], [1.0]]
