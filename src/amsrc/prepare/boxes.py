"""Motion-based foreground boxes: which parts of frame t hold moving objects.

``make_box_detector(cfg, background)`` returns a :class:`BoxDetector`; ``detector(prev_gray, cur_gray, flow)``
gives the (K, 4) int32 boxes x0, y0, x1, y1 (exclusive ends, margin included, clipped to the
frame) of frame t. It is causal: it sees only frames <= t (MOG2 keeps a background model across
calls; ``reset()`` starts a new clip).

Steps:
  1. motion mask: ``diff`` |I_t - I_t-1| > threshold (default), ``mdiff`` max over k = 1..4 of
     |I_t - I_t-k| > threshold (the multi-frame difference over the cube's frames: the object's
     outline at t joined with where it was), ``det`` the boxes of an object detector from a local
     ONNX file (:mod:`amsrc.prepare.detect`; no mask), ``bg`` |I_t - B| > bg_threshold
     against a fixed background B, the median of training frames (:mod:`amsrc.prepare.background`;
     whole silhouettes, and objects that stop stay found), ``mog2`` adaptive background
     subtraction (a stopped object fades after a while), ``flow`` |flow| > flow_threshold, or a
     union of them written with '+' ("bg+diff");
  2. closing with a small, tall kernel (close_w x close_h): joins the fragments of one object (a
     walker's frame difference is a broken outline: head, torso and legs stacked vertically)
     without bridging side-by-side neighbours as an isotropic kernel would;
  3. connected components -> blobs;
  4. size cap (optional): a blob larger than an object can be at its image row is cut, XY-cut
     style, at the lowest valley of its row or column projection until every piece fits. The
     object size follows a ground-plane perspective: a typical object standing with its feet on
     image row y is ``split_slope * (y - split_horizon * H)`` pixels tall (at least
     ``split_min_height``). This stops a crowd that touches in the image from becoming one
     giant box (which would later look like one large abnormal object);
  5. filters: min area, max area (fraction of the frame), max aspect; overlap merge (IoU);
     margin; clip to the frame;
     with ``det`` in a union, the detector's boxes join the blobs' here, and a box lying
     ``dedup_cover`` or more inside a larger box is dropped (de-duplication by cover ratio: a
     detected walker and its motion fragments become the walker);
  6. temporal association (optional, ``persist``): a box is kept only when each of the previous
     ``persist`` frames had a box overlapping it (IoU >= ``persist_iou``), so a fragment that
     flickers for one frame is not an object;
  7. partly visible objects (optional, ``edge_min_side``): a box touching the left or right
     border narrower than that, or the top or bottom border shorter than that, is dropped. Such
     a sliver of an object entering or leaving the view is stretched several times when it is
     resized to the cube side, and its crop cannot be predicted from the previous frames.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from amsrc.config import BoxConfig
from amsrc.errors import ConfigError, DataError
from amsrc.prepare.flow import check_gray_pair

BOX_METHODS = ("diff", "mdiff", "bg", "mog2", "flow", "det")
MDIFF_FRAMES = 4  # "mdiff": frames back (t-1 .. t-4, the cube's frames)
MAX_BOXES = 256  # boxes per frame kept before merging (Ped2 has ~10); more is noise, and merging is quadratic
log = logging.getLogger("amsrc")


def _check_cfg(cfg: BoxConfig) -> None:
    parts = cfg.method.split("+")
    if not parts or any(m not in BOX_METHODS for m in parts) or len(set(parts)) != len(parts):
        raise ConfigError(
            f"unknown box method {cfg.method!r}; choose one of {', '.join(BOX_METHODS)} or a '+' union "
            "of them (e.g. 'diff+mog2')"
        )
    if cfg.close_w < 1 or cfg.close_h < 1:
        raise ConfigError(f"box closing kernel must be at least 1x1, got {cfg.close_w}x{cfg.close_h}")
    if "bg" in parts and (cfg.bg_threshold < 0 or cfg.bg_frames < 1):
        raise ConfigError(f"bg_threshold must be >= 0 and bg_frames >= 1, got {cfg.bg_threshold}, {cfg.bg_frames}")
    if "mog2" in parts and cfg.mog2_history < 1:
        raise ConfigError(f"mog2_history must be >= 1, got {cfg.mog2_history}")
    if not 0.0 < cfg.dedup_cover <= 1.0:
        raise ConfigError(f"dedup_cover must be in (0, 1], got {cfg.dedup_cover}")
    if cfg.persist < 0 or not 0.0 <= cfg.persist_iou <= 1.0:
        raise ConfigError(f"persist must be >= 0 and persist_iou in [0, 1], got {cfg.persist}, {cfg.persist_iou}")
    if cfg.margin < 0 or cfg.min_area < 0 or cfg.edge_min_side < 0:
        raise ConfigError("box margin, min_area and edge_min_side must be >= 0")
    if not 0.0 < cfg.max_area_frac <= 1.0:
        raise ConfigError(f"max_area_frac must be in (0, 1], got {cfg.max_area_frac}")
    if cfg.max_aspect < 1.0:
        raise ConfigError(f"max_aspect must be >= 1, got {cfg.max_aspect}")
    if cfg.split_horizon is not None:
        if cfg.split_slope < 0 or cfg.split_min_height <= 0 or cfg.split_max_h <= 0 or cfg.split_max_w <= 0:
            raise ConfigError("split_slope must be >= 0 and split_min_height, split_max_h, split_max_w > 0")


def _xy_cut(piece: np.ndarray, x0: int, y0: int, cap, out: list, depth: int = 0) -> None:
    """Cut a binary piece (offset x0, y0) at projection valleys until each part fits ``cap``.

    ``cap(y_bottom) -> (max_h, max_w)``. Appends tight (x0, y0, x1, y1) boxes of the parts to ``out``.
    A cut never leaves a part narrower than a quarter of the piece (no slivers).
    """
    rows = np.flatnonzero(piece.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(piece.any(axis=0))
    piece = piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    x0 += int(cols[0])
    y0 += int(rows[0])
    h, w = piece.shape
    max_h, max_w = cap(y0 + h)
    over_h, over_w = h / max_h, w / max_w
    if (over_h <= 1.0 and over_w <= 1.0) or depth >= 16:
        out.append((x0, y0, x0 + w, y0 + h))
        return
    cut_cols = over_w >= over_h
    prof = piece.sum(axis=0 if cut_cols else 1).astype(np.float32)
    n = prof.size
    lo, hi = max(1, int(round(0.25 * n))), min(n - 1, int(round(0.75 * n)))
    if hi <= lo:
        out.append((x0, y0, x0 + w, y0 + h))
        return
    prof = np.convolve(prof, np.ones(3, np.float32) / 3.0, mode="same")
    idx = np.arange(lo, hi)
    # lowest valley; among equal valleys the one nearest the middle
    c = int(idx[np.lexsort((np.abs(idx - n / 2.0), prof[lo:hi]))[0]])
    if cut_cols:
        _xy_cut(piece[:, :c], x0, y0, cap, out, depth + 1)
        _xy_cut(piece[:, c:], x0 + c, y0, cap, out, depth + 1)
    else:
        _xy_cut(piece[:c], x0, y0, cap, out, depth + 1)
        _xy_cut(piece[c:], x0, y0 + c, cap, out, depth + 1)


def merge_overlapping(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Replace every group of boxes that overlap with IoU > ``iou`` by their union (until none does)."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if len(b) < 2 or iou >= 1.0:
        return b
    changed = True
    while changed and len(b) > 1:
        changed = False
        ious = box_iou(b, b)
        np.fill_diagonal(ious, 0.0)
        i, j = np.unravel_index(int(np.argmax(ious)), ious.shape)
        if ious[i, j] > iou:
            u = np.array([min(b[i, 0], b[j, 0]), min(b[i, 1], b[j, 1]), max(b[i, 2], b[j, 2]), max(b[i, 3], b[j, 3])])
            keep = np.ones(len(b), bool)
            keep[[i, j]] = False
            b = np.vstack([b[keep], u[None]])
            changed = True
    return b


class BoxDetector:
    """Callable ``(prev_gray, cur_gray, flow) -> (K, 4) int32`` boxes of frame t; ``reset()`` per clip."""

    def __init__(self, cfg: BoxConfig, background: np.ndarray | None = None):
        _check_cfg(cfg)
        self.cfg = cfg
        self._methods = tuple(cfg.method.split("+"))
        if "bg" in self._methods:
            if background is None:
                raise ConfigError(f"box method {cfg.method!r} needs the background learned from the training "
                                  "frames (prepare a store with a training split, or load a model fitted with it)")
            background = np.asarray(background)
            if background.ndim != 2 or background.dtype != np.uint8:
                raise ConfigError(f"the box background must be an (H, W) uint8 grey image, got "
                                  f"{background.dtype} {background.shape}")
        self.background = background if "bg" in self._methods else None
        self._detector = None
        if "det" in self._methods:
            from amsrc.prepare.detect import OnnxDetector

            self._detector = OnnxDetector(cfg)
        self._det_boxes = np.zeros((0, 4), np.int64)  # "det": the detector's boxes of the current frame
        self._capped = False  # the box cap was noted (once per detector)
        self._mog2 = None
        self._kernel = None
        self.reset()

    def reset(self) -> None:
        """Start a new clip or stream: forget the background model and the past frames and boxes."""
        self._mog2 = None
        self._past: list[np.ndarray] = []  # "mdiff": grey frames t-4 .. t-1, oldest first
        self._past_boxes: list[np.ndarray] = []  # persist: raw boxes of the last frames, oldest first

    # -- step 1: motion mask -------------------------------------------------------------------
    def _motion_mask(self, prev_gray: np.ndarray, cur_gray: np.ndarray, flow: np.ndarray | None) -> np.ndarray:
        """(H, W) uint8 {0, 1}: the union of the masks of the methods in ``cfg.method`` ("det" has none:
        its boxes of frame t are kept for :meth:`boxes_of`)."""
        mask = np.zeros(cur_gray.shape, np.uint8)
        for method in self._methods:
            if method == "det":
                self._det_boxes = self._detector(cur_gray)
                continue
            mask = np.maximum(mask, getattr(self, f"_mask_{method}")(prev_gray, cur_gray, flow))
        return mask

    def _mask_diff(self, prev_gray, cur_gray, flow):
        return (cv2.absdiff(prev_gray, cur_gray) > self.cfg.threshold).astype(np.uint8)

    def _mask_mdiff(self, prev_gray, cur_gray, flow):
        if not self._past:
            self._past.append(prev_gray)  # the first call of a clip
        diff = cv2.absdiff(prev_gray, cur_gray)
        for old in self._past[:-1]:  # frames t-4 .. t-2 (t-1 is prev_gray)
            np.maximum(diff, cv2.absdiff(old, cur_gray), out=diff)
        self._past.append(cur_gray)
        del self._past[:-MDIFF_FRAMES]
        return (diff > self.cfg.threshold).astype(np.uint8)

    def _mask_bg(self, prev_gray, cur_gray, flow):
        if self.background.shape != cur_gray.shape:
            raise DataError(None, f"box method 'bg': the background learned from the training frames is "
                                  f"{self.background.shape[1]}x{self.background.shape[0]}, this frame is "
                                  f"{cur_gray.shape[1]}x{cur_gray.shape[0]}")
        return (cv2.absdiff(cur_gray, self.background) > self.cfg.bg_threshold).astype(np.uint8)

    def _mask_mog2(self, prev_gray, cur_gray, flow):
        cfg = self.cfg
        if self._mog2 is None:
            self._mog2 = cv2.createBackgroundSubtractorMOG2(
                history=int(cfg.mog2_history), varThreshold=float(cfg.mog2_var_threshold), detectShadows=False
            )
            self._mog2.apply(prev_gray, learningRate=1.0)  # the first call of a clip: background = frame t-1
        # A fixed learning rate 1/history (OpenCV's automatic rate is 1/t early in a clip, which
        # absorbs a stopped object within a few frames): a still object fades into the background
        # after about 0.1 * history frames.
        return (self._mog2.apply(cur_gray, learningRate=1.0 / cfg.mog2_history) > 0).astype(np.uint8)

    def _mask_flow(self, prev_gray, cur_gray, flow):
        if flow is None or flow.shape != prev_gray.shape + (2,):
            got = None if flow is None else flow.shape
            raise DataError(None, f"box method 'flow' needs an (H, W, 2) flow of the frame's size, got {got}")
        mag2 = flow[..., 0].astype(np.float32) ** 2 + flow[..., 1].astype(np.float32) ** 2
        return (mag2 > float(self.cfg.flow_threshold) ** 2).astype(np.uint8)

    def _cap(self, frame_h: int):
        cfg = self.cfg
        horizon = cfg.split_horizon * frame_h

        def cap(y_bottom: float) -> tuple[float, float]:
            typical = max(cfg.split_slope * (y_bottom - horizon), cfg.split_min_height)
            return cfg.split_max_h * typical, cfg.split_max_w * typical

        return cap

    def foreground(self, prev_gray: np.ndarray, cur_gray: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
        """(H, W) uint8 {0, 1}: steps 1-2, the motion mask after the closing. A call is
        ``boxes_of(foreground(...))``; both keep the detector's state across frames."""
        check_gray_pair(prev_gray, cur_gray, who="boxes")
        cfg = self.cfg
        mask = self._motion_mask(prev_gray, cur_gray, flow)
        if self._kernel is None:
            self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (int(cfg.close_w), int(cfg.close_h)))
        if cfg.close_w > 1 or cfg.close_h > 1:
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel)
        return mask

    def __call__(self, prev_gray: np.ndarray, cur_gray: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
        return self.boxes_of(self.foreground(prev_gray, cur_gray, flow))

    def boxes_of(self, mask: np.ndarray) -> np.ndarray:
        """Steps 3-7: the (K, 4) int32 boxes of a foreground mask from :meth:`foreground`."""
        cfg = self.cfg
        H, W = mask.shape
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        raw: list[tuple[int, int, int, int]] = []
        cap = self._cap(H) if cfg.split_horizon is not None else None
        for i in range(1, n):
            x, y, w, h, _ = (int(v) for v in stats[i])
            if w * h < cfg.min_area:
                continue  # too small to hold an object even before any cut
            if cap is not None:
                max_h, max_w = cap(y + h)
                if h > max_h or w > max_w:
                    piece = (labels[y : y + h, x : x + w] == i).astype(np.uint8)
                    _xy_cut(piece, x, y, cap, raw)
                    continue
            raw.append((x, y, x + w, y + h))
        raw += [tuple(b) for b in self._det_boxes.tolist()]
        boxes = []
        max_area = cfg.max_area_frac * H * W
        for x0, y0, x1, y1 in raw:
            w, h = x1 - x0, y1 - y0
            if w * h < cfg.min_area or w * h > max_area or max(w, h) > cfg.max_aspect * min(w, h):
                continue
            boxes.append((x0, y0, x1, y1))
        b = np.asarray(boxes, np.int64).reshape(-1, 4)
        if len(b) > MAX_BOXES:  # noise, not objects: keep the largest (merging is quadratic in the count)
            if not self._capped:
                log.warning("note: %d motion boxes in one frame (%dx%d); only the %d largest are kept (noise "
                            "or flicker? raise the box threshold)", len(b), W, H,
                            MAX_BOXES)
                self._capped = True
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            b = b[np.sort(np.argsort(-area, kind="stable")[:MAX_BOXES])]
        b = merge_overlapping(b, cfg.nms_iou)
        if self._detector is not None and len(self._methods) > 1:
            b = drop_covered(b, cfg.dedup_cover)
        if cfg.persist > 0:
            b = self._associate(b)
        m = int(cfg.margin)
        b = b + np.array([-m, -m, m, m])
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
        e = int(cfg.edge_min_side)
        if e > 0 and len(b):
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            partial = (((b[:, 0] == 0) | (b[:, 2] == W)) & (w < e)) | (((b[:, 1] == 0) | (b[:, 3] == H)) & (h < e))
            b = b[~partial]
        # a stable order: top to bottom, left to right
        b = b[np.lexsort((b[:, 0], b[:, 1]))]
        return np.ascontiguousarray(b, dtype=np.int32).reshape(-1, 4)

    def _associate(self, b: np.ndarray) -> np.ndarray:
        """Keep the boxes of frame t that overlap a box of each of the previous ``persist`` frames
        (all of them in a clip's first frames, which have nothing to associate with yet)."""
        keep = np.ones(len(b), bool)
        if len(self._past_boxes) == self.cfg.persist:
            for old in self._past_boxes:
                keep &= box_iou(b, old).max(axis=1, initial=0.0) >= self.cfg.persist_iou
        self._past_boxes.append(b)
        del self._past_boxes[: -self.cfg.persist]
        return b[keep]


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, M) intersection areas of boxes (K, 4) and (M, 4)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return ix * iy


def drop_covered(boxes: np.ndarray, cover: float) -> np.ndarray:
    """Drop every box of which ``cover`` or more of the area lies inside a larger box (order kept)."""
    b = np.asarray(boxes, np.int64).reshape(-1, 4)
    if len(b) < 2:
        return b
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = _intersections(b, b) / np.maximum(area[:, None], 1)  # [i, j]: share of box i inside box j
    larger = area[None, :] > area[:, None]
    np.fill_diagonal(inside, 0.0)
    return b[~((inside >= cover) & larger).any(axis=1)]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, M) IoU of boxes x0, y0, x1, y1 (K, 4) against (M, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersections(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1.0)


def make_box_detector(cfg: BoxConfig, background: np.ndarray | None = None) -> BoxDetector:
    """The motion box detector ``cfg`` describes (ConfigError on a bad setting); ``background`` is the
    (H, W) uint8 training background that method "bg" needs."""
    return BoxDetector(cfg, background)
