"""Carved splits keep near-duplicate groups on one side (issue 10)."""

import numpy as np
import pytest

from cascade.banking77 import load_banking77
from cascade.datasets import TextDataset
from cascade.splits import (
    build_splits,
    carve_splits,
    certification_split,
    near_duplicate_groups,
)


def _with_near_copies(n_topics: int = 6, per_topic: int = 40) -> TextDataset:
    texts, labels = [], []
    for t in range(n_topics):
        for i in range(per_topic):
            base = f"topic{t} alpha{i} beta{i} gamma{i} delta{i} epsilon{t}"
            texts.append(base)
            labels.append(f"L{t}")
            if i % 3 == 0:  # a near-copy (a common word added) and a copy but for case and punctuation
                texts.append(base + " please")
                texts.append(base.upper() + "!!")
                labels += [f"L{t}", f"L{t}"]
    return TextDataset(texts, labels)


def test_near_duplicates_are_grouped_and_distinct_texts_are_not():
    data = _with_near_copies()
    groups = near_duplicate_groups(data.texts)
    base = data.texts.index("topic0 alpha0 beta0 gamma0 delta0 epsilon0")
    assert groups[base] == groups[base + 1] == groups[base + 2]
    other = data.texts.index("topic0 alpha1 beta1 gamma1 delta1 epsilon0")
    assert groups[other] != groups[base]


@pytest.mark.parametrize("salt", ["", "a", "b", "c"])
def test_near_duplicate_groups_never_straddle_a_carved_split(salt):
    data = _with_near_copies()
    parts = carve_splits(data, 0.2, 0.2, salt=salt)
    groups = near_duplicate_groups(data.texts)
    where = {}
    for name, part in (("train", parts.train), ("selection", parts.selection),
                       ("certification", parts.certification)):
        for text in part.texts:
            where[groups[data.texts.index(text)]] = where.get(groups[data.texts.index(text)], set()) | {name}
    assert all(len(sides) == 1 for sides in where.values())
    assert sum(len(sides) for sides in where.values()) == len(set(groups))
    assert len(parts.train) + len(parts.selection) + len(parts.certification) == len(data)
    assert parts.selection and parts.certification


def test_banking77_has_no_near_copy_across_train_and_certification():
    from sklearn.feature_extraction.text import TfidfVectorizer

    train, cert = load_banking77("train"), load_banking77("certification")
    vec = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(load_banking77("train_full").texts)
    sim = (vec.transform(cert.texts) @ vec.transform(train.texts).T).max(axis=1).toarray().ravel()
    assert (sim < 0.8 - 1e-6).all()


def test_certification_split_is_found_again_only_from_the_same_file():
    data = _with_near_copies()
    parts = carve_splits(data, 0.2, 0.2)
    assert certification_split(data, parts.describe()) == parts.certification
    with pytest.raises(ValueError, match="does not carve into the splits"):
        certification_split(data.head(len(data) - 30), parts.describe(), "other.csv")
    given = build_splits(data, parts.selection)
    with pytest.raises(ValueError, match="set no certification texts aside"):
        certification_split(data, given.describe())


def test_bad_shares_are_refused():
    data = _with_near_copies()
    with pytest.raises(ValueError, match="certification share"):
        carve_splits(data, 0.1, 1.0)
    with pytest.raises(ValueError, match="leave too little"):
        carve_splits(data, 0.5, 0.45)


def test_memory_is_bounded_by_the_setting_not_the_data(monkeypatch):
    from cascade import splits

    data = _with_near_copies()
    monkeypatch.setattr(splits, "PRODUCT_BUDGET", 50)  # one row per block: the same groups
    assert np.array_equal(splits.near_duplicate_groups(data.texts), near_duplicate_groups(data.texts))
