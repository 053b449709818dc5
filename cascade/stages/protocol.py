"""What every stage is to the rest of the package: it scores texts and decides nothing.

Routing, mixing, evaluation and calibration use a stage through this interface only;
:class:`~cascade.stages.cheap.CheapStage` and :class:`~cascade.stages.neural.NeuralStage` both are one. (The
model also reads what is particular to each: the neural stage's head and embedding width, the cheap stage's
limits; a build reads the cheap stage's featurizer.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Stage(Protocol):
    """A scorer of texts: logits, and probabilities from them (softmax, or a sigmoid per topic when
    ``multi_label``) at its calibration ``temperature``. Rows come back in the order of the texts, and a
    text's row never depends on the other texts of the call."""

    multi_label: bool
    temperature: float

    @property
    def n_classes(self) -> int: ...

    def logits(self, texts: list[str]) -> np.ndarray: ...

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...
