"""Typed index of a dataset: clips with their frame source, frame count, labels and masks.

Every layout function in :mod:`amsrc.data.layouts` returns one :class:`DatasetIndex`. Frame
counts and clip lists are always read from disk, never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

FRAME_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts")

SPLITS = ("training", "testing")


class MaskSource(Protocol):
    """Per-frame pixel masks of one clip."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> np.ndarray:
        """Mask of frame ``i`` (0-based): (H, W) bool, True = anomalous pixel."""
        ...


@dataclass(frozen=True, eq=False)
class Clip:
    """One clip: a frame folder or a video file."""

    name: str  # clip name as on disk ("01", "Test001", "01_0014", a video's stem)
    split: str  # "training", "testing", or "all" for unlabelled footage
    source: Path  # the frame folder or the video file
    n_frames: int  # exact number of frames, counted from disk
    frame_files: tuple[Path, ...] | None = None  # frame folder: its frames in order; video: None
    labels: np.ndarray | None = None  # (n_frames,) uint8, 1 = anomalous frame; None = unknown
    masks: MaskSource | None = None  # pixel masks where the layout has them
    fps: float | None = None  # frames per second where known (videos)

    @property
    def is_video(self) -> bool:
        return self.frame_files is None

    @property
    def n_anomalous(self) -> int | None:
        return None if self.labels is None else int(np.count_nonzero(self.labels))


@dataclass(frozen=True, eq=False)
class DatasetIndex:
    """All clips of a dataset, by split."""

    root: Path  # what the user named
    layout: str  # "frames", "ucsd", "avenue", "shanghaitech", "folder" or "video"
    splits: dict[str, tuple[Clip, ...]] = field(default_factory=dict)  # split -> clips in order

    def clips(self, split: str) -> tuple[Clip, ...]:
        return self.splits.get(split, ())

    def summary(self) -> dict[str, dict[str, int | None]]:
        """Per split: clips, frames, anomalous frames (None when unlabelled)."""
        out: dict[str, dict[str, int | None]] = {}
        for split, clips in self.splits.items():
            labelled = all(c.labels is not None for c in clips) and len(clips) > 0
            out[split] = {
                "clips": len(clips),
                "frames": sum(c.n_frames for c in clips),
                "anomalous": sum(c.n_anomalous for c in clips) if labelled else None,
            }
        return out
