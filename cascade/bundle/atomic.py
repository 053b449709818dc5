"""Atomic writes: folders and files that readers see whole or not at all, and that never outlive a kill.

* :func:`swap_into_place` puts a finished folder at its path with one atomic ``renameat2`` exchange on
  Linux, so a reader always finds either the old bundle or the new one, never nothing. Where the exchange
  is not supported it falls back to two renames, and :func:`recover` restores the old folder if a kill
  struck between them. The swapped-out folder loses only the files its manifest lists: anything else
  someone put there meanwhile is kept, and said so.
* A scratch folder is named ``<prefix><pid>-<random>``, holds a marker file while cascade fills it, and is
  locked (``flock``) by the process working in it. :func:`clean_stale` removes those whose lock is free
  and whose process is gone, on the next save or load, and never touches a folder that is neither marked
  nor a bundle. The lock, not the process id, is what proves a folder abandoned, so a writer in another
  PID namespace (a container) is safe too.
* :func:`write_file_atomic` writes a single file through a temporary sibling and a rename.
* :func:`check_writable` fails fast, before long work, with one line naming the path.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".cascade-writing"  # in a folder cascade is filling or emptying; lists what it may delete there
LOCK_WAIT_SECONDS = 60.0
_PID = r"(\d{1,9})"  # a process id; longer digit runs are not cascade's names
MAX_NAME_BYTES = 200  # a target's name, so that its scratch siblings' names stay under the usual 255
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class FolderLock:
    """An exclusive ``flock`` on a folder, held while cascade works in or on it."""

    def __init__(self, path: Path, *, wait: bool = True) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait else 0.0)
        try:
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        if not wait:
                            raise
                        raise TimeoutError(errno.ETIMEDOUT, f"{path} is locked by another process (a save in "
                                           f"progress?) for over {LOCK_WAIT_SECONDS:.0f} s; try again", str(path)) from exc
                    time.sleep(0.05)
        except BaseException:
            os.close(self.fd)
            raise

    @classmethod
    def try_lock(cls, path: Path) -> FolderLock | None:
        """The lock if it is free now, else None (another process is working there)."""
        try:
            return cls(path, wait=False)
        except BlockingIOError:
            return None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def scratch_name(prefix: str) -> str:
    """A fresh name ``<prefix><pid>-<random>`` that :func:`clean_stale` can recognise."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"


class Scratch:
    """A scratch folder being filled; ``handed_over`` once it has been swapped into place (from then on
    an error must not delete what is at its old name: that is the previous bundle)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handed_over = False


@contextmanager
def new_scratch_dir(parent: Path, prefix: str) -> Iterator[Scratch]:
    """Create a marked, locked scratch folder in ``parent``; removed on an error before it is handed over."""
    scratch = Scratch(parent / scratch_name(prefix))
    scratch.path.mkdir()
    lock = FolderLock(scratch.path)
    try:
        _mark(scratch.path, None)
        yield scratch
    except BaseException:
        if not scratch.handed_over:
            remove_folder(scratch.path, None)
        raise
    finally:
        lock.release()


@contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A marked, locked scratch folder, removed on exit; one left by a killed process goes on the next call."""
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent, prefix)
    with new_scratch_dir(parent, prefix) as scratch:
        try:
            yield scratch.path
        finally:
            remove_folder(scratch.path, None)


def _mark(path: Path, names: Iterable[str] | None) -> None:
    """Write the marker: what cascade may delete in ``path`` (None: every regular file, a scratch folder)."""
    content = b"" if names is None else json.dumps(sorted(names)).encode("utf-8")
    (path / MARKER).write_bytes(content)


def _marked_names(path: Path) -> tuple[bool, list[str] | None]:
    """(whether ``path`` carries cascade's marker, the names it lists; None for all)."""
    marker = path / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False, None
    try:
        raw = marker.read_bytes()[: 1 << 20]
        names = json.loads(raw) if raw else None
    except (OSError, ValueError, RecursionError):
        return False, None
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return False, None
    return True, names


def remove_folder(path: Path, names: Iterable[str] | None) -> list[str]:
    """Delete the regular files ``names`` (all regular files if None) and the marker from ``path``, then
    the folder if that emptied it. Returns what was left (files cascade did not write). The marker
    written first records the same names, so a kill midway leaves the same promise for the next run."""
    wanted = None if names is None else set(names)
    try:
        _mark(path, wanted)
        entries = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    for name in entries:
        if name == MARKER or (wanted is not None and name not in wanted):
            continue
        entry = path / name
        if entry.is_symlink() or entry.is_file():
            entry.unlink(missing_ok=True)
    (path / MARKER).unlink(missing_ok=True)
    left = sorted(os.listdir(path))
    if not left:
        path.rmdir()
    return left


def clean_stale(parent: Path, prefix: str, own_files: Callable[[Path], set[str] | None] | None = None) -> list[Path]:
    """Tidy scratch folders ``<prefix><pid>-<hex>`` in ``parent`` that no process holds (lock free, process
    gone): delete what their marker says cascade may, or else, if ``own_files`` recognises the folder as a
    bundle, the files its manifest lists. Anything else found there is kept, and a warning says where.
    Returns the folders removed whole."""
    pattern = re.compile(re.escape(prefix) + _PID + r"-[0-9a-f]+")
    removed: list[Path] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError as exc:
        log.debug("cannot list %s to clean stale scratch folders: %s", parent, exc)
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir() or _pid_alive(int(match.group(1))):
            continue
        try:
            lock = FolderLock.try_lock(entry)
        except OSError:
            continue
        if lock is None:
            continue
        try:
            marked, names = _marked_names(entry)
            if not marked:
                listed = own_files(entry) if own_files is not None else None
                if listed is None:
                    continue
                names = sorted(listed)
            left = remove_folder(entry, names)
            if left:
                log.warning("%s was left by an interrupted cascade process; cascade removed its own files from "
                            "it and kept the rest there: %s", entry, ", ".join(left[:5]))
            else:
                removed.append(entry)
                log.info("removed %s, left by an interrupted cascade process", entry)
        except OSError as exc:
            log.warning("could not remove stale scratch folder %s: %s", entry, exc)
        finally:
            lock.release()
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def old_prefix(path: Path) -> str:
    return f".{path.name}.old-"


def tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def swap_into_place(scratch: Scratch, path: Path, own_files: Callable[[Path], set[str] | None]) -> None:
    """Put the finished scratch folder at ``path`` (its sibling). A folder already there is replaced
    atomically for readers; then only the files ``own_files(folder)`` names are deleted from it (None:
    none), and anything else found there is kept, with a warning naming where."""
    tmp = scratch.path
    if not path.exists() and not path.is_symlink():
        os.rename(tmp, path)
        scratch.handed_over = True
        return
    lock = FolderLock(path)  # waits for another writer swapping the same bundle
    try:
        if own_files(path) is None:  # checked again now: it may have changed since the caller looked
            raise FileExistsError(errno.EEXIST, f"{path} is no longer a cascade bundle (something replaced it "
                                  "during the save); refusing to replace it", str(path))
        if _exchange(tmp, path):
            old = tmp
        else:
            log.debug("atomic exchange not supported here; replacing %s with two renames", path)
            old = path.parent / scratch_name(old_prefix(path))
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
        scratch.handed_over = True
        names = own_files(old)
        left = remove_folder(old, names if names is not None else ())
        if left:
            log.warning("%s was replaced, but it held files that are not part of the bundle (%s); they are "
                        "kept in %s", path, ", ".join(left[:5]), old)
    finally:
        lock.release()


def recover(path: Path, own_files: Callable[[Path], set[str] | None]) -> None:
    """If a kill between the two renames of the fallback swap left ``path`` missing, put the previous
    bundle back (with anything else that was in it); then tidy stale scratch folders of ``path``."""
    if not path.exists() and not path.is_symlink() and path.parent.is_dir():
        pattern = re.compile(re.escape(old_prefix(path)) + _PID + r"-[0-9a-f]+")
        for entry in sorted(path.parent.iterdir()):
            match = pattern.fullmatch(entry.name)
            if not match or _pid_alive(int(match.group(1))):
                continue
            lock = FolderLock.try_lock(entry)
            if lock is None:
                continue
            try:
                if own_files(entry) is not None:
                    os.rename(entry, path)
                    log.warning("restored %s from %s, left by an interrupted save", path, entry.name)
                    break
            finally:
                lock.release()
        if not path.exists():
            return  # nothing to restore: keep every scratch folder until someone looks
    for prefix in (tmp_prefix(path), old_prefix(path)):
        clean_stale(path.parent, prefix, own_files)


def write_file_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a temporary sibling of ``path`` (its folder made if need be), then rename
    it over ``path``: a failure (a full disk, say) leaves no partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / scratch_name(f".{path.name}.tmp-")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_writable(path: Path, what: str) -> None:
    """Fail now, with one line naming ``path``, if a file or folder cannot be created there."""
    path = Path(path)
    if path.is_dir() and what == "file":
        raise OSError(errno.EISDIR, f"{path} is a folder; give a file name", str(path))
    if len(os.fsencode(path.name)) > MAX_NAME_BYTES:
        raise OSError(errno.ENAMETOOLONG, f"cannot write {path}: its name is longer than {MAX_NAME_BYTES} bytes",
                      str(path))
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OSError(errno.ENOTDIR, f"cannot write {path}: {parent} is not a folder", str(path))
    try:  # a real probe: access() says yes to root on a read-only mount's folders, and nothing on quotas
        fd, probe = tempfile.mkstemp(prefix=".cascade-probe-", dir=parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror} ({parent})", str(path)) from None
    os.close(fd)
    os.unlink(probe)
