"""The ``cascade`` command: classify, batch, serve, info, calibrate, monitor, evaluate, bench, train, train-cheap,
finetune, tune, openvino.

:mod:`~cascade.cli.parser` declares the arguments, :mod:`~cascade.cli.use` runs the commands that use a
bundle, :mod:`~cascade.cli.build` those that build one, :mod:`~cascade.cli.streams` reads and writes the
standard streams.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from ..errors import CascadeError
from .build import cmd_finetune, cmd_openvino, cmd_train, cmd_train_cheap, cmd_tune
from .parser import build_parser
from .use import cmd_batch, cmd_bench, cmd_calibrate, cmd_classify, cmd_evaluate, cmd_info, cmd_monitor, cmd_serve

log = logging.getLogger("cascade")

COMMANDS = {"classify": cmd_classify, "batch": cmd_batch, "serve": cmd_serve, "info": cmd_info, "calibrate": cmd_calibrate,
            "evaluate": cmd_evaluate,
            "bench": cmd_bench, "monitor": cmd_monitor,
            "train-cheap": cmd_train_cheap, "train": cmd_train,
            "finetune": cmd_finetune, "tune": cmd_tune, "openvino": cmd_openvino}


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stderr is None:  # started with stderr closed (`2>&-`): messages go nowhere rather than crash
        sys.stderr = open(os.devnull, "w")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)

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
