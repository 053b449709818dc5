"""Encoder folders: a frozen sentence encoder built on its own (``python -m cascade.training.encoder --model``),
for ``cascade train --encoder-from`` to build a cascade on, when it cannot ship inside a bundle (its tokenizer
is not the bundle's, as for an MPNet encoder beside the shipped MiniLM one).

A folder holds ``encoder.onnx``, ``tokenizer.json`` and ``encoder.json``, which describes them: their SHA-256,
the tokens read per text and what the encoder is. The file names are fixed (none is read from the JSON), the
whole description is validated, and each file is checked against its hash when read; a folder is written
in a scratch folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleError
from .store import copy_synced, fsync_dir, sha256_file, write_synced

ENCODER_JSON = "encoder.json"
ENCODER_FILE = "encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "cascade-encoder/1"
_KEYS = {"format", "max_length", "base_model", "files", "quantization", "activation_scales", "build"}
_MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class EncoderDir:
    """A verified encoder folder: its files' paths and hashes, and its description."""

    path: Path
    info: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / ENCODER_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def hashes(self) -> dict[str, str]:
        return {name: entry["sha256"] for name, entry in self.info["files"].items()}


def is_encoder_dir(path: str | Path) -> bool:
    return (Path(path) / ENCODER_JSON).is_file()


def _fail(path: Path, problem: str) -> BundleError:
    return BundleError(f"{path / ENCODER_JSON}: {problem}; rebuild the encoder folder "
                       "(python -m cascade.training.encoder --model DIR --out DIR)")


def validate_encoder_info(info: Any, path: Path) -> dict[str, Any]:
    """The description, every field checked (unknown fields refused)."""
    if not isinstance(info, dict):
        raise _fail(path, "must hold a JSON object")
    unknown = set(info) - _KEYS
    if unknown:
        raise _fail(path, f"unknown fields {sorted(unknown)[:5]}")
    if info.get("format") != FORMAT:
        raise _fail(path, f"format must be {FORMAT!r}, got {str(info.get('format'))[:40]!r}")
    length = info.get("max_length")
    if isinstance(length, bool) or not isinstance(length, int) or not 2 <= length <= 512:
        raise _fail(path, f"max_length must be an integer from 2 to 512, got {str(length)[:40]!r}")
    for key in ("base_model", "quantization", "activation_scales"):
        if key in info and (not isinstance(info[key], str) or len(info[key]) > 500):
            raise _fail(path, f"{key} must be a string of at most 500 characters")
    if "build" in info and not isinstance(info["build"], dict):
        raise _fail(path, "build must be an object")
    files = info.get("files")
    if not isinstance(files, dict) or set(files) != {ENCODER_FILE, TOKENIZER_FILE}:
        raise _fail(path, f"files must list exactly {ENCODER_FILE} and {TOKENIZER_FILE}")
    for name, entry in files.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise _fail(path, f"files.{name}.sha256 must be 64 lowercase hex digits")
    return info


def read_encoder_dir(path: str | Path) -> EncoderDir:
    """Read and verify an encoder folder: its description and both files' hashes."""
    path = Path(path)
    description = path / ENCODER_JSON
    if description.is_symlink() or not description.is_file():
        raise BundleError(f"{path}: no {ENCODER_JSON}; not an encoder folder")
    if description.stat().st_size > _MAX_JSON_BYTES:
        raise _fail(path, f"larger than {_MAX_JSON_BYTES >> 10} KiB")
    try:
        info = json.loads(description.read_text(encoding="utf-8"),
                          parse_constant=lambda c: math.nan)  # NaN/Infinity: refused below as non-integers
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _fail(path, f"is not valid JSON ({str(exc)[:100]})") from None
    found = EncoderDir(path, validate_encoder_info(info, path))
    for name, digest in found.hashes.items():
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise _fail(path, f"{name} is missing or not a regular file")
        if sha256_file(file) != digest:
            raise _fail(path, f"{name} does not match its SHA-256 (changed since it was built)")
    return found


def write_encoder_dir(out: str | Path, model: Path, tokenizer: Path, info: dict[str, Any]) -> EncoderDir:
    """Write an encoder folder at ``out`` (which must not exist), atomically, and read it back verified.
    ``info``: its description but ``format`` and ``files``."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; give a new folder for the encoder")
    out.parent.mkdir(parents=True, exist_ok=True)
    described = {**info, "format": FORMAT,
                 "files": {ENCODER_FILE: {"sha256": sha256_file(model)}, TOKENIZER_FILE: {"sha256": sha256_file(tokenizer)}}}
    validate_encoder_info(described, out)
    scratch = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    scratch.mkdir()  # the umask's permissions, as for any folder (mkdtemp's would be private)
    try:
        copy_synced(model, scratch / ENCODER_FILE)
        copy_synced(tokenizer, scratch / TOKENIZER_FILE)
        write_synced(scratch / ENCODER_JSON, json.dumps(described, indent=2, allow_nan=False).encode("utf-8"))
        fsync_dir(scratch)
        os.rename(scratch, out)  # a new name: readers see the whole folder or none
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)  # only the scratch folder this call made
        raise
    return read_encoder_dir(out)
