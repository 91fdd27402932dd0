"""Overlay video (PyAV round trip, box colours, atomic writes) and ONNX export checked with ONNX Runtime."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from amsrc.errors import ConfigError, DataError
from amsrc.live.overlay import (
    GREEN,
    GREY,
    ORANGE,
    RED,
    FrameView,
    OverlayWriter,
    bar_colour,
    box_colour,
    draw_frame,
    place_labels,
)

H, W = 96, 128
HIGH_BOX = (16, 24, 56, 72)  # x0, y0, x1, y1 (exclusive), scored above the threshold
LOW_BOX = (76, 40, 120, 88)  # scored below threshold - ramp


# ---------------------------------------------------------------- overlay
def _grey(v: int = 128) -> np.ndarray:
    return np.full((H, W, 3), v, np.uint8)


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _edge(img: np.ndarray, box) -> np.ndarray:
    """Mean RGB of the box's left edge (2 px wide, the middle half of its height)."""
    x0, y0, x1, y1 = box
    h = y1 - y0
    return img[y0 + h // 4 : y1 - h // 4, x0 : x0 + 2].reshape(-1, 3).mean(0)


def test_box_and_bar_colour_rules():
    assert box_colour(5.0, 3.0) == ORANGE and box_colour(3.0, 3.0) == ORANGE  # at/above on its own
    assert box_colour(5.0, 3.0, responsible=True) == RED and box_colour(-1.0, 3.0, responsible=True) == RED
    assert box_colour(2.99, 3.0) == GREEN and box_colour(1e6, float("inf")) == GREEN  # no threshold: none above
    assert box_colour(float("nan"), 3.0) == GREY
    assert bar_colour(3.0, 3.0, 2.0) == RED and bar_colour(2.5, 3.0, 2.0) == ORANGE and bar_colour(1.9, 3.0, 2.0) == GREEN


def _view(**kw) -> FrameView:
    base = dict(index=7, time_s=0.7, boxes=np.array([HIGH_BOX, LOW_BOX]), object_scores=np.array([3.5, -1.0]),
                score=2.0, threshold=1.0, threshold_low=0.5)
    return FrameView(**{**base, **kw})


def test_overlay_without_threshold_draws_green():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in the score bar
        img = draw_frame(_grey(), _view(object_scores=np.array([50.0, 1.0]), threshold=float("inf"),
                                        threshold_low=None))
    assert img[HIGH_BOX[1] + 20, HIGH_BOX[0]].tolist() == list(GREEN)


def test_labels_only_top_k_and_never_overlapping():
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 300, (40, 2))
    boxes = np.concatenate([xy, xy + rng.integers(10, 60, (40, 2))], 1)
    scores = rng.normal(0, 3, 40)
    reserved = [(0, 0, 400, 30)]
    got = place_labels(boxes, scores, (360, 400), 0.4, 5, reserved)
    assert 1 <= len(got) <= 5
    assert {k for k, _, _ in got} <= set(np.argsort(-scores)[:5].tolist())  # only the 5 highest carry a label
    rects = [r for _, r, _ in got] + reserved
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            a, b = rects[i], rects[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


@pytest.mark.parametrize("codec", ["h264", "no_such_codec"])
def test_overlay_roundtrip_counts_size_and_colours(tmp_path, codec):
    out = tmp_path / "overlay.mp4"
    with OverlayWriter(out, fps=25, size_hw=(H, W), codec=codec) as ow:
        assert not out.exists()  # only a temporary file while writing
        for i in range(20):  # frames 10..19 inside event 1
            ow.write(_grey(), _view(index=i, event=1 if i >= 10 else None))
    assert ow.codec == ("h264" if codec == "h264" else "mpeg4")  # unknown encoder -> mpeg4 fallback
    assert ow.frames_written == 20
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.mp4"]  # no temporary left
    frames = _decode(out)
    assert len(frames) == 20
    assert frames[0].shape == (H, W, 3)
    for i in (0, 9, 10, 19):
        f = frames[i]
        r, g, b = _edge(f, HIGH_BOX)
        if i < 10:  # above the threshold on its own: orange
            assert r > 200 and 100 < g < 200 and b < 80, (i, r, g, b)
        else:  # the object the open event is about: red
            assert r > 180 and g < 80 and b < 80, (i, r, g, b)
        r, g, b = _edge(f, LOW_BOX)
        assert g > 140 and r < 80 and b < 80, (r, g, b)  # green box below
        assert np.abs(f[60:66, 30:40].astype(int) - 128).max() <= 6  # untouched background inside a box
        # the EVENT banner along the bottom: red while the event is open, the grey frame otherwise
        banner = f[-6:, 40:].reshape(-1, 3).astype(int).mean(0)
        assert (banner[0] > 180 and banner[1] < 70) == (i >= 10), (i, banner)
        # the score bar: score 2.0 >= threshold 1.0, so red, from the bar's left end
        panel = f[:32].reshape(-1, 3).astype(int)
        red = (panel[:, 0] > 150) & (panel[:, 1] < 90) & (panel[:, 2] < 90)
        assert red.sum() > 150, red.sum()


def test_overlay_exception_leaves_nothing(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(RuntimeError):
        with OverlayWriter(out, fps=25, size_hw=(H, W)) as ow:
            ow.write(_grey(), _view())
            raise RuntimeError("scorer died")
    assert list(tmp_path.iterdir()) == []
    from amsrc.errors import DataError

    with pytest.raises(DataError, match="uint8 RGB"):
        with OverlayWriter(out, fps=25, size_hw=(H, W)) as ow:
            ow.write(np.zeros((H + 2, W, 3), np.uint8), _view())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="must end in"):
        OverlayWriter(tmp_path / "x.gif", fps=25, size_hw=(H, W))


# ---------------------------------------------------------------- ONNX export
def _tiny_checkpoint(path, variant: str, seed: int = 0, motion_flows: int = 4, consistency: str = "cosine",
                     appearance_frames: int = 4, calibration: int = 0):
    """A tiny network with non-trivial batch-norm statistics (so eval mode matters), saved as model.pt."""
    import torch

    from amsrc.config import get_preset
    from amsrc.model.network import build_model
    from amsrc.scoring import TrainStats
    from amsrc.training.checkpoint import Checkpoint

    preset = get_preset("synthetic")
    preset.model.widths = (8, 16, 32, 64)
    preset.model.variant = variant
    preset.model.motion_flows = motion_flows
    preset.model.consistency = consistency
    preset.model.appearance_frames = appearance_frames
    torch.manual_seed(seed)
    model = build_model(preset.model, preset.prepare.channels, preset.prepare.cube_size)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    stats = TrainStats(s_f_mean=0.1, s_f_std=0.05, s_p_mean=3.0, s_p_std=1.0, s_m_mean=1.0, s_m_std=0.5)
    # S_m's memory: the pooled motion bottlenecks of a few random cubes (none for the baseline)
    bank = None
    if variant != "baseline":
        from amsrc.export import random_cubes
        from amsrc.model.inputs import to_tensors

        app, flow = random_cubes(12, preset.prepare.cube_size, preset.prepare.channels, seed=seed + 5)
        a, _, f = to_tensors(app, flow, preset.model.flow_scale)
        with torch.inference_mode():
            bank = model.eval().encode(a, f).m.numpy()
    else:
        stats = TrainStats(s_f_mean=0.1, s_f_std=0.05, s_p_mean=3.0, s_p_std=1.0)
    calib = None
    if calibration:  # as train.calib_size keeps them: cubes the int8 engine calibrates on
        from amsrc.export import random_cubes

        calib = random_cubes(calibration, preset.prepare.cube_size, preset.prepare.channels, seed=seed + 9)
    return Checkpoint.of(model, preset, stats, motion_bank=bank, calibration=calib).save(path)


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("variant", ["amsrc", "baseline"])
def test_onnx_export_matches_pytorch(tmp_path, variant):
    import onnx

    from amsrc.export import check_onnx, export_onnx

    ckpt = _tiny_checkpoint(tmp_path / "model.pt", variant)
    out = export_onnx(ckpt, tmp_path / "model.onnx")
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["app_in", "flow_in"]  # the baseline keeps flow_in
    outputs = [o.name for o in proto.graph.output]
    assert outputs == (["pred", "x", "y", "m", "s_m"] if variant == "amsrc" else ["pred", "x"])
    for vi in list(proto.graph.input) + list(proto.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch axis
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["amsrc.variant"] == variant and float(meta["amsrc.flow_scale"]) == 4.0
    res = check_onnx(out, ckpt, batch_sizes=(1, 7))
    assert res.ok, res.format()
    assert res.batch_sizes == (1, 7)
    assert res.max_abs["s_p"] < 1e-4 and res.max_abs["s_f"] < 1e-4 and res.max_abs["pred"] < 1e-5
    assert ("y" in res.max_abs) == (variant == "amsrc")
    # S_m (the memory's k-nearest distances) agrees too, where the model has one
    assert (res.max_abs["s_m"] < 1e-4) if variant == "amsrc" else ("s_m" not in res.max_abs)
    if variant == "baseline":
        assert res.max_abs["s_f"] == 0.0


def test_onnx_export_of_the_model_options(tmp_path):
    """model.motion_flows=3, model.consistency=squared and model.appearance_frames=1: the graph still
    takes the cube's 4 frames and 8 flow channels and its scores agree with PyTorch's."""
    import onnx

    from amsrc.export import check_onnx, export_onnx

    ckpt = _tiny_checkpoint(tmp_path / "model.pt", "amsrc", motion_flows=3, consistency="squared", appearance_frames=1)
    out = export_onnx(ckpt, tmp_path / "model.onnx")
    proto = onnx.load(str(out))
    app_in, flow_in = proto.graph.input[0], proto.graph.input[1]
    assert app_in.name == "app_in" and app_in.type.tensor_type.shape.dim[1].dim_value == 4
    assert flow_in.name == "flow_in" and flow_in.type.tensor_type.shape.dim[1].dim_value == 8
    meta = {p.key: p.value for p in proto.metadata_props}  # a reader of the file alone learns how S_f is made
    assert meta["amsrc.consistency"] == "squared" and meta["amsrc.scores"].startswith("s_f = mean over the D features")
    res = check_onnx(out, ckpt, batch_sizes=(1, 7))
    assert res.ok and res.max_abs["s_m"] < 1e-4 and res.max_abs["s_f"] < 1e-4, res.format()


def test_onnx_check_catches_a_different_network_and_cli(tmp_path, capsys):
    from amsrc.cli import main
    from amsrc.export import check_onnx

    a = _tiny_checkpoint(tmp_path / "a.pt", "amsrc", seed=0)
    b = _tiny_checkpoint(tmp_path / "b.pt", "amsrc", seed=5)
    assert main(["export", str(a), "--onnx", str(tmp_path / "a.onnx"), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime check OK" in printed and "batch sizes 1, 7" in printed
    bad = check_onnx(tmp_path / "a.onnx", b)  # a's graph against b's weights: must not pass
    assert not bad.ok and bad.max_abs["s_p"] > 1e-2, bad.format()


def test_onnx_missing_package_names_pip_command(tmp_path, monkeypatch):
    from amsrc.export import export_onnx

    ckpt = _tiny_checkpoint(tmp_path / "model.pt", "amsrc")  # a good model: the missing package is the only fault
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ConfigError, match=r"pip install onnx onnxruntime"):
        export_onnx(ckpt, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- scoring engines
@pytest.mark.parametrize("variant", ["amsrc", "baseline"])
def test_onnxruntime_engine_scores_as_torch_does(tmp_path, variant):
    """engine="onnxruntime" gives the torch scores within AMSRC.ENGINE_TOLERANCE (z), the same error
    maps, and leaves the torch model as it was."""
    from amsrc.detector import AMSRC
    from amsrc.export import random_cubes

    ckpt = _tiny_checkpoint(tmp_path / "model.pt", variant)
    ref, ort = AMSRC.load(ckpt, engine="torch"), AMSRC.load(ckpt, engine="onnxruntime")
    p = ref.preset_
    for n in (1, 13):
        app, flow = random_cubes(n, p.prepare.cube_size, p.prepare.channels, seed=n)
        a, b = ref.score_samples(app, flow), ort.score_samples(app, flow)
        assert np.abs(a - b).max() <= AMSRC.ENGINE_TOLERANCE, np.abs(a - b).max()
        assert np.abs(a).max() > 100 * AMSRC.ENGINE_TOLERANCE  # scores that could differ
    pa, pb = ref.predict_cubes(app, flow), ort.predict_cubes(app, flow)
    np.testing.assert_allclose(pa.pred, pb.pred, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pa.s_p, pb.s_p, rtol=1e-5, atol=1e-4)
    assert ort.engine_ is not None and ref.engine_ is None
    # building the engine leaves the torch model as it was: mode, memory format, weights
    import copy

    import torch

    det = AMSRC.load(ckpt, engine="onnxruntime")
    det.model_.train().to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in det.model_.state_dict().items()}
    det._engine()
    assert all(m.training for m in det.model_.modules())
    conv = next(m for m in det.model_.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in det.model_.state_dict().items())
    # a detector that holds a session can still be copied (the session is made again)
    twin = copy.deepcopy(ort)
    assert twin.engine_ is None
    np.testing.assert_allclose(twin.score_samples(app, flow), ort.score_samples(app, flow), rtol=0, atol=1e-9)


def test_int8_engine_scores_close_to_torch_and_needs_calibration_cubes(tmp_path):
    """engine="onnxruntime-int8" quantises the graph on the model's calibration cubes: its scores are not
    torch's (it is int8) but rank the objects as torch does; a model without calibration cubes is refused,
    naming the file; "auto" never picks it."""
    from amsrc.detector import AMSRC
    from amsrc.export import random_cubes

    ckpt = _tiny_checkpoint(tmp_path / "model.pt", "amsrc", calibration=64)
    ref, q = AMSRC.load(ckpt, engine="torch"), AMSRC.load(ckpt, engine="onnxruntime-int8")
    p = ref.preset_
    app, flow = random_cubes(200, p.prepare.cube_size, p.prepare.channels, seed=3)
    a, b = ref.score_samples(app, flow), q.score_samples(app, flow)
    assert np.abs(a - b).max() > 10 * AMSRC.ENGINE_TOLERANCE  # not the fp32 graph
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert q.engine_name_ == "onnxruntime-int8" and AMSRC.load(ckpt).engine_name_ == "onnxruntime"
    bare = _tiny_checkpoint(tmp_path / "bare.pt", "amsrc")
    with pytest.raises(DataError, match=r"bare.pt.*no calibration cubes for engine 'onnxruntime-int8'"):
        AMSRC.load(bare, engine="onnxruntime-int8").score_samples(app, flow)


def test_engine_errors_name_what_is_wrong(tmp_path, monkeypatch):
    from amsrc.detector import AMSRC
    from amsrc.export import random_cubes

    ckpt = _tiny_checkpoint(tmp_path / "model.pt", "amsrc")
    with pytest.raises(ConfigError, match="engine must be one of auto, torch, onnxruntime, onnxruntime-int8, got 'tensorrt'"):
        AMSRC.load(ckpt, engine="tensorrt")
    assert AMSRC.load(ckpt).engine_name_ == "onnxruntime"  # auto: onnxruntime on the CPU where installed
    det = AMSRC.load(ckpt, engine="onnxruntime")
    app, flow = random_cubes(2, det.preset_.prepare.cube_size, det.preset_.prepare.channels)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert AMSRC.load(ckpt).engine_name_ == "torch"  # ... else torch
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ConfigError, match=r"'onnxruntime', which is not installed: pip install"):
        det.score_samples(app, flow)


def test_event_box_is_the_object_the_score_is_about():
    """With an open event the red box is FrameView.top (FrameResult.top: a border sliver left out of the
    frame score is never it), not merely the highest-scoring box."""
    from amsrc.live.overlay import ORANGE

    img = draw_frame(_grey(), _view(event=1, top=1, object_scores=np.array([3.5, 2.0])))
    assert img[LOW_BOX[1] + 20, LOW_BOX[0]].tolist() == list(RED)
    assert img[HIGH_BOX[1] + 20, HIGH_BOX[0]].tolist() == list(ORANGE)
    img = draw_frame(_grey(), _view(event=1, object_scores=np.array([3.5, 2.0])))  # no top given: the highest
    assert img[HIGH_BOX[1] + 20, HIGH_BOX[0]].tolist() == list(RED)


def test_event_boxes_put_the_counted_top_object_first():
    from amsrc.live.events import EventDetector
    from amsrc.live.stream import FrameResult

    def fr(t, counted):
        return FrameResult(t=t, raw=5.0, score=5.0, anomalous=True, boxes=np.array([[0, 0, 8, 40], [50, 10, 70, 50]]),
                           object_scores=np.array([9.0, 5.0]), s_f=np.zeros(2, np.float32), s_p=np.zeros(2, np.float32),
                           speed=np.zeros(2, np.float32), seconds=0.0, counted=counted)

    det = EventDetector(1.0, 0.5, min_frames=1, end_frames=1)
    lines = det.push(0, 0.0, fr(0, np.array([False, True])))
    start = next(e for e in lines if e["type"] == "event_start")
    assert start["boxes"][0]["box"] == [50, 10, 70, 50] and start["boxes"][1]["box"] == [0, 0, 8, 40]
    det2 = EventDetector(1.0, 0.5, min_frames=1, end_frames=1)
    start2 = next(e for e in det2.push(0, 0.0, fr(0, None)) if e["type"] == "event_start")
    assert start2["boxes"][0]["box"] == [0, 0, 8, 40]
