"""What ``amsrc score --report`` collects while it scores: the score curve, the events and a
thumbnail of each event's peak frame, handed to :func:`amsrc.report.html.write_html_report`."""

from __future__ import annotations

import cv2
import numpy as np

from amsrc.live.run import ScoreSummary
from amsrc.live.stream import FrameResult
from amsrc.report.html import write_html_report


class ReportCollector:
    """Collects what ``amsrc score --report`` shows: the score curve, events and a thumbnail of each
    event's peak frame (its boxes drawn), for :func:`amsrc.report.html.write_html_report`."""

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
