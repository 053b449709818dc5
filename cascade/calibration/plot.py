"""Drawing the trade-off curve, and where a plot may be written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._optional import require
from ..bundle import atomic
from .curves import build_curve
from .rules import ThresholdChoice, target_sequences
from .statistics import GRID, clopper_pearson_lower, grid_correct_counts


class Calibrated(Protocol):
    """What drawing needs of a fitted :class:`~cascade.calibration.calibrator.Calibrator` (which imports this
    module: a Protocol keeps the imports one way)."""

    model: Any
    measure_: str
    n_certify_: int

    def _policy(self, per_class: bool) -> Any: ...


PLOT_FORMATS = (".png", ".svg", ".pdf")


def plot_path(path: str | Path) -> Path:
    """Where a plot asked for at ``path`` goes: ``.png`` is added to a name without a suffix; a folder or
    another suffix is refused before any work (one line naming the path)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"plot path {target} is a folder; give a file name such as {target / 'curve.png'}")
    if target.suffix == "":
        target = target.with_name(target.name + ".png")
    if target.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"plot path {target}: use one of the suffixes {', '.join(PLOT_FORMATS)}")
    atomic.check_writable(target, "file")
    return target


def draw(cal: Calibrated, path: str | Path | None, choice: ThresholdChoice | None) -> Any:
    """The figure of :meth:`Calibrator.plot`: a matplotlib Figure, or the path it was written to."""
    require("matplotlib", "plot")
    # lazy: the [plot] extra
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    target = plot_path(path) if path is not None else None  # a bad path fails before the drawing
    policy = cal._policy(bool(choice and choice.always_neural))
    curve = policy.curve
    tagger = policy.f1 is not None
    f1_curve = build_curve(policy.conf, policy.f1[0], policy.f1[1], policy.costs_ms) if policy.f1 is not None else None
    name = "exact match" if tagger else "accuracy"
    fig = Figure(figsize=(15, 4.4))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, x, label in ((axes[0], "fall_through_rate", "texts falling through to the neural stage (%)"),
                         (axes[1], "ms_per_text", "expected ms per text")):
        scale = 100 if x == "fall_through_rate" else 1
        ax.plot(scale * getattr(curve, x), 100 * curve.accuracy, color="tab:blue", label=f"cascade, {name}")
        if f1_curve is not None:  # a tagger: the mean per-text F1 too (what target_f1 promises)
            ax.plot(scale * getattr(f1_curve, x), 100 * f1_curve.accuracy, color="tab:purple",
                    label="cascade, mean per-text F1")
        fallen = ("neural stage alone" if cal.model.mix.neural_alone
                  else f"fall-through answer alone ({cal.model.mix.describe()})")
        ax.axhline(100 * np.mean(policy.neural_ok), color="tab:orange", ls="--", label=f"{fallen}, {name}")
        ax.axhline(100 * np.mean(policy.cheap_ok), color="tab:green", ls=":", label=f"cheap stage alone, {name}")
        if choice is not None:
            cx = 100 * choice.expected["fall_through_rate"] if ax is axes[0] else choice.expected["ms_per_text"]
            f1_choice = choice.mode == "target_f1"
            cy = choice.expected["mean_text_f1"] if f1_choice else choice.expected["accuracy"]
            ax.plot([cx], [100 * cy], "o", color="tab:red", ms=8,
                    label=f"chosen ({choice.mode}{'' if choice.feasible else ', infeasible'})")
            if choice.mode in ("target_accuracy", "target_f1"):
                ax.axhline(100 * choice.request[choice.mode], color="tab:red", lw=0.8, ls="-.", label="target")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    _draw_bound(axes[2], policy, choice, name, cal.measure_)
    axes[0].set_ylabel(f"{name}{' and mean F1' if tagger else ''} on {cal.n_certify_} certifying texts (%)")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[2].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"cascade trade-off (confidence: {cal.measure_}, calibrated)")
    fig.tight_layout()
    if target is None:
        return fig
    atomic.write_file_atomic(target, lambda tmp: fig.savefig(tmp, dpi=110, format=target.suffix[1:]))
    return target


def _draw_bound(ax: Any, policy: Any, choice: ThresholdChoice | None, name: str, measure: str) -> None:
    """Against the threshold itself: the certifying texts' accuracy and the lower bound target_accuracy
    certifies with (Clopper-Pearson, at the level its test sequences use). A target above the bound
    everywhere is one no threshold can promise: "infeasible" shows as the gap."""
    confidence = float(choice.request.get("confidence", 0.95)) if choice is not None else 0.95
    _, level = target_sequences(policy, confidence)
    _, correct = grid_correct_counts(policy.conf, policy.cheap_ok, policy.neural_ok, GRID)
    n = len(policy.conf)
    ax.plot(GRID, 100 * correct / n, color="tab:blue", label=f"cascade, {name}")
    ax.plot(GRID, 100 * clopper_pearson_lower(correct, n, level), color="tab:blue", ls="--",
            label=f"certified lower bound ({confidence:.0%} confidence)")
    if choice is not None:
        ax.axvline(choice.threshold, color="tab:red", lw=0.8, label=f"chosen threshold {choice.threshold:.3f}")
        if choice.mode == "target_accuracy":
            ax.axhline(100 * choice.request["target_accuracy"], color="tab:red", lw=0.8, ls="-.",
                       label="target" + ("" if choice.feasible else " (above the bound: infeasible)"))
    ax.set_xlabel(f"threshold (on the calibrated {measure})")
    ax.grid(alpha=0.3)
