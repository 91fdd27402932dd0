"""Frame reading behind one contract: frames are (H, W, 3) uint8 RGB arrays.

Two sources: a frame folder (a sorted tuple of image files) and a video file (PyAV). Both give
random access by index (``read(i)``) and streaming (``iter_frames``) that never holds a whole
video in memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import cv2
import numpy as np

from amsrc.data.index import Clip
from amsrc.errors import DataError

log = logging.getLogger("amsrc")


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


_JPEG_TAIL = 64  # bytes searched for the end-of-image marker (some writers pad after it)


def _jpeg_complete(tail: bytes) -> bool:
    """True if a JPEG's last bytes hold its end-of-image marker FF D9.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so FF D9
    near the end means the image data is complete; trailing padding after it is tolerated.
    """
    return b"\xff\xd9" in tail


def check_image_file(path: str | Path) -> None:
    """Cheap integrity check without decoding: the file exists, is not empty, and a JPEG is not truncated."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise DataError(path, "image file is empty")
        if path.suffix.lower() in (".jpg", ".jpeg"):
            with open(path, "rb") as fh:
                fh.seek(max(0, size - _JPEG_TAIL))
                tail = fh.read()
            if not _jpeg_complete(tail):
                raise DataError(path, "truncated JPEG (no end-of-image marker); re-extract this frame")
    except OSError as exc:
        raise DataError(path, f"unreadable image file ({exc.strerror or exc})") from None


def check_jpeg_data(path: str | Path) -> None:
    """Decode a JPEG with FFmpeg and refuse it if the decoder reports an error. libjpeg (OpenCV)
    decodes damaged entropy data into a smeared image with a warning naming no file; the end
    marker check of :func:`check_image_file` cannot see it. About 1-5 ms a frame: for ``--deep``."""
    path = Path(path)
    try:
        with ffmpeg_messages() as logs, av.open(str(path)) as c:
            for _ in c.decode(video=0):
                pass
    except Exception as exc:  # PyAV raises several error types for bad files
        raise DataError(path, f"corrupt JPEG ({exc.__class__.__name__}: {exc}); re-extract this frame") from None
    bad = damage(logs, strict=True)
    if bad is not None:
        raise DataError(path, f"corrupt JPEG data (FFmpeg reports {bad}); re-extract this frame")


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB; a clear error if it is unreadable or truncated."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise DataError(path, "image file not found")
    if data.size == 0:
        raise DataError(path, "image file is empty")
    if path.suffix.lower() in (".jpg", ".jpeg") and not _jpeg_complete(data[-_JPEG_TAIL:].tobytes()):
        # A JPEG must end with its end-of-image marker; OpenCV 4 silently decodes a grey tail.
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
    if not path.is_file():
        raise DataError(path, "video file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "video file is empty")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises several error types for bad files
        raise DataError(path, f"unreadable or corrupt video ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise DataError(path, "file has no video stream")
    return container


def iter_video(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Stream decoded frames of a video file as (H, W, 3) uint8 RGB, frame ``start`` to ``stop``.

    Lazy: one decoded frame at a time; the file is opened on the first ``next`` and closed when
    the stream ends or the generator is closed.
    """
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
            raise DataError(path, f"corrupt or truncated video after frame {i} ({exc})") from None
    finally:
        container.close()


@contextlib.contextmanager
def ffmpeg_messages() -> Iterator[list]:
    """Collect what FFmpeg says (warnings and errors) in this thread while the block runs, as
    ``(level, name, message)`` tuples; PyAV drops them otherwise. The level is restored after."""
    import av.logging

    prev_level, prev_skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.WARNING)
    av.logging.set_skip_repeated(False)  # else a message seen in an earlier call is swallowed
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_level(prev_level)
        av.logging.set_skip_repeated(prev_skip)


def damage(logs, strict: bool = False) -> str | None:
    """The first FFmpeg message that says the file is cut or damaged (the demuxer's "Packet corrupt",
    anything about truncation), or with ``strict`` any decoder error (damage FFmpeg conceals); None."""
    import av.logging

    for level, name, msg in logs:
        text = msg.strip()
        low = text.lower()
        if "corrupt" in low or "truncat" in low or "invalid data" in low or (strict and level <= av.logging.ERROR):
            return f"{name}: {text}"
    return None


def _riff_shortfall(path: Path) -> int:
    """Bytes missing from an AVI (RIFF) file whose header declares more than the file holds; 0 for a
    complete AVI or another format. (A file cut between packets decodes without an error.)"""
    with open(path, "rb") as fh:
        head = fh.read(12)
        size = fh.seek(0, 2)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return 0
    declared = int.from_bytes(head[4:8], "little") + 8
    return max(0, declared - size)


def count_video_frames(path: str | Path, strict: bool = False) -> tuple[int, float | None, tuple[int, int]]:
    """Exact frame count (by decoding every frame), frame rate and (H, W) of a video file.

    The count is what decodes: a header that declares another count (AVI headers of XviD/DivX files
    count time-base ticks) is a note on the ``amsrc`` logger, not an error. A file the demuxer or
    decoder says is cut or damaged is refused, naming the last good frame; with ``strict`` any error
    the decoder reports (FFmpeg conceals damaged blocks otherwise) is refused too.
    """
    path = Path(path)
    container = _open_container(path)
    try:
        with ffmpeg_messages() as logs:
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            declared = int(stream.frames or 0)
            n = 0
            shape = (0, 0)
            last_pts, step = None, None  # largest pts decoded, and the spacing of frames (time-base units)
            try:
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        if n == 0:
                            shape = (frame.height, frame.width)
                        if frame.pts is not None:
                            if last_pts is not None and frame.pts > last_pts:
                                step = frame.pts - last_pts
                            last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
                        n += 1
            except Exception as exc:
                raise DataError(path, f"corrupt or truncated video: decoding fails after frame {n - 1} "
                                      f"(the last good one; {exc})") from None
            bad = damage(logs, strict)
            length = int(stream.duration or 0)  # the header's length, in time-base units
            start = int(stream.start_time or 0)
    finally:
        container.close()
    if bad is not None:
        raise DataError(path, f"corrupt or truncated video: {n} frames decode (the last good one is "
                              f"frame {n - 1}), then FFmpeg reports {bad}")
    if n == 0:
        raise DataError(path, "video has no decodable frames")
    riff = _riff_shortfall(path)
    if riff:
        raise DataError(path, f"truncated video: its AVI header says the file has {riff} more bytes; decoding "
                              f"ends at frame {n - 1}, the last good one (re-download or re-encode it)")
    if length > 0 and last_pts is not None:
        step = step or 1
        if last_pts + step + step / 2 < start + length:  # the header's length is time, frames or ticks alike
            tb = float(stream.time_base or 0)
            raise DataError(path, f"truncated video: its header says it lasts {length * tb:.2f} s but decoding "
                                  f"ends at frame {n - 1} ({(last_pts + step - start) * tb:.2f} s), the last good "
                                  "one (re-download or re-encode it)")
    if declared > 0 and n != declared:
        log.warning("note: %s: its header declares %d frames, %d decode cleanly and fill its length; using "
                    "%d (some AVI writers count time-base ticks, not frames)", path, declared, n, n)
    return n, rate, shape


class VideoReader:
    """Frames of a video file.

    ``read(i)`` gives random access: forward reads decode on from the current position, the last
    ``cache`` frames are kept (so windows t-4..t cost nothing), and a jump further back re-opens
    the file and decodes from the start. ``iter_frames`` streams one frame at a time.
    """

    def __init__(self, path: str | Path, n_frames: int | None = None, cache: int = 8):
        self.source = Path(path)
        self._n = n_frames
        self._it: Iterator[np.ndarray] | None = None
        self._next = 0  # index of the frame self._it yields next
        self._cache: dict[int, np.ndarray] = {}  # the last `cache` decoded frames by index
        self._cache_size = max(1, int(cache))
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

    def close(self) -> None:
        """Release the open decoder (it is re-opened on the next read)."""
        if self._it is not None:
            self._it.close()  # type: ignore[attr-defined]
        self._it = None
        self._next = 0

    def read(self, i: int) -> np.ndarray:
        if i < 0 or (self._n is not None and i >= self._n):
            raise IndexError(f"{self.source}: frame {i} out of range 0..{(self._n or 0) - 1}")
        if i in self._cache:
            return self._cache[i].copy()
        if self._it is None or i < self._next:
            self.close()
            self._it = iter_video(self.source)
        frame = None
        while self._next <= i:
            try:
                frame = next(self._it)
            except StopIteration:
                self._it = None
                self._next = 0
                raise DataError(self.source, f"frame {i} is past the end of the video (truncated?)") from None
            if self._shape is None:
                self._shape = frame.shape[:2]
            elif frame.shape[:2] != self._shape:
                raise DataError(self.source, f"frame {self._next} changes size mid-video")
            self._cache[self._next] = frame
            if len(self._cache) > self._cache_size:
                del self._cache[min(self._cache)]
            self._next += 1
        assert frame is not None
        return frame.copy()

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Stream frames ``start`` .. ``stop - 1``; a video that ends before its known length is an error."""
        if self._n is not None:
            stop = self._n if stop is None else min(stop, self._n)
        shape = None
        k = start
        for img in iter_video(self.source, start, stop):
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise DataError(self.source, f"frame {k} changes size mid-video")
            yield img
            k += 1
        if stop is not None and k < stop:
            raise DataError(self.source, f"video ended after {k} frames, {stop} expected (truncated?)")


def open_clip(clip: Clip) -> FolderReader | VideoReader:
    """A reader for a clip of a :class:`~amsrc.data.index.DatasetIndex`."""
    if clip.frame_files is not None:
        return FolderReader(clip.frame_files)
    return VideoReader(clip.source, clip.n_frames)
