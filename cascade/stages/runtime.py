"""Which engine runs a bundle's neural stage: onnxruntime (the default: the bundle's ``neural.onnx``) or
OpenVINO (the bundle's optional ``openvino`` model, built by ``cascade openvino``), and the threshold that
goes with it. Each runtime's INT8 model is its own, so each has its own figures and, when the build rule
chose differently on its scores, its own threshold (the manifest's ``openvino`` section)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..bundle import Bundle
from ..errors import BundleError
from ..limits import Limits
from .head import LinearHead
from .neural import NeuralStage
from .openvino import OpenVinoStage

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")


def check_runtime(runtime: object) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`, else a ValueError listing them."""
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    return runtime


def add_openvino_hint(path: object) -> str:
    """How to give a bundle an OpenVINO model (said wherever one is missing)."""
    return (f"add one with `cascade openvino --bundle {path} --out NEW-BUNDLE --data YOUR-TRAINING.csv` "
            "(needs pip install 'cascade-text[openvino-build]'), or run it with runtime='onnxruntime'")


def openvino_section(bundle: Bundle) -> dict[str, Any]:
    """The manifest's ``openvino`` section, or a BundleError that says how to add one."""
    section = bundle.manifest.get("openvino")
    if not section:
        raise BundleError(f"{bundle.path} has no OpenVINO model, so it cannot run with runtime='openvino': "
                          + add_openvino_hint(bundle.path))
    return dict(section)


def neural_stage(bundle: Bundle, runtime: str, *, head: LinearHead | None, threads: int | None, batch_size: int,
                 providers: Sequence[str], limits: Limits) -> NeuralStage:
    """The bundle's neural stage on ``runtime`` (its files read verified, from memory when kept)."""
    neural = bundle.manifest["neural"]
    common: dict[str, Any] = {"threads": threads, "batch_size": batch_size, "limits": limits, "head": head,
                              "multi_label": bundle.manifest.get("task", "single-label") == "multi-label",
                              "windows": int(neural.get("windows", 1))}
    tokenizer, max_length = bundle.read_bytes(NeuralStage.TOKENIZER_FILE), int(neural["max_length"])
    if check_runtime(runtime) == "openvino":
        section = openvino_section(bundle)
        return OpenVinoStage(bundle.read_bytes(section["model"]), bundle.read_bytes(section["weights"]), tokenizer,
                             max_length, **common)
    return NeuralStage(bundle.read_bytes(NeuralStage.ONNX_FILE), tokenizer, max_length, providers=providers, **common)


def runtime_threshold(bundle: Bundle, runtime: str) -> float:
    """The threshold a bundle runs at on ``runtime``: the manifest's, or for OpenVINO the one its build chose
    on the OpenVINO model's scores, as long as the manifest's threshold is still the one it was chosen beside
    (a later ``cascade calibrate`` certified a new threshold on onnxruntime's scores: that one is used, and a
    warning says so)."""
    if check_runtime(runtime) == "onnxruntime":
        return bundle.threshold
    section = openvino_section(bundle)
    if float(section["beside_threshold"]) == bundle.threshold:
        return float(section["threshold"])
    log.warning("%s: the threshold was set (%.4g) after its OpenVINO model was added, on onnxruntime's scores; "
                "running OpenVINO at it too. Rebuild the OpenVINO model (cascade openvino) to choose one on its own "
                "scores", bundle.path, bundle.threshold)
    return bundle.threshold
