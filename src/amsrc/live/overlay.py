"""Overlay video: each frame with its object boxes, its frame number and time, the anomaly score
against both thresholds and an EVENT banner while an event is open. Written with PyAV, atomically.

What a frame shows (:func:`draw_frame`, also the report's thumbnails, so both read the same way):

- top panel: "frame N" (0-based) and the time; a bar of the anomaly score (causally smoothed, the
  value the events use) on a scale that puts the threshold in the middle, a white tick at the
  threshold and a grey tick at the end threshold; the bar is red at or above the threshold, orange
  between the two thresholds, green below;
- boxes, one rule (:func:`box_colour`): red = the object an open event is about (the frame's
  highest-scoring object while an event is open), orange = an object whose own score is at or above
  the threshold, green = below; only the ``top_k`` highest objects carry a score label, placed so
  that no two labels overlap;
- a red "EVENT n" banner along the bottom from the frame an event is alerted until the frame its
  end is emitted (the event detector's hysteresis).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from amsrc.errors import ConfigError, DataError
from amsrc.utils import temp_beside

RED = (230, 25, 25)  # the object an open event is about; the score bar at or above the threshold
ORANGE = (255, 150, 0)  # an object at or above the threshold on its own; the bar between the thresholds
GREEN = (0, 200, 0)  # below
GREY = (128, 128, 128)  # no finite score
BANNER_H = 16  # px of the EVENT banner along the bottom (at 240 rows; scaled with the frame)

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


def box_colour(score: float, threshold: float, responsible: bool = False) -> tuple[int, int, int]:
    """RGB of an object's box: red when an open event is about it (``responsible``), orange when its
    own score is at or above ``threshold``, green below, grey for a non-finite score."""
    if not math.isfinite(score):
        return GREY
    if responsible:
        return RED
    return ORANGE if score >= threshold else GREEN


def bar_colour(score: float, threshold: float, threshold_low: float) -> tuple[int, int, int]:
    """RGB of the score bar: red at or above the threshold, orange at or above the end threshold, green below."""
    if not math.isfinite(score):
        return GREY
    return RED if score >= threshold else ORANGE if score >= threshold_low else GREEN


def bar_scale(threshold: float, threshold_low: float) -> tuple[float, float]:
    """(lo, hi) scores at the two ends of the score bar: the threshold in the middle, 0 and the end
    threshold inside it."""
    lo = min(0.0, threshold_low) - 0.25 * max(abs(threshold), 1.0)
    return lo, 2 * threshold - lo


@dataclass
class FrameView:
    """What one overlay frame shows."""

    index: int  # frame number in the source (0-based)
    time_s: float  # seconds from the start of the source
    boxes: Any  # (K, 4) int x0, y0, x1, y1 (x1, y1 exclusive) in the frame's pixels
    object_scores: Any  # (K,) their scores (raw, z)
    score: float | None  # the frame's anomaly score (smoothed); None: not scored
    threshold: float = math.inf  # inf: the model has none (nothing is orange or red)
    threshold_low: float | None = None  # end threshold (None: = threshold)
    event: int | None = None  # number of the event open at this frame
    rate_note: str = ""  # e.g. " (25 fps assumed)" after the time
    top_k: int = 3  # boxes with a score label
    top: int | None = -1  # index of the object the frame's score is about (FrameResult.top); -1: the highest-scoring one


def _put(img, text, org, fscale, col, thick=1) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, fscale, col, thick, cv2.LINE_AA)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: np.ndarray, scores: np.ndarray, size_hw: tuple[int, int], fscale: float, top_k: int,
                 reserved: list) -> list[tuple[int, tuple[int, int, int, int], tuple[int, int]]]:
    """Where the score labels go: (object index, (x0, y0, x1, y1) of its label, the origin of its text)
    for at most ``top_k``
    objects, highest score first, each label above its box, else below it, else inside its top, and
    only where it overlaps no label placed before and no ``reserved`` rectangle (an object whose
    label fits nowhere goes unlabelled)."""
    h, w = size_hw
    placed = list(reserved)
    out = []
    for k in (np.argsort(-scores, kind="stable")[: max(0, top_k)] if scores.size else []):
        s = float(scores[k])
        if not math.isfinite(s):
            continue
        x0, y0, x1, y1 = (int(c) for c in boxes[k])
        (tw, lh), lb = cv2.getTextSize(f"{s:.1f}", cv2.FONT_HERSHEY_SIMPLEX, fscale, 1)
        x = int(np.clip(x0, 0, max(0, w - tw - 3)))
        for y_top in (y0 - lh - lb - 3, y1 + 1, y0 + 1):  # above the box, below it, inside its top
            rect = (x, y_top, x + tw + 3, y_top + lh + lb + 3)
            if rect[1] >= 0 and rect[3] <= h and not any(_overlaps(rect, p) for p in placed):
                placed.append(rect)
                out.append((int(k), rect, (x + 1, y_top + lh + 1)))
                break
    return out


def draw_frame(frame_rgb: np.ndarray, v: FrameView) -> np.ndarray:
    """The overlay of one frame (H, W, 3) uint8 RGB (a new array; see the module docstring)."""
    out = np.array(frame_rgb, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    unit = min(h, w) / 240.0
    fscale = max(0.33, 0.4 * unit)
    thick = max(2, int(round(1.5 * unit)))
    (_, th), base = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, fscale, 1)
    boxes = np.asarray(v.boxes, dtype=np.int64).reshape(-1, 4) if np.size(v.boxes) else np.zeros((0, 4), np.int64)
    scores = np.asarray(v.object_scores, dtype=np.float64).reshape(-1)
    if scores.size != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.size} scores")
    thr = float(v.threshold)
    low = thr if v.threshold_low is None or not v.threshold_low <= thr else float(v.threshold_low)
    top = (int(np.argmax(scores)) if scores.size else None) if v.top == -1 else v.top
    panel_h = 2 * th + 3 * base + 8
    banner_h = max(10, int(round(BANNER_H * unit)))
    # boxes, then the labels of the top_k (highest first, each where it overlaps no other label)
    colours = [box_colour(float(s), thr, v.event is not None and k == top) for k, s in enumerate(scores)]
    for (x0, y0, x1, y1), col in zip(boxes, colours):
        cv2.rectangle(out, (int(np.clip(x0, 0, w - 1)), int(np.clip(y0, 0, h - 1))),
                      (int(np.clip(x1 - 1, 0, w - 1)), int(np.clip(y1 - 1, 0, h - 1))), col, thick)
    reserved = [(0, 0, w, panel_h)] + ([(0, h - banner_h, w, h)] if v.event is not None else [])
    for k, rect, origin in place_labels(boxes, scores, (h, w), fscale, v.top_k, reserved):
        cv2.rectangle(out, rect[:2], (rect[2] - 1, rect[3] - 1), (0, 0, 0), -1)
        _put(out, f"{float(scores[k]):.1f}", origin, fscale, colours[k])
    # the panel: frame and time, then the score bar
    cv2.rectangle(out, (0, 0), (w - 1, panel_h - 1), (0, 0, 0), -1)
    _put(out, f"frame {v.index}  {v.time_s:.2f} s{v.rate_note}", (3, th + 3), fscale, (235, 235, 235))
    y0b, y1b = th + base + 6, panel_h - 3
    label = "score -" if v.score is None or not math.isfinite(v.score) else f"score {v.score:.2f}"
    (lw, _), _ = cv2.getTextSize("score -00.00", cv2.FONT_HERSHEY_SIMPLEX, fscale, 1)
    _put(out, label, (3, y1b - 1), fscale, (235, 235, 235))
    bx0, bx1 = min(w - 10, lw + 8), w - 4
    cv2.rectangle(out, (bx0, y0b), (bx1, y1b), (90, 90, 90), 1)
    if math.isfinite(thr):
        lo, hi = bar_scale(thr, low)
        px = lambda z: int(round(bx0 + (bx1 - bx0) * (min(max(z, lo), hi) - lo) / (hi - lo)))  # noqa: E731
        if v.score is not None and math.isfinite(v.score):
            cv2.rectangle(out, (bx0 + 1, y0b + 1), (max(bx0 + 1, px(v.score)), y1b - 1),
                          bar_colour(v.score, thr, low), -1)
        cv2.line(out, (px(low), y0b - 2), (px(low), y1b + 2), (150, 150, 150), 1)
        cv2.line(out, (px(thr), y0b - 2), (px(thr), y1b + 2), (255, 255, 255), 1)
    if v.event is not None:
        cv2.rectangle(out, (0, h - banner_h), (w - 1, h - 1), RED, -1)
        _put(out, f"EVENT {v.event}", (4, h - (banner_h - th) // 2 - 1), fscale, (255, 255, 255))
    return out


class OverlayWriter:
    """Write an overlay video frame by frame.

    path: output file (.mp4, .mkv, .mov, .avi); fps: frame rate; size_hw: (H, W) of the frames
    given to :meth:`write`. codec "h264" falls back to "mpeg4" when PyAV has no H.264 encoder
    (:attr:`codec` says which was used). Odd sizes are padded by one edge pixel to even (yuv420p).
    The file appears under ``path`` only on :meth:`close`; an exception inside a ``with`` block,
    or :meth:`abort`, leaves nothing behind.
    """

    def __init__(self, path: str | Path, fps: float, size_hw: tuple[int, int], codec: str = "h264",
                 bitrate: int | None = None):
        self.path = Path(path)
        fmt = _FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{self.path}: overlay video must end in one of {', '.join(sorted(_FORMATS))}")
        h, w = (int(v) for v in size_hw)
        if h < 2 or w < 2:
            raise ConfigError(f"overlay frame size must be at least 2x2, got {size_hw}")
        if not fps or fps <= 0:
            raise ConfigError(f"overlay fps must be positive, got {fps}")
        self.size_hw = (h, w)
        self.frames_written = 0
        self._enc_hw = (h + h % 2, w + w % 2)
        self._tmp = temp_beside(self.path)
        self._container = None
        try:
            self._container = av.open(str(self._tmp), mode="w", format=fmt)
            from fractions import Fraction

            rate = Fraction(fps).limit_denominator(1001)
            self.stream = None
            for name in (codec, "mpeg4") if codec != "mpeg4" else ("mpeg4",):
                try:
                    self.stream = self._container.add_stream(name, rate=rate)
                    self.codec = name
                    break
                except (ValueError, av.error.FFmpegError) as exc:  # noqa: PERF203 - UnknownCodecError is a ValueError
                    last = exc
            if self.stream is None:
                raise ConfigError(f"no video encoder for {codec!r} or 'mpeg4' in this PyAV build: {last}")
            self.stream.width, self.stream.height = self._enc_hw[1], self._enc_hw[0]
            self.stream.pix_fmt = "yuv420p"
            if bitrate:
                self.stream.bit_rate = int(bitrate)
            elif self.codec == "mpeg4":
                self.stream.bit_rate = int(max(1, h * w) * fps * 0.5)
            if self.codec in ("h264", "libx264"):
                self.stream.options = {"crf": "18", "preset": "veryfast"}
        except BaseException:
            self._discard()
            raise

    def write(self, frame_rgb: np.ndarray, view: FrameView) -> None:
        """Draw (:func:`draw_frame`) and encode one frame (H, W, 3) uint8 RGB of the writer's size."""
        if self._container is None:
            raise ValueError(f"{self.path}: overlay writer is closed")
        img = np.asarray(frame_rgb)
        if img.dtype != np.uint8 or img.shape != (*self.size_hw, 3):
            raise DataError(self.path, f"overlay frames must be {(*self.size_hw, 3)} uint8 RGB, "
                                       f"got {img.shape} {img.dtype}")
        img = draw_frame(img, view)
        if self._enc_hw != self.size_hw:
            img = np.pad(img, ((0, self._enc_hw[0] - img.shape[0]), (0, self._enc_hw[1] - img.shape[1]), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in self.stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, close the file and move it to ``path``."""
        if self._container is None:
            return self.path
        try:
            for packet in self.stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self._discard()
            raise
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial file (nothing appears under ``path``)."""
        self._discard()

    def _discard(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self._container = None
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard()
