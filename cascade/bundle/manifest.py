"""The manifest's schema: every field a bundle may carry, with its type and range, checked on load.

A bundle is trusted for its numbers and names only after :func:`validate_manifest` accepts it: file
names are plain names inside the bundle folder, labels unique non-empty strings, the threshold a real
number in [0, 1], temperatures finite and positive, ``max_length`` within the model's limit. Every
failure is one :class:`~cascade.errors.BundleError` that names the field and says how to fix it.

The manifest lists every file with its SHA-256, so the SHA-256 of ``manifest.json`` itself (the bundle
*digest*) covers the whole bundle: pin it to be sure you run exactly the bundle you tested.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from numbers import Integral, Real
from typing import Any

from ..errors import BundleError
from ..policy.mix import KINDS as MIX_KINDS
from ..policy.mix import MAX_PRODUCT_WEIGHT
from ..policy.multilabel import SET_MEASURES
from ..policy.routing import MEASURES

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("cheap.onnx", "cheap_features.json", "neural.onnx", "tokenizer.json")
TRAIN_HASHES_FILE = "train_hashes.json"  # optional: hashes of the texts the bundle was trained on
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILE_BYTES = 1 << 30  # far above any model cascade builds (the fp32 MiniLM is 91 MB); bounds what a load reads
MAX_FILES = 64
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 1_000
MODEL_MAX_LENGTH = 512  # position embeddings of all-MiniLM-L6-v2 (and BERT-style encoders)
TASKS = ("single-label", "multi-label")
MAX_WINDOWS = 16

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
# Top-level keys a manifest may hold; anything else is refused so that no field goes unchecked.
_KEYS = {"format_version", "labels", "threshold", "files", "neural", "calibration", "confidence",
         "threshold_rule", "training", "metrics", "versions", "created", "mix", "encoder", "abstain", "task",
         "decisions", "openvino"}
NEURAL_TYPES = ("fine-tuned", "frozen-encoder")  # a classifier's logits, or a sentence encoder and a head


def manifest_digest(manifest_bytes: bytes) -> str:
    """The bundle digest: ``sha256:`` and the SHA-256 of ``manifest.json`` as stored."""
    return "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()


def normalize_digest(digest: str) -> str:
    """``sha256:<64 hex>`` from a digest given with or without its ``sha256:`` prefix."""
    match = _DIGEST.fullmatch(digest.strip().lower()) if isinstance(digest, str) else None
    if match is None:
        raise ValueError(f"a bundle digest is 'sha256:' and 64 hex digits (as `cascade info` prints it), got {digest!r}")
    return "sha256:" + match.group(1)


def parse_manifest(raw: bytes) -> Any:
    """Parse ``manifest.json`` bytes; any failure (bad UTF-8 or JSON, absurd nesting) is a BundleError."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{MANIFEST} is not valid JSON ({str(exc)[:200]})") from None


def _check_values(node: Any, where: str, depth: int = 0) -> None:
    """Every number finite, every string valid Unicode (no lone surrogates), nesting bounded."""
    if depth > 32:
        raise _fail(where, "is nested too deeply")
    if isinstance(node, float) and not math.isfinite(node):
        raise _fail(where, f"holds {node!r}; only finite numbers are allowed")
    if isinstance(node, str):
        try:
            node.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(where, "holds a string that is not valid Unicode") from None
    elif isinstance(node, dict):
        for key, value in node.items():
            _check_values(key, where, depth + 1)
            _check_values(value, f"{where}.{key}", depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_values(value, f"{where}[{i}]", depth + 1)


def check_file_name(name: Any, where: str = "manifest 'files'") -> str:
    """A file name a bundle may use: a plain name in the bundle folder, nothing that can leave it."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name or name.startswith(".") or len(name) > 255 or name == MANIFEST:
        raise BundleError(
            f"{where}: {name!r} is not an allowed file name; bundle files must be plain names inside the "
            "bundle folder (no path separators, no leading dot, no '..', not absolute, no NUL)"
        )
    return name


def _fail(field: str, problem: str) -> BundleError:
    return BundleError(f"manifest field {field!r} {problem}; rebuild the bundle or restore its manifest.json")


def _real(value: Any, field: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        v = float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan
    except OverflowError:
        v = math.nan
    if not math.isfinite(v):
        raise _fail(field, f"must be a finite number, got {repr(value)[:40]}")
    if v < lo or v > hi or (lo_open and v == lo):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise _fail(field, f"must be in {interval}, got {value!r}")
    return v


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= int(value) <= hi:
        raise _fail(field, f"must be an integer from {lo} to {hi}, got {repr(value)[:40]}")
    return int(value)


REFERENCE_FIGURES = ("accuracy", "exact_match", "mean_text_f1")


def _check_reference(reference: dict[str, Any], threshold: float, multi_label: bool) -> None:
    """``calibration.reference``: what a server estimates its own traffic's figure with, made for this
    bundle's task and at its threshold (a cut read at another threshold would estimate another routing)."""
    if _real(reference.get("threshold"), "calibration.reference.threshold", 0.0, 1.0) != threshold:
        raise _fail("calibration.reference.threshold", f"must equal the bundle's threshold ({threshold:g}): the "
                    "reference was made for another routing")
    _real(reference.get("atc_cut"), "calibration.reference.atc_cut", -1e6, 1.0)  # a negative entropy, or a probability
    _real(reference.get("certify_figure"), "calibration.reference.certify_figure", 0.0, 1.0)
    if reference.get("promised") is not None:
        _real(reference["promised"], "calibration.reference.promised", 0.0, 1.0, lo_open=True)
        if reference["promised"] >= 1.0:
            raise _fail("calibration.reference.promised", "must be below 1 (no finite sample certifies perfection)")
    figures, score = (REFERENCE_FIGURES[1:], "set_prob") if multi_label else (REFERENCE_FIGURES[:1], "negentropy")
    if reference.get("figure") not in figures:
        raise _fail("calibration.reference.figure", f"must be one of {list(figures)} for this bundle's task")
    if reference.get("score") != score:
        raise _fail("calibration.reference.score", f"must be {score!r} for this bundle's task")


def _dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(field, f"must be an object, got {type(value).__name__}")
    return value


_DECISION_KEYS = {"cheap", "fallen", "neural", "at_least_one", "rule", "grid", "own", "shared", "moved_by"}


def _check_mix(mix: dict[str, Any]) -> None:
    """The answer of texts that fall through: a linear mix (``cheap_weight`` in [0, 1]; older bundles) or a
    product of experts (``kind: product``, both weights in [0, MAX_PRODUCT_WEIGHT], not both 0)."""
    allowed = {"kind", "cheap_weight", "neural_weight", "rule"}
    if set(mix) - allowed:
        raise _fail("mix", f"has unknown fields {sorted(set(mix) - allowed)}")
    kind = mix.get("kind", "linear")
    if kind not in MIX_KINDS:
        raise _fail("mix.kind", f"must be one of {list(MIX_KINDS)}, got {kind!r}")
    if kind == "linear":
        if "neural_weight" in mix:
            raise _fail("mix.neural_weight", "is for a product mix only (a linear mix's is 1 - cheap_weight)")
        if "cheap_weight" in mix:
            _real(mix["cheap_weight"], "mix.cheap_weight", 0.0, 1.0)
        return
    for name in ("cheap_weight", "neural_weight"):
        _real(mix.get(name), f"mix.{name}", 0.0, MAX_PRODUCT_WEIGHT)
    if mix["cheap_weight"] == mix["neural_weight"] == 0:
        raise _fail("mix", "a product mix needs a weight above 0 on at least one stage")
    if "rule" in mix and not isinstance(mix["rule"], str):
        raise _fail("mix.rule", "must be a string")


def _check_task(manifest: dict[str, Any], labels: list[Any]) -> None:
    """``task`` and, for a multi-label bundle, its ``decisions``: a cut-off in (0, 1) per topic for each stage."""
    task = manifest.get("task", "single-label")
    if task not in TASKS:
        raise _fail("task", f"must be one of {list(TASKS)}, got {task!r:.40}")
    decisions = _dict(manifest.get("decisions", {}), "decisions")
    if task == "single-label":
        if decisions:
            raise _fail("decisions", "belong to a multi-label bundle only (task is 'single-label')")
        return
    if "abstain" in manifest:
        raise _fail("abstain", "is for single-label bundles; a multi-label bundle assigns no topic by its cut-offs")
    for key in ("cheap", "fallen", "neural"):
        if key == "neural" and key not in decisions:
            continue
        cut = decisions.get(key)
        if not isinstance(cut, list) or len(cut) != len(labels):
            raise _fail(f"decisions.{key}", f"must list one cut-off per label ({len(labels)})")
        for i, value in enumerate(cut):
            _real(value, f"decisions.{key}[{i}]", 0.0, 1.0, lo_open=True)
    if not isinstance(decisions.get("at_least_one"), bool):
        raise _fail("decisions.at_least_one", "must be true or false")
    unknown = sorted(set(decisions) - _DECISION_KEYS)
    if unknown:
        raise _fail("decisions", f"has unknown fields {unknown[:5]}")
    for key in ("rule", "moved_by"):
        if key in decisions and not isinstance(decisions[key], str):
            raise _fail(f"decisions.{key}", "must be a string")
    for key in ("own",):
        if key in decisions:
            _int(decisions[key], f"decisions.{key}", 0, len(labels))
    if "shared" in decisions:
        _real(decisions["shared"], "decisions.shared", 0.0, 1.0)
    grid = decisions.get("grid", [0.0, 1.0, 1.0])
    if not isinstance(grid, list) or len(grid) != 3:
        raise _fail("decisions.grid", "must be [first, last, step]")
    for i, value in enumerate(grid):
        _real(value, f"decisions.grid[{i}]", 0.0, 1.0)


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Check every field of a parsed manifest, section by section; return it unchanged or raise BundleError
    naming the field."""
    _check_top(manifest)
    labels = _check_labels(manifest["labels"])
    _real(manifest["threshold"], "threshold", 0.0, 1.0)
    files = _check_files(manifest["files"])
    neural = _check_neural(manifest, files)
    _check_optional_sections(manifest, files)
    _check_task(manifest, labels)
    if "windows" in neural:
        _int(neural["windows"], "neural.windows", 1, MAX_WINDOWS)
        if neural["windows"] > 1 and neural["max_length"] < 3:
            raise _fail("neural.windows", "above 1 needs max_length 3 or more")
    _check_calibration(manifest, labels)
    _check_openvino(manifest, files)
    _check_records(manifest)
    return manifest


def _check_top(manifest: Any) -> None:
    """An object of this format version, with known fields only and the required ones present."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise BundleError(
            f"format version {version!r} is not supported (this cascade reads version {FORMAT_VERSION}); "
            "rebuild the bundle with this version"
        )
    _check_values(manifest, "manifest")
    unknown = sorted(set(manifest) - _KEYS)
    if unknown:
        raise BundleError(f"{MANIFEST} has unknown fields {unknown[:5]}; this cascade does not know what they mean")
    for key in ("labels", "threshold", "files", "neural"):
        if key not in manifest:
            raise _fail(key, "is missing")


def _check_labels(labels: Any) -> list[str]:
    if not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS:
        raise _fail("labels", f"must be a list of 2 to {MAX_LABELS} label names")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise _fail(f"labels[{i}]", f"must be a non-empty string of at most {MAX_LABEL_CHARS} characters, "
                        f"got {label!r:.80}")
    if len(set(labels)) != len(labels):
        seen: set[str] = set()
        dup = next(label for label in labels if label in seen or seen.add(label))  # type: ignore[func-returns-value]
        raise _fail("labels", f"must be unique; {dup!r} appears more than once")
    return labels


def _check_files(value: Any) -> dict[str, Any]:
    """Every listed file: a safe name, its SHA-256 and size; the required files present."""
    files = _dict(value, "files")
    if len(files) > MAX_FILES:
        raise _fail("files", f"lists {len(files)} files; at most {MAX_FILES} are allowed")
    for name, entry in files.items():
        check_file_name(name)
        entry = _dict(entry, f"files.{name}")
        if set(entry) != {"sha256", "bytes"}:
            raise _fail(f"files.{name}", f"must have exactly the keys 'sha256' and 'bytes', got {sorted(entry)}")
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            raise _fail(f"files.{name}.sha256", "must be 64 lowercase hex digits")
        _int(entry["bytes"], f"files.{name}.bytes", 0, MAX_FILE_BYTES)
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"the manifest lists no {name}; a bundle needs {list(REQUIRED_FILES)}")
    return files


def _check_neural(manifest: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    neural = _dict(manifest["neural"], "neural")
    if "max_length" not in neural:
        raise _fail("neural.max_length", "is missing")
    _int(neural["max_length"], "neural.max_length", 2, MODEL_MAX_LENGTH)
    kind = neural.get("type", "fine-tuned")
    if kind not in NEURAL_TYPES:
        raise _fail("neural.type", f"must be one of {list(NEURAL_TYPES)}, got {kind!r}")
    if kind == "frozen-encoder":
        head = neural.get("head")
        if not isinstance(head, str) or head not in files:
            raise _fail("neural.head", "must name the head's file, listed in 'files', for a frozen-encoder stage")
    elif "head" in neural:
        raise _fail("neural.head", "belongs to a frozen-encoder stage only (neural.type is 'fine-tuned')")
    return neural


def _check_optional_sections(manifest: dict[str, Any], files: dict[str, Any]) -> None:
    """The sections a bundle may carry: a spare encoder, "none of these", the mix."""
    encoder = _dict(manifest.get("encoder", {}), "encoder")
    if encoder:
        if not isinstance(encoder.get("file"), str) or encoder["file"] not in files:
            raise _fail("encoder.file", "must name the encoder's file, listed in 'files'")
        _int(encoder.get("max_length"), "encoder.max_length", 2, MODEL_MAX_LENGTH)
    abstain = _dict(manifest.get("abstain", {}), "abstain")
    if abstain:
        _real(abstain.get("below"), "abstain.below", 0.0, 1.0)
        if "max_rejected_share" in abstain:
            _real(abstain["max_rejected_share"], "abstain.max_rejected_share", 0.0, 1.0, lo_open=True)
    _check_mix(_dict(manifest.get("mix", {}), "mix"))


_OPENVINO_KEYS = {"model", "weights", "threshold", "beside_threshold", "selection", "quantization", "gate", "versions",
                  "calibration_texts", "created"}


def _check_openvino(manifest: dict[str, Any], files: dict[str, Any]) -> None:
    """The optional OpenVINO model of the neural stage: its two files (listed, so hashed), the threshold chosen
    on its scores and the manifest threshold it was chosen beside, its figures on the selection texts."""
    if "openvino" not in manifest:
        return
    section = _dict(manifest["openvino"], "openvino")
    unknown = sorted(set(section) - _OPENVINO_KEYS)
    if unknown:
        raise _fail("openvino", f"has unknown fields {unknown[:5]}")
    for key in ("model", "weights"):
        if not isinstance(section.get(key), str) or section[key] not in files:
            raise _fail(f"openvino.{key}", "must name a file listed in 'files'")
    if section["model"] == section["weights"]:
        raise _fail("openvino.weights", "must be another file than openvino.model")
    for key in ("threshold", "beside_threshold"):
        _real(section.get(key), f"openvino.{key}", 0.0, 1.0)
    for key in ("selection", "gate", "versions"):
        _dict(section.get(key, {}), f"openvino.{key}")
    if "calibration_texts" in section:
        _int(section["calibration_texts"], "openvino.calibration_texts", 1, 1_000_000)
    for key in ("quantization", "created"):
        if key in section and not isinstance(section[key], str):
            raise _fail(f"openvino.{key}", "must be a string")


def _check_calibration(manifest: dict[str, Any], labels: list[str]) -> None:
    calibration = _dict(manifest.get("calibration", {}), "calibration")
    for key in ("cheap_temperature", "neural_temperature"):
        if key in calibration:
            _real(calibration[key], f"calibration.{key}", 1e-3, 1e3)
    allowed = SET_MEASURES if manifest.get("task") == "multi-label" else MEASURES
    if "measure" in calibration and calibration["measure"] not in allowed:
        raise _fail("calibration.measure", f"must be one of {list(allowed)}, got {calibration['measure']!r}")
    always = calibration.get("always_neural", [])
    known = set(labels)
    if not isinstance(always, list) or len(always) > len(labels) \
            or not all(isinstance(label, str) and label in known for label in always):
        raise _fail("calibration.always_neural", "must be a list of the bundle's labels")
    if "reference" in calibration:
        _check_reference(_dict(calibration["reference"], "calibration.reference"), float(manifest["threshold"]),
                         manifest.get("task") == "multi-label")


def _check_records(manifest: dict[str, Any]) -> None:
    """The descriptive fields: strings, objects, and library versions."""
    for key in ("confidence", "threshold_rule", "created"):
        if key in manifest and not isinstance(manifest[key], str):
            raise _fail(key, f"must be a string, got {type(manifest[key]).__name__}")
    for key in ("training", "metrics"):
        if key in manifest:
            _dict(manifest[key], key)
    versions = _dict(manifest.get("versions", {}), "versions")
    if not all(isinstance(v, str) for v in versions.values()):
        raise _fail("versions", "must map library names to version strings")

