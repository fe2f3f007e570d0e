"""The ``deepcluster`` command line: :mod:`.parser` declares it, :mod:`.commands` runs it, :func:`main` turns
every error of the user's input into one line on stderr (exit status 2)."""
from __future__ import annotations

import gc
import sys
import warnings
from typing import Optional, Sequence

from .. import distributed as dist
from ..device import keep_freed_memory
from ..settings import DeepClusterError
from .commands import RUNNERS
from .parser import build_parser, config_from_args

__all__ = ["build_parser", "config_from_args", "main", "one_line", "run"]


def one_line(e: Exception) -> str:
    """The error's own message. An error raised in a DataLoader worker process arrives wrapped in the worker's
    traceback, whose last line is ``module.ErrorType: message``: that message is given instead."""
    msg = str(e)
    if "Original Traceback" in msg:
        msg = msg.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return msg


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        print("deepcluster: error: --resume and --overwrite exclude each other: pick one", file=sys.stderr)
        return 2
    warnings.formatwarning = lambda msg, cat, *a, **k: f"deepcluster: warning: {msg}\n"
    keep_freed_memory()
    status, together = 0, True
    try:
        RUNNERS[args.command](args)
    except DeepClusterError as e:
        print(f"deepcluster: error: {one_line(e)}", file=sys.stderr)
        status, together = 2, getattr(e, "on_every_rank", False)
    except KeyboardInterrupt:
        print("deepcluster: interrupted; the last checkpoint is intact, continue with --resume", file=sys.stderr)
        status, together = 130, False
    # a process group the command joined (train under torchrun): the ranks leave together when they all got here
    dist.teardown(wait=together)
    return status


def run() -> None:
    """The ``deepcluster`` command as a process: :func:`main`, then exit with its status. What the imports made
    lives as long as the process, and what the command leaves dies with it, so both are frozen out of the garbage
    collector's reach (``gc.freeze``): its full collections no longer walk the modules of torch and scikit-learn
    during the run, and the interpreter's last one no longer walks every object of the run at exit (1.2-1.3 s of
    a 2-epoch AlexNet run, most of it at exit). Only the process's entry point does this: ``main`` called from
    Python leaves the caller's collector alone."""
    gc.freeze()
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
