"""Helpers of the adversarial suite: copies of the tiny bundle to tamper with, and the CLI in-process."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def copy_bundle(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``change`` to the parsed manifest and write it back (hashes of files untouched)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def replace_file(bundle: Path, name: str, data: bytes) -> None:
    """Rewrite a bundle file and fix its hash in the manifest: tampering that hashes cannot catch."""
    (bundle / name).write_bytes(data)

    def fix(m: dict[str, Any]) -> None:
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    edit_manifest(bundle, fix)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The id of a process that has just ended (for scratch-folder names of a killed process)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def run_killed(script: str, bundle: Path) -> None:
    """Run ``script`` (which SIGKILLs itself mid-save; BUNDLE stands for the bundle's path) in a child."""
    import textwrap

    code = textwrap.dedent(script).replace("BUNDLE", repr(str(bundle)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()


def cascade_cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], input=stdin, capture_output=True,
                          timeout=timeout, env=env)
