"""Spatio-temporal cubes: for every box of frame t, crops of frames t-4 .. t and of the 4 flows ending at t.

One code path for training, test and live scoring: :class:`CubeExtractor` is pushed one RGB frame at
a time; ``amsrc prepare`` pushes the frames of each clip through it and stores what it yields, and
live scoring pushes camera frames through the same object. :func:`crop_cubes` is the pure crop/resize
both use.

Crops are resized to ``S x S`` (``S = cfg.cube_size``) with ``cv2.resize(..., INTER_LINEAR)``,
always (one interpolation for every box, upscaled or downscaled). Flow vectors are cropped and
resized like images but their values are NOT rescaled: they stay in image pixels of the source
frame, so an object's on-screen speed survives the crop (DESIGN.md, point 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from amsrc.config import PrepareConfig
from amsrc.errors import ConfigError, DataError
from amsrc.prepare.boxes import make_box_detector
from amsrc.prepare.flow import make_flow

T_APPEARANCE = 5  # frames t-4 .. t in a cube
T_FLOW = 4  # flows (t-4 -> t-3) .. (t-1 -> t) in a cube
CUBE_FORMAT = 1  # bump when the cube layout or crop rule changes: invalidates every stored cube


@dataclass
class FrameObjects:
    """What frame t yields: its boxes and their cubes (K = 0 for frames 0..3 of a stream)."""

    t: int  # frame index within the clip/stream (0-based)
    boxes: np.ndarray  # (K, 4) int32 x0, y0, x1, y1 (x1, y1 exclusive)
    appearance: np.ndarray  # (K, 5, S, S, C) uint8, crops of frames t-4 .. t
    flow: np.ndarray  # (K, 4, S, S, 2) float16, flows (t-4->t-3) .. (t-1->t), vectors in image pixels

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def empty_objects(t: int, cube_size: int, channels: int) -> FrameObjects:
    """A frame with no cubes (K = 0), with the right shapes."""
    s = cube_size
    return FrameObjects(
        t=t,
        boxes=np.zeros((0, 4), np.int32),
        appearance=np.zeros((0, T_APPEARANCE, s, s, channels), np.uint8),
        flow=np.zeros((0, T_FLOW, s, s, 2), np.float16),
    )


def _check_cfg(cfg: PrepareConfig) -> None:
    if cfg.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {cfg.channels}")
    if not isinstance(cfg.cube_size, int) or cfg.cube_size < 4:
        raise ConfigError(f"cube_size must be an integer >= 4, got {cfg.cube_size!r}")
    if not isinstance(cfg.scale, (int, float)) or not 0.1 <= cfg.scale <= 1.0:
        raise ConfigError(f"prepare scale must be a number in [0.1, 1] (the factor frames are resized by "
                          f"before flow, boxes and crops), got {cfg.scale!r}")


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """(h, w) of a frame resized by ``scale`` (PrepareConfig.scale), at least 1 x 1."""
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def boxes_to_source(boxes: np.ndarray, scale: float, h: int, w: int) -> np.ndarray:
    """(K, 4) boxes of a frame resized by ``scale`` (to :func:`scaled_size`) -> boxes of the h x w
    source frame that hold them (x0, y0 rounded down, x1, y1 up, clipped to the frame); a box that
    reaches an edge of the resized frame reaches that edge of the source frame (the border rule,
    ``ScoreConfig.edge_min_side``, sees it as cut)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    rh, rw = scaled_size(h, w, scale)
    out = np.stack([np.floor(b[:, 0] / scale), np.floor(b[:, 1] / scale), np.ceil(b[:, 2] / scale),
                    np.ceil(b[:, 3] / scale)], 1)
    out[:, 2] = np.where(b[:, 2] >= rw, w, out[:, 2])
    out[:, 3] = np.where(b[:, 3] >= rh, h, out[:, 3])
    out = np.clip(out, 0, [w, h, w, h]).astype(np.int32)
    return out.reshape(-1, 4)


def _appearance_plane(frame: np.ndarray, channels: int) -> np.ndarray:
    """The plane crops are cut from: (H, W) grey for C = 1 (cv2 RGB2GRAY), (H, W, 3) RGB for C = 3."""
    if channels == 1:
        if frame.ndim == 2:
            return frame

        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DataError(None, f"channels = 3 needs (H, W, 3) RGB frames, got shape {frame.shape}")
    return frame


def crop_cubes(
    frames: Sequence[np.ndarray],
    flows: Sequence[np.ndarray],
    boxes: np.ndarray,
    cfg: PrepareConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop every box from 5 frames and 4 flows and resize each crop to S x S.

    frames: 5 frames t-4 .. t, each (H, W, 3) uint8 RGB, or (H, W) uint8 grey when cfg.channels = 1
            (grey frames must come from ``cv2.cvtColor(rgb, COLOR_RGB2GRAY)``, as :class:`CubeExtractor` does).
    flows:  4 flows (t-4 -> t-3) .. (t-1 -> t), each (H, W, 2) float32 in image pixels.
    boxes:  (K, 4) int x0, y0, x1, y1 with 0 <= x0 < x1 <= W, 0 <= y0 < y1 <= H.
    Returns appearance (K, 5, S, S, C) uint8 and flow (K, 4, S, S, 2) float16; flow values are not
    rescaled by the resize.
    """
    _check_cfg(cfg)
    if len(frames) != T_APPEARANCE or len(flows) != T_FLOW:
        raise ValueError(f"crop_cubes needs {T_APPEARANCE} frames and {T_FLOW} flows, got {len(frames)} and {len(flows)}")
    s, c = cfg.cube_size, cfg.channels
    planes = [_appearance_plane(f, c) for f in frames]
    h, w = planes[0].shape[:2]
    for j, p in enumerate(planes):
        if p.shape[:2] != (h, w) or p.dtype != np.uint8:
            raise DataError(None, f"crop_cubes: frame {j} is {p.dtype} {p.shape}, expected uint8 of size {w}x{h}")
    flows32 = []
    for j, f in enumerate(flows):
        if f.shape != (h, w, 2):
            raise DataError(None, f"crop_cubes: flow {j} has shape {f.shape}, expected ({h}, {w}, 2)")
        flows32.append(f if f.dtype == np.float32 else f.astype(np.float32))
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4), got shape {boxes.shape}")
    k = boxes.shape[0]
    app = np.empty((k, T_APPEARANCE, s, s, c), np.uint8)
    flo = np.empty((k, T_FLOW, s, s, 2), np.float32)
    if k == 0:
        return app, flo.astype(np.float16)
    x0s, y0s, x1s, y1s = (boxes[:, i] for i in range(4))
    bad = (x0s < 0) | (y0s < 0) | (x1s > w) | (y1s > h) | (x1s <= x0s) | (y1s <= y0s)
    if bad.any():
        raise ValueError(f"box {boxes[np.argmax(bad)].tolist()} is empty or outside the {w}x{h} frame")
    interp = cv2.INTER_LINEAR
    # For C = 1 the destination is (S, S) so cv2 writes straight into the output (no copy).
    app_dst = app[..., 0] if c == 1 else app
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        for j, p in enumerate(planes):
            cv2.resize(p[y0:y1, x0:x1], (s, s), dst=app_dst[i, j], interpolation=interp)
        for j, f in enumerate(flows32):
            cv2.resize(f[y0:y1, x0:x1], (s, s), dst=flo[i, j], interpolation=interp)
    return app, flo.astype(np.float16)


def sanitize_boxes(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """(K, 4) int32 boxes clipped to an h x w frame, empty ones dropped (order kept)."""
    b = np.asarray(boxes)
    if b.size == 0:
        return np.zeros((0, 4), np.int32)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"the box detector returned shape {b.shape}, expected (K, 4)")
    b = b.astype(np.int64)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return np.ascontiguousarray(b[keep], dtype=np.int32)


class CubeExtractor:
    """Streaming cube extraction; ONE code path for training, test and live scoring.

    ``push(frame_rgb)`` takes frame t of a stream, computes the flow t-1 -> t and the boxes of
    frame t (the box detector sees only frames <= t), and returns the cubes of frame t's boxes.
    Frames 0..3 return K = 0 (a cube needs 4 previous frames); the detector still sees them so its
    state is the same whether a stream is prepared offline or scored live.

    ``flow`` / ``box_detector`` default to ``make_flow(cfg.flow)`` / ``make_box_detector(cfg.boxes,
    background)`` (``background``: the training background box method "bg" needs);
    passing others is for tests and plug-ins.

    With ``cfg.scale`` < 1 every frame is first resized by it; flow, boxes and crops work on the
    resized frame, and the returned boxes and flow vectors are mapped back to the source frame's
    pixels (boxes: the source box holding the resized one; flow: divided by the scale).
    """

    def __init__(
        self,
        cfg: PrepareConfig,
        flow: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        box_detector=None,
        background: np.ndarray | None = None,
    ):
        _check_cfg(cfg)
        self.cfg = cfg
        if flow is None:
            flow = make_flow(cfg.flow)
        if box_detector is None:
            if background is not None and cfg.scale != 1:
                bh, bw = scaled_size(*np.asarray(background).shape[:2], cfg.scale)
                background = cv2.resize(np.asarray(background), (bw, bh), interpolation=cv2.INTER_AREA)
            box_detector = make_box_detector(cfg.boxes, background)
        self.flow = flow
        self.box_detector = box_detector
        self.seconds = {"flow": 0.0, "boxes": 0.0, "crops": 0.0}  # time spent per stage since creation
        self.reset()

    def reset(self) -> None:
        """Start a new clip/stream: forget frames, flows and the detector's state."""
        self.t = 0
        self._shape: tuple[int, ...] | None = None
        self._grays: list[np.ndarray] = []  # last grey frames, oldest first (only the newest is needed)
        self._planes: list[np.ndarray] = []  # last <= 5 appearance planes, oldest first
        self._flows: list[np.ndarray] = []  # last <= 4 flows, oldest first
        if hasattr(self.box_detector, "reset"):
            self.box_detector.reset()

    def push(self, frame_rgb: np.ndarray) -> FrameObjects:
        """Frame t, (H, W, 3) uint8 RGB -> the objects of frame t (K = 0 for t < 4)."""
        t = self.t
        t0 = time.perf_counter()
        if not isinstance(frame_rgb, np.ndarray) or frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
            got = f"{frame_rgb.dtype} {frame_rgb.shape}" if isinstance(frame_rgb, np.ndarray) else type(frame_rgb).__name__
            raise DataError(None, f"frame {t}: expected an (H, W, 3) uint8 RGB frame, got {got}")
        if self._shape is None:
            self._shape = frame_rgb.shape
        elif frame_rgb.shape != self._shape:
            h0, w0 = self._shape[:2]
            raise DataError(
                None,
                f"frame {t} is {frame_rgb.shape[1]}x{frame_rgb.shape[0]} but frame 0 of this stream was "
                f"{w0}x{h0} (all frames of a clip must have one size)",
            )
        if self.cfg.scale != 1:
            h, w = scaled_size(*frame_rgb.shape[:2], self.cfg.scale)
            frame_rgb = cv2.resize(frame_rgb, (w, h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        plane = gray if self.cfg.channels == 1 else frame_rgb
        boxes = None
        if self._grays:
            prev = self._grays[-1]
            t1 = time.perf_counter()
            flow = self.flow(prev, gray)
            t2 = time.perf_counter()
            boxes = self.box_detector(prev, gray, flow)
            t3 = time.perf_counter()
            self.seconds["flow"] += t2 - t1
            self.seconds["boxes"] += t3 - t2
            t0 += t3 - t1  # the rest of push is "crops"
            self._flows.append(flow)
            if len(self._flows) > T_FLOW:
                self._flows.pop(0)
        self._grays = [gray]
        self._planes.append(plane)
        if len(self._planes) > T_APPEARANCE:
            self._planes.pop(0)
        self.t = t + 1
        if t < T_APPEARANCE - 1 or boxes is None:
            out = empty_objects(t, self.cfg.cube_size, self.cfg.channels)
        else:
            h, w = gray.shape
            boxes = sanitize_boxes(boxes, h, w)
            appearance, flow16 = crop_cubes(self._planes, self._flows, boxes, self.cfg)
            if self.cfg.scale != 1:
                boxes = boxes_to_source(boxes, self.cfg.scale, *self._shape[:2])
                flow16 = (flow16.astype(np.float32) / self.cfg.scale).astype(np.float16)
            out = FrameObjects(t=t, boxes=boxes, appearance=appearance, flow=flow16)
        self.seconds["crops"] += time.perf_counter() - t0
        return out
