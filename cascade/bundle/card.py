"""The model card a bundle carries (``MODEL_CARD.md``): what it answers, what it learned from, its
figures with the threshold each was measured at, its intended use and licences. Written from the
manifest on every save, so it never disagrees with it."""

from __future__ import annotations

import unicodedata
from typing import Any

from ..policy.mix import Mix

CARD = "MODEL_CARD.md"
_SHOWN_LABELS = 12
_COLUMNS = ("cheap", "neural", "cascade")


def effectively_cheap(manifest: dict[str, Any]) -> str | None:
    """Why the bundle is effectively its cheap stage, as its build found (None if the neural stage earned its
    place, or the threshold was moved since, by calibration, and the finding no longer applies)."""
    selection = manifest.get("metrics", {}).get("selection", {})
    note = selection.get("neural_adds_nothing") if isinstance(selection, dict) else None
    return note if isinstance(note, str) and selection.get("threshold") == manifest.get("threshold") else None


def _pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _metrics_table(metrics: dict[str, Any], measure: str) -> list[str]:
    name = "micro-F1" if measure == "micro_f1" else "accuracy"
    rows = [f"| figures | texts | threshold | cheap {name} | neural {name} | cascade {name} | falls through |",
            "|---|---|---|---|---|---|---|"]
    for section, figures in metrics.items():
        if not isinstance(figures, dict) or section == "calibration":
            continue
        threshold = figures.get("threshold")
        cells = [section, str(figures.get("n_texts", "-")),
                 f"{threshold:.4f}" if isinstance(threshold, (int, float)) else "-",
                 *(_pct(figures.get(f"{stage}_{measure}")) for stage in _COLUMNS),
                 _pct(figures.get("fall_through_rate"))]
        rows.append("| " + " | ".join(cells) + " |")
    return rows if len(rows) > 2 else []


def _calibration_figures(calibration: dict[str, Any]) -> dict[str, float]:
    # the level each test sequence ran at (Bonferroni) is not the confidence asked for; older bundles
    # called it "confidence"
    return {k: v for k, v in calibration.items()
            if k not in ("threshold", "measure", "confidence", "bound_level_each_sequence")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def promise(manifest: dict[str, Any]) -> str:
    """What the bundle promises, in words: a certified calibration target, or why there is none."""
    choice = manifest.get("calibration", {}).get("choice") if isinstance(manifest.get("calibration"), dict) else None
    if not isinstance(choice, dict):
        return "none: the build chose the threshold; `cascade calibrate --target-accuracy` makes a promise"
    request = choice.get("request", {})
    expected = choice.get("expected", {})
    for target, bound in (("target_accuracy", "accuracy_lower_bound"), ("target_f1", "f1_lower_bound")):
        if target in request and choice.get("certified"):
            return (f"{'accuracy' if target == 'target_accuracy' else 'mean per-text F1'} at least "
                    f"{_exact(request[target])} with confidence {_exact(request.get('confidence', 0.95))}, on texts "
                    f"drawn like the certifying ones (lower bound {_exact(expected.get(bound, float('nan')))})")
    asked = ", ".join(f"{k} {v}" for k, v in request.items())
    return f"none: calibrated by {choice.get('mode', '?')} ({asked}), an estimate, not a promise"


def _exact(share: float) -> str:
    """A promised share as a percentage that never rounds up (0.999 is 99.9%, not 100%)."""
    return f"{100 * share:.6g}%"


def summary(manifest: dict[str, Any], path: str, digest: str) -> str:
    """``cascade info``'s human-readable summary: what the bundle answers, how it routes, what it promises,
    and its figures (the JSON is ``cascade info --json``)."""
    labels = [str(label) for label in manifest.get("labels", [])]
    multi = manifest.get("task") == "multi-label"
    mix = manifest.get("mix", {})
    lines = [f"bundle:    {path}", f"digest:    {digest}",
             f"task:      {'multi-label tagging' if multi else 'single-label classification'}, {len(labels)} "
             f"{'topics' if multi else 'labels'}",
             f"{'topics' if multi else 'labels'}:    " + ", ".join(labels),
             f"threshold: {manifest.get('threshold', float('nan')):.4f} on {manifest.get('confidence', '?')} "
             f"(chosen by: {manifest.get('threshold_rule', 'not recorded')})",
             f"fall-through texts get {Mix.from_manifest(mix).describe()}",
             f"promise:   {promise(manifest)}",
             *runtime_lines(manifest)]
    adds_nothing = effectively_cheap(manifest)
    if adds_nothing is not None:
        lines.append(f"note:      effectively its cheap stage: {adds_nothing}")
    lines += ["", *(_metrics_table(manifest.get("metrics", {}), "micro_f1" if multi else "accuracy")
                    or ["no figures recorded"])]
    return "\n".join(_printable(line) for line in lines) + "\n"


def runtime_lines(manifest: dict[str, Any]) -> list[str]:
    """Each runtime the bundle can run on, its threshold and its figures on the selection texts."""
    section = manifest.get("openvino")
    if not section:
        return ["runtimes:  onnxruntime only (`cascade openvino` adds an OpenVINO model for --runtime openvino)"]
    figure = "micro_f1" if manifest.get("task") == "multi-label" else "accuracy"
    lines: list[str] = []
    for name, threshold in (("onnxruntime", manifest.get("threshold", float("nan"))),
                            ("openvino", section["threshold"])):
        seen = section.get("selection", {}).get(name, {})
        shown = "; ".join(f"{stage} {figure.replace('_', '-')} {seen[f'{stage}_{figure}']:.2%}"
                          for stage in ("neural", "cascade") if isinstance(seen.get(f"{stage}_{figure}"), float))
        falls = f", {seen['fall_through_rate']:.2%} fall through" if "fall_through_rate" in seen else ""
        lines.append(f"{'runtimes:' if not lines else '':11}{name}: threshold {threshold:.4f}"
                     + (f"; on the selection texts: {shown}{falls}" if shown else ""))
    if section["beside_threshold"] != manifest.get("threshold"):
        lines.append(f"{'':11}(the threshold was set after the OpenVINO model was added: OpenVINO runs at it too)")
    return lines


def _printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped: a bundle's names must not drive the
    terminal that shows them (the JSON output escapes them too)."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else repr(ch)[1:-1] for ch in text)


def model_card(manifest: dict[str, Any]) -> str:
    """The card's Markdown, from a whole manifest (files excepted)."""
    labels = list(manifest.get("labels", []))
    multi = manifest.get("task") == "multi-label"
    measure = "micro_f1" if multi else "accuracy"
    training = manifest.get("training", {})
    neural = manifest.get("neural", {})
    sizes = training.get("splits", {}).get("sizes", {})
    data = training.get("data") or "not recorded"
    shown = ", ".join(f"`{label}`" for label in labels[:_SHOWN_LABELS])
    more = f" and {len(labels) - _SHOWN_LABELS} more" if len(labels) > _SHOWN_LABELS else ""
    split_text = (", ".join(f"{n:,} {part}" for part, n in sizes.items()) + " texts") if sizes else "not recorded"
    kind = ("a fine-tuned transformer" if neural.get("type", "fine-tuned") == "fine-tuned"
            else "a frozen sentence encoder with a linear head")
    lines = [
        "# Model card",
        "",
        "Written by cascade from this bundle's `manifest.json` each time the bundle is saved; the manifest is the "
        "source of truth.",
        "",
        "## What it does",
        f"- Task: {'multi-label tagging (several topics per text)' if multi else 'single-label classification'}, "
        f"{len(labels)} {'topics' if multi else 'labels'}: {shown}{more}.",
        f"- Two stages: a TF-IDF + logistic-regression stage answers the texts it is sure of; the rest fall through "
        f"to {kind} ({neural.get('base_model', 'base model not recorded')}; {neural.get('max_length', '?')} tokens "
        "read per text), INT8 on onnxruntime"
        + (f"; an OpenVINO INT8 model of it too, threshold {manifest['openvino']['threshold']:.4f} "
           "(`--runtime openvino`)." if manifest.get("openvino") else "."),
        f"- Routing threshold: {manifest.get('threshold', float('nan')):.4f} on "
        f"{manifest.get('confidence', 'the cheap stage confidence')}; chosen by: "
        f"{manifest.get('threshold_rule', 'not recorded')}.",
    ]
    mix = manifest.get("mix", {})
    lines.append(f"- Texts that fall through get {Mix.from_manifest(mix).describe()}"
                 + (f" (chosen by: {mix['rule']})." if isinstance(mix.get("rule"), str) else "."))
    adds_nothing = effectively_cheap(manifest)
    if adds_nothing is not None:
        lines.append(f"- **Effectively its cheap stage**: {adds_nothing}.")
    if "abstain" in manifest:
        lines.append(f"- Answers \"none of these\" (label null) below probability "
                     f"{manifest['abstain'].get('below', float('nan')):.3f}.")
    lines += ["", "## Training data",
              f"- {data}, built by `{training.get('command', 'not recorded')}`: {split_text}.",
              "- Selection texts chose the threshold and settings; certification texts (if any) are left for "
              "`cascade calibrate`; test figures, if any, chose nothing.",
              "", "## Figures (each at the threshold it was measured at)"]
    metrics = manifest.get("metrics", {})
    table = _metrics_table(metrics, measure)
    lines += table or ["- none recorded"]
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict):
        figures = _calibration_figures(calibration)
        lines += ["", f"Calibration (`cascade calibrate`, threshold {calibration.get('threshold', float('nan')):.4f} on "
                      f"the {calibration.get('measure', '?')}), on its certify part: "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in figures.items()) + "."]
    lines += [
        "", "## Intended use",
        "- Routing or tagging texts like the training data into the labels above, where a wrong label costs "
        "little and is reviewable.",
        "- Not for labels outside this set, for texts unlike the training data without watching the fall-through "
        "rate (it rises first when inputs drift), or for decisions about people without human review.",
        "", "## Licences",
        "- cascade: Apache-2.0. Base transformer all-MiniLM-L6-v2 (sentence-transformers): Apache-2.0.",
        "- Training data: " + ("BANKING77, CC-BY-4.0 (Casanueva et al., 2020, \"Efficient Intent Detection with "
                               "Dual Sentence Encoders\")." if "BANKING77" in str(data) else
                               f"{data}: its own licence applies to what the model learned from it."),
        "",
    ]
    return "\n".join(lines)
