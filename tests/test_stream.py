"""StreamScorer, frame sources and the scoring loop, with an untrained tiny network (no fitting)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from helpers_model import tiny_detector


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
    return tiny_detector()


def test_reset_restart_and_first_frames(det):
    from amsrc.live.stream import StreamScorer

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

    from amsrc.live.stream import StreamScorer

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
    from amsrc.prepare.features import object_speeds

    flow = np.zeros((2, 4, 8, 8, 2), np.float16)
    flow[0, -1, ..., 0] = 3.0
    flow[0, -1, ..., 1] = 4.0
    flow[1, 0] = 9.0  # an earlier flow: ignored
    np.testing.assert_allclose(object_speeds(flow), [5.0, 0.0])


def test_stdin_source_frames_and_partial_tail():
    from amsrc.data.sources import open_source

    frames = _frames(3, 6, 8)
    data = b"".join(f.tobytes() for f in frames) + b"\x00" * 10
    msgs = []
    src = open_source("-", stdin_size="8x6", stdin=io.BytesIO(data), warn=msgs.append)
    got = list(src)
    assert [g.index for g in got] == [0, 1, 2] and all((g.rgb == f).all() for g, f in zip(got, frames))
    assert got[1].time == pytest.approx(1 / 25)
    assert msgs[0].startswith("note: stdin: no frame rate known") and "25 fps (assumed)" in msgs[0]  # said once
    assert src.skipped == 1 and "ended inside frame 3" in msgs[1] and len(msgs) == 2


def test_video_source_matches_reader_and_unreachable_url_gives_up(tmp_path):
    from amsrc.data.readers import iter_video
    from amsrc.data.sources import AVSource, open_source
    from helpers_video import write_video

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
    from amsrc.data.sources import FrameSource, SourceFrame
    from amsrc.live.run import score_source
    from amsrc.training.checkpoint import Threshold

    frames = _frames()

    class Src(FrameSource):
        name = "test"

        def __iter__(self):
            for i, f in enumerate(frames[:10]):
                yield SourceFrame(i, i / 25, f)
            raise KeyboardInterrupt

    det.threshold_ = Threshold(-1e9, -1e9, "test")
    out, msgs = io.StringIO(), []
    summ = score_source(det, Src(), out, warn=msgs.append)
    lines = [json.loads(s) for s in out.getvalue().splitlines()]
    assert summ.interrupted and summ.frames == 10
    assert [r["frame"] for r in lines if r["type"] == "frame"] == list(range(10))
    assert [r["type"] for r in lines if r["type"] != "frame"] == ["header", "event_start", "event_end"]
    assert lines[-1]["end_frame"] == 9
    assert any("interrupted" in m for m in msgs)


def test_url_source_over_http_equals_file(tmp_path):
    import functools
    import http.server
    import threading

    import av

    from amsrc.data.sources import open_source

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


# ---------------------------------------------------------------- encoder-only scoring, throughput mode
def _detector_wp0(variant="amsrc", standardise=False):
    """A tiny untrained detector whose score does not use the prediction (w_p = 0, like Ped2)."""
    det = tiny_detector()
    p = det.preset_
    p.model.variant, p.model.standardise = variant, standardise
    p.score.w_f, p.score.w_p = 1.0, 0.0
    from amsrc.model.network import build_model

    det.model_ = build_model(p.model, p.prepare.channels, p.prepare.cube_size).eval()
    return det


def _multi_object_frames(n=30, h=48, w=64):
    """(n, h, w, 3) uint8: a static textured background, one square always moving, a second one in
    frames 10..19, so frames hold 0, 1 or 2 objects."""
    rng = np.random.default_rng(3)
    bg = rng.integers(60, 120, (h, w), dtype=np.uint8)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        f = bg.copy()
        y = 2 + (2 * t) % (h - 14)  # vertical motion: the closing joins the leading and trailing edges
        f[y:y + 10, 4:12] = 240
        if 10 <= t < 20:
            f[h - 14 - 2 * (t - 10):h - 2 - 2 * (t - 10), w - 14:w - 4] = 10
        out[t] = f[..., None]
    return out


@pytest.mark.parametrize("variant,standardise", [("amsrc", False), ("amsrc", True), ("nogate", False), ("baseline", False)])
def test_encode_equals_forward_bottlenecks(variant, standardise):
    import torch

    det = _detector_wp0(variant, standardise)
    m = det.model_
    if standardise:  # non-trivial running statistics
        m.std_x.running_mean.uniform_(-1, 1)
        m.std_y.running_var.uniform_(0.5, 2)
    torch.manual_seed(1)
    a, f = torch.rand(5, 4, 32, 32), torch.randn(5, 8, 32, 32)
    with torch.inference_mode():
        out = m(a, f)
        e = m.encode(a, f)
        x, y = e.x, e.y
    assert torch.equal(x, out.x) and x.shape == (5, 64 * 16)
    assert (y is None) if variant == "baseline" else torch.equal(y, out.y)
    assert (e.m is None) if variant == "baseline" else (torch.equal(e.m, out.m) and e.m.shape == (5, 64))


def test_scores_without_decoder_equal_with_w_p_zero():
    from amsrc.errors import ConfigError
    from amsrc.live.stream import StreamScorer

    det = _detector_wp0()
    frames = list(_multi_object_frames())
    full = StreamScorer(det, need_pred=True)
    with_pred = [full.push(f) for f in frames]
    auto = StreamScorer(det)
    assert auto.need_pred is False
    without = [auto.push(f) for f in frames]
    assert sum(len(r.boxes) for r in without) > 25
    for a, b in zip(with_pred, without):
        assert a.raw == b.raw and a.score == b.score
        np.testing.assert_array_equal(a.object_scores, b.object_scores)
        np.testing.assert_array_equal(a.s_f, b.s_f)
        assert np.isfinite(a.s_p).all() and np.isnan(b.s_p).all() and b.s_p.shape == a.s_p.shape
    # direct: score_cubes with and without the decoder
    obj = StreamScorer(det).extractor
    got = [obj.push(f) for f in frames][-1]
    c1, f1, p1, m1 = det.score_cubes(got.appearance, got.flow)
    c2, f2, p2, m2 = det.score_cubes(got.appearance, got.flow, need_pred=False)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(f1, f2)
    assert np.isnan(p2).all() and (p1 > 0).all()
    with pytest.raises(ConfigError, match="w_p"):
        StreamScorer(tiny_detector(), need_pred=False)  # w_p = 0.5 needs the decoder
    with pytest.raises(ConfigError, match="w_p"):
        tiny_detector().score_cubes(got.appearance, got.flow, need_pred=False)


def test_explanation_without_s_p_names_no_appearance_cue():
    from amsrc.live.events import explain
    from amsrc.live.stream import FrameResult
    from amsrc.scoring import TrainStats

    r = FrameResult(t=0, raw=1.0, score=1.0, anomalous=True, boxes=np.zeros((2, 4), np.int32),
                    object_scores=np.array([0.5, 1.0]), s_f=np.array([0.1, 0.9], np.float32),
                    s_p=np.full(2, np.nan, np.float32), speed=np.array([1.0, 2.0], np.float32), seconds=0.0)
    ex = explain(r, 1, TrainStats(0.5, 0.2, 1e9, 1.0), None)  # S_p would win by far were it computed
    assert ex["cue"] == "motion" and ex["z_s_p"] is None and ex["z_s_f"] == 2.0
    json.dumps(ex, allow_nan=False)


def test_explanation_names_only_cues_the_score_weighs():
    """With S_m in the score and S_f weighed 0 (the ped2 preset), a high S_f is reported but is not the cue."""
    from amsrc.config import ScoreConfig
    from amsrc.live.events import explain
    from amsrc.live.stream import FrameResult
    from amsrc.scoring import TrainStats

    r = FrameResult(t=0, raw=1.0, score=1.0, anomalous=True, boxes=np.zeros((1, 4), np.int32),
                    object_scores=np.array([1.0]), s_f=np.array([2.5], np.float32), s_p=np.array([12.0], np.float32),
                    speed=np.array([1.0], np.float32), seconds=0.0, s_m=np.array([0.6], np.float32))
    st = TrainStats(0.5, 0.2, 10.0, 1.0, s_m_mean=0.2, s_m_std=0.1)  # z: S_f 10, S_p 2, S_m 4
    assert explain(r, 0, st, None)["cue"] == "motion"  # every computed cue may explain
    ex = explain(r, 0, st, None, ScoreConfig(w_f=0.0, w_p=0.5, w_m=0.5))
    assert ex["cue"] == "rarity" and ex["z_s_m"] == pytest.approx(4.0) and ex["z_s_f"] == pytest.approx(10.0)
    assert "moves unlike any normal object" in ex["words"]


def _fields(r):
    return (r.t, r.raw, r.score, r.anomalous, r.boxes.tolist(), r.object_scores.tolist(), r.s_f.tolist(),
            np.isnan(r.s_p).tolist(), np.nan_to_num(r.s_p).tolist(), r.speed.tolist())


@pytest.mark.parametrize("w_p", [0.0, 0.5])
def test_throughput_mode_equals_push(w_p):
    from amsrc.live.stream import StreamScorer

    det = _detector_wp0() if w_p == 0 else tiny_detector()
    frames = _multi_object_frames()
    live = StreamScorer(det, threshold=0.0)
    ref = [live.push(f) for f in frames]
    counts = {len(r.boxes) for r in ref}
    assert {0, 1, 2} <= counts  # frames with 0, 1 and several objects
    thr = StreamScorer(det, threshold=0.0)
    for depth in (1, 3):
        thr.reset()
        got = list(thr.score_frames(iter(frames), depth=depth))
        assert [_fields(r) for r in got] == [_fields(r) for r in ref]


def test_score_source_throughput_equals_live_with_restarts():
    from amsrc.data.sources import FrameSource, SourceFrame
    from amsrc.live.run import score_source
    from amsrc.training.checkpoint import Threshold

    det = _detector_wp0()
    frames = _multi_object_frames()
    # a threshold in the middle of the raw scores, so that events start and end
    from amsrc.live.stream import StreamScorer

    raws = [StreamScorer(det).push(f).raw for f in frames]
    thr = float(np.median(raws[4:]))

    class Src(FrameSource):
        name = "test"

        def __iter__(self):
            for i, f in enumerate(frames):
                yield SourceFrame(i, i / 25, f, restart=(i == 17))

    outs = {}
    for mode in (False, True):
        det.threshold_ = Threshold(thr, thr, "test")
        out, msgs = io.StringIO(), []
        summ = score_source(det, Src(), out, warn=msgs.append, throughput=mode, min_frames=1, end_frames=1)
        assert summ.frames == len(frames)
        outs[mode] = out.getvalue()
    assert outs[True] == outs[False]
    lines = [json.loads(s) for s in outs[True].splitlines()]
    events = [e for e in lines if e["type"] == "event_end"]
    assert events and all(e["explanation"]["z_s_p"] is None and e["explanation"]["cue"] != "appearance"
                          for e in events)
    # the restart at frame 17: no objects for the next 4 frames
    assert [r["objects"] for r in lines if r["type"] == "frame"][17:21] == [0, 0, 0, 0]


def test_live_source_is_pipelined_one_frame_ahead_with_the_lines_of_one_at_a_time(monkeypatch):
    """A live source is scored as a file is (the CPU stages of the next frame in the reading thread while the
    network scores this one), with one prepared frame queued: its lines equal those of one frame at a time,
    and no line is written more than LIVE_AHEAD + 1 frames behind the frames read (the latency bound)."""
    import threading

    from amsrc.data.sources import FrameSource, SourceFrame
    from amsrc.live.run import LIVE_AHEAD, score_source
    from amsrc.live.stream import StreamScorer

    det = _detector_wp0()
    frames = _multi_object_frames()
    read = [0]

    class Src(FrameSource):
        name, live, fps = "camera", True, 25.0

        def __iter__(self):
            for i, f in enumerate(frames):
                read[0] = i + 1
                yield SourceFrame(i, i / 25, f, restart=(i == 17))

    where = set()
    prepare = StreamScorer.prepare

    def spy(self, frame):
        where.add(threading.current_thread().name)
        return prepare(self, frame)

    monkeypatch.setattr(StreamScorer, "prepare", spy)
    lines, lead = {}, {}
    for mode in (True, False):
        where.clear()
        lead[mode] = []
        out = io.StringIO()
        score_source(det, Src(), out, warn=lambda m: None, throughput=mode,
                     on_frame=lambda rgb, i, t, r, ev, m=mode: lead[m].append(read[0] - (i + 1)))
        lines[mode] = [{k: v for k, v in json.loads(x).items() if k != "lag_s"} for x in out.getvalue().splitlines()]
        assert where == ({"amsrc-prefetch"} if mode else {threading.current_thread().name})
    assert lines[True] == lines[False] and len(lines[True]) == len(frames) + 1  # the header line, then each frame
    assert max(lead[True]) <= LIVE_AHEAD + 1 and len(lead[True]) == len(frames)


def test_score_cubes_with_inputs_made_ahead():
    det = tiny_detector()
    from amsrc.live.stream import StreamScorer

    ex = StreamScorer(det).extractor
    obj = [ex.push(f) for f in _multi_object_frames()][14]
    assert len(obj) >= 2
    ref = det.score_cubes(obj.appearance, obj.flow)
    got = det.score_cubes(obj.appearance, obj.flow, inputs=det.network_inputs(obj.appearance, obj.flow))
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="inputs hold"):
        det.score_cubes(obj.appearance[:1], obj.flow[:1], inputs=det.network_inputs(obj.appearance, obj.flow))


def test_prefetch_stopped_early_has_left_the_source_before_it_returns():
    """A consumer that stops early (error, Ctrl-C) gets control back only after the reading thread
    has left the source and run its clean-up, so closing the decoder afterwards races nothing
    (a PyAV container closed under a decoding thread segfaults)."""
    import threading
    import time

    from amsrc.utils import prefetch

    state = {"inside": False, "cleaned_in": None}

    def frames():
        try:
            for i in range(1000):
                state["inside"] = True
                time.sleep(0.01)  # "decoding"
                state["inside"] = False
                yield i
        finally:
            state["cleaned_in"] = threading.current_thread().name

    it = prefetch(frames(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert state["inside"] is False and state["cleaned_in"] == "amsrc-prefetch"
    assert not any(t.name == "amsrc-prefetch" and t.is_alive() for t in threading.enumerate())

    def failing():
        yield 1
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        list(prefetch(failing()))
