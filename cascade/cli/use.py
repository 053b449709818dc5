"""Commands that use a bundle: classify, batch, serve, info, calibrate, monitor, evaluate, bench."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import warnings
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from .._optional import require
from ..banking77 import load_banking77
from ..batch import batch
from ..bundle import check_output_folder, default_bundle_path, read_bundle
from ..bundle.card import effectively_cheap, summary
from ..calibration import CalibrationWarning, calibrate, plot_path
from ..calibration.calibrator import MIN_TRAFFIC_TEXTS, PREMISE
from ..calibration.feedback import check_feedback_labels, outcomes, promise_of
from ..calibration.rules import check_request
from ..calibration.sequential import PromiseMonitor
from ..datasets import TextDataset, read_csv
from ..evaluation import evaluate
from ..model import Cascade
from ..policy.routing import check_threshold
from ..progress import progress_bar
from ..records import format_of, read_rows, read_texts
from ..serving.settings import ServeSettings
from ..splits import certification_split
from .build import BUNDLED_NAME
from .streams import read_stdin_chunks, utf8_stdout, write_json_line


def cmd_classify(args: argparse.Namespace) -> int:
    if args.input is not None and args.texts:
        raise ValueError("give texts as arguments or --input FILE, not both")
    if args.input is None and not args.texts:
        raise ValueError("nothing to classify: give texts, '-' (one text per line on stdin) or --input FILE")
    if args.input is None and (args.format is not None or args.id_col is not None or args.text_col != "text"):
        raise ValueError("--format, --text-col and --id-col apply to --input FILE")
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest, **_providers(args))
    if args.input is not None:
        return _classify_rows(model, args)
    if args.texts == ["-"]:
        chunks: Iterator[list[str]] = read_stdin_chunks(model.cheap.limits.max_text_chars)
    elif "-" in args.texts:
        raise ValueError("'-' (stdin) cannot be mixed with texts given as arguments")
    else:
        chunks = iter([args.texts])
    out = utf8_stdout()
    for chunk in chunks:
        for pred in model.classify(chunk, threshold=args.threshold, top_k=args.top_k):
            write_json_line(out, pred.to_dict())
        out.flush()
    return 0


def _classify_rows(model: Any, args: argparse.Namespace) -> int:
    """``classify --input``: rows streamed in chunks; each answer (or error) carries its row's id."""
    stdin = args.input == "-"
    path = None if stdin else Path(args.input)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"no such file: {path}") if not path.exists() else ValueError(
            f"{path} is not a regular file")
    fmt = format_of(path, args.format)
    limits = model.cheap.limits
    out = utf8_stdout()
    bad = 0
    bar = progress_bar(desc="classify", unit="row", progress=True)  # rows counted: a bar, or log heartbeats
    with bar, (open(sys.stdin.fileno(), "rb", closefd=False) if stdin else path.open("rb")) as fh:  # type: ignore[union-attr]
        rows = read_rows(fh, "stdin" if stdin else str(path), fmt, args.text_col, args.id_col,
                         max_field_chars=limits.max_csv_field_chars)
        failure: ValueError | None = None
        while failure is None:
            chunk = []
            try:
                for row in rows:
                    chunk.append(row)
                    if len(chunk) == limits.chunk_size:
                        break
            except ValueError as exc:  # a malformed line: answer the rows before it, then say so
                failure = exc
            if not chunk:
                break
            bar.update(len(chunk))
            bad += _answer_chunk(model, chunk, args, out)
    if bad:
        sys.stderr.write(f"cascade classify: {bad:,} row(s) could not be classified; their lines hold \"error\"\n")
    if failure is not None:
        raise failure
    return 0


def _answer_chunk(model: Any, chunk: list[Any], args: argparse.Namespace, out: Any) -> int:
    """Write one JSON line per row of ``chunk``, in order; returns how many rows were errors."""
    good = [row for row in chunk if not row.error]
    answers = iter(model.classify([row.text for row in good], threshold=args.threshold, top_k=args.top_k,
                                  progress=False))
    for row in chunk:
        if row.error:
            write_json_line(out, {"id": row.id, "error": row.error})
        else:
            write_json_line(out, {"id": row.id, **next(answers).to_dict()})
    out.flush()
    return len(chunk) - len(good)


def _providers(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options of a command that runs a bundle: --provider (onnxruntime's) and --runtime."""
    return {**({"providers": args.providers} if args.providers else {}), "runtime": args.runtime}


def cmd_batch(args: argparse.Namespace) -> int:
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest, **_providers(args))
    report = batch(args.input, args.out, text_col=args.text_col, id_col=args.id_col, model=model,
                   threshold=args.threshold, chunk_size=args.chunk_size, memory_limit=args.memory_limit,
                   overwrite=args.overwrite)
    utf8_stdout().write(json.dumps({"out": str(report.out), "rows": report.rows, "distinct_texts": report.distinct_texts,
                                    "classified_now": report.classified, "errors": report.errors,
                                    "seconds": round(report.seconds, 2),
                                    "rows_per_second": round(report.texts_per_second, 1)}) + "\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:

    # lazy: the [serve] extra (FastAPI, uvicorn) loads only for `cascade serve`
    from ..serving.server import serve

    settings = ServeSettings.from_sources({f.name: getattr(args, f.name) for f in fields(ServeSettings)})
    return 130 if serve(settings) else 0  # 130: stopped by Ctrl-C, as a shell reports it


def cmd_info(args: argparse.Namespace) -> int:
    bundle = read_bundle(args.bundle if args.bundle is not None else default_bundle_path(), digest=args.digest)
    manifest: dict[str, Any] = dict(bundle.manifest)
    shown = os.fsencode(bundle.path).decode("utf-8", "replace")  # a folder name need not be UTF-8
    if not (args.json or args.full):
        utf8_stdout().write(summary(manifest, shown, bundle.digest))
        return 0
    if not args.full:
        labels = manifest.pop("labels")
        note = effectively_cheap(manifest)
        manifest = {"path": shown, "digest": bundle.digest, "n_labels": len(labels),
                    **({"effectively_its_cheap_stage": note} if note is not None else {}), **manifest}
        if "decisions" in manifest:  # a tagger's cut-offs, named by topic
            cuts = manifest["decisions"]
            manifest["decisions"] = {**cuts, **{k: dict(zip(labels, cuts[k])) for k in ("cheap", "fallen", "neural")
                                                if k in cuts}}
    else:
        manifest = {"digest": bundle.digest, **manifest}
    utf8_stdout().write(json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:

    # Everything that could fail at the end is checked before the long work.
    check_request(target_accuracy=args.target_accuracy, target_f1=args.target_f1, fallthrough=args.fallthrough,
                  latency_ms=args.latency_ms, match_neural=args.match_neural, confidence=args.confidence)
    if args.plot is not None:
        require("matplotlib", "plot")
    plot = plot_path(args.plot) if args.plot is not None else None
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest)
    if args.target_f1 is not None and not model.multi_label:
        raise ValueError(f"--target-f1 is for multi-label bundles; {args.bundle} is single-label: use --target-accuracy")
    data = _certification_data(args, model.bundle.manifest if model.bundle is not None else {})
    traffic = read_texts(args.traffic, args.traffic_col, text_flag="--traffic-col") if args.traffic is not None else None
    if traffic is not None and len(set(traffic)) < MIN_TRAFFIC_TEXTS:
        raise ValueError(f"{args.traffic}: {len(set(traffic))} distinct texts; --traffic needs at least "
                         f"{MIN_TRAFFIC_TEXTS} (a few thousand make the estimate's bound tight)")
    if args.out is not None:
        check_output_folder(args.out)
    elif args.save and model.bundle is not None:
        check_output_folder(model.bundle.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # reported in the JSON below
        cal = calibrate(model, data.texts, data.labels, label_sep=args.label_sep)
        if traffic is not None:
            cal.observe_traffic(traffic)
        choice = cal.choose(target_accuracy=args.target_accuracy, confidence=args.confidence,
                            fallthrough=args.fallthrough, latency_ms=args.latency_ms,
                            match_neural=args.match_neural, per_class=args.per_class, target_f1=args.target_f1)
    result: dict[str, Any] = {"choice": choice.to_dict(), "calibration": cal.report()}
    if args.save or args.out is not None:
        if choice.mode in ("target_accuracy", "target_f1") and not choice.feasible and not args.allow_uncertified:
            result["saved"] = None
            result["not_saved"] = ("no promise made (choice.reason says why); nothing written (--allow-uncertified "
                                   "writes the closest threshold anyway)")
        else:
            result["saved"] = str(cal.save(args.out, choice, allow_uncertified=args.allow_uncertified).path)
    plot_error = None
    if plot is not None:  # after the save, and reported without losing the result if it fails
        try:
            result["plot"] = str(cal.plot(plot, choice))
        except OSError as exc:
            plot_error = f"cannot write the plot {plot}: {exc.strerror or exc}"
            result["plot_error"] = plot_error
    out = utf8_stdout()
    out.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
    for message in cal.warnings_:
        sys.stderr.write(f"warning: {message}\n")
    if choice.certified and traffic is None:
        sys.stderr.write(f"note: {PREMISE}\n")
    if plot_error is not None:
        sys.stderr.write(f"cascade calibrate: error: {plot_error}\n")
        return 2
    return 0 if choice.feasible else 3


def cmd_monitor(args: argparse.Namespace) -> int:
    if args.every < 1:
        raise ValueError(f"--every must be a positive number of texts, got {args.every}")
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest)
    promised, figure = promise_of(model)
    target = args.target if args.target is not None else promised
    monitor = PromiseMonitor(target, args.alpha)  # checks target and alpha before any work
    data = read_csv(args.data, args.text_col, args.label_col)
    labels = check_feedback_labels(model, data.labels)
    kept: list[int] = []  # a text is counted once, as by the server's /v1/feedback
    seen: set[str] = set()
    for i, text in enumerate(data.texts):
        if text not in seen:
            seen.add(text)
            kept.append(i)
    out = utf8_stdout()
    state = monitor.state
    for start in range(0, len(kept), args.every):
        rows = kept[start:start + args.every]
        predictions = model.classify([data.texts[i] for i in rows], progress=False)
        state = monitor.update(outcomes(predictions, [labels[i] for i in rows], figure))
        out.write(json.dumps({"figure": figure, **state.to_dict()}, allow_nan=False) + "\n")
        out.flush()
    summary = {"figure": figure, "source": "--target" if args.target is not None else
               ("the bundle's calibration" if promised is not None else "none: no promise to test"),
               "repeated_texts_skipped": len(data.texts) - len(kept), **state.to_dict()}
    out.write(json.dumps({"summary": summary}, allow_nan=False) + "\n")
    if state.violated:
        sys.stderr.write(f"cascade monitor: the promise ({figure} >= {target:.2%}) is violated at confidence "
                         f"{1 - args.alpha:.0%}, first after {state.violated_after} texts\n")
        return 3
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    threshold = check_threshold(args.threshold) if args.threshold is not None else None
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest, runtime=args.runtime)
    data = read_csv(args.data, args.text_col, args.label_col)
    figures = evaluate(model, data, threshold, label_sep=args.label_sep, per_class=args.per_class, progress=True)
    task = "multi-label" if model.multi_label else "single-label"
    utf8_stdout().write(json.dumps({"task": task, "data": str(args.data), **figures}, indent=2, allow_nan=False) + "\n")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    script = Path(__file__).resolve().parent.parent.parent / "benchmarks" / "run.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: `cascade bench` runs from a clone of the repository")
    sys.argv = [str(script), *[a for a in args.rest if a != "--"]]
    runpy.run_path(str(script), run_name="__main__")
    return 0

def _certification_data(args: argparse.Namespace, manifest: dict[str, Any]) -> TextDataset:
    """What ``cascade calibrate`` certifies on: --val as given, or the certification split of --data (or of
    the bundled BANKING77, for a bundle built from it)."""
    if args.val is not None:
        return read_csv(args.val, args.text_col, args.label_col)
    training = manifest.get("training", {})
    recorded = training.get("splits", {})
    if args.data is not None:  # the group and time columns the build carved by, if any
        given = [key for key in ("group_col", "time_col") if recorded.get(key) == "(given)"]
        if given:
            raise ValueError(f"this bundle's build carved by {' and '.join(k[:-4] + 's' for k in given)} given in Python, "
                             "not read from a column, so --data cannot find its certification split again; certify "
                             "from Python (cascade.carve_splits on the same TextDataset, then cascade.calibrate) or "
                             "with --val")
        data = read_csv(args.data, args.text_col, args.label_col, group_col=recorded.get("group_col"),
                        time_col=recorded.get("time_col"))
        return certification_split(data, recorded, str(args.data))
    if training.get("data") == BUNDLED_NAME:
        return certification_split(load_banking77("train_full"), recorded, BUNDLED_NAME)
    raise ValueError("give --data (the CSV the bundle was built from: its certification split is used) or --val "
                     "(a CSV of held-out labelled texts)")
