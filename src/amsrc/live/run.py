"""``amsrc score``'s loop: every frame of a source scored live, its line written, its events raised.

:func:`score_source` drives a :class:`~amsrc.live.stream.StreamScorer` over a
:class:`~amsrc.data.sources.FrameSource`, writes one line per frame (JSON lines or CSV, flushed as
it goes) and feeds an :class:`~amsrc.live.events.EventDetector` with the model's threshold.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from amsrc.data.sources import DEFAULT_FPS
from amsrc.errors import ConfigError
from amsrc.live.events import END_FRAMES, MIN_FRAMES, EventDetector
from amsrc.live.stream import FrameResult, StreamScorer, finish_batched
from amsrc.scoring import FRAME_BASE, SCORE_MEANING
from amsrc.utils import prefetch

GPU_BATCH = 16  # frames whose objects share one network pass when a file is scored on a CUDA device
# frames prepared (flow, boxes, crops) ahead of the network: files keep a queue to ride out slow frames; a
# live source keeps one, so frame t+1 is prepared while the network scores frame t and a frame's line is
# never more than the frame being prepared and one in the queue behind the frames read
FILE_AHEAD, LIVE_AHEAD = 4, 1
CSV_COLUMNS = ("frame", "time", "raw", "score", "anomalous", "objects",
               "top_x0", "top_y0", "top_x1", "top_y1", "top_score")


@dataclass
class ScoreSummary:
    """What a scoring run did (printed at the end of ``amsrc score``)."""

    source: str
    frames: int  # frames scored
    skipped: int  # frames/packets skipped as corrupt
    reconnects: int  # reopenings of a live stream
    events: int  # events (closed)
    seconds: float  # wall time of the loop
    fps: float  # frames scored per second of wall time (end to end: read + score + write)
    live: bool
    max_lag_s: float  # live sources: largest delay of a scored frame behind the stream clock
    interrupted: bool  # stopped early: Ctrl-C, or the reader of the output went away
    rescaled: str | None  # "WxH -> WxH" when frames were resized to the fitted size
    reader_gone: bool = False  # stopped because the reader of the output went away (`| head`), not Ctrl-C

    def format(self) -> str:
        s = (f"scored {self.frames} frames of {self.source} in {self.seconds:.1f} s "
             f"({self.fps:.1f} frames/s end to end)"
             f"; {self.events} event(s)")
        if self.skipped:
            s += f"; {self.skipped} corrupt frame(s) skipped"
        if self.reconnects:
            s += f"; {self.reconnects} reconnect(s)"
        if self.live:
            s += f"; max lag behind the stream {self.max_lag_s:.2f} s"
        if self.rescaled:
            s += f"; frames rescaled {self.rescaled}"
        if self.reader_gone:
            s += " (output closed by its reader)"
        elif self.interrupted:
            s += " (interrupted)"
        return s


def frame_record(index: int, time_s: float, r: FrameResult) -> dict:
    """The per-frame output line as a dict (floats at full precision)."""
    k = r.top
    return {
        "type": "frame", "frame": int(index), "time": round(float(time_s), 4), "raw": float(r.raw),
        "score": float(r.score), "anomalous": r.anomalous, "objects": int(len(r.boxes)),
        "top_box": None if k is None else [int(v) for v in r.boxes[k]],
        "top_score": None if k is None else float(r.object_scores[k]),
    }


def _csv_row(rec: dict) -> str:
    b = rec["top_box"] or ["", "", "", ""]
    vals = [rec["frame"], rec["time"], repr(rec["raw"]), repr(rec["score"]),
            "" if rec["anomalous"] is None else int(rec["anomalous"]), rec["objects"], *b,
            "" if rec["top_score"] is None else repr(rec["top_score"])]
    return ",".join(str(v) for v in vals) + "\n"


def output_header(source, threshold) -> dict:
    """The first line of the per-frame output: what each column means, the frame base, the frame rate
    the times are at, the thresholds. A JSON line ``{"type": "header", ...}``; in CSV a ``#`` line
    (``pandas.read_csv(f, comment="#")``, ``numpy.genfromtxt`` skip it)."""
    return {
        "type": "header", "source": source.name,
        "frame": f"frame index ({FRAME_BASE})",
        "time": f"seconds from the start of the source, at {source.rate_text()}",
        "score": SCORE_MEANING + "; causally smoothed (what the threshold is compared with)",
        "raw": "the same before smoothing",
        "anomalous": "score >= threshold (empty: the model has no threshold)",
        "top_score": "the highest object's score (raw, z)",
        "threshold": None if threshold is None else round(float(threshold.value), 4),
        "end_threshold": None if threshold is None else round(float(threshold.low), 4),
    }


class _Lines:
    """Where the frame and event lines go: ``frames_out`` (JSON lines or CSV; None: nowhere) and
    ``events_out`` (JSON lines; None: among the JSON frame lines, or nowhere for CSV). Alerts are also
    said on ``warn``. ``header`` (:func:`output_header`) is the first line written; ``fps_assumed``:
    alert times say they are at the assumed rate."""

    def __init__(self, frames_out, events_out, fmt: str, warn, header: dict | None = None, fps_assumed: bool = False):
        if fmt not in ("jsonl", "csv"):
            raise ConfigError(f"output format must be jsonl or csv, got {fmt!r}")
        self.fmt, self.warn = fmt, warn
        self.assumed = f" at {DEFAULT_FPS:g} fps, assumed" if fps_assumed else ""
        self.frames_out = frames_out
        self.events_out = events_out if events_out is not None else (frames_out if fmt == "jsonl" else None)
        if frames_out is not None:
            if fmt == "csv":
                if header is not None:
                    frames_out.write("# " + "; ".join(f"{k}: {v}" for k, v in header.items() if k != "type") + "\n")
                frames_out.write(",".join(CSV_COLUMNS) + "\n")
            elif header is not None:
                frames_out.write(json.dumps(header) + "\n")
            frames_out.flush()

    def frame(self, rec: dict) -> None:
        if self.frames_out is None:
            return
        self.frames_out.write(json.dumps(rec) + "\n" if self.fmt == "jsonl" else _csv_row(rec))
        self.frames_out.flush()

    def events(self, lines: list[dict]) -> None:
        for e in lines:
            ex = e["explanation"] or {}
            if e["type"] == "event_start":
                self.warn(f"alert: event {e['event']} started at frame {e['start_frame']} ({e['start_time']:.2f} s"
                          f"{self.assumed}), "
                          f"alerted at frame {e['alert_frame']}, score {e['score']:.3f}"
                          + (f", cue: {ex['cue']}" if ex else ""))
            else:
                self.warn(f"alert: event {e['event']} ended: frames {e['start_frame']}-{e['end_frame']} "
                          f"({e['start_time']:.2f}-{e['end_time']:.2f} s), peak {e['peak_score']:.3f} at frame "
                          f"{e['peak_frame']}" + (f"; cue: {ex['cue']}: it {ex['words']}" if ex else ""))
            if self.events_out is not None:
                self.events_out.write(json.dumps(e) + "\n")
                self.events_out.flush()

    def reader_gone(self) -> None:
        """The reader of the frame lines went away (``| head``): write no more to it."""
        if self.events_out is self.frames_out:
            self.events_out = None
        self.frames_out = None

    def flush(self) -> None:
        if self.frames_out is not None:
            self.frames_out.flush()


class _Lag:
    """How far a live source's frames are scored behind the stream clock: the (wall clock - stream
    time) offset of a frame minus the smallest offset seen; 0 while scoring keeps up, growing when
    frames queue up. Warns at most every 5 s while above ``warn_s``."""

    def __init__(self, warn_s: float, fps: float, warn):
        self.warn_s, self.fps, self.warn = warn_s, fps, warn
        self.base: float | None = None
        self.max = 0.0
        self._last_warn = -1e9

    def update(self, stream_time: float, rate: float) -> float:
        now = time.perf_counter()
        offset = now - stream_time
        self.base = offset if self.base is None else min(self.base, offset)
        lag = offset - self.base
        self.max = max(self.max, lag)
        if lag > self.warn_s and now - self._last_warn > 5.0:
            self.warn(f"warning: falling behind the stream by {lag:.2f} s (~{lag * self.fps:.0f} frames at "
                      f"{self.fps:g} fps); scoring {rate:.1f} frames/s")
            self._last_warn = now
        return lag


def _size_note(name: str, index: int, shape, frame_size, first: bool, last_shape, strict: bool, warn) -> str | None:
    """Say when frames are rescaled to the fitted size (refuse with ``strict``); the "WxH -> WxH" of
    a first frame that is rescaled, else None."""
    h, w = shape[:2]
    if first and frame_size is not None and (h, w) != tuple(frame_size):
        fh, fw = frame_size
        if strict:
            raise ConfigError(f"{name}: frames are {w}x{h} but the model was fitted on {fw}x{fh} "
                              "(--strict-size refuses to rescale)")
        warn(f"note: {name}: frames are {w}x{h} but the model was fitted on {fw}x{fh}; "
             f"every frame is rescaled to {fw}x{fh} (boxes are reported in the source's pixels)")
        return f"{w}x{h} -> {fw}x{fh}"
    if not first and shape != last_shape:
        warn(f"note: {name}: frame {index} is {w}x{h}, unlike the frames before "
             f"({last_shape[1]}x{last_shape[0]}); it is rescaled to the model's size")
    return None


def _stream(source, scorer: StreamScorer, throughput: bool, read_ahead: int):
    """(source frame, prepared frame or None) in stream order. Throughput (pipelined): the reading thread
    also prepares (restarts applied there, in order); otherwise the caller restarts and pushes."""
    def prepared():
        for sf in source:
            if sf.restart:
                scorer.restart()
            yield sf, scorer.prepare(sf.rgb)

    if throughput:
        inner = prefetch(prepared(), read_ahead)
    else:
        inner = prefetch(source, read_ahead) if read_ahead > 0 else iter(source)
    try:
        for item in inner:
            yield item if throughput else (item, None)
    finally:
        if hasattr(inner, "close"):
            inner.close()


def score_source(detector, source, frames_out, *, fmt: str = "jsonl", events_out=None, strict_size: bool = False,
                 min_frames: int = MIN_FRAMES, end_frames: int = END_FRAMES, warn=None, on_frame=None,
                 lag_warn_s: float = 1.0, read_ahead: int | None = None, throughput: bool = True,
                 batch: int | None = None) -> ScoreSummary:
    """Score every frame of ``source`` (:mod:`amsrc.data.sources`) with a fitted ``detector``
    (:class:`~amsrc.detector.AMSRC`); its ``threshold_`` (set by ``amsrc fit``; None for a model from
    ``amsrc train``) decides and raises events.

    Per-frame lines go to ``frames_out`` (``fmt`` "jsonl" or "csv") as they are computed (flushed);
    event lines (JSON) to ``events_out``, or into ``frames_out`` among the frame lines when it is
    JSON lines and ``events_out`` is None. ``on_frame(frame_rgb, index, time, result, event_lines)``
    is called per frame (overlay/report). Ctrl-C stops the loop; what was scored is flushed and the
    summary returned.

    ``throughput`` (the default, files and live sources alike): a thread reads and prepares frames (flow,
    boxes, crops) up to ``read_ahead`` frames ahead while this one runs the network (see
    :mod:`amsrc.live.stream`; the same lines, bit for bit). ``read_ahead`` None: ``FILE_AHEAD`` for files
    and folders, ``LIVE_AHEAD`` (1) for live sources, where the two stages then overlap on two cores
    (frame t+1 prepared while the network scores frame t) and a frame that arrives while the scorer
    keeps up has its line written within its own prepare and network time plus the rest of the frame
    before's network time. ``throughput=False``: frames are only read ``read_ahead`` ahead in a thread
    and each is prepared and scored with ``push`` before the next (one core at a time). ``read_ahead``
    0: no thread at all.

    ``batch``: in throughput mode, the objects of this many consecutive frames go through the network
    in one pass (:meth:`StreamScorer.finish_many`; scores within ``BATCH_TOLERANCE`` of one pass a
    frame). None: ``GPU_BATCH`` frames for a file on a CUDA device, else 1 (on the CPU batching gains
    little, the CPU stages are as slow as the network, see benchmarks/speed.py; a live source waits for
    no later frames).
    """
    if warn is None:
        def warn(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    thr = getattr(detector, "threshold_", None)
    out = _Lines(frames_out, events_out, fmt, warn, output_header(source, thr), source.fps_assumed)
    foot = getattr(detector, "footage_", None)
    frame_size = None if foot is None else foot.frame_size
    scorer = StreamScorer(detector, None if thr is None else thr.value, frame_size)
    events = None
    if thr is not None:
        events = EventDetector(thr.value, thr.low, min_frames, end_frames, stats=detector.train_stats_,
                               speeds=None if foot is None else foot.speed_stats, weights=detector.preset_.score)
    else:
        warn("note: this model has no threshold (written by `amsrc train`, not `amsrc fit`): "
             "scores only, no yes/no and no events")
    lag = _Lag(lag_warn_s, source.fps or DEFAULT_FPS, warn)
    if read_ahead is None:
        read_ahead = LIVE_AHEAD if source.live else FILE_AHEAD
    throughput = throughput and read_ahead > 0
    n, interrupted, rescaled, gone = 0, False, None, False
    last_index, last_time, last_shape = -1, 0.0, None
    t_wall0 = time.perf_counter()
    if batch is None:
        batch = GPU_BATCH if str(getattr(detector, "device", "cpu")).startswith("cuda") and not source.live else 1
    it = _stream(source, scorer, throughput, max(read_ahead, batch if throughput else 0))
    pairs = finish_batched(scorer, it, batch) if throughput else it
    try:
        for sf, r in pairs:
            note = _size_note(source.name, sf.index, sf.rgb.shape, frame_size, n == 0, last_shape, strict_size, warn)
            rescaled = rescaled or note
            last_shape = sf.rgb.shape
            if r is None:
                if sf.restart:
                    scorer.restart()
                r = scorer.push(sf.rgb)
            rec = frame_record(sf.index, sf.time, r)
            if source.live:
                rec["lag_s"] = round(lag.update(sf.time, n / max(time.perf_counter() - t_wall0, 1e-9)), 3)
            out.frame(rec)
            lines = events.push(sf.index, sf.time, r) if events is not None else []
            out.events(lines)
            if on_frame is not None:
                on_frame(sf.rgb, sf.index, sf.time, r, lines)
            n += 1
            last_index, last_time = sf.index, sf.time
    except KeyboardInterrupt:
        interrupted = True
        warn("interrupted: flushing what was scored")
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly
        interrupted = gone = True
        warn("output closed by the reader: stopping")
        out.reader_gone()
    finally:
        for g in (pairs, it):
            if hasattr(g, "close"):
                g.close()
        source.close()
    if events is not None:
        lines = events.close(last_index, last_time)
        out.events(lines)
        if on_frame is not None and lines:
            on_frame(None, last_index, last_time, None, lines)
    out.flush()
    secs = time.perf_counter() - t_wall0
    return ScoreSummary(source.name, n, source.skipped, source.reconnects, len(events.events) if events else 0, secs,
                        n / secs if secs > 0 else 0.0, source.live, lag.max, interrupted, rescaled, gone)


@dataclass(frozen=True)
class Event:
    """One event of a scored video (frames 0-based, times in seconds from the start)."""

    number: int
    start_frame: int  # first frame at or above the threshold
    alert_frame: int  # the frame it was raised at (start + min_frames - 1)
    end_frame: int  # last frame at or above the end threshold
    start_time: float
    end_time: float
    peak_score: float  # highest anomaly score (smoothed, z) inside it
    peak_frame: int
    peak_time: float
    box: tuple[int, int, int, int] | None  # the peak frame's highest-scoring object: x0, y0, x1, y1 (exclusive)
    cue: str | None  # "motion", "appearance" or "speed" (None: the model has no training statistics)
    why: str | None  # the cue in words


@dataclass(frozen=True)
class VideoScores:
    """What :func:`score_video` returns: per-frame scores (numpy arrays, one entry per scored frame)
    and the events, pandas-free."""

    source: str
    fps: float  # frame rate of ``time``
    fps_origin: str  # where it comes from: "the video", "--fps", a dataset.json, "the model", "assumed"
    frame: np.ndarray  # (n,) int64 frame index in the source (0-based; a skipped corrupt frame leaves a gap)
    time: np.ndarray  # (n,) float64 seconds from the start
    raw: np.ndarray  # (n,) float64 frame score before smoothing
    score: np.ndarray  # (n,) float64 the anomaly score: causally smoothed, in z (what the threshold is compared with)
    anomalous: np.ndarray | None  # (n,) bool score >= threshold; None when the model has no threshold
    threshold: float | None
    threshold_low: float | None
    events: tuple[Event, ...]
    summary: ScoreSummary


def score_video(detector, source, *, fps: float | None = None, on_corrupt: str = "error",
                min_frames: int = MIN_FRAMES, end_frames: int = END_FRAMES, warn=None) -> VideoScores:
    """Score a whole video file, frame folder or any ``amsrc score`` source with a fitted detector and
    return its per-frame scores and events (:class:`VideoScores`): the same loop as ``amsrc score``
    (:func:`score_source`), nothing written. ``source``: a path or URL (opened with
    :func:`amsrc.data.sources.open_source`) or an open :class:`~amsrc.data.sources.FrameSource`.
    Messages (frame rate assumed, rescaling, alerts) go to ``warn`` (default: the ``amsrc`` logger).
    Ctrl-C stops it and returns what was scored (``summary.interrupted``): the way to end a camera.
    ``fps`` applies to a path or URL; an open source keeps its own."""
    import logging

    from amsrc.data.sources import open_source

    if warn is None:
        logger = logging.getLogger("amsrc")
        warn = logger.info
    if isinstance(source, (str, os.PathLike)):
        foot = getattr(detector, "footage_", None)
        source = open_source(str(source), fps=fps, warn=warn, on_corrupt=on_corrupt,
                             fallback_fps=None if foot is None else foot.fps)
    rows: list[tuple[int, float, float, float, bool | None]] = []
    starts: dict[int, dict] = {}
    ends: list[dict] = []

    def on_frame(rgb, index, time_s, r, lines):
        if r is not None and rgb is not None:
            rows.append((int(index), float(time_s), float(r.raw), float(r.score), r.anomalous))
        for e in lines:
            if e["type"] == "event_start":
                starts[e["event"]] = e
            else:
                ends.append(e)

    summary = score_source(detector, source, None, warn=warn, on_frame=on_frame, min_frames=min_frames,
                           end_frames=end_frames)  # Ctrl-C (the only end of a camera): what was scored, interrupted
    thr = getattr(detector, "threshold_", None)
    events = []
    for e in ends:
        ex = e.get("explanation") or {}
        top = (e.get("boxes") or [None])[0]
        events.append(Event(int(e["event"]), int(e["start_frame"]), int(starts[e["event"]]["alert_frame"]),
                            int(e["end_frame"]), float(e["start_time"]), float(e["end_time"]), float(e["peak_score"]),
                            int(e["peak_frame"]), float(e["peak_time"]),
                            None if top is None else tuple(int(v) for v in top["box"]), ex.get("cue"), ex.get("words")))
    col = list(zip(*rows)) if rows else [(), (), (), (), ()]
    return VideoScores(
        source=source.name, fps=float(source.fps or DEFAULT_FPS), fps_origin=source.fps_origin,
        frame=np.asarray(col[0], np.int64), time=np.asarray(col[1], np.float64), raw=np.asarray(col[2], np.float64),
        score=np.asarray(col[3], np.float64),
        anomalous=None if thr is None else np.asarray(col[4], bool),
        threshold=None if thr is None else float(thr.value), threshold_low=None if thr is None else float(thr.low),
        events=tuple(events), summary=summary)
