"""``amsrc score``'s loop: every frame of a source scored live, its line written, its events raised.

:func:`score_source` drives a :class:`~amsrc.live.stream.StreamScorer` over a
:class:`~amsrc.data.sources.FrameSource`, writes one line per frame (JSON lines or CSV, flushed as
it goes) and feeds an :class:`~amsrc.live.events.EventDetector` with the model's threshold.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from amsrc.data.sources import DEFAULT_FPS
from amsrc.errors import ConfigError
from amsrc.live.events import END_FRAMES, MIN_FRAMES, EventDetector
from amsrc.live.stream import FrameResult, StreamScorer
from amsrc.utils import prefetch

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
    interrupted: bool  # Ctrl-C
    rescaled: str | None  # "WxH -> WxH" when frames were resized to the fitted size

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
        if self.interrupted:
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


def score_source(detector, source, frames_out, *, fmt: str = "jsonl", events_out=None, strict_size: bool = False,
                 min_frames: int = MIN_FRAMES, end_frames: int = END_FRAMES, warn=None, on_frame=None,
                 lag_warn_s: float = 1.0, read_ahead: int = 4, throughput: bool | None = None) -> ScoreSummary:
    """Score every frame of ``source`` (:mod:`amsrc.data.sources`) with a fitted ``detector`` (:class:`~amsrc.detector.AMSRC`).

    Its ``threshold_`` (set by ``amsrc fit``; None for a model from ``amsrc train``) decides and raises events.

    Per-frame lines go to ``frames_out`` (``fmt`` "jsonl" or "csv") as they are computed (flushed);
    event lines (JSON) to ``events_out``, or into ``frames_out`` among the frame lines when it is
    JSON lines and ``events_out`` is None. ``on_frame(frame_rgb, index, time, result, event_lines)``
    is called per frame (overlay/report). Ctrl-C stops the loop; what was scored is flushed and the
    summary returned.

    ``throughput`` (None: True for files and folders, False for live sources): a thread reads and
    prepares frames (flow, boxes, crops) up to ``read_ahead`` frames ahead while this one runs the
    network (see the module docstring; same output, a frame's lines come up to ``read_ahead``
    frames later). Otherwise frames are only read ``read_ahead`` ahead in a thread and each is
    scored with ``push`` (lowest latency). ``read_ahead`` 0: no thread at all.
    """
    if warn is None:
        def warn(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"output format must be jsonl or csv, got {fmt!r}")
    thr = getattr(detector, "threshold_", None)
    foot = getattr(detector, "footage_", None)
    frame_size = None if foot is None else foot.frame_size
    scorer = StreamScorer(detector, None if thr is None else thr.value, frame_size)
    det = None
    if thr is not None:
        det = EventDetector(thr.value, thr.low, min_frames, end_frames, stats=detector.train_stats_,
                            speeds=None if foot is None else foot.speed_stats)
    else:
        warn("note: this model has no threshold (written by `amsrc train`, not `amsrc fit`): "
             "scores only, no yes/no and no events")
    if fmt == "csv":
        frames_out.write(",".join(CSV_COLUMNS) + "\n")
        frames_out.flush()
    ev_out = events_out if events_out is not None else (frames_out if fmt == "jsonl" else None)

    def emit_events(lines: list[dict]) -> None:
        for e in lines:
            if e["type"] == "event_start":
                ex = e["explanation"] or {}
                warn(f"alert: event {e['event']} started at frame {e['start_frame']} ({e['start_time']:.2f} s), "
                     f"alerted at frame {e['alert_frame']}, score {e['score']:.3f}"
                     + (f", cue: {ex['cue']}" if ex else ""))
            else:
                ex = e["explanation"] or {}
                warn(f"alert: event {e['event']} ended: frames {e['start_frame']}-{e['end_frame']}, peak "
                     f"{e['peak_score']:.3f} at frame {e['peak_frame']}"
                     + (f", cue: {ex['cue']} ({ex['why']})" if ex else ""))
            if ev_out is not None:
                ev_out.write(json.dumps(e) + "\n")
                ev_out.flush()

    n = 0
    interrupted = False
    rescaled = None
    max_lag = 0.0
    last_lag_warn = -1e9
    t_wall0 = time.perf_counter()
    base_offset = None
    last_index, last_time = -1, 0.0
    last_shape = None
    if throughput is None:
        throughput = not source.live
    throughput = throughput and read_ahead > 0

    def prepared():  # throughput mode, in the reading thread: restarts and prepare in stream order
        for sf in source:
            if sf.restart:
                scorer.restart()
            yield sf, scorer.prepare(sf.rgb)

    if throughput:
        it = prefetch(prepared(), read_ahead)
    else:
        it = prefetch(source, read_ahead) if read_ahead > 0 else iter(source)
    try:
        while True:
            try:
                item = next(it)
            except StopIteration:
                break
            sf, prep = item if throughput else (item, None)
            if n == 0 and frame_size is not None and sf.rgb.shape[:2] != tuple(frame_size):
                h, w = sf.rgb.shape[:2]
                fh, fw = frame_size
                if strict_size:
                    raise ConfigError(f"{source.name}: frames are {w}x{h} but the model was fitted on {fw}x{fh} "
                                      "(--strict-size refuses to rescale)")
                rescaled = f"{w}x{h} -> {fw}x{fh}"
                warn(f"note: {source.name}: frames are {w}x{h} but the model was fitted on {fw}x{fh}; "
                     f"every frame is rescaled to {fw}x{fh} (boxes are reported in the source's pixels)")
            elif n > 0 and sf.rgb.shape != last_shape:
                h, w = sf.rgb.shape[:2]
                warn(f"note: {source.name}: frame {sf.index} is {w}x{h}, unlike the frames before "
                     f"({last_shape[1]}x{last_shape[0]}); it is rescaled to the model's size")
            last_shape = sf.rgb.shape
            if prep is not None:
                r = scorer.finish(prep)
            else:
                if sf.restart:
                    scorer.restart()
                r = scorer.push(sf.rgb)
            rec = frame_record(sf.index, sf.time, r)
            if source.live:
                # lag = how much later than the earliest-seen (wall clock - stream time) offset this frame is
                # done: 0 while scoring keeps up, growing when frames queue up.
                offset = time.perf_counter() - sf.time
                base_offset = offset if base_offset is None else min(base_offset, offset)
                lag = offset - base_offset
                rec["lag_s"] = round(lag, 3)
                max_lag = max(max_lag, lag)
                now = time.perf_counter()
                if lag > lag_warn_s and now - last_lag_warn > 5.0:
                    fps = source.fps or DEFAULT_FPS
                    warn(f"warning: falling behind the stream by {lag:.2f} s (~{lag * fps:.0f} frames at {fps:g} fps); "
                         f"scoring {n / max(now - t_wall0, 1e-9):.1f} frames/s")
                    last_lag_warn = now
            if fmt == "jsonl":
                frames_out.write(json.dumps(rec) + "\n")
            else:
                frames_out.write(_csv_row(rec))
            frames_out.flush()
            lines = det.push(sf.index, sf.time, r) if det is not None else []
            emit_events(lines)
            if on_frame is not None:
                on_frame(sf.rgb, sf.index, sf.time, r, lines)
            n += 1
            last_index, last_time = sf.index, sf.time
    except KeyboardInterrupt:
        interrupted = True
        warn("interrupted: flushing what was scored")
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly
        interrupted = True
        warn("output closed by the reader: stopping")
        if ev_out is frames_out:
            ev_out = None
        frames_out = None
    finally:
        if hasattr(it, "close"):
            it.close()
        source.close()
    if det is not None:
        lines = det.close(last_index, last_time)
        emit_events(lines)
        if on_frame is not None and lines:
            on_frame(None, last_index, last_time, None, lines)
    if frames_out is not None:
        frames_out.flush()
    secs = time.perf_counter() - t_wall0
    return ScoreSummary(source.name, n, source.skipped, source.reconnects, len(det.events) if det else 0, secs,
                        n / secs if secs > 0 else 0.0, source.live, max_lag, interrupted, rescaled)


