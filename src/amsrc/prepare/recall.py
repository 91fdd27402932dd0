"""Box recall against pixel masks: does any box cover each anomalous object?

An anomalous object is a connected component (8-connected) of a frame's ground-truth mask with at
least ``min_px`` pixels. It counts as found when its bounding box is at least ``min_cover`` covered
by the union of the frame's boxes (a box that misses an object can never flag it).
"""

from __future__ import annotations

import cv2
import numpy as np

OBJECT_MIN_PX = 20  # a box holding at least this many anomalous mask pixels is an anomalous object (labels of cubes)


def anomalous_objects(mask: np.ndarray, min_px: int = 20) -> np.ndarray:
    """(M, 4) int32 bounding boxes x0, y0, x1, y1 (x1, y1 exclusive) of the mask's components >= min_px."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {mask.shape}")
    fg = (mask != 0).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    out = []
    for i in range(1, n):  # 0 is the background
        x, y, w, h, area = stats[i]
        if area >= min_px:
            out.append((x, y, x + w, y + h))
    return np.asarray(out, dtype=np.int32).reshape(-1, 4)


def boxes_union(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool raster of the union of (K, 4) boxes x0, y0, x1, y1 (clipped to the frame)."""
    h, w = shape
    cover = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        cover[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = True
    return cover


def box_recall_frame(
    mask: np.ndarray, boxes: np.ndarray, min_px: int = 20, min_cover: float = 0.5
) -> tuple[int, int]:
    """(objects found, objects) of one frame: found when >= min_cover of the object's bbox is boxed."""
    objects = anomalous_objects(mask, min_px)
    if len(objects) == 0:
        return 0, 0
    cover = boxes_union(boxes, np.asarray(mask).shape[:2])
    found = 0
    for x0, y0, x1, y1 in objects:
        if cover[y0:y1, x0:x1].mean() >= min_cover:
            found += 1
    return found, len(objects)


def box_labels(mask: np.ndarray, boxes: np.ndarray, min_px: int = OBJECT_MIN_PX) -> np.ndarray:
    """(K,) uint8: 1 where a box x0, y0, x1, y1 holds at least ``min_px`` anomalous pixels of the
    (H, W) mask. The object-level label of a cube (object-level AUROC)."""
    m = np.asarray(mask) != 0
    out = np.zeros(len(boxes), np.uint8)
    if not m.any():
        return out
    integral = np.pad(np.cumsum(np.cumsum(m, axis=0, dtype=np.int64), axis=1), ((1, 0), (1, 0)))
    h, w = m.shape
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.int64).reshape(-1, 4)):
        x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
        y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
        n = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        out[i] = n >= min_px
    return out


def fragment_counts(mask: np.ndarray, boxes: np.ndarray, min_px: int = OBJECT_MIN_PX,
                    min_share: float = 0.5) -> tuple[int, int]:
    """(fragments, boxes on objects) of one frame. A box is on an object when it holds at least
    ``min_px`` pixels of one of the mask's components (8-connected, >= ``min_px`` pixels: the objects
    of :func:`anomalous_objects`); it is a fragment when it holds less than ``min_share`` of the pixels
    of the object it holds most of (a head, a wheel, half a walker)."""
    fg = (np.asarray(mask) != 0).astype(np.uint8)
    if not fg.any():
        return 0, 0
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    h, w = fg.shape
    fragments = on = 0
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        inside = np.bincount(lab[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)].ravel(), minlength=n)
        inside[0] = 0
        inside[area < min_px] = 0
        j = int(np.argmax(inside))
        if inside[j] < min_px:
            continue
        on += 1
        fragments += int(inside[j] < min_share * area[j])
    return fragments, on
