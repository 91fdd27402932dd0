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
    _print_summary(index, masks=True)
    return 0


def _print_summary(index, masks: bool = False) -> None:
    """Per split: clips, frames, anomalous frames (and how many clips have pixel masks)."""
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        n_masks = sum(c.masks is not None for c in index.clips(split)) if masks else 0
        with_masks = f"  pixel masks for {n_masks} clips" if n_masks else ""
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}{with_masks}")


def cmd_data_synth(args: argparse.Namespace) -> int:
    from amsrc.data.synth import write_scene

    out = Path(args.out)
    reused = out.is_dir() and any(out.iterdir())  # write_scene only accepts the same scene there
    index = write_scene(out, seed=args.seed)
    verb = "found the same synthetic scene (not rewritten) in" if reused else "wrote synthetic scene to"
    print(f"{verb} {out} (seed {args.seed}; see README.txt there)")
    _print_summary(index)
    return 0


def cmd_data_inject(args: argparse.Namespace) -> int:
    from amsrc.data.inject import InjectSettings, inject

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    res = inject(args.sources, Path(args.out),
                 InjectSettings(seed=args.seed, kinds=kinds, holdout=args.holdout, fps=args.fps), preview=args.preview)
    print(res.format())
    if args.preview:
        print(f"  preview: {args.preview}")
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


def cmd_export(args: argparse.Namespace) -> int:
    from amsrc.export import check_onnx, export_onnx

    out = export_onnx(Path(args.model), Path(args.onnx), opset=args.opset)
    print(f"onnx: {out} (inputs app_in, flow_in; outputs pred, x and, except for the baseline, y; dynamic batch)")
    if args.check:
        result = check_onnx(out, Path(args.model))
        print(result.format())
        if not result.ok:
            return 1
    return 0


# ---------------------------------------------------------------- fit / score (any footage)
def cmd_fit(args: argparse.Namespace) -> int:
    from amsrc.fit import fit_footage

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fit_footage(args.sources, Path(args.out), preset=args.preset, frame_range=args.range, epochs=args.epochs,
                widths=args.widths, work=None if args.work is None else Path(args.work), fps=args.fps,
                holdout=[n.strip() for n in args.holdout.split(",") if n.strip()] if args.holdout else None,
                validate=args.validate, device=args.device, progress=not args.no_progress)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import contextlib

    from amsrc.fit import load_fitted
    from amsrc.sources import open_source
    from amsrc.stream import score_source

    if args.csv and args.jsonl:
        from amsrc.errors import ConfigError

        raise ConfigError("give --csv or --jsonl, not both")
    import torch

    torch.set_num_threads(max(1, args.threads))  # per-frame batches are small: one thread is fastest
    fitted = load_fitted(Path(args.model), device=args.device)
    if args.threshold is not None:
        print(f"threshold {args.threshold:.4f} (given with --threshold; the model's: {fitted.threshold})",
              file=sys.stderr)
        fitted.threshold = fitted.threshold_low = float(args.threshold)
    elif fitted.rule:
        print(f"threshold {fitted.threshold:.4f} ({fitted.rule})", file=sys.stderr)
    source = open_source(args.source, stdin_size=args.stdin_size, fps=args.fps, max_retries=args.retries,
                         stall_s=args.stall)
    with contextlib.ExitStack() as stack:
        out_path = args.csv or args.jsonl
        frames_out = stack.enter_context(open(out_path, "w")) if out_path else sys.stdout
        events_out = stack.enter_context(open(args.events, "w")) if args.events else None
        on_frame = None
        overlay = None
        if args.overlay:
            from amsrc.overlay import OverlayWriter

            state: dict = {}

            def on_frame(rgb, index, t, r, lines):  # noqa: ARG001
                if rgb is None:
                    return
                if "w" not in state:
                    state["w"] = OverlayWriter(args.overlay, source.fps or 25.0, rgb.shape[:2])
                thr = fitted.threshold if fitted.threshold is not None else float("inf")
                state["w"].write(rgb, r.boxes, r.object_scores, thr)

            overlay = state
        collector = None
        if args.report:
            from amsrc.stream import ReportCollector

            collector = ReportCollector()
            overlay_cb = on_frame

            def on_frame(rgb, index, t, r, lines):
                if overlay_cb is not None:
                    overlay_cb(rgb, index, t, r, lines)
                collector.on_frame(rgb, index, t, r, lines)

        try:
            summary = score_source(fitted, source, frames_out, fmt="csv" if args.csv else "jsonl",
                                   events_out=events_out, strict_size=args.strict_size, on_frame=on_frame,
                                   min_frames=args.min_frames, end_frames=args.end_frames)
        except BaseException:
            if overlay is not None and "w" in overlay:
                overlay["w"].abort()
            raise
        if overlay is not None and "w" in overlay:
            print(f"overlay video: {overlay['w'].close()}", file=sys.stderr)
    print(summary.format(), file=sys.stderr)
    if collector is not None:
        settings = {"model": str(args.model), "threshold_rule": fitted.rule, "frame_size": fitted.frame_size,
                    **fitted.detector.preset_.to_dict()}
        path = collector.write(Path(args.report), title=f"amsrc score: {source.name}", threshold=fitted.threshold,
                               settings=settings, summary=summary)
        print(f"report: {path}", file=sys.stderr)
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
    from amsrc.data.inject import KINDS

    inj = dsub.add_parser("inject", help="composite pseudo-anomalies into held-out normal clips: a labelled "
                                         "validation set (frames layout) from normal footage alone")
    inj.add_argument("sources", nargs="+", help="normal clips (frame folders or video files, one by one) or a "
                     "dataset root (its training split); the last --holdout clips are injected, the others copied")
    inj.add_argument("--out", required=True, help="output folder (new or empty; a folder holding the same set is kept)")
    inj.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same bytes")
    inj.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds, one event per held-out clip "
                     f"in turn (default {','.join(KINDS)})")
    inj.add_argument("--holdout", type=int, default=None, help="held-out clips (the last ones; default a quarter, "
                     "at least 1)")
    inj.add_argument("--fps", type=float, default=None, help="frame rate of the footage, for the seconds an object "
                     "loiters (default: the video's; 25 for frame folders)")
    inj.add_argument("--preview", default=None, help="also write a PNG: one injected frame beside the original")
    inj.set_defaults(func=cmd_data_inject)

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

    exp = sub.add_parser("export", help="write the network as ONNX (dynamic batch), optionally check it")
    exp.add_argument("model", help="model.pt written by `amsrc train`")
    exp.add_argument("--onnx", required=True, help="output .onnx file")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    exp.add_argument("--check", action="store_true",
                     help="run ONNX Runtime and PyTorch on the same cubes (batch sizes 1 and 7) and compare scores")
    exp.set_defaults(func=cmd_export)

    fit = sub.add_parser("fit", help="train on normal footage (videos, frame folders, a dataset root) and "
                                     "learn a decision threshold")
    fit.add_argument("sources", nargs="+", help="video files, frame folders or dataset roots (training split)")
    fit.add_argument("--out", required=True, help="model file to write (e.g. model.pt)")
    fit.add_argument("--preset", default=None, help="settings preset; default: 'default' adapted to the "
                     "footage's resolution and frame rate")
    fit.add_argument("--range", default=None, help="part of every clip to use: 0:60s (seconds) or 100:900 (frames)")
    fit.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    fit.add_argument("--widths", default=None, help="network widths: tiny, small, medium or paper")
    fit.add_argument("--fps", type=float, default=None, help="frame rate of frame folders (default: 25)")
    fit.add_argument("--work", default=None, help="folder for cubes and training logs (default: beside --out)")
    fit.add_argument("--threads", type=int, default=None, help="torch threads for training (default: torch's)")
    fit.add_argument("--holdout", default=None, help="comma-separated clip names held out of training to set the "
                     "threshold on (default: the last 20%% of every clip)")
    fit.add_argument("--validate", default=None, help="an injected validation set (`amsrc data inject`): also report "
                     "the share of its events alerted and the time to alert")
    _add_common(fit)
    fit.set_defaults(func=cmd_fit)

    sc = sub.add_parser("score", help="score a video, frame folder, camera, URL or stdin frame by frame; "
                                      "alerts on anomalous events")
    sc.add_argument("model", help="model written by `amsrc fit` (or `amsrc train`: scores without threshold)")
    sc.add_argument("source", help="video file, frame folder, /dev/videoN, rtsp:// or http:// URL, or - for raw "
                    "RGB24 frames on stdin (see --stdin-size)")
    sc.add_argument("--csv", default=None, help="write per-frame scores as CSV to this file")
    sc.add_argument("--jsonl", default=None, help="write per-frame scores as JSON lines to this file "
                    "(default: JSON lines on stdout)")
    sc.add_argument("--events", default=None, help="write event lines (JSON) to this file (default: among the "
                    "JSON frame lines)")
    sc.add_argument("--stdin-size", default=None, help="WxH of the raw RGB24 frames on stdin, e.g. "
                    "`ffmpeg -i IN -f rawvideo -pix_fmt rgb24 - | amsrc score M - --stdin-size 360x240`")
    sc.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder or stdin (stdin with "
                    "--fps is treated as live: lag is checked)")
    sc.add_argument("--strict-size", action="store_true", help="refuse a source whose frame size differs from "
                    "the fitted one (default: rescale)")
    sc.add_argument("--threshold", type=float, default=None, help="decision threshold instead of the model's "
                    "(also ends events: no hysteresis)")
    sc.add_argument("--min-frames", type=int, default=3, help="frames above the threshold before an event starts")
    sc.add_argument("--end-frames", type=int, default=5, help="frames below the low threshold before it ends")
    sc.add_argument("--retries", type=int, default=5, help="reconnects of a live stream in a row before giving up")
    sc.add_argument("--stall", type=float, default=10.0, help="seconds without data before a URL is reopened")
    sc.add_argument("--overlay", default=None, help="also write an overlay video (boxes coloured by score)")
    sc.add_argument("--report", default=None, help="also write a self-contained HTML report (curve, events, "
                    "thumbnails of the top events, settings, timings)")
    sc.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for per-frame batches)")
    _add_common(sc)
    sc.set_defaults(func=cmd_score)

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
