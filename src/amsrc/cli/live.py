"""``amsrc fit`` and ``amsrc score``: fit on any footage, then score videos, folders, cameras or stdin live."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

from amsrc.cli.common import ENGINE_HELP, add_common, add_preset, finite_float, nonneg_int, positive_float, positive_int
from amsrc.config import ModelConfig
from amsrc.data.sources import DEFAULT_FPS, ON_CORRUPT, open_source
from amsrc.detector import AMSRC
from amsrc.errors import ConfigError, DataError
from amsrc.live.events import END_FRAMES, MIN_FRAMES
from amsrc.live.fit import fit_footage
from amsrc.live.overlay import FrameView, OverlayWriter
from amsrc.live.run import score_source
from amsrc.report.collector import ReportCollector
from amsrc.training.checkpoint import Threshold
from amsrc.utils import atomic_path, check_output


def cmd_fit(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    srcs = {f"source {s}": s for s in args.sources}
    trees = {f"source {s}": s for s in args.sources if Path(s).is_dir()}
    out = check_output(args.out, "file", "--out", srcs, trees)
    work = None if args.work is None else check_output(args.work, "dir", "--work", {**srcs, "--out": out}, trees)
    fit_footage(args.sources, out, preset=args.preset, frame_range=args.range, epochs=args.epochs,
                widths=args.widths, work=work, fps=args.fps,
                holdout=[n.strip() for n in args.holdout.split(",") if n.strip()] if args.holdout else None,
                validate=args.validate, device=args.device, progress=not args.no_progress)
    return 0


class _Outputs:
    """The per-frame side outputs of ``amsrc score``: the overlay video (opened at the first frame,
    when its size is known) and the HTML report's collector, both drawn from one :class:`FrameView`
    per frame (an event is open from its start line to its end line)."""

    def __init__(self, overlay: str | None, report: bool, source, threshold: Threshold | None, detector,
                 min_frames: int):
        self.overlay_path = overlay
        self.fps = source.fps or DEFAULT_FPS
        self.rate_note = f" ({DEFAULT_FPS:g} fps assumed)" if source.fps_assumed else ""
        self.threshold = float("inf") if threshold is None else threshold.value
        self.threshold_low = None if threshold is None else threshold.low
        self.writer: OverlayWriter | None = None
        self.collector = ReportCollector(detector, min_frames=min_frames) if report else None
        self.frames = 0  # frames scored so far
        self.open_event: int | None = None

    def on_frame(self, rgb, index, t, r, lines) -> None:
        for e in lines:
            self.open_event = e["event"] if e["type"] == "event_start" else None
        view = None
        if rgb is not None:
            self.frames += 1
            view = FrameView(index, t, r.boxes, r.object_scores, r.score, self.threshold, self.threshold_low,
                             self.open_event, self.rate_note, top=r.top)
        if self.overlay_path and rgb is not None:
            if self.writer is None:
                self.writer = OverlayWriter(self.overlay_path, self.fps, rgb.shape[:2])
            self.writer.write(rgb, view)
        if self.collector is not None:
            self.collector.on_frame(rgb, view, r, lines)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def close(self) -> None:
        if self.writer is not None:
            print(f"overlay video: {self.writer.close()}", file=sys.stderr)


def _load_scorer(args: argparse.Namespace) -> AMSRC:
    """The model, with ``--threshold`` (if given) in place of the one it was fitted with."""
    det = AMSRC.load(Path(args.model), device=args.device, engine=args.engine)
    thr = det.threshold_
    if args.threshold is not None:
        print(f"threshold {args.threshold:.4f} (given with --threshold; the model's: "
              f"{None if thr is None else thr.value})", file=sys.stderr)
        det.threshold_ = Threshold(float(args.threshold), float(args.threshold), "given with --threshold")
    elif thr is not None and thr.rule:
        print(f"threshold {thr.value:.4f} ({thr.rule})", file=sys.stderr)
    return det


_SCORE_OUTPUTS = ("csv", "jsonl", "events", "overlay", "report")


def _check_score_outputs(args: argparse.Namespace) -> dict[str, Path]:
    """``amsrc score``'s output files, checked before any work: none is the model or the source (nor
    inside a source folder), and no two are the same file."""
    src = args.source
    inputs: dict[str, str | Path | None] = {"model": args.model}
    trees: dict[str, str | Path | None] = {}
    if src != "-" and "://" not in src and not src.startswith("/dev/"):
        if Path(src).is_dir():
            trees["source folder"] = src
        inputs["source"] = src
    outs: dict[str, Path] = {}
    for opt in _SCORE_OUTPUTS:
        value = getattr(args, opt)
        if value:
            path = check_output(value, "file", f"--{opt}", inputs, trees)
            for other, p in outs.items():
                if p == path:
                    raise ConfigError(f"--{other} and --{opt} are the same file {path}; give each its own")
            outs[opt] = path
    return outs


@contextlib.contextmanager
def _text_output(path: Path | None, live: bool, counter: _Outputs):
    """A text file to write lines to: for a file or folder source a temporary name beside ``path``,
    renamed when scoring ends (Ctrl-C included) and removed on an error; for a live source ``path``
    itself, written as it goes (a log to follow with ``tail -f``), removed on an error before any frame."""
    if path is None:
        yield None
        return
    if not live:
        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            yield fh
        return
    fh = open(path, "w")
    try:
        yield fh
    except BaseException:
        fh.close()
        if counter.frames == 0:
            path.unlink(missing_ok=True)
        raise
    fh.close()


def cmd_score(args: argparse.Namespace) -> int:
    if args.csv and args.jsonl:
        raise ConfigError("give --csv or --jsonl, not both")
    outs = _check_score_outputs(args)
    torch.set_num_threads(max(1, args.threads))  # per-frame batches are small: one thread is fastest
    det = _load_scorer(args)
    source = open_source(args.source, stdin_size=args.stdin_size, fps=args.fps, max_retries=args.retries,
                         stall_s=args.stall, on_corrupt=args.on_corrupt,
                         fallback_fps=None if det.footage_ is None else det.footage_.fps)
    outputs = _Outputs(outs.get("overlay"), bool(args.report), source, det.threshold_, det, args.min_frames)
    frames_path = outs.get("csv") or outs.get("jsonl")
    with (_text_output(frames_path, source.live, outputs) as f_out,
          _text_output(outs.get("events"), source.live, outputs) as e_out):
        try:
            summary = score_source(det, source, f_out if f_out is not None else sys.stdout,
                                   fmt="csv" if args.csv else "jsonl", events_out=e_out, strict_size=args.strict_size,
                                   on_frame=outputs.on_frame,
                                   min_frames=args.min_frames, end_frames=args.end_frames, batch=args.batch)
            if summary.frames == 0 and not summary.interrupted:
                raise DataError(source.name, "no frame could be read from this source; nothing was written")
        except BaseException:
            outputs.abort()
            raise
        outputs.close()
    print(summary.format(), file=sys.stderr)
    if outputs.collector is not None:
        thr = det.threshold_
        settings = {"model": str(args.model), "threshold_rule": None if thr is None else thr.rule,
                    "frame_size": None if det.footage_ is None else det.footage_.frame_size,
                    **det.preset_.to_dict()}
        path = outputs.collector.write(outs["report"], title=f"amsrc score: {source.name}",
                                       threshold=None if thr is None else thr.value,
                                       threshold_low=None if thr is None else thr.low, settings=settings,
                                       summary=summary, fps=source.fps or DEFAULT_FPS, rate_text=source.rate_text())
        print(f"report: {path}", file=sys.stderr)
    if summary.interrupted and not summary.reader_gone:
        print("interrupted: what was scored is written", file=sys.stderr)
        return 130
    return 0


def add_parsers(sub) -> None:
    fit = sub.add_parser("fit", help="train on normal footage (videos, frame folders, a dataset root) and "
                                     "learn a decision threshold")
    fit.add_argument("sources", nargs="+", help="video files, frame folders or dataset roots (training split)")
    fit.add_argument("--out", required=True, help="model file to write (e.g. model.pt)")
    add_preset(fit, None, "settings preset (default: 'default' adapted to the footage's resolution and frame rate)")
    fit.add_argument("--range", default=None, help="part of every clip to use: 0:60s (seconds) or 100:900 (frames)")
    fit.add_argument("--epochs", type=positive_int, default=None, help="training epochs; default: the preset's")
    fit.add_argument("--widths", default=None, choices=sorted(ModelConfig.WIDTH_PRESETS),
                     help="network widths; default: the preset's")
    fit.add_argument("--fps", type=positive_float, default=None, help="frame rate of frame folders (default: 25)")
    fit.add_argument("--work", default=None, help="folder for cubes and training logs (default: beside --out)")
    fit.add_argument("--threads", type=positive_int, default=None, help="torch threads for training (default: torch's)")
    fit.add_argument("--holdout", default=None, help="comma-separated clip names held out of training to set the "
                     "threshold on (default: the last 20%% of every clip)")
    fit.add_argument("--validate", default=None, help="an injected validation set (`amsrc data inject`): also report "
                     "the share of its events alerted and the time to alert")
    add_common(fit)
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
    sc.add_argument("--fps", type=positive_float, default=None, help="frame rate of a frame folder or stdin (stdin with "
                    "--fps is treated as live: lag is checked)")
    sc.add_argument("--strict-size", action="store_true", help="refuse a source whose frame size differs from "
                    "the fitted one (default: rescale)")
    sc.add_argument("--threshold", type=finite_float, default=None, help="decision threshold instead of the model's "
                    "(also ends events: no hysteresis)")
    sc.add_argument("--min-frames", type=positive_int, default=MIN_FRAMES, help="frames above the threshold before an event starts")
    sc.add_argument("--end-frames", type=positive_int, default=END_FRAMES, help="frames below the low threshold "
                    "(the model's end threshold, lower than the decision threshold, so an event does not flicker) before it ends")
    sc.add_argument("--retries", type=nonneg_int, default=5, help="reconnects of a live stream in a row before giving up")
    sc.add_argument("--stall", type=positive_float, default=10.0, help="seconds without data before a URL is reopened")
    sc.add_argument("--overlay", default=None, help="also write an overlay video (boxes coloured by score)")
    sc.add_argument("--report", default=None, help="also write a self-contained HTML report (curve, events, "
                    "thumbnails of the top events, settings, timings)")
    sc.add_argument("--on-corrupt", choices=ON_CORRUPT, default="error", help="a video file cut short or a frame that "
                    "does not decode: error (exit 2, nothing written) or warn (say it, score what decodes); live "
                    "sources always warn and go on (default error)")
    sc.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1: fastest for per-frame batches)")
    sc.add_argument("--engine", choices=AMSRC.ENGINES, default="auto", help=ENGINE_HELP)
    sc.add_argument("--batch", type=positive_int, default=None, help="the objects of this many consecutive frames "
                    "share one network pass (scores within 1e-4 of one pass a frame; default 16 for a file on a "
                    "CUDA device, else 1: a live source's lines would wait for the later frames)")
    add_common(sc)
    sc.set_defaults(func=cmd_score)
