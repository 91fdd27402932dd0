"""StreamScorer, frame sources and the scoring loop, with an untrained tiny network (no fitting)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest


def _detector():
    import torch

    from amsrc.config import ModelConfig, get_preset
    from amsrc.detector import AMSRC
    from amsrc.model.network import build_model
    from amsrc.scoring import TrainStats

    torch.manual_seed(0)
    torch.set_num_threads(1)
    p = get_preset("default")
    p.model.widths = ModelConfig.WIDTH_PRESETS["tiny"]
    p.score.w_f, p.score.w_p = 0.5, 0.5
    p.score.smoothing, p.score.gaussian_sigma, p.score.causal = "gaussian", 2.0, True
    p.prepare.boxes.min_area = 10
    det = AMSRC(preset=p)
    det.model_ = build_model(p.model, p.prepare.channels, p.prepare.cube_size).eval()
    det.preset_ = p
    det.train_stats_ = TrainStats(0.5, 0.2, 30.0, 10.0)
    return det


def _frames(n=24, h=60, w=80):
    rng = np.random.default_rng(0)
    bg = rng.integers(80, 120, (h, w), dtype=np.uint8).astype(np.int16)
    out = []
    for t in range(n):
        f = bg.copy()
        x = 5 + 3 * t
        f[20:40, x % (w - 10):x % (w - 10) + 10] = 230
        out.append(np.repeat(np.clip(f, 0, 255).astype(np.uint8)[..., None], 3, 2))
    return out


@pytest.fixture(scope="module")
def det():
    return _detector()


def test_reset_restart_and_first_frames(det):
    from amsrc.stream import StreamScorer

    frames = _frames()
    sc = StreamScorer(det)
    a = [sc.push(f) for f in frames]
    assert [r.t for r in a] == list(range(len(frames)))
    assert all(len(r.boxes) == 0 and r.raw == sc.empty_score for r in a[:4])
    assert sum(len(r.boxes) for r in a) > 0
    assert all(r.anomalous is None for r in a)
    sc.reset()
    b = [sc.push(f) for f in frames]
    assert [r.raw for r in a] == [r.raw for r in b] and [r.score for r in a] == [r.score for r in b]
    # restart: no flow across the gap (4 frames without objects), frame count and smoothing kept
    sc.restart()
    c = [sc.push(f) for f in frames[:5]]
    assert [r.t for r in c] == list(range(len(frames), len(frames) + 5))
    assert all(len(r.boxes) == 0 for r in c[:4])
    assert c[0].score != c[0].raw  # the smoother still holds the earlier frames


def test_rescaled_source_scores_as_the_fitted_size(det):
    import cv2

    from amsrc.stream import StreamScorer

    frames = _frames()
    big = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_LINEAR) for f in frames]
    small = [cv2.resize(f, (80, 60), interpolation=cv2.INTER_AREA) for f in big]
    s1, s2 = StreamScorer(det, frame_size=(60, 80)), StreamScorer(det, frame_size=(60, 80))
    a = [s1.push(f) for f in big]
    b = [s2.push(f) for f in small]
    assert [r.raw for r in a] == [r.raw for r in b]
    for ra, rb in zip(a, b):
        assert len(ra.boxes) == len(rb.boxes)
        if len(ra.boxes):
            assert (ra.boxes[:, 2] <= 160).all() and (ra.boxes[:, 3] <= 120).all()
            np.testing.assert_array_equal(ra.boxes[:, :2], rb.boxes[:, :2] * 2)


def test_object_speeds_is_median_of_last_flow():
    from amsrc.stream import object_speeds

    flow = np.zeros((2, 4, 8, 8, 2), np.float16)
    flow[0, -1, ..., 0] = 3.0
    flow[0, -1, ..., 1] = 4.0
    flow[1, 0] = 9.0  # an earlier flow: ignored
    np.testing.assert_allclose(object_speeds(flow), [5.0, 0.0])


def test_stdin_source_frames_and_partial_tail():
    from amsrc.sources import open_source

    frames = _frames(3, 6, 8)
    data = b"".join(f.tobytes() for f in frames) + b"\x00" * 10
    msgs = []
    src = open_source("-", stdin_size="8x6", stdin=io.BytesIO(data), warn=msgs.append)
    got = list(src)
    assert [g.index for g in got] == [0, 1, 2] and all((g.rgb == f).all() for g, f in zip(got, frames))
    assert got[1].time == pytest.approx(1 / 25)
    assert src.skipped == 1 and "ended inside frame 3" in msgs[0]


def test_video_source_matches_reader_and_unreachable_url_gives_up(tmp_path):
    from helpers_video import write_video

    from amsrc.data.readers import iter_video
    from amsrc.sources import AVSource, open_source

    path = write_video(tmp_path / "v.mkv", np.stack([np.full((24, 32, 3), 30 * i, np.uint8) for i in range(6)]),
                       codec="ffv1", fps=10)
    src = open_source(str(path))
    got = list(src)
    ref = list(iter_video(path))
    assert len(got) == len(ref) == 6 and all((g.rgb == r).all() for g, r in zip(got, ref))
    assert [round(g.time, 3) for g in got] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5] and src.fps == 10
    msgs = []
    live = AVSource("file://" + str(tmp_path / "missing.mkv"), live=True, warn=msgs.append, max_retries=1)
    assert list(live) == []
    assert any("reconnecting" in m for m in msgs) and any("giving up" in m for m in msgs)


def test_ctrl_c_flushes_and_closes_the_open_event(det):
    from amsrc.fit import FittedModel
    from amsrc.sources import FrameSource, SourceFrame
    from amsrc.stream import score_source

    frames = _frames()

    class Src(FrameSource):
        name = "test"

        def __iter__(self):
            for i, f in enumerate(frames[:10]):
                yield SourceFrame(i, i / 25, f)
            raise KeyboardInterrupt

    fm = FittedModel(det, threshold=-1e9, threshold_low=None, rule="test", frame_size=None, fps=None, speeds=None)
    out, msgs = io.StringIO(), []
    summ = score_source(fm, Src(), out, warn=msgs.append)
    lines = [json.loads(s) for s in out.getvalue().splitlines()]
    assert summ.interrupted and summ.frames == 10
    assert [r["frame"] for r in lines if r["type"] == "frame"] == list(range(10))
    assert [r["type"] for r in lines if r["type"] != "frame"] == ["event_start", "event_end"]
    assert lines[-1]["end_frame"] == 9
    assert any("interrupted" in m for m in msgs)


def test_url_source_over_http_equals_file(tmp_path):
    import functools
    import http.server
    import threading

    import av

    from amsrc.sources import open_source

    path = tmp_path / "v.ts"
    with av.open(str(path), "w", format="mpegts") as c:
        st = c.add_stream("mpeg4", rate=25)
        st.width, st.height, st.pix_fmt, st.bit_rate = 64, 48, "yuv420p", 2_000_000
        for i in range(8):
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 25 * i, np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        msgs = []
        src = open_source(f"http://127.0.0.1:{srv.server_address[1]}/v.ts", warn=msgs.append)
        assert src.live
        got = [f.rgb for f in src]
    finally:
        srv.shutdown()
        srv.server_close()
    ref = [f.rgb for f in open_source(str(path))]
    assert len(got) == len(ref) == 8 and all((a == b).all() for a, b in zip(got, ref))
    assert any("end of stream after frame 7" in m for m in msgs)
