"""Model bundles: a folder of ONNX and JSON files described by ``manifest.json``.

The manifest holds the format version, the labels, the routing threshold, the SHA-256 and size of every
file, the library versions it was built with, how it was trained and what it measured. Loading checks
the format version and every hash, and names the file that is missing, corrupt or tampered with.

Saving is atomic: files go to a temporary folder beside the target, are verified there, and only then
take the target's place; a failed or interrupted save leaves the bundle already there untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from .errors import BundleError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("cheap.onnx", "cheap_features.json", "neural.onnx", "tokenizer.json")
TRAIN_HASHES_FILE = "train_hashes.json"  # optional: hashes of the texts the bundle was trained on
_VERSIONED = ("cascade", "numpy", "scipy", "scikit-learn", "onnx", "onnxruntime", "skl2onnx", "tokenizers",
              "torch", "transformers")


def default_bundle_path() -> Path:
    """The bundle shipped in the repository's ``artifacts/`` folder (overridable with CASCADE_BUNDLE)."""
    env = os.environ.get("CASCADE_BUNDLE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "artifacts"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def text_hash(text: str) -> str:
    """The hash recorded for a training text (case and outer space ignored), to spot it again later."""
    return hashlib.sha256(text.strip().lower().encode("utf-8", "replace")).hexdigest()[:16]


def write_train_hashes(path: Path, hashes: set[str]) -> Path:
    """Write a ``train_hashes.json`` file (to be listed in a bundle's files)."""
    path.write_text(json.dumps({"format": "cascade.text-hashes/1", "hash": "sha256(text.strip().lower())[:16]",
                                "hashes": sorted(hashes)}), encoding="utf-8")
    return path


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a bundle depends on (those present)."""
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    def file(self, name: str) -> Path:
        return self.path / name

    def train_hashes(self) -> set[str] | None:
        """Hashes of the texts this bundle was trained on (:func:`text_hash`), or None if not recorded."""
        if TRAIN_HASHES_FILE not in self.manifest.get("files", {}):
            return None
        return set(json.loads(self.file(TRAIN_HASHES_FILE).read_text(encoding="utf-8"))["hashes"])


def read_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle folder; raise :class:`BundleError` naming what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        leftovers = sorted(p.name for p in path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        hint = f"; an interrupted save left the previous bundle at {leftovers[0]}" if leftovers else ""
        raise BundleError(f"{path}: no {MANIFEST}; not a cascade bundle{hint}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format version {manifest.get('format_version')!r} is not supported "
            f"(this cascade reads version {FORMAT_VERSION}); rebuild the bundle with this version"
        )
    files = manifest.get("files", {})
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{manifest_path}: the manifest lists no {name}")
    if verify:
        for name, entry in files.items():
            file_path = path / name
            if not file_path.is_file():
                raise BundleError(f"{path}: {name} is missing")
            if sha256_file(file_path) != entry["sha256"]:
                raise BundleError(
                    f"{path}: {name} does not match its SHA-256 in {MANIFEST} "
                    "(corrupt or modified); restore it or rebuild the bundle"
                )
    return Bundle(path, manifest)


def write_bundle(path: str | Path, files: Mapping[str, Path], manifest: Mapping[str, Any]) -> Bundle:
    """Write a bundle atomically: ``files`` maps names in the bundle to source files; ``manifest``
    holds everything but ``format_version``, ``files``, ``versions`` and ``created``, which are filled in."""
    path = Path(path).resolve()
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise BundleError(f"cannot write a bundle without {missing}")
    if path.exists() and not (path / MANIFEST).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise BundleError(f"{path} exists and is not a cascade bundle; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary folder
        entries = {}
        for name, src in sorted(files.items()):
            if not Path(src).is_file():
                raise BundleError(f"cannot write the bundle: source file for {name} not found at {src}")
            shutil.copyfile(src, tmp / name)  # a copy: a hard link would change if its source did
            entries[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        full = {
            "format_version": FORMAT_VERSION,
            **{k: v for k, v in manifest.items() if k not in ("format_version", "files")},
            "files": entries,
            "versions": manifest.get("versions") or library_versions(),
            "created": manifest.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        read_bundle(tmp)  # verify what was written before it replaces anything
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle written to %s", path)
    return read_bundle(path)


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path``; an existing bundle is moved aside first and removed last."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old)


def update_manifest(path: str | Path, changes: Mapping[str, Any]) -> Bundle:
    """Rewrite a bundle atomically with some manifest fields changed (files are kept as they are)."""
    bundle = read_bundle(path)
    files = {name: bundle.path / name for name in bundle.manifest["files"]}
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
    manifest.update(changes)
    return write_bundle(bundle.path, files, manifest)
