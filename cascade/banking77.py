"""The bundled BANKING77 data set with its fixed splits.

BANKING77 (Casanueva et al., 2020; CC-BY-4.0) ships inside the package so that training, tests and
benchmarks never need the network. Its selection and certification splits are carved out of
``train.csv`` by :func:`cascade.splits.carve_splits` (a rule that depends only on the texts, so they are
the same on every machine). The test split is for reported figures only.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from .datasets import TextDataset, read_csv
from .splits import carve_splits

Split = Literal["train", "selection", "certification", "test", "train_full"]
SPLITS = ("train", "selection", "certification", "test", "train_full")


def data_dir() -> Path:
    return Path(str(resources.files("cascade") / "data" / "banking77"))


def banking77_labels() -> list[str]:
    """The 77 intent names in the data set's own order."""
    return list(json.loads((data_dir() / "categories.json").read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def _banking77_carved() -> tuple[TextDataset, TextDataset, TextDataset]:
    parts = carve_splits(read_csv(data_dir() / "train.csv"))
    return parts.train, parts.selection, parts.certification


def load_banking77(split: Split = "train") -> TextDataset:
    """Load a split of the bundled BANKING77 (Casanueva et al. 2020, CC-BY-4.0).

    Parameters
    ----------
    split : {"train", "selection", "certification", "train_full", "test"}, default "train"
        ``train``: about 80% of train.csv; ``selection``: 10%, what builds choose settings on;
        ``certification``: 10%, what ``cascade calibrate`` certifies on; ``train_full``: all of train.csv;
        ``test``: 3,080 texts, for reported figures only.

    Returns
    -------
    TextDataset

    Examples
    --------
    >>> import cascade
    >>> len(cascade.load_banking77("test")), len(set(cascade.load_banking77("test").labels))
    (3080, 77)
    """
    if split not in SPLITS:
        hint = " (it became 'selection' and 'certification')" if split == "validation" else ""
        raise ValueError(f"unknown split {split!r}{hint}; use one of {', '.join(map(repr, SPLITS))}")
    if split == "test":
        return read_csv(data_dir() / "test.csv")
    if split == "train_full":
        return read_csv(data_dir() / "train.csv")
    train, selection, certification = _banking77_carved()
    return {"train": train, "selection": selection, "certification": certification}[split]
