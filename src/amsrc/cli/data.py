"""``amsrc data check|synth|inject`` and ``amsrc prepare``: look at datasets, make them, build cube stores."""

from __future__ import annotations

import argparse
from pathlib import Path

from amsrc.cli.common import add_preset, nonneg_int, positive_float, positive_int, print_summary
from amsrc.config import PREPARE_SECTIONS, apply_overrides, get_preset
from amsrc.data.inject import DEFAULT_KINDS, KINDS, InjectSettings, inject
from amsrc.data.layouts import load_dataset
from amsrc.data.synth import write_scene
from amsrc.prepare.run import prepare_dataset
from amsrc.utils import check_output


def cmd_data_check(args: argparse.Namespace) -> int:
    index = load_dataset(Path(args.root), layout=args.layout, deep=getattr(args, "deep", False))
    print(f"{index.root}: layout {index.layout}")
    print_summary(index, masks=True)
    return 0


def _frame_size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360); argparse names a malformed or too small size."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"frames must be at least 64x64, got {text!r}")
    return w, h


def cmd_data_synth(args: argparse.Namespace) -> int:
    args.width, args.height = args.size
    out = check_output(args.out, "dir", "OUT")
    reused = out.is_dir() and any(out.iterdir())  # write_scene only accepts the same scene there
    index = write_scene(out, seed=args.seed, height=args.height, width=args.width)
    verb = "found the same synthetic scene (not rewritten) in" if reused else "wrote synthetic scene to"
    print(f"{verb} {out} (seed {args.seed}, {args.width}x{args.height}; see README.txt there)")
    print_summary(index)
    return 0


def cmd_data_inject(args: argparse.Namespace) -> int:
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    srcs = {f"source {s}": s for s in args.sources}
    trees = {f"source {s}": s for s in args.sources if Path(s).is_dir()}
    out = check_output(args.out, "dir", "--out", srcs, trees)
    if args.preview:
        check_output(args.preview, "file", "--preview", srcs, trees)
    res = inject(args.sources, out,
                 InjectSettings(seed=args.seed, kinds=kinds, holdout=args.holdout, fold=args.fold, fps=args.fps), preview=args.preview)
    print(res.format())
    if args.preview:
        print(f"  preview: {args.preview}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    preset = apply_overrides(get_preset(args.preset), args.set, allowed=PREPARE_SECTIONS)
    out = check_output(args.out, "dir", "--out", {"dataset": args.root}, {"dataset": args.root})
    report = prepare_dataset(
        Path(args.root),
        preset.prepare,
        out,
        workers=args.workers,
        shard=args.shard,
        progress=not args.no_progress,
        preset_name=preset.name,
    )
    print(report.format())
    return 0


def add_parsers(sub) -> None:
    data = sub.add_parser("data", help="inspect or generate datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="name the layout of ROOT and count clips, frames, anomalies")
    check.add_argument("root", help="dataset root, a folder of videos, or one video file")
    check.add_argument("--layout", default=None, help="force a layout instead of detecting it")
    check.add_argument(
        "--deep",
        action="store_true",
        help="also decode every frame and pixel mask and refuse videos with decoder errors (slower); "
        "by default frames are counted exactly and checked cheaply (not empty, JPEG not truncated, "
        "first frame decodes) and videos are counted by decoding",
    )
    check.set_defaults(func=cmd_data_check)
    synth = dsub.add_parser("synth", help="write a small synthetic surveillance dataset")
    synth.add_argument("out", help="output folder (frames layout)")
    synth.add_argument("--seed", type=nonneg_int, default=0, help="seed of the scene (same seed, same bytes)")
    synth.add_argument("--size", type=_frame_size, default=(240, 160), metavar="WxH",
                       help="frame width x height in pixels, each >= 64 (default 240x160; e.g. 640x360, as Avenue)")
    synth.set_defaults(func=cmd_data_synth)
    inj = dsub.add_parser("inject", help="composite pseudo-anomalies into held-out normal clips: a labelled "
                                         "validation set (frames layout) from normal footage alone")
    inj.add_argument("sources", nargs="+", help="normal clips (frame folders or video files, one by one) or a "
                     "dataset root (its training split); the last --holdout clips (or --fold's) are injected, the others copied")
    inj.add_argument("--out", required=True, help="output folder (new or empty; a folder holding the same set is kept)")
    inj.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0): same seed, same bytes")
    inj.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"comma-separated kinds of {', '.join(KINDS)}, "
                     f"one event per held-out clip in turn (default {','.join(DEFAULT_KINDS)})")
    inj.add_argument("--holdout", type=positive_int, default=None, help="held-out clips (the last ones, or --fold's; default a quarter, "
                     "at least 1)")
    inj.add_argument("--fold", type=nonneg_int, default=0, help="hold out the FOLD-th block of --holdout clips counted "
                     "from the end (default 0: the last ones); folds 0, 1, ... hold out every clip once when the clip count is a "
                     "multiple of --holdout")
    inj.add_argument("--fps", type=positive_float, default=None, help="frame rate of the footage, for the seconds an object "
                     "loiters (default: the video's; 25 for frame folders)")
    inj.add_argument("--preview", default=None, help="also write a PNG: one injected frame beside the original")
    inj.set_defaults(func=cmd_data_inject)

    prep = sub.add_parser("prepare", help="flow, boxes and spatio-temporal cubes into an on-disk store")
    prep.add_argument("root", help="dataset root (any layout `amsrc data check` knows)")
    add_preset(prep, "default", "settings preset")
    prep.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="change one box, flow or cube setting of the preset (repeatable), e.g. --set boxes.persist=2 "
                           "--set flow.dis_refine=5, or a detector: --set boxes.method=det+bg --set "
                           "boxes.detector_onnx=yolo.onnx; recorded in the store (train takes them from there)")
    prep.add_argument("--out", required=True, help="cube store folder")
    prep.add_argument("--workers", type=positive_int, default=1, help="clips prepared in parallel")
    prep.add_argument("--shard", default=None, help="k/N: prepare only the k-th of N parts of the clips (1-based)")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.set_defaults(func=cmd_prepare)
