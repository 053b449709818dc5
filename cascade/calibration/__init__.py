"""Choosing the routing threshold from a labelled validation set, with promises that hold.

:class:`Calibrator` (``cascade.calibrate(model, texts, labels)``) does the work:

1. It splits the validation set by text hash: 30% *fits* the score and 70% *certifies* it, so that
   every figure it promises comes from texts the score was not fitted on.
2. On the fit part it fits a temperature per stage (minimum log-loss), reports the expected calibration
   error (ECE) before and after, and picks the confidence measure, max probability or top-1 minus
   top-2 margin, with the lower area under the risk-coverage curve (AURC).
3. On the certify part it draws the curve: for every threshold, the fall-through rate, the cascade's
   accuracy, the accuracy of the texts the cheap stage keeps, and the expected ms per text from
   per-stage costs timed during calibration.
4. :meth:`Calibrator.choose` picks a threshold by one of four rules:

   * ``target_accuracy`` with ``confidence``: Learn-then-Test fixed-sequence testing (Angelopoulos et
     al., 2021) over a fixed grid of 201 thresholds. Two sequences walk down the grid towards less
     fall-through, one from the threshold that sends every text to the neural stage and one from the
     threshold most accurate on the fit part, so neither order depends on the certifying texts. Each runs
     at level (1 - ``confidence``) / 2 (Bonferroni): at each threshold the null "accuracy < target" is
     rejected when the exact one-sided Clopper-Pearson lower bound reaches the target, and a sequence
     stops at its first failure. All rejected thresholds keep their promise together with probability
     at least ``confidence``, so the one with the lowest fall-through rate is taken: with probability at
     least ``confidence`` over the draw of the validation set, its accuracy on unseen data from the same
     distribution is at least the target.
   * ``target_f1`` with ``confidence`` (multi-label bundles): the same two fixed sequences, each
     threshold tested by the Hoeffding-Bentkus p-value (Bates et al., 2021) for "mean per-text F1 below
     the target", valid for any score bounded in [0, 1]. ``target_accuracy`` on a multi-label bundle
     promises exact match (the whole set of topics right).
   * ``fallthrough``: at most this share of texts goes to the neural stage (a quantile, as RouteLLM).
   * ``latency_ms``: expected cost per text within a budget.
   * ``match_neural``: cascade accuracy within this many points of the neural stage alone.

   An infeasible request returns the closest feasible choice, with ``feasible=False`` and a reason,
   and warns (:class:`CalibrationWarning`).

The package, one job a module: :mod:`.scoring` (temperatures, calibrated probabilities and each text's
outcome, per task), :mod:`.rules` (the ways of choosing and what a choice says it gives), :mod:`.statistics`
(the tests and bounds), :mod:`.curves` (the trade-off curves, and the rule bundle builds use: the cheapest
threshold an exact McNemar test cannot tell from the most accurate one), :mod:`.calibrator` (the
:class:`Calibrator` that ties them together) and :mod:`.plot` (the figure).
"""


from .calibrator import CalibrationWarning, Calibrator, calibrate, machine_description
from .curves import (
                     BUILD_RULE,
                     Curve,
                     RuleChoice,
                     ThresholdCurve,
                     best_accuracy_threshold,
                     build_curve,
                     cheapest_same_as_best,
                     threshold_curve,
)
from .plot import plot_path
from .rules import ThresholdChoice
from .statistics import (
                     GRID,
                     aurc,
                     clopper_pearson_lower,
                     expected_calibration_error,
                     fit_temperature,
                     fixed_sequence_threshold,
                     grid_correct_counts,
                     plug_in_threshold,
                     samples_needed,
)

__all__ = [
                     "BUILD_RULE",
                     "GRID",
                     "CalibrationWarning",
                     "Calibrator",
                     "Curve",
                     "RuleChoice",
                     "ThresholdChoice",
                     "ThresholdCurve",
                     "aurc",
                     "best_accuracy_threshold",
                     "build_curve",
                     "calibrate",
                     "cheapest_same_as_best",
                     "clopper_pearson_lower",
                     "expected_calibration_error",
                     "fit_temperature",
                     "fixed_sequence_threshold",
                     "grid_correct_counts",
                     "machine_description",
                     "plot_path",
                     "plug_in_threshold",
                     "samples_needed",
                     "threshold_curve",
]
