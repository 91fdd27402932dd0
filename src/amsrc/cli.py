"""The ``amsrc`` command. Thin: parses arguments, calls the library, prints.

Every handler returns an exit code; library errors (:class:`amsrc.errors.AmsrcError`) are
printed as ``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amsrc import __version__
from amsrc.errors import AmsrcError


# ---------------------------------------------------------------- data
def cmd_data_check(args: argparse.Namespace) -> int:
    from amsrc.data.layouts import load_dataset

    index = load_dataset(Path(args.root), layout=args.layout)
    print(f"{index.root}: layout {index.layout}")
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from amsrc.data.synth import write_scene

    index = write_scene(Path(args.out), seed=args.seed)
    print(f"wrote synthetic scene to {args.out}")
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}")
    return 0


# ---------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    raise NotImplementedError("prepare: being written (issue 3)")


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amsrc", description="AMSRC video anomaly detection")
    p.add_argument("--version", action="version", version=f"amsrc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect or generate datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="name the layout of ROOT and count clips, frames, anomalies")
    check.add_argument("root", help="dataset root, a folder of videos, or one video file")
    check.add_argument("--layout", default=None, help="force a layout instead of detecting it")
    check.set_defaults(func=cmd_data_check)
    synth = dsub.add_parser("synth", help="write a small synthetic surveillance dataset")
    synth.add_argument("out", help="output folder (frames layout)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_data_synth)

    prep = sub.add_parser("prepare", help="flow, boxes and spatio-temporal cubes into an on-disk store")
    prep.add_argument("root", help="dataset root (any layout `amsrc data check` knows)")
    prep.add_argument("--preset", default="default", help="settings preset (ped2, avenue, shanghaitech, synthetic, default)")
    prep.add_argument("--out", required=True, help="cube store folder")
    prep.add_argument("--workers", type=int, default=1, help="clips prepared in parallel")
    prep.add_argument("--shard", default=None, help="k/N: prepare only the k-th of N parts of the clips (1-based)")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.set_defaults(func=cmd_prepare)

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
