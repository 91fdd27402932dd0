"""Small generated test data: frames with a moving bright square, written as videos (PyAV) or images."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8: a smooth textured background with a bright square moving right."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (60 + 40 * np.sin(xx / 7.0 + seed) + 30 * np.cos(yy / 5.0)).astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        img = base + rng.normal(0, 3, (h, w)).astype(np.float32)
        x0 = (3 * t) % max(1, w - 12)
        img[h // 3 : h // 3 + 12, x0 : x0 + 12] = 230
        img = np.clip(img, 0, 255).astype(np.uint8)
        out[t] = np.stack([img, np.roll(img, 1, axis=1), 255 - img], axis=2)
    return out


def write_video(path: str | Path, frames: np.ndarray, codec: str = "mjpeg", fps: int = 25) -> Path:
    """Write (n, h, w, 3) uint8 RGB frames to a video file with PyAV (codec mjpeg, mpeg4, png or ffv1)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        # png/ffv1 are lossless (decoded frames equal the written ones); mjpeg/mpeg4 are lossy
        stream.pix_fmt = {"mjpeg": "yuvj420p", "png": "rgb24", "ffv1": "bgr0"}.get(codec, "yuv420p")
        if codec == "mjpeg":
            stream.options = {"q:v": "2"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image_folder(folder: str | Path, frames: np.ndarray, ext: str = ".png", start: int = 0,
                       digits: int = 3, prefix: str = "") -> list[Path]:
    """Write RGB (h, w, 3) or grey (h, w) frames as ``<prefix><number><ext>`` numbered from ``start``."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(frames):
        p = folder / f"{prefix}{start + k:0{digits}d}{ext}"
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(img if img.ndim == 2 else img[:, :, ::-1]))
        assert ok
        p.write_bytes(buf.tobytes())
        paths.append(p)
    return paths


def write_mask_folder(folder: str | Path, masks: np.ndarray, ext: str = ".png", start: int = 0,
                      digits: int = 3, prefix: str = "") -> list[Path]:
    """Write (n, h, w) bool masks as 0/255 grey images."""
    grey = [(np.asarray(m) != 0).astype(np.uint8) * 255 for m in masks]
    return write_image_folder(folder, grey, ext, start, digits, prefix)


def masks_for(labels: np.ndarray, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w) bool masks with a small blob on the frames labelled 1 and nothing elsewhere."""
    labels = np.asarray(labels)
    m = np.zeros((len(labels), h, w), bool)
    for t in np.flatnonzero(labels):
        y = 5 + (t % 10)
        m[t, y : y + 6, 10 : 18] = True
    return m


def labels_from_intervals(n: int, intervals: list[tuple[int, int]]) -> np.ndarray:
    """(n,) uint8 labels from 1-based inclusive [start, end] intervals (the reference for tests)."""
    lab = np.zeros(n, np.uint8)
    for a, b in intervals:
        lab[a - 1 : b] = 1
    return lab


def mat_cell(entries: list) -> np.ndarray:
    """A 1xK MATLAB cell (numpy object array) for scipy.io.savemat."""
    cell = np.empty((1, len(entries)), dtype=object)
    for k, e in enumerate(entries):
        cell[0, k] = e
    return cell
