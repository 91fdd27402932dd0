"""The scene's background for box method "bg": the per-pixel median of training frames.

A fixed camera's normal footage shows every pixel of the ground most of the time, so the median
of frames spread over the training clips is the empty scene. It is learned once, from training
frames only, and kept fixed when scoring: the box detector stays causal (it sees frames <= t and
this image), and an object that stops is still found. The cube store keeps it as
``background.png`` and a model fitted on the store carries it in its checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from amsrc.config import BoxConfig
from amsrc.data.index import Clip, DatasetIndex
from amsrc.data.readers import open_clip
from amsrc.errors import DataError

FILE = "background.png"


def needs_background(cfg: BoxConfig) -> bool:
    return "bg" in cfg.method.split("+")


def learn_background(clips: Sequence[Clip], n_frames: int) -> np.ndarray:
    """(H, W) uint8 median of ``n_frames`` grey frames spread evenly over ``clips`` (all of them if fewer)."""
    total = sum(c.n_frames for c in clips)
    if total == 0:
        raise DataError(None, "box method 'bg' learns the background from training frames, and there are none")
    picks = np.unique(np.linspace(0, total - 1, min(int(n_frames), total)).round().astype(np.int64))
    frames, start, shape = [], 0, None
    for clip in clips:
        want = set((picks[(picks >= start) & (picks < start + clip.n_frames)] - start).tolist())
        start += clip.n_frames
        if not want:
            continue
        for t, rgb in enumerate(open_clip(clip).iter_frames()):
            if t in want:
                grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                if shape is not None and grey.shape != shape:
                    raise DataError(clip.source, f"frames are {grey.shape[1]}x{grey.shape[0]}, the other training "
                                                 f"clips' {shape[1]}x{shape[0]}: one background needs one frame size")
                shape = grey.shape
                frames.append(grey)
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)


def training_background(index: DatasetIndex, cfg: BoxConfig) -> np.ndarray:
    """The background of ``index``'s training split (or of unlabelled footage, split "all")."""
    train = index.clips("training") or index.clips("all")
    if not train:
        raise DataError(index.root, f"box method {cfg.method!r} learns the background from the training "
                                    f"split, and this dataset has none (splits: {', '.join(index.splits) or 'none'})")
    return learn_background(train, cfg.bg_frames)


def background_hash(bg: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(bg).tobytes() + str(bg.shape).encode()).hexdigest()[:12]


def write_background(folder: Path, bg: np.ndarray) -> Path:
    """Write ``folder/background.png`` atomically (lossless)."""
    path = Path(folder) / FILE
    ok, buf = cv2.imencode(".png", bg)
    if not ok:
        raise DataError(path, "could not encode the background image")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return path


def read_background(folder: Path) -> np.ndarray | None:
    """The background a store holds, or None when it has none."""
    path = Path(folder) / FILE
    if not path.exists():
        return None
    bg = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bg is None or bg.ndim != 2 or bg.dtype != np.uint8:
        raise DataError(path, "not a grey 8-bit PNG background image")
    return bg
