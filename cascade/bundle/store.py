"""Reading and writing bundle folders: whole, verified and atomic.

Loading reads ``manifest.json`` and every file it lists through one open handle on the folder, checks
each file's size and SHA-256, and hands the stages the verified bytes, so what runs is exactly what was
checked, even if the folder is replaced meanwhile (a swap seen mid-read is retried on the new folder).
Saving writes a complete folder beside the target, verifies it, and swaps it in atomically
(:mod:`cascade.bundle.atomic`); only a folder that is provably a cascade bundle is ever replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..text import text_hash, text_hash_v1
from ..version import __version__
from . import atomic
from .card import CARD, model_card
from .manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    REQUIRED_FILES,
    TRAIN_HASHES_FILE,
    check_file_name,
    manifest_digest,
    normalize_digest,
    parse_manifest,
    validate_manifest,
)

log = logging.getLogger(__name__)

_VERSIONED = ("numpy", "scipy", "scikit-learn", "onnx", "onnxruntime", "skl2onnx", "tokenizers",
              "torch", "transformers")
_READ_RETRIES = 8
HASHES_FORMAT = "cascade.text-hashes/2"
_HASH_FORMATS = {"cascade.text-hashes/1": text_hash_v1, HASHES_FORMAT: text_hash}


PACKAGED_BUNDLE = Path(__file__).resolve().parent.parent / "default_bundle"  # where a wheel puts it
CHECKOUT_BUNDLE = Path(__file__).resolve().parent.parent.parent / "artifacts"  # a clone (editable install)
REBUILD_SHIPPED_ENV = "CASCADE_REBUILD_SHIPPED"  # set to 1 to let a build replace the shipped bundle


def shipped_bundle_path() -> Path:
    """The default bundle that came with the package: inside it when installed from a wheel, the
    repository's ``artifacts/`` folder in a clone."""
    return PACKAGED_BUNDLE if PACKAGED_BUNDLE.is_dir() else CHECKOUT_BUNDLE


def default_bundle_path() -> Path:
    """The bundle used when none is named: $CASCADE_BUNDLE if set, else the shipped one."""
    env = os.environ.get("CASCADE_BUNDLE")
    if env:
        return Path(env)
    return shipped_bundle_path()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_train_hashes(path: Path, hashes: Iterable[str], selection: Iterable[str] = ()) -> Path:
    """Write a ``train_hashes.json`` file of :func:`cascade.text.text_hash` values (listed in a bundle's
    files): the training texts' and the selection texts' (those that chose the bundle's settings)."""
    path.write_text(json.dumps({"format": HASHES_FORMAT, "hash": "sha256(dedup_key(text))[:16]",
                                "hashes": sorted(hashes), "selection": sorted(selection)}), encoding="utf-8")
    return path


def library_versions() -> dict[str, str]:
    """This package's version and the installed versions of the libraries a bundle depends on (those present)."""
    versions = {"cascade": __version__}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class TrainHashes:
    """The training-text and selection-text hashes a bundle recorded, and the hash function they were made with."""

    hashes: frozenset[str]
    format: str
    selection: frozenset[str] = frozenset()

    def __contains__(self, text: object) -> bool:
        """Whether ``text`` (or a copy of it but for case, spacing or punctuation) is a training text."""
        return isinstance(text, str) and _HASH_FORMATS[self.format](text) in self.hashes

    def chose(self, text: str) -> bool:
        """Whether ``text`` (or such a copy) is one of the selection texts that chose the bundle's settings."""
        return _HASH_FORMATS[self.format](text) in self.selection


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder, its validated manifest and its digest (what :func:`read_bundle` returns).

    Attributes
    ----------
    path : Path
        The bundle folder.
    manifest : dict
        Its ``manifest.json``, every field validated.
    digest : str
        ``sha256:...`` of the manifest, as ``cascade info`` prints it and ``cascade.load(digest=...)`` pins.
    blobs : dict of str to bytes
        Verified bytes of the files a reader asked to keep.

    Examples
    --------
    >>> import cascade
    >>> bundle = cascade.read_bundle(cascade.load().bundle.path)
    >>> bundle.digest.startswith("sha256:"), len(bundle.labels)
    (True, 77)
    """

    path: Path
    manifest: dict[str, Any]
    digest: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    def file(self, name: str) -> Path:
        """The path of a file the manifest lists (its name is checked to stay inside the bundle)."""
        return self.path / check_file_name(name, "file name")

    def read_bytes(self, name: str) -> bytes:
        """A listed file's bytes, checked against its SHA-256 (from memory if loaded with them)."""
        if name in self.blobs:
            return self.blobs[name]
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise BundleError(f"{self.path}: the manifest lists no {name}")
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return _read_verified(fd, self.path, name, entry)
        finally:
            os.close(fd)

    def expected_hashes(self) -> dict[str, str]:
        return {name: entry["sha256"] for name, entry in self.manifest["files"].items()}

    def train_hashes(self) -> TrainHashes | None:
        """Hashes of the texts this bundle was trained on, or None if not recorded."""
        if TRAIN_HASHES_FILE not in self.manifest["files"]:
            return None
        try:
            data = json.loads(self.read_bytes(TRAIN_HASHES_FILE))
            fmt, hashes, selection = data["format"], data["hashes"], data.get("selection", [])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise BundleError(f"{self.path}: {TRAIN_HASHES_FILE} is malformed ({exc})") from None
        if fmt not in _HASH_FORMATS or not all(isinstance(x, list) and all(isinstance(h, str) for h in x)
                                               for x in (hashes, selection)):
            raise BundleError(f"{self.path}: {TRAIN_HASHES_FILE} has an unknown format {fmt!r}")
        return TrainHashes(frozenset(hashes), fmt, frozenset(selection))

    def without_blobs(self) -> Bundle:
        return Bundle(self.path, self.manifest, self.digest)


def _open_regular(dir_fd: int, name: str) -> int:
    """Open a regular file (no symlink, no FIFO or device: those could block or never end) in an open folder."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0), dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _read_verified(dir_fd: int, path: Path, name: str, entry: Mapping[str, Any], keep: bool = True) -> bytes:
    """A listed file's bytes (``keep``) or b"" after streaming it through SHA-256, checked against the
    manifest's size and hash; its size is checked before a byte is read."""
    try:
        fd = _open_regular(dir_fd, name)
    except FileNotFoundError:
        raise BundleError(f"{path}: {name} is missing") from None
    except OSError as exc:  # ELOOP: a symlink, refused
        raise BundleError(f"{path}: {name} cannot be read as a regular file inside the bundle ({exc.strerror}); "
                          "bundles may not contain symlinks") from None
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}; bundles hold only regular files") from None
    mismatch = BundleError(f"{path}: {name} does not match its SHA-256 in {MANIFEST} "
                           "(corrupt or modified); restore it or rebuild the bundle")
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fh.fileno()).st_size != entry["bytes"]:
            raise mismatch
        digest = hashlib.sha256()
        if keep:  # one buffer of the expected size: kept files are read whole anyway
            data = fh.read(entry["bytes"] + 1)
            digest.update(data)
        else:
            data = b""
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    if digest.hexdigest() != entry["sha256"] or (keep and len(data) != entry["bytes"]):
        raise mismatch
    return data


def _snapshot(path: Path, verify: bool, keep: tuple[str, ...], want: str | None) -> Bundle:
    """One consistent read of the bundle at ``path`` (raises _Swapped if it was replaced meanwhile)."""
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle folder") from None
    except NotADirectoryError:
        raise BundleError(f"{path} is a file, not a bundle folder; give the folder that holds {MANIFEST}") from None
    try:
        identity = os.fstat(dir_fd)
        raw = _read_manifest(dir_fd, path)
        digest = manifest_digest(raw)
        if want is not None and digest != want:  # before anything else is read
            raise BundleError(f"{path}: bundle digest {digest} is not the pinned {want}; "
                              "this is not the bundle you pinned")
        try:
            manifest = validate_manifest(parse_manifest(raw))
        except BundleError as exc:
            raise BundleError(f"{path / MANIFEST}: {exc}") from None
        blobs: dict[str, bytes] = {}
        try:
            for name, entry in manifest["files"].items():
                if verify or name in keep:
                    data = _read_verified(dir_fd, path, name, entry, keep=name in keep)
                    if name in keep:
                        blobs[name] = data
        except BundleError:
            if _replaced(path, identity):
                raise _Swapped() from None
            raise
        return Bundle(path, manifest, digest, blobs)
    finally:
        os.close(dir_fd)


def _read_manifest(dir_fd: int, path: Path) -> bytes:
    try:
        fd = _open_regular(dir_fd, MANIFEST)
    except FileNotFoundError:
        raise BundleError(f"{path}: no {MANIFEST}; not a cascade bundle") from None
    except OSError as exc:
        raise BundleError(f"{path}: {MANIFEST} cannot be read ({exc.strerror})") from None
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    return raw


class _Swapped(Exception):
    """The folder was replaced while it was being read."""


def _replaced(path: Path, identity: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return True
    return (now.st_dev, now.st_ino) != (identity.st_dev, identity.st_ino)


def is_bundle(path: Path) -> bool:
    """True if ``path`` is provably a cascade bundle: its manifest validates and the folder holds exactly
    the files it lists (the only kind of folder cascade will replace or remove)."""
    return bundle_problem(path) is None


def _listed_files(path: Path) -> set[str] | None:
    """The files a folder's own manifest says are the bundle's (None if it has no valid manifest)."""
    manifest_path = path / MANIFEST
    try:
        if manifest_path.is_symlink() or not manifest_path.is_file() \
                or manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        manifest = validate_manifest(parse_manifest(manifest_path.read_bytes()))
    except (OSError, BundleError):
        return None
    return set(manifest["files"]) | {MANIFEST}


def bundle_problem(path: Path) -> str | None:
    """Why ``path`` is not provably a cascade bundle (None if it is)."""
    if path.is_symlink() or not path.is_dir():
        return "it is not a folder"
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        return f"it has no {MANIFEST}"
    listed = _listed_files(path)
    if listed is None:
        return f"its {MANIFEST} is not a valid cascade manifest"
    try:
        entries = {p.name for p in path.iterdir()} - {atomic.MARKER}
    except OSError as exc:
        return f"it cannot be listed ({exc.strerror})"
    extra = sorted(entries - listed)
    if extra:
        return f"it holds files that are not part of the bundle, e.g. {extra[:3]}"
    if any((path / name).is_dir() or (path / name).is_symlink() for name in entries):
        return "it holds folders or symlinks"
    return None


def read_bundle(path: str | Path, verify: bool = True, *, digest: str | None = None,
                keep: tuple[str, ...] = ()) -> Bundle:
    """Read and check a bundle folder; raise :class:`BundleError` naming what is wrong.

    Parameters
    ----------
    path : str or Path
        The bundle folder.
    verify : bool, default True
        Check every file's SHA-256 against the manifest.
    digest : str, optional
        ``sha256:...`` as ``cascade info`` prints it: refuse any other bundle before reading its files.
    keep : tuple of str
        Files whose verified bytes are kept in :attr:`Bundle.blobs`.

    Returns
    -------
    Bundle
    """
    path = Path(path)
    want = normalize_digest(digest) if digest is not None else None
    try:
        atomic.recover(path, _listed_files)
    except OSError as exc:  # a read-only folder: loading must still work
        log.warning("could not tidy up after an interrupted save of %s: %s", path, exc)
    for _ in range(_READ_RETRIES):
        try:
            return _snapshot(path, verify, keep, want)
        except _Swapped:
            log.debug("%s was replaced while being read; reading it again", path)
    raise BundleError(f"{path}: the bundle kept changing while it was read; try again")


def enclosing_bundle(path: str | Path) -> Path | None:
    """The bundle ``path`` lies inside, ``path`` itself not counted (symlinks and '..' resolved: where a
    file written there would really land), or None."""
    for parent in Path(path).absolute().resolve().parents:
        if (parent / MANIFEST).is_file() and _listed_files(parent) is not None:
            return parent
    return None


def check_output_folder(path: str | Path) -> Path:
    """Fail before long work if a bundle cannot be written at ``path``: it exists and is not a cascade
    bundle, it lies inside a bundle, or its folder is not writable. Returns the absolute path."""
    path = Path(path).absolute()
    if path.is_symlink():
        raise BundleError(f"{path} is a symlink; refusing to replace it: write to the folder it points to")
    if path.resolve() == PACKAGED_BUNDLE:
        raise BundleError(f"{path} is the default bundle inside the installed package, which is never modified in "
                          "place: write your bundle to a folder of your own (e.g. --out my-bundle)")
    if path.resolve() == CHECKOUT_BUNDLE and os.environ.get(REBUILD_SHIPPED_ENV) != "1":
        raise BundleError(f"{path} is the shipped default bundle; write your bundle to a folder of your own (e.g. "
                          f"--out my-bundle; to rebuild the shipped one on purpose, set {REBUILD_SHIPPED_ENV}=1)")
    if path.exists():
        problem = bundle_problem(path)
        if problem is not None:
            raise BundleError(f"{path} exists and is not a cascade bundle ({problem}); refusing to replace it: "
                              "choose another output folder, or move that one away yourself")
    parent = enclosing_bundle(path)
    if parent is not None:
        raise BundleError(f"{path} is inside the bundle {parent}; a bundle holds only its own files: "
                          "choose an output folder outside it")
    atomic.check_writable(path, "folder")
    return path


def write_bundle(path: str | Path, files: Mapping[str, Path], manifest: Mapping[str, Any], *,
                 expected: Mapping[str, str] | None = None) -> Bundle:
    """Write a bundle atomically: ``files`` maps names in the bundle to source files (``expected`` their
    SHA-256, when they come from a verified bundle); ``manifest`` holds everything but
    ``format_version``, ``files``, ``versions`` and ``created``, which are filled in.

    An existing folder at ``path`` is replaced only if it is provably a cascade bundle, and only the files
    its manifest lists are deleted."""
    for name in files:
        check_file_name(name, "file to write")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise BundleError(f"cannot write a bundle without {missing}")
    path = check_output_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.recover(path, _listed_files)
    try:
        with atomic.new_scratch_dir(path.parent, atomic.tmp_prefix(path)) as scratch:
            tmp = scratch.path
            _fill(tmp, files, manifest, expected)
            atomic.swap_into_place(scratch, path, _listed_files)
            fsync_dir(path.parent)
    except OSError as exc:  # a full disk, say: say which bundle could not be written
        if exc.filename is not None and str(path) in str(exc.filename):
            raise
        raise OSError(exc.errno, f"cannot write the bundle {path}: {exc.strerror or exc}", str(path)) from exc
    log.info("bundle written to %s", path)
    return read_bundle(path)


def _fill(tmp: Path, files: Mapping[str, Path], manifest: Mapping[str, Any], expected: Mapping[str, str] | None) -> None:
    """Copy the files into the scratch folder, write the manifest, verify the result."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # an ordinary folder, not a private one
    entries = {}
    for name, src in sorted(files.items()):
        if name == CARD:  # written afresh below, from the manifest being saved
            continue
        src = Path(src)
        if not src.is_file():
            raise BundleError(f"cannot write the bundle: source file for {name} not found at {src}")
        copy_synced(src, tmp / name)  # a copy: a hard link would change if its source did
        sha = sha256_file(tmp / name)
        if expected is not None and name in expected and expected[name] != sha:
            raise BundleError(f"cannot write the bundle: {src} changed since its bundle was verified "
                              f"(SHA-256 differs); reload it and try again")
        entries[name] = {"sha256": sha, "bytes": (tmp / name).stat().st_size}
    full = {
        "format_version": FORMAT_VERSION,
        **{k: v for k, v in manifest.items() if k not in ("format_version", "files")},
        "files": entries,
        "versions": manifest.get("versions") or library_versions(),
        "created": manifest.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_synced(tmp / CARD, model_card(full).encode("utf-8"))
    entries[CARD] = {"sha256": sha256_file(tmp / CARD), "bytes": (tmp / CARD).stat().st_size}
    try:
        raw = (json.dumps(full, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        validate_manifest(parse_manifest(raw))
    except (BundleError, ValueError, UnicodeEncodeError) as exc:
        raise BundleError(f"refusing to write an invalid bundle: {exc}") from None
    write_synced(tmp / MANIFEST, raw)
    (tmp / atomic.MARKER).unlink()
    read_bundle(tmp)  # verify what was written before it replaces anything
    fsync_dir(tmp)


def copy_synced(src: Path, dst: Path) -> None:
    """Copy ``src`` to a new file ``dst``, on disk before returning."""
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())


def write_synced(dst: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``dst``, on disk before returning."""
    with dst.open("xb") as fout:
        fout.write(data)
        fout.flush()
        os.fsync(fout.fileno())


def fsync_dir(path: Path) -> None:
    """Put a folder's entries (a rename into it) on disk, where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on folders; the data files are synced
        log.debug("fsync of folder %s: %s", path, exc)
    finally:
        os.close(fd)


def update_manifest(path: str | Path, changes: Mapping[str, Any]) -> Bundle:
    """Rewrite a bundle atomically with some manifest fields changed (files are kept as they are)."""
    bundle = read_bundle(path)
    files = {name: bundle.file(name) for name in bundle.manifest["files"]}
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
    manifest.update(changes)
    return write_bundle(bundle.path, files, manifest, expected=bundle.expected_hashes())
