"""Frame reading behind one contract: frames are (H, W, 3) uint8 RGB arrays.

Two sources: a frame folder (a sorted tuple of image files) and a video file (PyAV). Both give
random access by index (``read(i)``) and streaming (``iter_frames``) that never holds a whole
video in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from amsrc.data.index import Clip
from amsrc.errors import DataError


def _to_rgb3(img: np.ndarray, path: Path) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(path, f"expected a grey or colour image, got an array of shape {img.shape}")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        else:
            raise DataError(path, f"expected 8-bit pixels, got {img.dtype}")
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB; a clear error if it is unreadable or truncated."""
    import cv2

    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise DataError(path, "image file not found")
    if data.size == 0:
        raise DataError(path, "image file is empty")
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and not (data.size >= 2 and data[-2] == 0xFF and data[-1] == 0xD9):
        # A JPEG must end with its end-of-image marker; OpenCV would silently decode a grey tail.
        raise DataError(path, "truncated JPEG (no end-of-image marker); re-extract this frame")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(path, "unreadable image (expected a valid .jpg/.png/.tif/.bmp)")
    if img.ndim == 3 and img.shape[2] >= 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
    return _to_rgb3(img, path)


class FolderReader:
    """Frames of a frame folder: one image file per frame, in the given order."""

    def __init__(self, files: Sequence[str | Path]):
        self.files = tuple(Path(f) for f in files)
        if not self.files:
            raise DataError(None, "a frame folder reader needs at least one frame")
        self.source = self.files[0].parent
        self._shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the frames, taken from the first frame."""
        if self._shape is None:
            self._shape = self.read(0).shape[:2]
        return self._shape

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.files):
            raise IndexError(f"{self.source}: frame {i} out of range 0..{len(self.files) - 1}")
        img = read_image(self.files[i])
        if self._shape is None:
            self._shape = img.shape[:2]
        elif img.shape[:2] != self._shape:
            raise DataError(
                self.files[i],
                f"frame size {img.shape[1]}x{img.shape[0]} differs from the clip's "
                f"{self._shape[1]}x{self._shape[0]} (all frames of a clip must have one size)",
            )
        return img

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        stop = len(self.files) if stop is None else min(stop, len(self.files))
        for i in range(start, stop):
            yield self.read(i)


def _open_container(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises several error types for bad files
        raise DataError(path, f"unreadable video ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise DataError(path, "file has no video stream")
    return container


def iter_video(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Stream decoded frames of a video file as (H, W, 3) uint8 RGB, frame ``start`` to ``stop``."""
    path = Path(path)
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        i = 0
        try:
            for frame in container.decode(stream):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    yield frame.to_ndarray(format="rgb24")
                i += 1
        except Exception as exc:
            if isinstance(exc, GeneratorExit):
                raise
            raise DataError(path, f"corrupt or truncated video after frame {i} ({exc})") from None
    finally:
        container.close()


def count_video_frames(path: str | Path) -> tuple[int, float | None, tuple[int, int]]:
    """Exact frame count (by decoding), frame rate and (H, W) of a video file."""
    path = Path(path)
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        n = 0
        shape = (0, 0)
        try:
            for frame in container.decode(stream):
                if n == 0:
                    shape = (frame.height, frame.width)
                n += 1
        except Exception as exc:
            raise DataError(path, f"corrupt or truncated video after frame {n} ({exc})") from None
    finally:
        container.close()
    if n == 0:
        raise DataError(path, "video has no decodable frames")
    return n, rate, shape


class VideoReader:
    """Frames of a video file. Sequential reads stream; a backward jump re-opens the file."""

    def __init__(self, path: str | Path, n_frames: int | None = None):
        self.source = Path(path)
        self._n = n_frames
        self._it: Iterator[np.ndarray] | None = None
        self._next = 0
        self._last: tuple[int, np.ndarray] | None = None
        self._shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        if self._n is None:
            self._n, _, self._shape = count_video_frames(self.source)
        return self._n

    @property
    def shape(self) -> tuple[int, int]:
        if self._shape is None:
            self._shape = self.read(0).shape[:2]
        return self._shape

    def read(self, i: int) -> np.ndarray:
        if i < 0 or (self._n is not None and i >= self._n):
            raise IndexError(f"{self.source}: frame {i} out of range")
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        if self._it is None or i < self._next:
            self._it = iter_video(self.source)
            self._next = 0
        frame = None
        while self._next <= i:
            try:
                frame = next(self._it)
            except StopIteration:
                self._it = None
                raise IndexError(f"{self.source}: frame {i} past the end of the video") from None
            self._next += 1
        assert frame is not None
        self._last = (i, frame)
        self._shape = frame.shape[:2]
        return frame

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        shape = None
        for k, img in enumerate(iter_video(self.source, start, stop)):
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise DataError(self.source, f"frame {start + k} changes size mid-video")
            yield img


def open_clip(clip: Clip) -> FolderReader | VideoReader:
    """A reader for a clip of a :class:`~amsrc.data.index.DatasetIndex`."""
    if clip.frame_files is not None:
        return FolderReader(clip.frame_files)
    return VideoReader(clip.source, clip.n_frames)
