from pathlib import Path

import pytest

from cascade.banking77 import banking77_labels, load_banking77
from cascade.datasets import TextDataset, read_csv
from cascade.splits import carve_splits


def test_banking77_splits_are_disjoint_stratified_and_complete():
    full = load_banking77("train_full")
    parts = [load_banking77(s) for s in ("train", "selection", "certification")]
    test = load_banking77("test")
    assert len(full) == 10003 and len(test) == 3080
    assert sum(map(len, parts)) == len(full)
    texts = [set(p.texts) for p in parts]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert all(set(p.labels) == set(banking77_labels()) for p in parts)
    assert len(banking77_labels()) == 77
    for part in parts[1:]:
        assert 0.09 < len(part) / len(full) < 0.12


def test_carved_splits_are_deterministic_and_depend_on_the_salt():
    full = load_banking77("train_full")
    a, b = carve_splits(full), carve_splits(full)
    assert a.certification == b.certification and a.selection == b.selection
    assert carve_splits(full, salt="other").certification != a.certification


def test_old_validation_split_name_says_what_it_became():
    with pytest.raises(ValueError, match="'selection' and 'certification'"):
        load_banking77("validation")  # type: ignore[arg-type]


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
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_csv(tmp_path / "nope.csv")


def test_read_csv_takes_tsv_and_json_lines_with_errors_naming_the_line(tmp_path):
    """Issue 12: training, calibration and evaluation files could only be comma-separated CSV."""
    import json

    import pytest

    from cascade import read_csv

    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tcategory\nhello, world\tgreet\nbye\tleave\n", encoding="utf-8")
    assert read_csv(tsv).texts == ["hello, world", "bye"]
    jl = tmp_path / "d.jsonl"
    jl.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in (
        {"text": "line one\nstill one", "category": "a", "id": 1}, {"text": "two", "category": "b|c"})).encode()
        + b"\n\n")
    got = read_csv(jl)
    assert got.texts == ["line one\nstill one", "two"] and got.labels == ["a", "b|c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "category": "a"}\n{"text": "y", category}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_csv(bad)
    bad.write_text('{"text": "x", "category": ["a", "b"]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: 'category' is a list"):
        read_csv(bad)
    bad.write_text('{"utterance": "x", "category": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'text' not found"):
        read_csv(bad)
