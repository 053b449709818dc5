"""The answer a text gets when it falls through: both stages' probabilities, combined.

The neural stage answers the texts the cheap stage is unsure of, but the cheap stage still knows something
about them and the two err on different texts, so a fall-through text's answer combines both votes. A
:class:`Mix` is one of:

* ``linear``: ``w * cheap + (1 - w) * neural`` (``w = 0``: the neural stage alone);
* ``product``: a tempered product of experts, ``softmax(a * log cheap + b * log neural)``; for a tagger,
  whose topics are independent sigmoids, ``sigmoid(a * logit cheap + b * logit neural)`` per topic. Two
  weights shared by every class: a stacker with too few parameters to overfit a selection set, which can
  also sharpen or soften the answer (``a + b`` away from 1), where ``linear`` can only average.

The weights are numbers in the manifest (no pickle); :mod:`cascade.training.mixing` fits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("linear", "product")
MAX_PRODUCT_WEIGHT = 10.0
_EPS = 1e-12


@dataclass(frozen=True)
class Mix:
    """How a fall-through text's answer is made from both stages' probabilities."""

    kind: str = "linear"
    cheap_weight: float = 0.0  # linear: the cheap stage's share; product: the exponent of its probabilities
    neural_weight: float = 1.0  # product only: the exponent of the neural stage's probabilities

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown mix kind {self.kind!r}; expected one of {KINDS}")
        for name in ("cheap_weight", "neural_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"mix {name} must be a finite number, got {value!r}")
        top = 1.0 if self.kind == "linear" else MAX_PRODUCT_WEIGHT
        if not 0.0 <= self.cheap_weight <= top or (self.kind == "product" and not 0.0 <= self.neural_weight <= top):
            raise ValueError(f"a {self.kind} mix's weights must be in [0, {top:g}], got cheap {self.cheap_weight}, "
                             f"neural {self.neural_weight}")
        if self.kind == "product" and self.cheap_weight == self.neural_weight == 0.0:
            raise ValueError("a product mix needs a weight above 0 on at least one stage")

    @property
    def neural_alone(self) -> bool:
        """True when the answer is the neural stage's own."""
        return (self.kind == "linear" and self.cheap_weight == 0.0) or (
            self.kind == "product" and self.cheap_weight == 0.0 and self.neural_weight == 1.0)

    def answer(self, cheap: np.ndarray, neural: np.ndarray, multi_label: bool = False) -> np.ndarray:
        """The combined probabilities of texts whose stages gave ``cheap`` and ``neural`` (rows of texts)."""
        if self.neural_alone:
            return neural
        if self.kind == "linear":
            return self.cheap_weight * cheap + (1.0 - self.cheap_weight) * neural
        if multi_label:
            z = self.cheap_weight * _logit(cheap) + self.neural_weight * _logit(neural)
            return 0.5 * (1.0 + np.tanh(0.5 * z))  # a sigmoid that cannot overflow
        z = self.cheap_weight * np.log(np.clip(cheap, _EPS, 1.0)) + self.neural_weight * np.log(
            np.clip(neural, _EPS, 1.0))
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def describe(self) -> str:
        """One line for people: what a fall-through text's answer is."""
        if self.neural_alone:
            return "the neural stage's answer alone"
        if self.kind == "linear":
            return f"{self.cheap_weight:g} x cheap + {1 - self.cheap_weight:g} x neural probabilities"
        return f"product of experts: cheap^{self.cheap_weight:.3g} x neural^{self.neural_weight:.3g}, renormalized"

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``mix`` fields (a linear mix keeps the old form: ``cheap_weight`` alone)."""
        if self.kind == "linear":
            return {"cheap_weight": float(self.cheap_weight)}
        return {"kind": self.kind, "cheap_weight": float(self.cheap_weight), "neural_weight": float(self.neural_weight)}

    @classmethod
    def from_manifest(cls, mix: dict[str, Any]) -> Mix:
        """The mix a manifest's ``mix`` section describes (none or no ``kind``: linear, as older bundles)."""
        kind = mix.get("kind", "linear")
        return cls(kind, mix.get("cheap_weight", 0.0), mix.get("neural_weight", 1.0))


NEURAL_ALONE = Mix("linear", 0.0)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)
