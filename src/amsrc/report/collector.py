"""What ``amsrc score --report`` collects while it scores: the score curve, the events and, per
event, a picture of its peak frame (drawn as the overlay draws it) with the responsible object's
error map, handed to :func:`amsrc.report.html.write_html_report`."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from amsrc.eval.plots import error_map
from amsrc.live.events import MIN_FRAMES
from amsrc.live.overlay import FrameView, draw_frame
from amsrc.live.run import ScoreSummary
from amsrc.live.stream import FrameResult
from amsrc.report.html import write_html_report
from amsrc.scoring import SCORE_MEANING, SCORE_UNIT

THUMB_MIN_W = 480  # px: a thumbnail's frame is drawn at least this wide
STRIP_PX = 96  # height of the object / predicted / error pictures under a thumbnail


def error_strip(detector, r: FrameResult, k: int) -> np.ndarray | None:
    """Object ``k``'s frame t crop, the network's prediction of it and the squared error (jet), side by
    side with captions, (h, w, 3) uint8 RGB; None when the frame kept no cubes or the decoder does not run."""
    if detector is None or r.cubes is None or k >= len(r.cubes):
        return None
    out = detector.predict_cubes(r.cubes.appearance[k:k + 1], r.cubes.flow[k:k + 1])
    if out.pred is None:
        return None
    tgt = np.clip(out.target[0].transpose(1, 2, 0), 0, 1)
    pred = np.clip(out.pred[0].transpose(1, 2, 0), 0, 1)
    err = error_map(tgt, pred)
    heat = cv2.applyColorMap(np.uint8(np.round(255 * err / max(float(err.max()), 1e-12))), cv2.COLORMAP_JET)[:, :, ::-1]
    tiles = []
    for img, name in ((tgt, "object"), (pred, "predicted"), (heat, "error")):
        img = img if img.dtype == np.uint8 else np.uint8(np.round(255 * img))
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        tile = cv2.resize(img, (STRIP_PX, STRIP_PX), interpolation=cv2.INTER_NEAREST)
        cap = np.zeros((14, STRIP_PX, 3), np.uint8)
        cv2.putText(cap, name, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (235, 235, 235), 1, cv2.LINE_AA)
        tiles.append(np.vstack([tile, cap]))
        tiles.append(np.zeros((STRIP_PX + 14, 4, 3), np.uint8))
    return np.hstack(tiles[:-1])


def _stack(top: np.ndarray, bottom: np.ndarray | None) -> np.ndarray:
    if bottom is None:
        return top
    w = max(top.shape[1], bottom.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, w - a.shape[1]), (0, 0)))  # noqa: E731
    return np.vstack([pad(top), np.zeros((4, w, 3), np.uint8), pad(bottom)])


class ReportCollector:
    """Collects what ``amsrc score --report`` shows: the score curve, the events and a picture of each
    event's peak frame (the overlay's drawing, the responsible box red) with the error map of its top
    object (``detector`` given and the decoder run), for :func:`amsrc.report.html.write_html_report`."""

    def __init__(self, detector=None, max_thumbnails: int = 12, min_frames: int = MIN_FRAMES):
        self.detector = detector
        self.scores: dict[int, float] = {}
        self.events: list[dict] = []
        self.max_thumbnails = max_thumbnails
        self._recent: deque = deque(maxlen=max(1, min_frames))  # the frames an event's start may reach back to
        self._open: int | None = None
        self._best: tuple[np.ndarray, FrameView, FrameResult] | None = None
        self.thumbs: list[tuple[int, str, bytes]] = []

    def on_frame(self, rgb, view: FrameView | None, r: FrameResult | None, lines) -> None:
        """One scored frame (``rgb``/``view``/``r`` None: the end of the stream) and its event lines."""
        started = False
        if r is not None and view is not None:
            self.scores[int(view.index)] = float(r.score)
            self._recent.append((rgb.copy(), view, r))
        for e in lines:
            if e["type"] == "event_start":  # the peak so far: the run above the threshold that started it
                self._open, started, self._best = e["event"], True, None
                for x in self._recent:
                    if x[1].index >= e["start_frame"]:
                        self._keep_if_higher(x)
        if self._open is not None and not started and r is not None and view is not None:
            self._keep_if_higher(self._recent[-1])
        for e in lines:
            if e["type"] == "event_end":
                self._open = None
                self.events.append(e)
                if self._best is not None and len(self.thumbs) < self.max_thumbnails:
                    self._thumb(e, *self._best)
                self._best = None

    def _keep_if_higher(self, x: tuple) -> None:
        """The event's peak frame: the first of its highest scores, as the event detector picks it."""
        if self._best is None or x[2].score > self._best[2].score:
            self._best = x

    def _thumb(self, e: dict, rgb: np.ndarray, view: FrameView, r: FrameResult) -> None:
        k = max(1, -(-THUMB_MIN_W // rgb.shape[1]))  # small frames drawn k times larger, so the labels read
        if k > 1:
            rgb = cv2.resize(rgb, (rgb.shape[1] * k, rgb.shape[0] * k), interpolation=cv2.INTER_LINEAR)
        boxes = np.asarray(view.boxes).reshape(-1, 4) * k
        v = FrameView(**{**view.__dict__, "boxes": boxes, "event": e["event"], "top_k": 3})
        words = (e.get("explanation") or {}).get("words", "")
        img = _stack(draw_frame(rgb, v), error_strip(self.detector, r, r.top) if r.top is not None else None)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if ok:
            cap = (f"event {e['event']}: peak {float(e['peak_score']):.2f} {SCORE_UNIT} at frame {view.index} "
                   f"({view.time_s:.2f} s)"
                   + (f"; {words}" if words else "") + "; red box: the object it is about")
            self.thumbs.append((int(e["event"]), cap, buf.tobytes()))

    def write(self, path, *, title: str, threshold: float | None, threshold_low: float | None, settings: dict,
              summary: ScoreSummary, fps: float | None = None, rate_text: str | None = None):
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
        curves = {summary.source: (curve, None)} if n else {}  # stopped before its first frame: no curve
        return write_html_report(path, title=title, curves=curves, threshold=threshold,
                                 threshold_low=threshold_low, events=self.events, thumbnails=self.thumbs,
                                 settings=settings, timings=timings, fps=fps, rate_text=rate_text,
                                 intro=f"The curve is the {SCORE_MEANING}, causally smoothed (what both thresholds "
                                       "are compared with; the per-frame file also has it raw). Box labels in the "
                                       "pictures are the objects' own scores, raw.")
