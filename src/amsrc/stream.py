"""Streaming scorer: one RGB frame in, its anomaly score out (``amsrc score`` and Python use).

``StreamScorer(detector).push(frame)`` runs the same chain as offline scoring: the frame goes
through :class:`~amsrc.prepare.cubes.CubeExtractor` (the one cube code path ``amsrc prepare``
uses), the cubes of its boxes through the network (:meth:`AMSRC.score_cubes`), the frame score is
the max over its objects (:func:`~amsrc.scoring.empty_frame_score` when it has none), and the
smoothing is causal (:class:`~amsrc.scoring.CausalSmoother`, equal to ``smooth(causal=True)``).
So the raw scores of a clip pushed frame by frame equal ``AMSRC.score_clip`` on its prepared cubes
(up to float rounding of the network run in other batch sizes).

Two ways to run the same chain, with the same results bit for bit:

- live (:meth:`StreamScorer.push`): a frame is prepared (resize, flow, boxes, crops, conversion
  to network inputs) and scored (network, frame score, smoothing) before the next one is looked
  at: lowest latency;
- throughput (:meth:`StreamScorer.score_frames`, and ``score_source`` on files and folders): a
  background thread reads and prepares the next frames while the network scores the current one
  (OpenCV and torch release the GIL, so the two overlap on two cores; on Ped2 with 2 cores,
  torch and OpenCV on one thread each, ~1.8x the live rate). Each frame's objects still go
  through the network as one batch of their own: torch's CPU kernels round differently for other
  batch sizes (measured: a batch of 1 vs 2, and 10-15 vs 16+ in the decoder), so batching several
  frames' objects together would change scores in the last bits; it would save little anyway
  (the per-object cost is flat from ~8 objects a batch). Extra latency: up to ``depth`` frames
  wait in the queue when the network is the slower stage.

When the preset's score does not use the prediction (w_p = 0) the decoder is skipped
(``need_pred``): S_f and the frame scores are unchanged, ``FrameResult.s_p`` is NaN.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class FrameResult:
    """Scores of one pushed frame."""

    t: int  # index of the frame in this stream (0-based, frames pushed so far)
    raw: float  # frame score before smoothing: max over objects (empty-frame score when K = 0)
    score: float  # causally smoothed frame score (what the threshold is compared with)
    anomalous: bool | None  # score >= threshold; None when the scorer has no threshold
    boxes: np.ndarray  # (K, 4) int32 x0, y0, x1, y1 in the pixels of the frame as pushed
    object_scores: np.ndarray  # (K,) float64 combined object scores w_f z(S_f) + w_p z(S_p)
    s_f: np.ndarray  # (K,) float32 raw 1 - cos(x, y)
    s_p: np.ndarray  # (K,) float32 raw squared prediction error; NaN when not computed (w_p = 0: no decoder run)
    speed: np.ndarray  # (K,) float32 median flow magnitude of the object, pixels/frame at the fitted size
    seconds: float  # processing time of this frame (flow, boxes, cubes, network, score), waits excluded

    @property
    def top(self) -> int | None:
        """Index of the highest-scoring object, None when the frame has none."""
        return int(np.argmax(self.object_scores)) if self.object_scores.size else None


def last_flow_magnitudes(flow: np.ndarray) -> np.ndarray:
    """Flow magnitude (pixels/frame) at every pixel of each cube's last flow (t-1 -> t):
    (N, 4, S, S, 2) -> (N, S*S) float32."""
    last = np.asarray(flow[:, -1], dtype=np.float32)  # (N, S, S, 2)
    return np.sqrt((last ** 2).sum(-1)).reshape(len(last), -1)


def object_speeds(flow: np.ndarray) -> np.ndarray:
    """Median flow magnitude (pixels/frame) of each cube's last flow (t-1 -> t): (N, 4, S, S, 2) -> (N,) float32."""
    if len(flow) == 0:
        return np.zeros(0, np.float32)
    return np.median(last_flow_magnitudes(flow), axis=1).astype(np.float32)


@dataclass
class PreparedFrame:
    """A frame after the CPU stages (resize to the fitted size, flow, boxes, crops), ready for the
    network: what :meth:`StreamScorer.prepare` hands to :meth:`StreamScorer.finish`."""

    objects: object  # amsrc.prepare.cubes.FrameObjects of the frame at the fitted size
    inputs: tuple | None  # network inputs of its K cubes (AMSRC.network_inputs); None when K = 0
    speed: np.ndarray  # (K,) float32 object_speeds of its cubes
    scale: tuple[float, float]  # (sx, sy): pushed-frame pixels per fitted-frame pixel
    size: tuple[int, int]  # (H, W) of the frame as pushed
    seconds: float  # time spent in prepare


class StreamScorer:
    """Score a stream frame by frame with a fitted :class:`~amsrc.detector.AMSRC`.

    threshold: decision threshold on the smoothed score (``FrameResult.anomalous``); None = no decision.
    frame_size: (H, W) the model was fitted on; frames of another size are resized to it (boxes
      are mapped back to the pushed frame's pixels). None: the first frame's size is kept.
    need_pred: run the decoder (S_p). None: only when the preset's score uses it (w_p != 0);
      False with w_p != 0 is a ConfigError.

    A frame is scored in two steps, :meth:`prepare` (CPU: flow, boxes, crops; keeps the frame and
    flow history) then :meth:`finish` (network, frame score, smoothing; keeps the smoothing
    state). ``push`` does both; :meth:`score_frames` overlaps them in two threads. ``finish`` must
    get the prepared frames in the order they were prepared.
    """

    def __init__(self, detector, threshold: float | None = None, frame_size: tuple[int, int] | None = None,
                 need_pred: bool | None = None):
        from amsrc.errors import ConfigError
        from amsrc.prepare.cubes import CubeExtractor
        from amsrc.scoring import CausalSmoother, empty_frame_score

        detector._check_fitted()
        self.detector = detector
        p = detector.preset_
        self.threshold = None if threshold is None else float(threshold)
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        if need_pred is None:
            need_pred = p.score.w_p != 0
        elif not need_pred and p.score.w_p != 0:
            raise ConfigError(f"need_pred=False needs score weight w_p = 0 (the preset has w_p = {p.score.w_p})")
        self.need_pred = bool(need_pred)
        self.extractor = CubeExtractor(p.prepare)
        self.smoother = CausalSmoother(p.score)
        self.empty_score = empty_frame_score(detector.train_stats_, p.score.w_f, p.score.w_p)
        self.t = 0

    def reset(self) -> None:
        """Start a new stream: frames, flows, box detector state and smoothing are forgotten."""
        self.extractor.reset()
        self.smoother.reset()
        self.t = 0

    def restart(self) -> None:
        """A gap in the stream (reconnect): forget frames and flows (no flow across the gap) but keep
        the smoothing and the frame count."""
        self.extractor.reset()

    def _fit_size(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        h, w = frame.shape[:2]
        if self.frame_size is None:
            self.frame_size = (h, w)
        fh, fw = self.frame_size
        if (h, w) == (fh, fw):
            return frame, 1.0, 1.0
        import cv2

        interp = cv2.INTER_AREA if h * w > fh * fw else cv2.INTER_LINEAR
        return cv2.resize(frame, (fw, fh), interpolation=interp), w / fw, h / fh

    def prepare(self, frame_rgb: np.ndarray) -> PreparedFrame:
        """CPU stages of the next frame (H, W, 3) uint8 RGB: resize, flow, boxes, cubes, and the cubes'
        conversion to network inputs and their speeds."""
        t0 = time.perf_counter()
        frame, sx, sy = self._fit_size(frame_rgb)
        obj = self.extractor.push(frame)
        inputs = self.detector.network_inputs(obj.appearance, obj.flow) if len(obj) else None
        return PreparedFrame(obj, inputs, object_speeds(obj.flow), (sx, sy), tuple(frame_rgb.shape[:2]),
                             time.perf_counter() - t0)

    def finish(self, prep: PreparedFrame) -> FrameResult:
        """Network, frame score and smoothing of a prepared frame -> its :class:`FrameResult`."""
        t0 = time.perf_counter()
        obj = prep.objects
        if len(obj):
            comb, s_f, s_p = self.detector.score_cubes(obj.appearance, obj.flow, need_pred=self.need_pred,
                                                       inputs=prep.inputs)
            raw = float(comb.max())
        else:
            comb = np.zeros(0, np.float64)
            s_f = s_p = np.zeros(0, np.float32)
            raw = self.empty_score
        speed = prep.speed
        score = self.smoother.push(raw)
        boxes = obj.boxes
        sx, sy = prep.scale
        if (sx, sy) != (1.0, 1.0) and len(boxes):
            b = boxes.astype(np.float64)
            b[:, 0::2] *= sx
            b[:, 1::2] *= sy
            h, w = prep.size
            boxes = np.stack([np.floor(b[:, 0]), np.floor(b[:, 1]), np.ceil(b[:, 2]), np.ceil(b[:, 3])], 1)
            boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.int32)
        res = FrameResult(
            t=self.t, raw=raw, score=score,
            anomalous=None if self.threshold is None else bool(score >= self.threshold),
            boxes=boxes, object_scores=np.asarray(comb, np.float64), s_f=np.asarray(s_f, np.float32),
            s_p=np.asarray(s_p, np.float32), speed=speed, seconds=prep.seconds + time.perf_counter() - t0,
        )
        self.t += 1
        return res

    def push(self, frame_rgb: np.ndarray) -> FrameResult:
        """Frame (H, W, 3) uint8 RGB -> its :class:`FrameResult` (frames 0..3 of a stream have no objects).
        Live mode: the frame is fully scored before this returns."""
        return self.finish(self.prepare(frame_rgb))

    def score_frames(self, frames: Iterable[np.ndarray], depth: int = 4) -> Iterator[FrameResult]:
        """Throughput mode: the :class:`FrameResult` of each frame of ``frames``, in order, equal to
        ``push`` frame by frame. Reading ``frames`` and :meth:`prepare` run in a background thread up
        to ``depth`` frames ahead of the network (latency: up to ``depth`` frames more than ``push``)."""
        for prep in prefetch((self.prepare(f) for f in frames), depth):
            yield self.finish(prep)


# ---------------------------------------------------------------- the `amsrc score` loop
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


def prefetch(iterable, depth: int = 4):
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead (decoding overlaps scoring:
    PyAV, OpenCV and torch release the GIL). Exceptions of the producer are re-raised here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((exc, None))

    th = threading.Thread(target=run, name="amsrc-prefetch", daemon=True)
    th.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()


def score_source(fitted, source, frames_out, *, fmt: str = "jsonl", events_out=None, strict_size: bool = False,
                 min_frames: int = 3, end_frames: int = 5, warn=None, on_frame=None,
                 lag_warn_s: float = 1.0, read_ahead: int = 4, throughput: bool | None = None) -> ScoreSummary:
    """Score every frame of ``source`` (:mod:`amsrc.sources`) with ``fitted`` (:func:`amsrc.fit.load_fitted`).

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
    import json
    import sys

    from amsrc.alerts import EventDetector
    from amsrc.errors import ConfigError

    if warn is None:
        def warn(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"output format must be jsonl or csv, got {fmt!r}")
    scorer = StreamScorer(fitted.detector, fitted.threshold, fitted.frame_size)
    det = None
    if fitted.threshold is not None:
        det = EventDetector(fitted.threshold, fitted.threshold_low, min_frames, end_frames,
                            stats=fitted.detector.train_stats_, speeds=fitted.speeds)
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
    first_time = None
    base_offset = 0.0
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
            if n == 0 and fitted.frame_size is not None and sf.rgb.shape[:2] != tuple(fitted.frame_size):
                h, w = sf.rgb.shape[:2]
                fh, fw = fitted.frame_size
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
                base_offset = offset if first_time is None else min(base_offset, offset)
                first_time = sf.time if first_time is None else first_time
                lag = offset - base_offset
                rec["lag_s"] = round(lag, 3)
                max_lag = max(max_lag, lag)
                now = time.perf_counter()
                if lag > lag_warn_s and now - last_lag_warn > 5.0:
                    fps = source.fps or 25.0
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


class ReportCollector:
    """Collects what ``amsrc score --report`` shows: the score curve, events and a thumbnail of each
    event's peak frame (its boxes drawn), for :func:`amsrc.report.write_html_report`."""

    def __init__(self, max_thumbnails: int = 8):
        self.scores: dict[int, float] = {}
        self.events: list[dict] = []
        self.max_thumbnails = max_thumbnails
        self._open = False
        self._best: tuple[float, np.ndarray, FrameResult] | None = None
        self.thumbs: list[tuple[float, str, bytes]] = []

    def on_frame(self, rgb, index, time_s, r, lines) -> None:
        if r is not None:
            self.scores[int(index)] = float(r.score)
        for e in lines:
            if e["type"] == "event_start":
                self._open = True
                self._best = None
        if self._open and r is not None and rgb is not None and (self._best is None or r.score > self._best[0]):
            self._best = (r.score, rgb.copy(), r)
        for e in lines:
            if e["type"] == "event_end":
                self._open = False
                self.events.append(e)
                if self._best is not None:
                    self._thumb(e, *self._best)
                self._best = None

    def _thumb(self, e: dict, score: float, rgb: np.ndarray, r: FrameResult) -> None:
        import cv2

        img = rgb.copy()
        for k in np.argsort(-r.object_scores)[:3]:
            x0, y0, x1, y1 = (int(v) for v in r.boxes[k])
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (255, 0, 0) if k == r.top else (255, 200, 0), 2)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if ok:
            cue = (e.get("explanation") or {}).get("cue", "")
            cap = f"event {e['event']}: frames {e['start_frame']}-{e['end_frame']}, peak {score:.2f}" + (
                f" ({cue})" if cue else "")
            self.thumbs.append((score, cap, buf.tobytes()))
            self.thumbs.sort(key=lambda t: -t[0])
            del self.thumbs[self.max_thumbnails:]

    def write(self, path, *, title: str, threshold: float | None, settings: dict, summary: ScoreSummary):
        from amsrc.report import write_html_report

        n = max(self.scores) + 1 if self.scores else 0
        curve = np.zeros(n, np.float64)
        last = 0.0
        for i in range(n):  # skipped frames repeat the previous score
            last = self.scores.get(i, last)
            curve[i] = last
        timings = {"frames": summary.frames, "seconds": round(summary.seconds, 2),
                   "frames/s (end to end)": round(summary.fps, 1), "skipped frames": summary.skipped}
        if summary.live:
            timings["max lag (s)"] = round(summary.max_lag_s, 2)
        return write_html_report(path, title=title, curves={summary.source: (curve, None)}, threshold=threshold,
                                 events=self.events, thumbnails=[(c, b) for _, c, b in self.thumbs],
                                 settings=settings, timings=timings)
