from pathlib import Path

import pytest

from cascade.datasets import TextDataset, banking77_labels, load_banking77, read_csv, split_validation


def test_banking77_splits_are_disjoint_stratified_and_complete():
    full = load_banking77("train_full")
    train, val, test = load_banking77("train"), load_banking77("validation"), load_banking77("test")
    assert len(full) == 10003 and len(test) == 3080
    assert len(train) + len(val) == len(full)
    assert not set(train.texts) & set(val.texts)
    assert set(val.labels) == set(train.labels) == set(banking77_labels())
    assert len(banking77_labels()) == 77
    assert 0.09 < len(val) / len(full) < 0.11


def test_validation_split_is_deterministic():
    a = split_validation(load_banking77("train_full"))[1]
    b = split_validation(load_banking77("train_full"))[1]
    assert a == b


def test_per_label_caps_each_label():
    small = load_banking77("train").per_label(2)
    assert len(small) == 2 * 77
    assert all(small.labels.count(label) == 2 for label in set(small.labels))


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        load_banking77("dev")  # type: ignore[arg-type]


def test_read_csv_names_missing_column(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,intent\nhello,greet\n")
    with pytest.raises(ValueError, match="column 'text' not found"):
        read_csv(path)
    data = read_csv(path, text_col="sentence", label_col="intent")
    assert data == TextDataset(["hello"], ["greet"])


def test_read_csv_names_bad_row(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("text,category\nhello,greet\nbye,\n")
    with pytest.raises(ValueError, match=r"d.csv:3: missing text or label"):
        read_csv(path)


def test_read_csv_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such CSV"):
        read_csv(tmp_path / "nope.csv")
