"""Anomalous events from a stream of frame scores, and which cue drove each.

:class:`EventDetector` turns per-frame (smoothed) scores into events with hysteresis:

- an event STARTS when the score is >= ``threshold`` for ``min_frames`` frames in a row; its
  start line is emitted at that frame, so the alert delay is ``min_frames - 1`` frames after the
  first frame above the threshold (plus the lag of the causal smoothing);
- it stays open while the score is >= ``threshold_low`` (<= threshold); it ENDS after
  ``end_frames`` frames in a row below ``threshold_low`` (end line emitted then; the event's last
  frame is the last one at or above ``threshold_low``), or when the stream closes.

Each event carries its peak score, peak frame, the boxes of the peak frame and an explanation
(:func:`explain`) of its top object: z(S_f) (appearance-motion inconsistency), z(S_p) (prediction
error: an odd-looking object) and its speed compared with the training objects' speeds; the cue
is whichever of the three is largest in standard units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from amsrc.errors import ConfigError
from amsrc.prepare.features import SpeedStats
from amsrc.scoring import zscore

MIN_FRAMES = 3  # frames at or above the threshold in a row before an event starts
END_FRAMES = 5  # frames below the low threshold in a row before it ends

CUES = {
    "motion": "appearance-motion inconsistency z(S_f): it moves unlike what it looks like",
    "appearance": "prediction error z(S_p): it looks unlike the training objects",
    "rarity": "motion rarity z(S_m): it moves unlike any training object",
    "speed": "speed: it moves faster than the training objects",
}


def explain(result, k: int, stats, speeds: SpeedStats | None, weights=None) -> dict:
    """Why object ``k`` of a :class:`~amsrc.live.stream.FrameResult` scored high: z(S_f), z(S_p), z(S_m), speed, the cue.
    ``weights`` (a ScoreConfig): only the cues the score weighs (and speed) can be the cue; None: every computed one."""
    z_f = float(zscore(result.s_f[k], stats.s_f_mean, stats.s_f_std))
    z_p = float(zscore(result.s_p[k], stats.s_p_mean, stats.s_p_std))  # NaN: S_p not computed (w_p = 0)
    z_m = (float(zscore(result.s_m[k], stats.s_m_mean, stats.s_m_std))  # NaN: S_m not computed
           if result.s_m is not None and stats.s_m_mean is not None else float("nan"))
    sp = float(result.speed[k])
    has_p, has_m = bool(np.isfinite(z_p)), bool(np.isfinite(z_m))
    out = {"z_s_f": round(z_f, 3), "z_s_p": round(z_p, 3) if has_p else None,
           "z_s_m": round(z_m, 3) if has_m else None, "speed_px_per_frame": round(sp, 3)}
    cands = {"motion": z_f, "appearance": z_p} if has_p else {"motion": z_f}
    if has_m:
        cands["rarity"] = z_m
    if weights is not None:  # a cue the score does not weigh cannot be why it is high
        used = {"motion": weights.w_f, "appearance": weights.w_p, "rarity": weights.w_m}
        cands = {c: z for c, z in cands.items() if used[c] != 0} or cands
    if speeds is not None:
        z_v = speeds.robust_z(sp)
        out["speed_percentile"] = round(speeds.percentile(sp), 2)
        out["z_speed"] = round(z_v, 3)
        out["train_speed_p99"] = round(float(np.interp(99, speeds.levels, speeds.values)), 3)
        cands["speed"] = z_v
    cue = max(cands, key=cands.get)
    out["cue"] = cue
    out["why"] = CUES[cue]
    out["words"] = cue_words(out)
    return out


def cue_words(ex: dict) -> str:
    """An explanation (:func:`explain`) in one sentence for a person: "moves 2.5x faster than the
    fastest 1% of normal objects here (6.1 px/frame)"."""
    cue = ex.get("cue")
    if cue == "speed":
        p99 = ex.get("train_speed_p99") or 0.0
        sp = ex["speed_px_per_frame"]
        if p99 > 0:
            return (f"moves {sp / p99:.1f}x as fast as the fastest 1% of normal objects here "
                    f"({sp:.1f} px/frame against {p99:.1f})")
        return f"moves at {sp:.1f} px/frame, faster than the normal objects here"
    if cue == "motion":
        return (f"moves unlike what it looks like: its appearance-motion inconsistency is {ex['z_s_f']:.1f} "
                "standard deviations above that of normal objects")
    if cue == "rarity":
        return (f"moves unlike any normal object: its motion rarity is {ex['z_s_m']:.1f} standard deviations "
                "above that of normal objects")
    if cue == "appearance":
        return (f"looks unlike the normal objects: its prediction error is {ex['z_s_p']:.1f} standard "
                "deviations above that of normal objects")
    return "-"


@dataclass
class _Open:
    id: int
    start: int  # first frame of the run above threshold
    start_time: float
    peak: float
    peak_frame: int
    peak_time: float
    peak_result: object
    last_high: int  # last frame >= threshold_low
    last_high_time: float


@dataclass
class EventDetector:
    """Hysteresis on the smoothed frame score; see the module docstring."""

    threshold: float
    threshold_low: float | None = None  # None: equal to threshold
    min_frames: int = MIN_FRAMES  # frames >= threshold in a row to start an event
    end_frames: int = END_FRAMES  # frames < threshold_low in a row to end it
    stats: object = None  # TrainStats, for explanations (None: no explanation)
    speeds: SpeedStats | None = None
    weights: object = None  # ScoreConfig: the cues the score weighs (None: every computed cue may explain)
    _run: list = field(default_factory=list)  # (frame, time, result) of the current run >= threshold
    _open: _Open | None = None
    _below: int = 0
    _n: int = 0
    events: list = field(default_factory=list)  # closed events (end records)

    def __post_init__(self):
        if not math.isfinite(self.threshold):
            raise ConfigError(f"the threshold must be a finite number, got {self.threshold!r}")
        if self.threshold_low is None or not self.threshold_low <= self.threshold:  # NaN too
            self.threshold_low = self.threshold
        if self.min_frames < 1 or self.end_frames < 1:
            raise ConfigError(f"min_frames and end_frames must be >= 1, got {self.min_frames} and {self.end_frames}")

    def _boxes(self, r) -> list:
        """Boxes by score, highest first; objects left out of the frame score (``r.counted``: slivers at
        the border) after the others, so the first box is the object that set the frame score."""
        if not r.object_scores.size:
            return []
        counted = np.ones(r.object_scores.size, bool) if getattr(r, "counted", None) is None else np.asarray(r.counted)
        order = np.lexsort((-r.object_scores, ~counted))
        return [{"box": [int(v) for v in r.boxes[i]], "score": round(float(r.object_scores[i]), 4)} for i in order]

    def _explain(self, r) -> dict | None:
        if self.stats is None or r.top is None:
            return None
        return explain(r, r.top, self.stats, self.speeds, self.weights)

    def push(self, frame: int, time_s: float, r) -> list[dict]:
        """Feed one frame (its index, time and :class:`~amsrc.live.stream.FrameResult`); returns event lines (dicts)."""
        out: list[dict] = []
        s = r.score
        if self._open is None:
            if s >= self.threshold:
                self._run.append((frame, time_s, r))
                if len(self._run) >= self.min_frames:
                    f0, t0, _ = self._run[0]
                    pf, pt, pr = max(self._run, key=lambda x: x[2].score)
                    self._n += 1
                    self._open = _Open(self._n, f0, t0, pr.score, pf, pt, pr, frame, time_s)
                    self._run = []
                    self._below = 0
                    out.append({
                        "type": "event_start", "event": self._n, "start_frame": f0, "start_time": round(t0, 3),
                        "alert_frame": frame, "alert_time": round(time_s, 3), "delay_frames": frame - f0,
                        "score": round(s, 4), "boxes": self._boxes(r), "explanation": self._explain(pr),
                    })
            else:
                self._run = []
            return out
        e = self._open
        if s >= self.threshold_low:
            self._below = 0
            e.last_high, e.last_high_time = frame, time_s
            if s > e.peak:
                e.peak, e.peak_frame, e.peak_time, e.peak_result = s, frame, time_s, r
        else:
            self._below += 1
            if self._below >= self.end_frames:
                out.append(self._close(frame, time_s))
        return out

    def _close(self, frame: int, time_s: float) -> dict:
        e = self._open
        rec = {
            "type": "event_end", "event": e.id, "start_frame": e.start, "end_frame": e.last_high,
            "start_time": round(e.start_time, 3), "end_time": round(e.last_high_time, 3),
            "n_frames": e.last_high - e.start + 1, "emitted_frame": frame,
            "peak_score": round(e.peak, 4), "peak_frame": e.peak_frame, "peak_time": round(e.peak_time, 3),
            "boxes": self._boxes(e.peak_result), "explanation": self._explain(e.peak_result),
        }
        self.events.append(rec)
        self._open = None
        self._below = 0
        return rec

    def close(self, frame: int, time_s: float) -> list[dict]:
        """End of the stream: close an open event."""
        self._run = []
        return [self._close(frame, time_s)] if self._open is not None else []


@dataclass
class _ScoreOnly:
    """The part of a FrameResult that :class:`EventDetector` reads, for scores without objects."""

    score: float
    object_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))
    top: None = None


def offline_events(scores, threshold: float, threshold_low: float | None = None, min_frames: int = MIN_FRAMES,
                   end_frames: int = END_FRAMES) -> list[dict]:
    """The events :class:`EventDetector` finds in one clip's smoothed frame scores (n,): the same
    hysteresis as live scoring. Each: start_frame, alert_frame, end_frame (0-based)."""
    det = EventDetector(threshold, threshold_low, min_frames, end_frames)
    starts = {}
    for t, v in enumerate(np.asarray(scores, np.float64)):
        for line in det.push(t, float(t), _ScoreOnly(float(v))):
            if line["type"] == "event_start":
                starts[line["event"]] = line["alert_frame"]
    det.close(len(scores) - 1, float(len(scores) - 1))
    return [{"start_frame": e["start_frame"], "alert_frame": starts[e["event"]], "end_frame": e["end_frame"]}
            for e in det.events]
