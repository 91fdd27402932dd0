"""``amsrc export``: the network as ONNX, and the check that ONNX Runtime reproduces PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from amsrc.cli.common import positive_int
from amsrc.export import OPSET, check_onnx, export_onnx
from amsrc.utils import check_output


def cmd_export(args: argparse.Namespace) -> int:
    onnx = check_output(args.onnx, "file", "--onnx", {"model": args.model})
    out = export_onnx(Path(args.model), onnx, opset=args.opset)
    print(f"onnx: {out} (inputs app_in, flow_in; outputs pred, x and, except for the baseline, y; dynamic batch)")
    if args.check:
        result = check_onnx(out, Path(args.model))
        print(result.format())
        if not result.ok:
            return 1
    return 0


def add_parsers(sub) -> None:
    exp = sub.add_parser("export", help="write the network as ONNX (dynamic batch), optionally check it")
    exp.add_argument("model", help="model.pt written by `amsrc train`")
    exp.add_argument("--onnx", required=True, help="output .onnx file")
    exp.add_argument("--opset", type=positive_int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    exp.add_argument("--check", action="store_true",
                     help="run ONNX Runtime and PyTorch on the same cubes (batch sizes 1 and 7) and compare scores")
    exp.set_defaults(func=cmd_export)
