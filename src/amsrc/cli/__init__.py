"""The ``amsrc`` command. Thin: parses arguments, calls the library, prints.

One module per command group (:mod:`~amsrc.cli.data`, :mod:`~amsrc.cli.experiment`,
:mod:`~amsrc.cli.live`, :mod:`~amsrc.cli.export`), each with ``add_parsers(sub)`` and its
``cmd_*`` handlers. Every handler returns an exit code.

One handler at the edge (:func:`main`): the project's errors (:class:`amsrc.errors.AmsrcError`)
and the operating system's (:class:`OSError`: permission, disk full, is-a-directory ...) are one
line ``error: PATH: what`` on stderr and exit code 2; Ctrl-C exits 130; anything else is a bug and
keeps its traceback. Commands check their outputs before any work
(:func:`amsrc.utils.check_output`) and write them atomically, so a failed run leaves none.
"""

from __future__ import annotations

import argparse
import os
import sys

from amsrc import __version__
from amsrc.cli import data, experiment, export, live
from amsrc.cli.common import finish_parsers
from amsrc.errors import AmsrcError
from amsrc.utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amsrc", description="AMSRC video anomaly detection")
    p.add_argument("--version", action="version", version=f"amsrc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, experiment, export, live):
        group.add_parsers(sub)
    finish_parsers(p)
    return p


OUTPUT_OPTIONS = ("out", "csv", "jsonl", "events", "overlay", "report", "onnx", "work")  # what a command writes


def os_error_message(exc: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError: the path it names, else the command's outputs (a full disk names no file)."""
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{where}: {what}"
    outs = [str(getattr(args, k)) for k in OUTPUT_OPTIONS if getattr(args, k, None) not in (None, "")]
    return f"{what} (while writing {', '.join(outs)})" if outs else what


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    try:
        return int(args.func(args) or 0)
    except AmsrcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # our reader went away (`| head`): stop quietly, no flush error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"error: {os_error_message(exc, args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
