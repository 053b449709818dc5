"""Scale-out on Ray: classify a ``ray.data.Dataset`` through a pool of actors, each loading the bundle once.

The bundle reaches the workers in one of two ways. By default its files travel through Ray's object store
(put once by the driver), and each actor writes them to a local temporary folder: nothing needs a shared
file system. With ``ship=False``, each actor reads the bundle from ``bundle``'s path, which must exist on
every node. Either way every actor loads it with the digest the driver read, so an actor that got any other
bundle (a stale copy, a different node's folder) fails instead of answering with it; and every file's
SHA-256 is checked on load, as always.

    import ray, cascade.integrations.ray as cray
    ray.init()                                   # a laptop; on a cluster: ray.init(address="auto")
    ds = ray.data.read_parquet("s3://bucket/texts/")
    out = cray.classify_dataset(ds, "my-bundle", text_col="text", concurrency=4)
    out.write_parquet("s3://bucket/labelled/")
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..bundle import MANIFEST, default_bundle_path, read_bundle
from ..model import Cascade
from ..policy.routing import check_threshold
from ..stages.runtime import check_runtime, openvino_section

ADDED = ("label", "score", "stage", "error")


class BundleClassifier:
    """A Ray Data actor: loads the bundle once, then classifies batches (dicts of numpy columns)."""

    def __init__(self, files: Any, path: str | None, digest: str, text_col: str, threshold: float | None,
                 threads: int, runtime: str = "onnxruntime") -> None:
        self._folder: str | None = None
        if files is not None:  # the driver's copy, from the object store
            ray = require("ray", "ray")
            contents = ray.get(files) if isinstance(files, ray.ObjectRef) else files
            self._folder = tempfile.mkdtemp(prefix="cascade-ray-")
            for name, data in contents.items():
                (Path(self._folder) / name).write_bytes(data)
            path = self._folder
        self.model = Cascade.load(path, digest=digest, threads=threads, runtime=runtime)
        self.text_col = text_col
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = batch[self.text_col]
        ok = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
        answers = iter(self.model.classify([str(t) for t in texts[ok]], threshold=self.threshold, progress=False))
        label: list[str | None] = []
        score: list[float] = []
        stage: list[str | None] = []
        error: list[str | None] = []
        for good, text in zip(ok, texts):
            if good:
                p = next(answers)
                label.append(p.label)
                score.append(p.score)
                stage.append(p.stage)
                error.append(None)
            else:
                label.append(None)
                score.append(np.nan)
                stage.append(None)
                error.append("no text (null)" if text is None else "empty text" if isinstance(text, str)
                             else "not a string")
        return {**batch, "label": np.array(label, dtype=object), "score": np.array(score, dtype=np.float64),
                "stage": np.array(stage, dtype=object), "error": np.array(error, dtype=object)}

    def __del__(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)  # ours: written in __init__


def classify_dataset(ds: Any, bundle: str | Path | None = None, *, text_col: str = "text",
                     concurrency: int = 1, batch_size: int = 1024, num_cpus: float = 1,
                     threshold: float | None = None, ship: bool = True, runtime: str = "onnxruntime") -> Any:
    """``ds`` with ``label``, ``score``, ``stage`` and ``error`` columns added (single-label bundles),
    computed by ``concurrency`` actors of ``num_cpus`` cores each (the neural stage gets that many threads).
    ``ship``: send the bundle's files through the object store (no shared file system needed). ``runtime``:
    the neural stage's engine, ``"onnxruntime"`` or ``"openvino"`` (the bundle's OpenVINO model; every
    worker needs the ``[openvino]`` extra)."""
    ray = require("ray", "ray")
    runtime = check_runtime(runtime)

    if threshold is not None:
        threshold = check_threshold(threshold)  # here, not late inside every actor
    names = ds.schema().names if ds.schema() is not None else []
    if text_col not in names:
        raise ValueError(f"column {text_col!r} not found (columns: {names[:20]}); pass the right text_col")
    clash = [n for n in names if n.lower() in ADDED]
    if clash:
        raise ValueError(f"the dataset has column(s) {clash}, which classify_dataset adds ({', '.join(ADDED)}); "
                         "rename them first (ds.rename_columns)")
    source = read_bundle(bundle if bundle is not None else _default())
    if source.manifest.get("task") == "multi-label":
        raise ValueError("classify_dataset answers single-label bundles; this one is a tagger")
    if runtime == "openvino":
        openvino_section(source)  # here, not late inside every actor
    files = None
    if ship:
        names = [MANIFEST, *source.manifest["files"]]
        files = ray.put({name: (source.path / name).read_bytes() for name in names})
    return ds.map_batches(
        BundleClassifier, batch_format="numpy", batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus,
        fn_constructor_kwargs={"files": files, "path": None if ship else str(source.path), "digest": source.digest,
                               "text_col": text_col, "threshold": threshold, "threads": max(1, int(num_cpus)),
                               "runtime": runtime})


def _default() -> Path:
    return default_bundle_path()
