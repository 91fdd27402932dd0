"""Frame sources for ``amsrc score``: files, frame folders, cameras, network streams and stdin.

Every source yields :class:`SourceFrame` (index, time, RGB frame) one at a time and never holds a
whole video. Problems that a live scorer must survive are reported through ``warn`` (stderr by
default) and the source goes on:

- a frame file that cannot be decoded (frame folder) is skipped;
- a packet the decoder rejects (video file, camera, URL) is skipped;
- a network stream that drops or stalls (no packet for ``stall_s`` seconds) is reopened with
  exponential backoff (0.5 s, 1 s, 2 s, ... capped at 8 s), at most ``max_retries`` times in a row;
  the scorer is told (``SourceFrame.restart``) so it does not compute flow across the gap.

Stdin format (``-``): raw RGB24 frames, ``W*H*3`` bytes each, row-major, no header, as written
by ``ffmpeg -i IN -f rawvideo -pix_fmt rgb24 -``; the size comes from ``--stdin-size WxH``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from amsrc.data.layouts import dataset_fps, list_numbered_files
from amsrc.data.readers import _riff_shortfall, damage, ffmpeg_messages, read_image
from amsrc.errors import ConfigError, DataError

DEFAULT_FPS = 25.0  # frame rate assumed for frame folders and stdin when none is given
ON_CORRUPT = ("error", "warn")  # what a file or folder source does with a damaged frame; live sources warn


def _check_on_corrupt(value: str) -> str:
    if value not in ON_CORRUPT:
        raise ConfigError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {value!r}")
    return value


def _check_fps(fps: float | None) -> float | None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"--fps must be a number > 0, got {fps!r}")
    return fps


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class SourceFrame:
    """One frame from a source."""

    index: int  # frame number in the source (skipped frames keep their number)
    time: float  # seconds from the start of the source (timestamps where the source has them, else index / fps)
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    restart: bool = False  # True on the first frame after a reconnect (a gap before it)


class FrameSource:
    """Base class: iterate to get :class:`SourceFrame` objects; ``close()`` releases the source."""

    name: str = ""
    live: bool = False  # frames arrive in real time (camera, URL, stdin with a nominal --fps)
    fps: float | None = None  # nominal frame rate where known
    fps_origin: str = "assumed"  # where fps comes from: "--fps", "the video", "<dataset.json path>", "the model", "assumed"
    skipped: int = 0  # frames/packets skipped as corrupt
    reconnects: int = 0  # reopenings of a live stream

    def __iter__(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def fps_assumed(self) -> bool:
        """True when no one said the frame rate: times are at ``DEFAULT_FPS`` (assumed)."""
        return self.fps_origin == "assumed"

    def rate_text(self) -> str:
        """The frame rate in words, for output headers and legends: "10 fps (from --fps)", "25 fps (assumed)"."""
        fps = self.fps or DEFAULT_FPS
        return f"{fps:g} fps ({'assumed' if self.fps_assumed else 'from ' + self.fps_origin})"


def _rate(fps: float | None, folder: Path | None, fallback: float | None) -> tuple[float, str]:
    """(fps, origin) of a frame folder or stdin: ``--fps``, the dataset's ``dataset.json``, the rate the
    model was fitted at, else DEFAULT_FPS (assumed)."""
    if fps:
        return float(fps), "--fps"
    found = None if folder is None else dataset_fps(folder)
    if found is not None:
        return found[0], str(found[1])
    if fallback:
        return float(fallback), "the model"
    return DEFAULT_FPS, "assumed"


def _say_assumed(source: FrameSource, warn: Callable[[str], None]) -> None:
    if source.fps_assumed:
        warn(f"note: {source.name}: no frame rate known (give --fps); times are at {DEFAULT_FPS:g} fps (assumed)")


class FolderSource(FrameSource):
    """A frame folder (numbered image files); undecodable files are skipped with a message."""

    def __init__(self, folder: Path, fps: float | None = None, warn: Callable[[str], None] = _stderr,
                 on_corrupt: str = "error", fallback_fps: float | None = None):
        self.name = str(folder)
        self.files = list_numbered_files(Path(folder))
        self.fps, self.fps_origin = _rate(fps, Path(folder), fallback_fps)
        self.warn = warn
        self.on_corrupt = _check_on_corrupt(on_corrupt)
        _say_assumed(self, warn)

    def __iter__(self) -> Iterator[SourceFrame]:
        for i, f in enumerate(self.files):
            try:
                img = read_image(f)
            except DataError as exc:
                if self.on_corrupt == "error":
                    raise DataError(f, f"{exc.reason} (frame {i} of {self.name}; --on-corrupt warn skips it)") from None
                self.skipped += 1
                self.warn(f"warning: skipping frame {i}: {exc}")
                continue
            yield SourceFrame(i, i / self.fps, img)


def _raw_read(stream) -> Callable[[int], bytes]:
    """``read(n)`` on a stream's file descriptor where it has one: ``os.read`` takes no lock of the
    buffered reader, so a read-ahead thread blocked in it cannot stall the interpreter's exit (the
    "Fatal Python error: could not acquire lock for <stdin>" of Ctrl-C)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream.read
    return lambda n: os.read(fd, n)


class StdinSource(FrameSource):
    """Raw RGB24 frames of a fixed size on a binary stream (stdin by default)."""

    def __init__(self, size_wh: tuple[int, int], fps: float | None = None, stream=None,
                 warn: Callable[[str], None] = _stderr, fallback_fps: float | None = None):
        self.w, self.h = size_wh
        if self.w < 1 or self.h < 1:
            raise ConfigError(f"--stdin-size must be WxH with positive sides, got {self.w}x{self.h}")
        self.name = "stdin"
        self.live = fps is not None
        self.fps, self.fps_origin = _rate(fps, None, fallback_fps)
        _say_assumed(self, warn)
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.warn = warn

    def __iter__(self) -> Iterator[SourceFrame]:
        n = self.w * self.h * 3
        i = 0
        read = _raw_read(self.stream)
        while True:
            buf = bytearray()
            while len(buf) < n:
                chunk = read(min(n - len(buf), 1 << 20))
                if not chunk:
                    break
                buf += chunk
            if len(buf) < n:
                if buf:
                    self.skipped += 1
                    self.warn(f"warning: stdin ended inside frame {i} ({len(buf)} of {n} bytes); it is dropped "
                              f"(is --stdin-size {self.w}x{self.h} right?)")
                return
            yield SourceFrame(i, i / self.fps, np.frombuffer(bytes(buf), np.uint8).reshape(self.h, self.w, 3))
            i += 1


class AVSource(FrameSource):
    """A video file, a camera (``/dev/videoN``, v4l2) or a URL, decoded with PyAV."""

    def __init__(self, spec: str, live: bool, fps: float | None = None, warn: Callable[[str], None] = _stderr,
                 max_retries: int = 5, stall_s: float = 10.0, on_corrupt: str = "error"):
        self.name = spec
        self.on_corrupt = _check_on_corrupt(on_corrupt)
        self.spec = spec
        self.live = live
        self.fps = float(fps) if fps else None
        self.fps_origin = "--fps" if fps else "the video"
        self.warn = warn
        self.max_retries = max_retries
        self.stall_s = stall_s
        self._container = None
        self._is_url = "://" in spec
        if self.fps is None and not live and Path(spec).is_file():
            self._read_rate()  # a file's own rate is known before its first frame (output headers, overlay)

    def _read_rate(self) -> None:
        try:
            with av.open(self.spec) as c:
                st = c.streams.video[0] if c.streams.video else None
                if st is not None and st.average_rate:
                    self.fps = float(st.average_rate)
        except Exception:  # noqa: BLE001 - a file that does not open is reported when it is read
            return
        self._rate_unknown()

    def _rate_unknown(self) -> None:
        """No --fps and the video states no rate: times at DEFAULT_FPS, said once."""
        if self.fps is None and self.fps_origin != "assumed":
            self.fps_origin = "assumed"
            _say_assumed(self, self.warn)

    def _open(self):
        kwargs: dict = {}
        if self.spec.startswith("/dev/video"):
            kwargs["format"] = "v4l2"
        if self._is_url:
            kwargs["timeout"] = (self.stall_s, self.stall_s)
            if self.spec.startswith("rtsp"):
                kwargs["options"] = {"rtsp_transport": "tcp"}
        elif not self.spec.startswith("/dev/") and not Path(self.spec).is_file():
            raise DataError(self.spec, "video file not found")
        try:
            c = av.open(self.spec, **kwargs)
        except Exception as exc:  # PyAV raises many error types
            raise DataError(self.spec, f"cannot open ({exc.__class__.__name__}: {exc})") from None
        if not c.streams.video:
            c.close()
            raise DataError(self.spec, "has no video stream")
        return c

    def _damaged(self, last: int, what: str) -> None:
        """A file (not a live stream) that is cut or damaged after frame ``last``: raise, or warn and
        go on, as ``on_corrupt`` says (a live stream always goes on)."""
        msg = f"corrupt or truncated after frame {last} (the last good one): {what}"
        if not self.live and self.on_corrupt == "error":
            raise DataError(self.spec, msg + " (--on-corrupt warn scores what decodes)")
        self.warn(f"warning: {self.name}: {msg}")

    def _frames_once(self, start_index: int, t_offset: float) -> Iterator[tuple[int, float, np.ndarray]]:
        c = self._container = self._open()
        messages = contextlib.nullcontext([]) if self.live else ffmpeg_messages()
        try:
            with messages as logs:
                st = c.streams.video[0]
                st.thread_type = "AUTO"
                if self.fps is None and st.average_rate:
                    self.fps = float(st.average_rate)
                self._rate_unknown()
                fps = self.fps or DEFAULT_FPS
                tb = float(st.time_base) if st.time_base else None
                t0 = None
                i = start_index
                seen, said = 0, False  # FFmpeg messages looked at; damage already reported
                for packet in c.demux(st):
                    try:
                        frames = packet.decode()
                    except Exception as exc:  # a corrupt packet: skip it, keep the stream (or stop: on_corrupt)
                        self.skipped += 1
                        if self.live:
                            self.warn(f"warning: {self.name}: decoder error near frame {i} "
                                      f"({exc.__class__.__name__}: {exc}); skipping")
                        else:
                            self._damaged(i - 1, f"decoder error ({exc.__class__.__name__}: {exc}); skipping it")
                        continue
                    if len(logs) > seen and not said:
                        seen = len(logs)
                        bad = damage(logs)
                        if bad is not None:
                            said = True
                            self._damaged(i - 1, f"FFmpeg reports {bad}")
                    for fr in frames:
                        if fr.pts is not None and tb is not None:
                            t = fr.pts * tb
                            if t0 is None:
                                t0 = t
                            ts = t_offset + (t - t0)
                        else:
                            ts = t_offset + (i - start_index) / fps
                        yield i, ts, fr.to_ndarray(format="rgb24")
                        i += 1
                if not self.live and not said:
                    bad = damage(logs)
                    if bad is None and _riff_shortfall(Path(self.spec)):
                        bad = "its AVI header declares more bytes than the file holds"
                    if bad is not None:
                        self._damaged(i - 1, bad)
        finally:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
            self._container = None

    def __iter__(self) -> Iterator[SourceFrame]:
        i, t_last, failures, restart = 0, 0.0, 0, False
        t_wall0 = time.monotonic()
        while True:
            try:
                for idx, ts, rgb in self._frames_once(i, t_last):
                    failures = 0
                    yield SourceFrame(idx, ts, rgb, restart)
                    restart = False
                    i, t_last = idx + 1, ts
                # A clean end of stream ends the source (a file, or a URL serving a file); drops and
                # stalls of a live stream surface as errors/timeouts and are retried below.
                if self.live:
                    self.warn(f"note: {self.name}: end of stream after frame {i - 1}")
                return
            except DataError as exc:
                if not self.live:  # a file: unreadable, or damaged with on_corrupt "error"
                    raise
                self.warn(f"warning: {exc}")
            except Exception as exc:  # noqa: BLE001 - network/decoder errors of a live stream
                if not self.live:
                    if i == 0:
                        raise DataError(self.spec, f"unreadable video ({exc.__class__.__name__}: {exc})") from None
                    self.warn(f"warning: {self.name}: corrupt or truncated after frame {i - 1} ({exc}); stopping")
                    return
                self.warn(f"warning: {self.name}: stream error after frame {i - 1} ({exc.__class__.__name__}: {exc})")
            if not self.live:
                return
            failures += 1
            if failures > self.max_retries:
                self.warn(f"warning: {self.name}: giving up after {self.max_retries} failed reconnects")
                return
            delay = min(8.0, 0.5 * 2 ** (failures - 1))
            self.warn(f"warning: {self.name}: reconnecting in {delay:.1f} s (attempt {failures} of {self.max_retries})")
            time.sleep(delay)
            self.reconnects += 1
            restart = True
            # keep timestamps moving: the gap is the wall time spent away
            t_last = max(t_last, time.monotonic() - t_wall0)

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001
                pass


def open_source(spec: str, *, stdin_size: str | None = None, fps: float | None = None,
                warn: Callable[[str], None] = _stderr, max_retries: int = 5, stall_s: float = 10.0,
                stdin=None, on_corrupt: str = "error", fallback_fps: float | None = None) -> FrameSource:
    """A frame source from what the user typed: ``-`` (stdin), a frame folder, a video file,
    ``/dev/videoN`` or a URL (``rtsp://``, ``http://``, ...).

    Frame rate (``source.fps``, ``source.fps_origin``): ``fps`` (``--fps``), else the video's own, else
    for a frame folder its dataset's ``dataset.json``, else ``fallback_fps`` (the rate the model was
    fitted at, for folders and stdin), else ``DEFAULT_FPS``, said once as assumed.

    ``on_corrupt``: what a file or folder does with a frame that does not decode or a file that
    is cut short: "error" (raise :class:`DataError` naming the file and the last good frame) or
    "warn" (say it and score what decodes). Live sources always warn and go on.
    """
    fps = _check_fps(fps)
    _check_on_corrupt(on_corrupt)
    if spec == "-":
        if not stdin_size:
            raise ConfigError("reading frames from stdin needs --stdin-size WxH (raw RGB24 frames)")
        try:
            w_s, h_s = stdin_size.lower().split("x")
            size = (int(w_s), int(h_s))
        except ValueError:
            raise ConfigError(f"--stdin-size must look like 360x240 (W x H), got {stdin_size!r}") from None
        return StdinSource(size, fps=fps, stream=stdin, warn=warn, fallback_fps=fallback_fps)
    if "://" in spec or spec.startswith("/dev/"):
        return AVSource(spec, live=True, fps=fps, warn=warn, max_retries=max_retries, stall_s=stall_s)
    p = Path(spec)
    if p.is_dir():
        return FolderSource(p, fps=fps, warn=warn, on_corrupt=on_corrupt, fallback_fps=fallback_fps)
    if p.is_file():
        return AVSource(spec, live=False, fps=fps, warn=warn, on_corrupt=on_corrupt)
    raise DataError(p, "not found (expected a video file, a frame folder, /dev/videoN, a URL or -)")
