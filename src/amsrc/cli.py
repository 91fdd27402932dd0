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

    index = load_dataset(Path(args.root), layout=args.layout, deep=getattr(args, "deep", False))
    print(f"{index.root}: layout {index.layout}")
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        n_masks = sum(c.masks is not None for c in index.clips(split))
        masks = f"  pixel masks for {n_masks} clips" if n_masks else ""
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}{masks}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from amsrc.data.synth import write_scene

    out = Path(args.out)
    reused = out.is_dir() and any(out.iterdir())  # write_scene only accepts the same scene there
    index = write_scene(out, seed=args.seed)
    verb = "found the same synthetic scene (not rewritten) in" if reused else "wrote synthetic scene to"
    print(f"{verb} {out} (seed {args.seed}; see README.txt there)")
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}")
    return 0


# ---------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    from amsrc.config import get_preset
    from amsrc.prepare.run import prepare_dataset

    preset = get_preset(args.preset)
    report = prepare_dataset(
        Path(args.root),
        preset.prepare,
        Path(args.out),
        workers=args.workers,
        shard=args.shard,
        progress=not args.no_progress,
        preset_name=preset.name,
    )
    print(report.format())
    return 0


# ---------------------------------------------------------------- train / evaluate / run / demo
def cmd_train(args: argparse.Namespace) -> int:
    from amsrc.detector import AMSRC
    from amsrc.prepare.store import CubeStore

    store = CubeStore.open(Path(args.store))
    det = AMSRC(preset=args.preset, variant=args.variant, epochs=args.epochs, device=args.device,
                progress=not args.no_progress)
    det.fit(store, Path(args.out), resume=args.resume)
    print(f"model: {det.checkpoint_}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from amsrc.detector import AMSRC
    from amsrc.evaluate import evaluate
    from amsrc.pipeline import format_result
    from amsrc.prepare.store import CubeStore

    det = AMSRC.load(Path(args.model), device=args.device)
    result = evaluate(det, CubeStore.open(Path(args.store)), Path(args.out), split=args.split)
    print(format_result(result))
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from amsrc.pipeline import run_pipeline

    run_pipeline(Path(args.root), args.preset, Path(args.out), variant=args.variant, epochs=args.epochs,
                 workers=args.workers, device=args.device, progress=not args.no_progress)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from amsrc.data.synth import write_scene
    from amsrc.pipeline import run_pipeline

    out = Path(args.out)
    scene = out / "scene"
    if not (scene / "training").is_dir():
        write_scene(scene, seed=args.seed)
        print(f"wrote a synthetic scene (seed {args.seed}) to {scene}")
    result = run_pipeline(scene, "synthetic", out, workers=args.workers, progress=not args.no_progress)
    print(f"demo: micro AUROC {result['raw']['micro']:.4f} (raw), {result['smoothed']['micro']:.4f} "
          f"({result['smoothing']}); plots and results.json in {out / ('eval_' + result['variant'])}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


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

    tr = sub.add_parser("train", help="train on the training cubes of a cube store")
    tr.add_argument("store", help="cube store written by `amsrc prepare`")
    tr.add_argument("--preset", default="default")
    tr.add_argument("--variant", default=None, help="amsrc, nogate or baseline (paper Table 2)")
    tr.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    tr.add_argument("--out", required=True, help="folder for the log, checkpoints and model.pt")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    _add_common(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="score the test cubes and compare with the frame labels")
    ev.add_argument("model", help="model.pt written by `amsrc train`")
    ev.add_argument("store", help="cube store written by `amsrc prepare`")
    ev.add_argument("--split", default="testing")
    ev.add_argument("--out", required=True, help="folder for results.json and plots")
    _add_common(ev)
    ev.set_defaults(func=cmd_evaluate)

    run = sub.add_parser("run", help="prepare, train and evaluate in one go")
    run.add_argument("root", help="dataset root")
    run.add_argument("--preset", default="default")
    run.add_argument("--variant", default=None, help="amsrc, nogate or baseline")
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--out", required=True)
    _add_common(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the whole pipeline on a built-in synthetic scene")
    demo.add_argument("--out", default="amsrc-demo", help="output folder (default ./amsrc-demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=1)
    _add_common(demo)
    demo.set_defaults(func=cmd_demo)

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
