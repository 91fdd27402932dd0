"""The ``amsrc`` command. Thin: parses arguments, calls the library, prints.

One module per command group (:mod:`~amsrc.cli.data`, :mod:`~amsrc.cli.experiment`,
:mod:`~amsrc.cli.live`, :mod:`~amsrc.cli.export`), each with ``add_parsers(sub)`` and its
``cmd_*`` handlers. Every handler returns an exit code; library errors
(:class:`amsrc.errors.AmsrcError`) are printed as ``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from amsrc import __version__
from amsrc.cli import data, experiment, export, live
from amsrc.errors import AmsrcError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amsrc", description="AMSRC video anomaly detection")
    p.add_argument("--version", action="version", version=f"amsrc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, experiment, export, live):
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AmsrcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
