"""The ``cascade`` command: classify, info, calibrate, bench, train, train-cheap, finetune."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from .datasets import TextDataset, banking77_labels, load_banking77, read_csv

log = logging.getLogger("cascade")
STDIN_CHUNK = 1024
DEFAULT_WORK_DIR = Path.home() / ".cache" / "cascade" / "finetune"


def _add_bundle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle folder (default: the shipped one, or $CASCADE_BUNDLE)")
    p.add_argument("--digest", default=None,
                   help="refuse any bundle but the one with this digest (sha256:..., as `cascade info` prints)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="labelled CSV (or .tsv, .jsonl), carved into train / selection / certification (default: "
                        "the bundled BANKING77 train.csv)")
    p.add_argument("--text-col", default="text", help="text column (or JSON field) of the files (default: text)")
    p.add_argument("--label-col", default="category",
                   help="label column (or JSON field) of the files (default: category)")
    p.add_argument("--val", type=Path, default=None,
                   help="selection CSV: the texts that choose the threshold and settings (default: carved out of "
                        "--data); with it, all of --data trains and nothing is set aside for certification")
    p.add_argument("--selection-share", type=float, default=0.1,
                   help="share of --data carved out as selection texts (default: 0.1)")
    p.add_argument("--certification-share", type=float, default=0.1,
                   help="share of --data set aside, untouched, for `cascade calibrate --data` (default: 0.1)")


def _add_multi_label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--multi-label", action="store_true",
                   help="several topics per text: the label column holds topics joined by --label-sep")
    p.add_argument("--label-sep", default=None, help="separator of the topics in a label cell (default: |)")


def _label_sep(args: argparse.Namespace) -> str:
    """A build command's topic separator: --label-sep needs --multi-label (without it, it would be ignored)."""
    if args.label_sep is not None and not args.multi_label:
        raise ValueError("--label-sep needs --multi-label (several topics per text)")
    return args.label_sep or "|"


EXIT_CODES = """exit codes:
  0  done
  1  internal error (a bug: rerun with -v for the traceback and report it)
  2  usage error, or bad input, file or bundle (the message names it and the fix)
  3  calibrate: the target cannot be certified on these texts (nothing saved without --allow-uncertified)"""


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="cascade", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages, show tracebacks")
    parser.add_argument("--version", action="version", version=f"cascade {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify texts; prints one JSON line per text",
                       description="Classify texts given as arguments, or one per line from stdin with '-' "
                                   "(read as UTF-8). Prints one JSON line per text, in UTF-8.")
    p.add_argument("texts", nargs="+", help="texts to classify, or '-' to read one text per line (UTF-8) from stdin")
    _add_bundle_arg(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="routing cut-off on the cheap stage's confidence, 0 to 1: texts below it go to the neural "
                        "stage (0: none, 1: all; default: the bundle's); not a score filter")
    p.add_argument("--top-k", type=int, default=1, help="also list the k most likely labels")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")

    p = sub.add_parser("info", help="show a bundle's metadata and metrics",
                       description="Print a bundle's manifest as JSON (checked, hashes verified): its labels count, "
                                   "threshold and how it was chosen, the figures measured at build and calibration, "
                                   "and, for a tagger, each topic's cut-offs. --full adds the label list.")
    _add_bundle_arg(p)
    p.add_argument("--full", action="store_true", help="print the whole manifest, labels included")

    p = sub.add_parser("calibrate", help="choose the threshold from labelled texts the build never saw",
                       description="Fit calibrated scores on labelled texts the bundle's build never saw (its "
                                   "certification split, or a held-out CSV) and choose the threshold by one rule; "
                                   "prints the choice and what it promises. --save writes it into the bundle.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, default=None,
                        help="the CSV the bundle was built from: certify on the split its build set aside")
    source.add_argument("--val", type=Path, default=None,
                        help="a labelled CSV of held-out texts (neither training nor selection texts)")
    p.add_argument("--text-col", default="text", help="text column (default: text)")
    p.add_argument("--label-col", default="category", help="label column (default: category)")
    _add_bundle_arg(p)
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--target-accuracy", type=float, help="promise at least this accuracy on unseen data")
    rule.add_argument("--fallthrough", type=float, help="send at most this share of texts to the neural stage")
    rule.add_argument("--latency-ms", type=float, help="expected ms per text within this budget")
    rule.add_argument("--match-neural", type=float, help="within this many accuracy points of the neural stage")
    rule.add_argument("--target-f1", type=float,
                      help="multi-label bundles: promise at least this mean per-text F1 on unseen data")
    p.add_argument("--label-sep", default=None,
                   help="multi-label bundles: the topic separator of a label cell (default: the bundle's)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="probability that the --target-accuracy (or --target-f1) promise holds (default: 0.95)")
    p.add_argument("--per-class", action="store_true",
                   help="send classes whose cheap-stage answers are much worse than the rest to the neural stage")
    p.add_argument("--plot", type=Path, default=None, help="save the trade-off curve to this PNG")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--save", action="store_true", help="write the threshold and calibration into the bundle")
    out.add_argument("--out", type=Path, default=None, help="write a calibrated copy of the bundle here")
    p.add_argument("--allow-uncertified", action="store_true",
                   help="with --save/--out, write the closest threshold even when the --target-accuracy promise "
                        "cannot be certified (default: write nothing then)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")

    p = sub.add_parser("evaluate", help="figures of a bundle on a labelled CSV",
                       description="Score a labelled CSV with each stage alone and with the cascade: accuracy and "
                                   "macro-F1 for a single-label bundle; micro-F1, macro-F1, exact match and Hamming "
                                   "loss for a multi-label one (label cells: topics joined by --label-sep); and the "
                                   "fall-through rate. Prints JSON.")
    p.add_argument("--data", type=Path, required=True, help="labelled CSV (never one the bundle was built from)")
    p.add_argument("--text-col", default="text", help="text column (default: text)")
    p.add_argument("--label-col", default="category", help="label column (default: category)")
    p.add_argument("--label-sep", default=None, help="topic separator for a multi-label bundle (default: the bundle's)")
    p.add_argument("--threshold", type=float, default=None, help="evaluate at this threshold instead of the bundle's")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    _add_bundle_arg(p)

    p = sub.add_parser("bench", help="run benchmarks/run.py (from a clone): every system side by side",
                       description="Runs the repository's benchmarks/run.py with the arguments given after "
                                   "`--`, e.g. `cascade bench -- --quick`.", add_help=True)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for benchmarks/run.py")

    p = sub.add_parser("train-cheap", help="retrain the cheap stage and write a new bundle",
                       description="Fit the TF-IDF + logistic regression stage on a CSV, check its ONNX export "
                                   "against scikit-learn, choose the threshold on the selection texts and write a bundle "
                                   "that keeps the base bundle's neural stage.")
    _add_data_args(p)
    p.add_argument("--base", type=Path, default=None, help="bundle whose neural stage is kept (default: shipped)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--C", type=float, default=None,
                   help="inverse regularisation strength (default: 20; 100 with --multi-label)")
    p.add_argument("--no-char", action="store_true", help="word n-grams only (smaller, less accurate)")
    _add_multi_label_args(p)

    p = sub.add_parser("train", help="build a whole bundle on your own labels in minutes (no torch)",
                       description="Fit the cheap stage and a linear head on a frozen INT8 sentence encoder (the "
                                   "shipped one), choose the threshold and the stages' mix on the selection texts, and "
                                   "write a bundle. Any label set; core install only.")
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--encoder-from", type=Path, default=None,
                   help="bundle whose frozen encoder is reused (default: the shipped one)")
    p.add_argument("--head-C", type=float, default=None, help="inverse regularisation of the head (default: 10)")
    p.add_argument("--C", type=float, default=None,
                   help="inverse regularisation of the cheap stage (default: 20; 100 with --multi-label)")
    p.add_argument("--max-length", type=int, default=None, help="tokens read per text (default: the encoder's)")
    _add_multi_label_args(p)
    p.add_argument("--windows", type=int, default=None,
                   help="read long texts as up to this many windows of --max-length tokens, their embeddings averaged "
                        "(default: 1, the first --max-length tokens only)")
    p.add_argument("--abstain", type=float, default=None, metavar="SHARE",
                   help="answer 'none of these' (label null) to texts that fit no label, rejecting at most this "
                        "share of in-scope selection texts (e.g. 0.05)")

    p = sub.add_parser("finetune", help="fine-tune the transformer and build a whole bundle (needs [train])",
                       description="Fine-tune all-MiniLM-L6-v2, export it to ONNX, fuse and quantize it to INT8, "
                                   "train the cheap stage, choose the threshold on the selection texts, write a bundle.")
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                   help=f"where checkpoints and fp32 ONNX files go (default: {DEFAULT_WORK_DIR})")
    p.add_argument("--checkpoint", type=Path, default=None, help="reuse a fine-tuned checkpoint; skip training")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training texts; the best on the selection texts is kept (default: 8)")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate of the encoder (default: 0.0001; a tagger's new output layer: 0.001)")
    p.add_argument("--batch-size", type=int, default=None, help="texts per step (default: 32)")
    p.add_argument("--max-length", type=int, default=None, help="tokens kept per text (default: 128)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the initialisation and batch order (default: 0)")
    _add_multi_label_args(p)
    p.add_argument("--windows", type=int, default=1,
                   help="read long texts as up to this many windows of --max-length tokens, their logits averaged "
                        "(default: 1, the first --max-length tokens only)")
    for command in sub.choices.values():  # -v after the command too (`cascade train ... -v`)
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log debug messages, show tracebacks")
    return parser


def _read_stdin_chunks(max_text_chars: int) -> Iterator[list[str]]:
    """Lines of standard input, decoded as UTF-8 whatever the locale says, in chunks. Of a line, what
    cascade reads is kept (its first ``max_text_chars`` characters after leading whitespace, as for any
    text); the rest is skipped without being held in memory."""
    chunk: list[str] = []
    for lineno, line in enumerate(_stdin_lines(max_text_chars), start=1):
        if line is None:
            raise ValueError(f"standard input line {lineno} is not UTF-8; cascade reads UTF-8 "
                             "(convert with e.g. `iconv -f latin1 -t UTF-8`)")
        chunk.append(line)
        if len(chunk) == STDIN_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _stdin_lines(max_text_chars: int, block: int = 1 << 16) -> Iterator[str | None]:
    """Each line of stdin (None if not UTF-8), leading whitespace skipped and cut at ``max_text_chars``,
    read in blocks so that no line, however long, is held whole."""
    import codecs

    from .text import skip_leading

    stream = sys.stdin.buffer
    while True:
        raw = stream.readline(block)
        if not raw:
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        kept, ok = "", True
        while True:
            end = raw.endswith(b"\n")
            try:
                piece = decoder.decode(raw, final=end)
            except UnicodeDecodeError:
                ok = False
            if ok and len(kept) < max_text_chars:
                kept = kept + piece if kept.strip() else skip_leading(kept + piece)
                kept = kept[: max_text_chars]
            if end:
                break
            raw = stream.readline(block)
            if not raw:
                ok = ok and not decoder.buffer  # a truncated character at the very end
                break
        yield kept.rstrip("\r\n") if ok else None


def _write_json_line(out: Any, obj: Any) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")


def _utf8_stdout() -> Any:
    """Standard output as UTF-8 text, whatever the locale or PYTHONIOENCODING say."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    return sys.stdout


def _cmd_classify(args: argparse.Namespace) -> int:
    from .router import Cascade

    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest)
    if args.texts == ["-"]:
        chunks: Iterator[list[str]] = _read_stdin_chunks(model.cheap.limits.max_text_chars)
    elif "-" in args.texts:
        raise SystemExit("cascade classify: '-' (stdin) cannot be mixed with texts given as arguments")
    else:
        chunks = iter([args.texts])
    out = _utf8_stdout()
    for chunk in chunks:
        for pred in model.classify(chunk, threshold=args.threshold, top_k=args.top_k):
            _write_json_line(out, pred.to_dict())
        out.flush()
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .bundle import default_bundle_path, read_bundle

    bundle = read_bundle(args.bundle if args.bundle is not None else default_bundle_path(), digest=args.digest)
    manifest: dict[str, Any] = dict(bundle.manifest)
    if not args.full:
        labels = manifest.pop("labels")
        shown = os.fsencode(bundle.path).decode("utf-8", "replace")  # a folder name need not be UTF-8
        manifest = {"path": shown, "digest": bundle.digest, "n_labels": len(labels), **manifest}
        if "decisions" in manifest:  # a tagger's cut-offs, named by topic
            cuts = manifest["decisions"]
            manifest["decisions"] = {**cuts, **{k: dict(zip(labels, cuts[k])) for k in ("cheap", "fallen", "neural")
                                                if k in cuts}}
    else:
        manifest = {"digest": bundle.digest, **manifest}
    _utf8_stdout().write(json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import warnings

    from .calibration import CalibrationWarning, calibrate
    from .router import Cascade

    from .bundle import check_output_folder
    from .calibration import plot_path

    # Everything that could fail at the end is checked before the long work.
    plot = plot_path(args.plot) if args.plot is not None else None
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest)
    data = _certification_data(args, model.bundle.manifest if model.bundle is not None else {})
    if args.out is not None:
        check_output_folder(args.out)
    elif args.save and model.bundle is not None:
        check_output_folder(model.bundle.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # reported in the JSON below
        cal = calibrate(model, data.texts, data.labels, label_sep=args.label_sep)
        choice = cal.choose(target_accuracy=args.target_accuracy, confidence=args.confidence,
                            fallthrough=args.fallthrough, latency_ms=args.latency_ms,
                            match_neural=args.match_neural, per_class=args.per_class, target_f1=args.target_f1)
    result: dict[str, Any] = {"choice": choice.to_json(), "calibration": cal.report()}
    if args.save or args.out is not None:
        if choice.mode in ("target_accuracy", "target_f1") and not choice.feasible and not args.allow_uncertified:
            result["saved"] = None
            result["not_saved"] = "the target cannot be certified; nothing written (--allow-uncertified writes it)"
        else:
            result["saved"] = str(cal.save(args.out, choice, allow_uncertified=args.allow_uncertified).path)
    plot_error = None
    if plot is not None:  # after the save, and reported without losing the result if it fails
        try:
            result["plot"] = str(cal.plot(plot, choice))
        except OSError as exc:
            plot_error = f"cannot write the plot {plot}: {exc.strerror or exc}"
            result["plot_error"] = plot_error
    out = _utf8_stdout()
    out.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
    for message in cal.warnings_:
        sys.stderr.write(f"warning: {message}\n")
    if plot_error is not None:
        sys.stderr.write(f"cascade calibrate: error: {plot_error}\n")
        return 2
    return 0 if choice.feasible else 3


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .router import Cascade, check_threshold

    threshold = check_threshold(args.threshold) if args.threshold is not None else None
    model = Cascade.load(args.bundle, threads=args.threads, digest=args.digest)
    data = read_csv(args.data, args.text_col, args.label_col)
    figures = evaluate(model, data, threshold, label_sep=args.label_sep)
    task = "multi-label" if model.multi_label else "single-label"
    _utf8_stdout().write(json.dumps({"task": task, "data": str(args.data), **figures}, indent=2, allow_nan=False) + "\n")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: `cascade bench` runs from a clone of the repository")
    sys.argv = [str(script), *[a for a in args.rest if a != "--"]]
    runpy.run_path(str(script), run_name="__main__")
    return 0


BUNDLED_NAME = "BANKING77 (bundled)"


def _load_training_data(args: argparse.Namespace) -> tuple[TextDataset, TextDataset | None, list[str], str]:
    """(data, selection texts or None to carve them, labels, name) of a build command."""
    if args.data is None:
        if args.val is not None:
            raise SystemExit("--val needs --data (the bundled BANKING77 is carved by the package's own rule)")
        return load_banking77("train_full"), None, banking77_labels(), BUNDLED_NAME
    data = read_csv(args.data, args.text_col, args.label_col)
    selection = read_csv(args.val, args.text_col, args.label_col) if args.val is not None else None
    return data, selection, sorted(set(data.labels)), str(args.data)


def _certification_data(args: argparse.Namespace, manifest: dict[str, Any]) -> TextDataset:
    """What ``cascade calibrate`` certifies on: --val as given, or the certification split of --data (or of
    the bundled BANKING77, for a bundle built from it)."""
    from .splits import certification_split

    if args.val is not None:
        return read_csv(args.val, args.text_col, args.label_col)
    training = manifest.get("training", {})
    recorded = training.get("splits", {})
    if args.data is not None:
        return certification_split(read_csv(args.data, args.text_col, args.label_col), recorded, str(args.data))
    if training.get("data") == BUNDLED_NAME:
        return certification_split(load_banking77("train_full"), recorded, BUNDLED_NAME)
    raise ValueError("give --data (the CSV the bundle was built from: its certification split is used) or --val "
                     "(a CSV of held-out labelled texts)")


def _cmd_train_cheap(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .training.build import train_cheap
    from .training.cheap import CheapConfig

    from .training.train import MULTI_LABEL_CHEAP

    sep = _label_sep(args)
    train, val, _, name = _load_training_data(args)
    config = None  # the task's default
    if args.C is not None or args.no_char:
        config = MULTI_LABEL_CHEAP if args.multi_label else CheapConfig()
        config = replace(config, C=args.C if args.C is not None else config.C,
                         char_ngrams=None if args.no_char else config.char_ngrams)
    bundle = train_cheap(train, val, args.out, base=args.base, config=config, data_name=name,
                         label_sep=sep if args.multi_label else None,
                         selection_share=args.selection_share, certification_share=args.certification_share)
    _print_summary(bundle.path, bundle.manifest)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .training.train import TrainConfig, train_bundle

    train, val, _, name = _load_training_data(args)
    config = TrainConfig()
    if args.head_C is not None:
        config = replace(config, head_C=args.head_C)

    if args.max_length is not None:
        config = replace(config, max_length=args.max_length)
    if args.abstain is not None:
        config = replace(config, abstain=args.abstain)
    sep = _label_sep(args)
    if args.multi_label:
        config = replace(config, label_sep=sep)
    if args.C is not None:
        config = replace(config, cheap=replace(config.cheap_config, C=args.C))
    if args.windows is not None:
        config = replace(config, windows=args.windows)
    config = replace(config, selection_share=args.selection_share, certification_share=args.certification_share)
    bundle = train_bundle(train, val, args.out, encoder_from=args.encoder_from, config=config, data_name=name)
    _print_summary(bundle.path, bundle.manifest)
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .stages.neural import check_threads
    from .training.build import finetune_bundle
    from .training.finetune import MULTI_LABEL_FINETUNE, FinetuneConfig

    check_threads(args.threads)
    sep = _label_sep(args) if args.multi_label or args.label_sep is not None else None
    train, val, labels, name = _load_training_data(args)
    overrides = {k: v for k, v in {
        "epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
        "max_length": args.max_length, "threads": args.threads, "seed": args.seed,
    }.items() if v is not None}
    base = MULTI_LABEL_FINETUNE if sep is not None else FinetuneConfig()
    bundle = finetune_bundle(train, val, None if sep is not None else labels, args.out, work_dir=args.work_dir,
                             checkpoint=args.checkpoint, finetune_config=replace(base, **overrides), data_name=name,
                             selection_share=args.selection_share, certification_share=args.certification_share,
                             label_sep=sep, windows=args.windows)
    _print_summary(bundle.path, bundle.manifest)
    return 0


def _print_summary(path: Path, manifest: dict[str, Any]) -> None:
    sel = manifest["metrics"]["selection"]
    sizes = manifest["training"]["splits"].get("sizes")
    abstain = (f"; 'none of these' under {sel['abstain_below']:.3f} ({sel['abstained_share']:.1%} of selection)"
               if "abstain_below" in sel else "")
    kept = ("(untouched: `cascade calibrate --data` certifies on them)" if sizes and sizes["certification"]
            else "(none: certify on held-out texts with `cascade calibrate --val`)")
    split_line = (f"splits: {sizes['train']:,} train, {sizes['selection']:,} selection, {sizes['certification']:,} "
                  f"certification {kept}\n" if sizes else "")
    measure = "micro_f1" if manifest.get("task") == "multi-label" else "accuracy"
    name = "micro-F1" if measure == "micro_f1" else "accuracy"
    sys.stdout.write(
        f"wrote {path}: threshold {manifest['threshold']:.4f}; {name} on the selection texts: cheap "
        f"{sel[f'cheap_{measure}']:.2%}, neural {sel[f'neural_{measure}']:.2%}, cascade "
        f"{sel[f'cascade_{measure}']:.2%} with {sel['fall_through_rate']:.1%} falling through{abstain}\n{split_line}"
    )


COMMANDS = {"classify": _cmd_classify, "info": _cmd_info, "calibrate": _cmd_calibrate, "evaluate": _cmd_evaluate,
            "bench": _cmd_bench,
            "train-cheap": _cmd_train_cheap, "train": _cmd_train,
            "finetune": _cmd_finetune}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from .errors import CascadeError

    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (`cascade info | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CascadeError, ValueError, TypeError, ImportError) as exc:
        if args.verbose:
            raise
        sys.stderr.write(f"cascade {args.command}: error: {exc}\n")
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a missing file: one line naming the path
        if args.verbose:
            raise
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc.strerror or "") else ""
        sys.stderr.write(f"cascade {args.command}: error: {exc.strerror or exc}{where}\n")
        return 2
    except Exception as exc:  # a bug, or a library's own error type: still one line, the traceback on -v
        if args.verbose:
            raise
        sys.stderr.write(f"cascade {args.command}: internal error: {type(exc).__name__}: {str(exc)[:500]} "
                         "(rerun with -v for the traceback)\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
