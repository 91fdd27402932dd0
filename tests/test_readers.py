"""Frame readers: one contract for frame folders and videos, random access, lazy streaming, bad files."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from amsrc.data import readers
from amsrc.data.layouts import load_dataset
from amsrc.data.readers import FolderReader, VideoReader, count_video_frames, open_clip, read_image
from amsrc.errors import DataError
from helpers_video import make_frames, write_image_folder, write_video


def _corrupt_packet(src: Path, dst: Path, k: int, seed: int = 1) -> Path:
    """Copy a video, overwriting the payload of its k-th packet with random bytes (size kept)."""
    import av

    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pos, size = packets[k]
    b = bytearray(src.read_bytes())
    b[pos + 8 : pos + size - 8] = np.random.default_rng(seed).integers(0, 256, size - 16, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(b))
    return dst


def test_folder_and_video_same_contract(tmp_path):
    frames = make_frames(10, h=48, w=64)
    write_image_folder(tmp_path / "clip", frames, ext=".png")
    write_video(tmp_path / "video.avi", frames, codec="png")  # lossless: the same pixels both ways
    idx = load_dataset(tmp_path)
    assert [(c.name, c.is_video) for c in idx.clips("all")] == [("clip", False), ("video", True)]
    folder, video = (open_clip(c) for c in idx.clips("all"))
    assert isinstance(folder, FolderReader) and isinstance(video, VideoReader)
    assert len(folder) == len(video) == 10
    assert folder.shape == video.shape == (48, 64)
    for i in range(10):
        a, b = folder.read(i), video.read(i)
        assert a.shape == b.shape == (48, 64, 3) and a.dtype == b.dtype == np.uint8
        np.testing.assert_array_equal(a, frames[i])  # RGB order kept
        np.testing.assert_array_equal(b, frames[i])
    streamed_f = list(folder.iter_frames())
    streamed_v = list(video.iter_frames())
    assert len(streamed_f) == len(streamed_v) == 10
    assert all(s.shape == (48, 64, 3) and s.dtype == np.uint8 for s in streamed_f + streamed_v)
    np.testing.assert_array_equal(np.stack(list(folder.iter_frames(3, 7))), frames[3:7])


@pytest.mark.parametrize("codec", ["mjpeg", "mpeg4"])
def test_video_random_access_equals_stream(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", make_frames(23, seed=3), codec=codec)
    n, fps, shape = count_video_frames(path)
    assert (n, fps, shape) == (23, 25.0, (48, 64))
    stream = list(VideoReader(path, n).iter_frames())
    assert len(stream) == 23
    reader = VideoReader(path, n, cache=4)
    order = [0, 5, 4, 3, 6, 22, 1, 10, 7, 7, 22, 21, 2]  # forward, within the cache, and far backward jumps
    for i in order:
        np.testing.assert_array_equal(reader.read(i), stream[i], err_msg=f"frame {i}")
    # returned frames are copies: changing one does not change later reads
    f = reader.read(21)
    f[:] = 0
    np.testing.assert_array_equal(reader.read(21), stream[21])
    np.testing.assert_array_equal(np.stack(list(reader.iter_frames(4, 9))), np.stack(stream[4:9]))
    with pytest.raises(IndexError):
        reader.read(23)
    assert len(VideoReader(path)) == 23  # counted by decoding when not given


def test_video_streaming_is_lazy(tmp_path):
    """Streaming a 60-frame video holds a few frames at a time, never the whole video."""
    h, w, n = 120, 160, 60
    path = write_video(tmp_path / "long.avi", make_frames(n, h=h, w=w), codec="mjpeg")
    frame_bytes = h * w * 3
    reader = VideoReader(path, n)
    tracemalloc.start()
    try:
        count = 0
        checksum = 0
        for img in reader.iter_frames():
            count += 1
            checksum += int(img[0, 0, 0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 8 * frame_bytes, f"peak {peak} bytes while streaming; the whole video is {n * frame_bytes}"
    # and the generator decodes on demand: taking 2 frames of a video whose tail is corrupt works
    bad = _corrupt_packet(path, tmp_path / "tail.avi", k=50)
    it = VideoReader(bad).iter_frames()
    assert next(it).shape == (h, w, 3) and next(it).shape == (h, w, 3)
    it.close()


def test_folder_streaming_is_lazy(tmp_path, monkeypatch):
    files = write_image_folder(tmp_path / "c", make_frames(9), ext=".png")
    calls = []
    real = readers.read_image
    monkeypatch.setattr(readers, "read_image", lambda p: calls.append(Path(p).name) or real(p))
    it = FolderReader(files).iter_frames()
    next(it)
    next(it)
    assert calls == ["000.png", "001.png"]


def test_read_image_formats_and_errors(tmp_path):
    rgb = make_frames(1)[0]
    write_image_folder(tmp_path, rgb[None], ext=".png", prefix="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb000.png"), rgb)
    grey = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), np.repeat(grey[:, :, None], 3, 2))
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 257)  # 16-bit
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[:, :, 0], grey)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb[:, :, ::-1], np.full(grey.shape, 255, np.uint8)]))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1])
    jpg = buf.tobytes()
    (tmp_path / "pad.jpg").write_bytes(jpg + b"\0" * 16)  # padding after the end-of-image marker is fine
    assert read_image(tmp_path / "pad.jpg").shape == (48, 64, 3)
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) - 40])
    with pytest.raises(DataError, match="cut.jpg: truncated JPEG"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match="cut.jpg: truncated JPEG"):
        readers.check_image_file(tmp_path / "cut.jpg")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="junk.png: unreadable image"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")


def test_folder_reader_refuses_size_change(tmp_path):
    files = write_image_folder(tmp_path / "c", make_frames(3), ext=".png")
    write_image_folder(tmp_path / "c", make_frames(1, h=40, w=64), ext=".png", start=2)
    r = FolderReader(files)
    r.read(0)
    with pytest.raises(DataError, match="002.png: frame size 64x40 differs"):
        r.read(2)


def test_corrupt_video_mid_stream(tmp_path):
    """MPEG-4 conceals a damaged packet: the quick count keeps it, strict (--deep) refuses it; a damaged
    MJPEG packet fails decoding outright. A truncated file decodes fewer frames than its header says."""
    good = write_video(tmp_path / "good.avi", make_frames(12), codec="mpeg4")
    bad = _corrupt_packet(good, tmp_path / "bad.avi", k=6)
    assert count_video_frames(bad)[0] == 12
    with pytest.raises(DataError, match="bad.avi: corrupt or truncated video: 12 frames decode .* then FFmpeg reports"):
        count_video_frames(bad, strict=True)
    with pytest.raises(DataError, match="bad.avi"):
        load_dataset(bad, deep=True)
    mj = _corrupt_packet(write_video(tmp_path / "mj.avi", make_frames(12), codec="mjpeg"), tmp_path / "mjbad.avi", k=6)
    with pytest.raises(DataError, match=r"mjbad.avi: corrupt or truncated video: decoding fails after frame 5 \(the last good one"):
        count_video_frames(mj)
    with pytest.raises(DataError, match="mjbad.avi: corrupt or truncated video"):
        list(VideoReader(mj).iter_frames())
    import av

    data = (tmp_path / "mj.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.8)])  # cut inside a packet
    with pytest.raises(DataError, match="cut.avi: .*truncated"):
        count_video_frames(tmp_path / "cut.avi")
    with av.open(str(tmp_path / "mj.avi")) as c:
        pos9 = [p.pos for p in c.demux(c.streams.video[0]) if p.size][9]
    (tmp_path / "cut9.avi").write_bytes(data[: pos9 - 8])  # cut between packets: 9 frames decode cleanly
    with pytest.raises(DataError, match=r"cut9.avi: truncated video: its AVI header says the file has \d+ more bytes; "
                                        r"decoding ends at frame 8, the last good one"):
        count_video_frames(tmp_path / "cut9.avi")
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(DataError, match="empty.avi: video file is empty"):
        count_video_frames(tmp_path / "empty.avi")


def test_video_reader_known_length_mismatch(tmp_path):
    path = write_video(tmp_path / "v.avi", make_frames(6), codec="mjpeg")
    r = VideoReader(path, n_frames=8)  # the index says 8 but the file has 6
    with pytest.raises(DataError, match="ended after 6 frames, 8 expected"):
        list(r.iter_frames())
    with pytest.raises(DataError, match="frame 7 is past the end"):
        r.read(7)
