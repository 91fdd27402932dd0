"""Overlay video: each frame with its object boxes coloured by score and the frame score in a
corner. Written with PyAV, atomically.

Colours (RGB): a box whose score is at or above the threshold is red; below ``threshold - ramp``
it is green; in between it goes from green through yellow towards orange, so near-misses stand
out. Scores are the detector's combined scores (z-scores: they may be negative), hence the
absolute ``ramp`` rather than a ratio.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from amsrc.errors import ConfigError, DataError
from amsrc.utils import temp_beside

RED = (255, 0, 0)
GREEN = (0, 200, 0)
YELLOW = (255, 220, 0)

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


def score_colour(score: float, threshold: float, ramp: float = 1.0) -> tuple[int, int, int]:
    """RGB colour of a box: red at/above ``threshold``, green below ``threshold - ramp``, green -> yellow
    in between."""
    if not np.isfinite(score):
        return (128, 128, 128)
    if score >= threshold:
        return RED
    u = float(np.clip((score - (threshold - ramp)) / max(ramp, 1e-12), 0.0, 1.0))
    return tuple(int(round(g + u * (y - g))) for g, y in zip(GREEN, YELLOW))  # type: ignore[return-value]


class OverlayWriter:
    """Write an overlay video frame by frame.

    path: output file (.mp4, .mkv, .mov, .avi); fps: frame rate; size_hw: (H, W) of the frames
    given to :meth:`write`. codec "h264" falls back to "mpeg4" when PyAV has no H.264 encoder
    (:attr:`codec` says which was used). Odd sizes are padded by one edge pixel to even (yuv420p).
    The file appears under ``path`` only on :meth:`close`; an exception inside a ``with`` block,
    or :meth:`abort`, leaves nothing behind.
    """

    def __init__(self, path: str | Path, fps: float, size_hw: tuple[int, int], codec: str = "h264",
                 ramp: float = 1.0, bitrate: int | None = None):
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
        self.ramp = float(ramp)
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

    # ------------------------------------------------------------ drawing
    def render(self, frame_rgb: np.ndarray, boxes: Any, scores: Any, threshold: float,
               frame_score: float | None = None) -> np.ndarray:
        """The overlay frame (H, W, 3) uint8 RGB that :meth:`write` encodes (no side effect)."""
        img = np.asarray(frame_rgb)
        if img.dtype != np.uint8 or img.shape != (*self.size_hw, 3):
            raise DataError(self.path, f"overlay frames must be {(*self.size_hw, 3)} uint8 RGB, "
                                       f"got {img.shape} {img.dtype}")
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4), np.int64)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.size != boxes.shape[0]:
            raise DataError(self.path, f"{boxes.shape[0]} boxes but {scores.size} scores")
        out = img.copy()
        h, w = self.size_hw
        thick = max(2, int(round(min(h, w) / 160)))
        font, fscale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, min(h, w) / 700)
        for (x0, y0, x1, y1), s in zip(boxes, scores):
            x0, x1 = int(np.clip(x0, 0, w - 1)), int(np.clip(x1 - 1, 0, w - 1))
            y0, y1 = int(np.clip(y0, 0, h - 1)), int(np.clip(y1 - 1, 0, h - 1))
            col = score_colour(float(s), float(threshold), self.ramp)
            cv2.rectangle(out, (x0, y0), (x1, y1), col, thick)
            label = f"{s:.2f}"
            (tw, th), base = cv2.getTextSize(label, font, fscale, 1)
            ty = y0 - 3 if y0 - th - 4 >= 0 else min(h - 1, y1 + th + 3)
            cv2.rectangle(out, (x0, ty - th - 2), (min(w - 1, x0 + tw + 2), ty + base - 1), (0, 0, 0), -1)
            cv2.putText(out, label, (x0 + 1, ty - 1), font, fscale, col, 1, cv2.LINE_AA)
        fs = frame_score if frame_score is not None else (float(scores.max()) if scores.size else None)
        self._draw_score_bar(out, fs, float(threshold), font, fscale)
        return out

    def _draw_score_bar(self, out: np.ndarray, fs: float | None, threshold: float, font, fscale) -> None:
        """Top-left: "score S / thr T" and a bar filled to sigmoid((S - T) / ramp) (half at the threshold);
        with no finite threshold (e.g. inf: none learned) only the score, the bar empty."""
        h, w = self.size_hw
        has_thr = bool(np.isfinite(threshold))
        text = "score -" if fs is None else f"score {fs:.2f}" + (f" / thr {threshold:.2f}" if has_thr else "")
        (tw, th), base = cv2.getTextSize(text, font, fscale, 1)
        bw = min(w - 4, max(tw + 6, 60))
        bh = max(4, th // 2)
        cv2.rectangle(out, (0, 0), (min(w - 1, bw + 4), min(h - 1, th + bh + base + 8)), (0, 0, 0), -1)
        col = (200, 200, 200) if fs is None else score_colour(fs, threshold, self.ramp)
        cv2.putText(out, text, (3, th + 3), font, fscale, col, 1, cv2.LINE_AA)
        y0 = th + base + 4
        y1 = min(h - 1, y0 + bh)
        cv2.rectangle(out, (3, y0), (3 + bw - 2, y1), (90, 90, 90), 1)
        if fs is not None and np.isfinite(fs) and has_thr:
            z = float(np.clip((fs - threshold) / max(self.ramp, 1e-12), -50.0, 50.0))
            frac = 1.0 / (1.0 + np.exp(-z))
            cv2.rectangle(out, (3, y0), (3 + int(round((bw - 2) * frac)), y1), col, -1)
        mid = 3 + (bw - 2) // 2
        cv2.line(out, (mid, y0 - 1), (mid, y1 + 1), (255, 255, 255), 1)

    # ------------------------------------------------------------ writing
    def write(self, frame_rgb: np.ndarray, boxes: Any, scores: Any, threshold: float,
              frame_score: float | None = None) -> None:
        """Draw and encode one frame. frame_rgb (H, W, 3) uint8; boxes (K, 4) int x0, y0, x1, y1 (x1, y1
        exclusive); scores (K,) float; frame_score: shown in the corner (default: max of scores)."""
        if self._container is None:
            raise ValueError(f"{self.path}: overlay writer is closed")
        img = self.render(frame_rgb, boxes, scores, threshold, frame_score)
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
