"""Model bundles: a folder of ONNX and JSON files described by ``manifest.json``.

:mod:`~cascade.bundle.manifest` is the manifest's schema and the bundle digest,
:mod:`~cascade.bundle.store` reads and writes bundle folders (verified, atomic), and
:mod:`~cascade.bundle.atomic` holds the atomic-swap and scratch-folder machinery they rest on.
"""

from ..text import text_hash
from . import atomic
from .manifest import (
                       FORMAT_VERSION,
                       MANIFEST,
                       REQUIRED_FILES,
                       TRAIN_HASHES_FILE,
                       check_file_name,
                       manifest_digest,
                       normalize_digest,
                       validate_manifest,
)
from .store import (
                       Bundle,
                       TrainHashes,
                       bundle_problem,
                       check_output_folder,
                       default_bundle_path,
                       is_bundle,
                       library_versions,
                       read_bundle,
                       sha256_file,
                       shipped_bundle_path,
                       update_manifest,
                       write_bundle,
                       write_train_hashes,
)

__all__ = [
    "FORMAT_VERSION", "MANIFEST", "REQUIRED_FILES", "TRAIN_HASHES_FILE", "Bundle", "TrainHashes", "atomic",
    "bundle_problem", "check_output_folder",
    "check_file_name", "default_bundle_path", "is_bundle", "library_versions", "manifest_digest", "normalize_digest",
    "read_bundle", "sha256_file", "shipped_bundle_path", "text_hash", "update_manifest", "validate_manifest", "write_bundle",
    "write_train_hashes",
]
