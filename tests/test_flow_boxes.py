"""Optical flow, motion boxes and box recall on small synthetic frames with known motion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from amsrc.config import BoxConfig, FlowConfig, get_preset
from amsrc.errors import ConfigError, DataError
from amsrc.prepare.boxes import make_box_detector, merge_overlapping
from amsrc.prepare.flow import make_flow
from amsrc.prepare.recall import anomalous_objects, box_recall_frame

H, W = 120, 160


def _texture(h: int, w: int, seed: int, lo: int = 40, hi: int = 215, blur: float = 1.5) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (0, 0), blur)
    return cv2.normalize(t, None, lo, hi, cv2.NORM_MINMAX).astype(np.uint8)


def _background(h: int = H, w: int = W) -> np.ndarray:
    # a smooth, dim static background (texture would only make flow easier; motion boxes must not fire on it)
    return _texture(h, w, seed=99, lo=90, hi=130, blur=6.0)


def _scene(objects, h: int = H, w: int = W, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Background with textured rectangles pasted at integer positions: objects = [(patch, x, y), ...]."""
    img = _background(h, w).astype(np.float32)
    for patch, x, y in objects:
        ph, pw = patch.shape
        img[y : y + ph, x : x + pw] = patch
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Flow


@pytest.mark.parametrize(
    "method,preset,tol",
    [
        ("dis", "fine", 0.25),  # the default
        ("dis", "ultrafast", 0.5),
        # OpenCV's "fast" works at a quarter resolution with variational smoothing: a 30x40 patch
        # reads ~2.4 px of its 3 (the weakness --flow-table measures; why "fine" is the default)
        ("dis", "fast", 1.0),
        ("dis", "medium", 0.5),
        ("farneback", None, 0.25),
        ("tvl1", None, 0.25),
    ],
)
def test_flow_reads_known_translation(method, preset, tol):
    import cv2

    patch = _texture(40, 30, seed=1)
    x0, y0, dx, dy = 60, 40, 3, 1  # the patch moves 3 px right and 1 px down
    a = _scene([(patch, x0, y0)])
    b = _scene([(patch, x0 + dx, y0 + dy)])
    cfg = FlowConfig(method=method, dis_preset=preset or "fine")
    if method == "tvl1":
        if getattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create", None) is None:
            with pytest.raises(ConfigError, match="tvl1"):
                make_flow(cfg)
            return
    flow = make_flow(cfg)(a, b)
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    inner = flow[y0 + 6 : y0 + 40 - 6, x0 + 6 : x0 + 30 - 6].reshape(-1, 2)  # moving region, away from its edges
    med = np.median(inner, axis=0)
    assert abs(med[0] - dx) < tol and abs(med[1] - dy) < tol, (method, preset, med)
    # the bulk of the moving region, not just its median, reads the speed
    err = np.hypot(inner[:, 0] - dx, inner[:, 1] - dy)
    assert np.mean(err < 2 * tol) > 0.9


def test_dis_default_is_fine_and_static_scene_reads_zero():
    assert FlowConfig().method == "dis" and FlowConfig().dis_preset == "fine"
    a = _scene([(_texture(40, 30, seed=2), 50, 30)])
    flow = make_flow(FlowConfig())(a, a.copy())
    assert np.abs(flow).max() < 0.05


def test_flow_rejects_bad_input_and_settings():
    flow = make_flow(FlowConfig())
    a = np.zeros((20, 30), np.uint8)
    with pytest.raises(DataError, match="differ in size"):
        flow(a, np.zeros((20, 31), np.uint8))
    with pytest.raises(DataError, match="uint8 grey"):
        flow(a, np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ConfigError, match="unknown flow method"):
        make_flow(FlowConfig(method="flownet2"))
    with pytest.raises(ConfigError, match="unknown DIS preset"):
        make_flow(FlowConfig(dis_preset="slow"))


def test_raft_without_weights_says_what_is_missing(tmp_path):
    with pytest.raises(ConfigError) as e:
        make_flow(FlowConfig(method="raft"))
    msg = str(e.value)
    assert "raft" in msg and "weights file" in msg and "raft_weights" in msg
    missing = tmp_path / "raft_large.pth"
    with pytest.raises(ConfigError) as e:
        make_flow(FlowConfig(method="raft", raft_weights=str(missing)))
    assert f"{missing} (not found)" in str(e.value)
    try:
        import torchvision.models.optical_flow  # noqa: F401
    except Exception:
        # torchvision is not importable beside this torch: the message says so too
        assert "torchvision" in str(e.value)


def _fake_torchvision(monkeypatch, seen):
    """A stand-in torchvision.models.optical_flow whose 'RAFT' returns a constant flow (1.5, -0.5)."""
    import sys
    import types

    import torch

    class FakeRAFT(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.encoder = torch.nn.Linear(width, width)  # large and small differ in shape

        def forward(self, a, b):
            seen.append((tuple(a.shape), tuple(b.shape), float(a.max()), float(b.min())))
            n, _, h, w = a.shape
            flow = torch.empty(n, 2, h, w)
            flow[:, 0], flow[:, 1] = 1.5, -0.5
            return [flow * 0, flow]  # RAFT returns one flow per refinement step; the last is the best

    mod = types.ModuleType("torchvision.models.optical_flow")
    mod.raft_large = lambda weights=None: FakeRAFT(4)
    mod.raft_small = lambda weights=None: FakeRAFT(2)
    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    tv.models, models.optical_flow = models, mod
    for name, m in (("torchvision", tv), ("torchvision.models", models), ("torchvision.models.optical_flow", mod)):
        monkeypatch.setitem(sys.modules, name, m)
    return FakeRAFT


def test_raft_glue_with_a_stand_in_model(monkeypatch, tmp_path):
    import torch

    seen = []
    FakeRAFT = _fake_torchvision(monkeypatch, seen)
    weights = tmp_path / "raft_small.pth"
    torch.save(FakeRAFT(2).state_dict(), weights)  # fits raft_small only
    flow = make_flow(FlowConfig(method="raft", raft_weights=str(weights)))
    a = np.zeros((50, 70), np.uint8)
    b = np.full((50, 70), 255, np.uint8)
    f = flow(a, b)
    assert f.shape == (50, 70, 2) and f.dtype == np.float32
    assert np.all(f[..., 0] == 1.5) and np.all(f[..., 1] == -0.5)
    # frames go in as 3 channels scaled to [-1, 1], padded to multiples of 8; the flow comes out cropped
    assert seen == [((1, 3, 56, 72), (1, 3, 56, 72), -1.0, 1.0)]
    torch.save({"other": torch.zeros(3)}, weights)
    with pytest.raises(ConfigError, match="neither"):
        make_flow(FlowConfig(method="raft", raft_weights=str(weights)))


# ---------------------------------------------------------------------------------------------
# Boxes


def _boxes(cfg: BoxConfig, frames, flows=None, background=None):
    det = make_box_detector(cfg, background)
    out = []
    for t in range(1, len(frames)):
        f = None if flows is None else flows[t - 1]
        out.append(det(frames[t - 1], frames[t], f))
    return out


def test_moving_rectangle_gives_one_box_at_its_place():
    cfg = BoxConfig()
    patch = _texture(40, 20, seed=3)
    x0, y0, dx = 60, 50, 3
    a = _scene([(patch, x0, y0)], noise=2.0, seed=1)
    b = _scene([(patch, x0 + dx, y0)], noise=2.0, seed=2)
    boxes = make_box_detector(cfg)(a, b, None)
    assert boxes.dtype == np.int32 and boxes.shape == (1, 4)
    # the frame difference spans the object at t-1 and at t: that union, plus the margin
    expected = np.array([x0 - cfg.margin, y0 - cfg.margin, x0 + dx + 20 + cfg.margin, y0 + 40 + cfg.margin])
    assert np.abs(boxes[0] - expected).max() <= 2, (boxes[0], expected)
    x1, y1, x2, y2 = boxes[0]
    assert x1 <= x0 + dx and y1 <= y0 and x2 >= x0 + dx + 20 and y2 >= y0 + 40  # covers the object at t


def test_static_scene_gives_no_box():
    patch = _texture(40, 20, seed=3)
    frames = [_scene([(patch, 60, 50)], noise=2.0, seed=s) for s in range(4)]  # sensor noise only
    empty = np.median(np.stack(frames), axis=0).round().astype(np.uint8)  # the patch is part of the scene
    for cfg in (BoxConfig(), BoxConfig(method="diff+mog2"), get_preset("ped2").prepare.boxes):
        assert all(len(b) == 0 for b in _boxes(cfg, frames, background=empty))


def test_two_objects_far_apart_give_two_boxes():
    p1, p2 = _texture(40, 20, seed=4), _texture(30, 16, seed=5)
    a = _scene([(p1, 20, 20), (p2, 110, 70)])
    b = _scene([(p1, 23, 21), (p2, 108, 72)])
    boxes = make_box_detector(BoxConfig())(a, b, None)
    assert len(boxes) == 2
    boxes = boxes[np.argsort(boxes[:, 0])]
    assert boxes[0, 0] < 23 and boxes[0, 2] > 43 and boxes[1, 0] < 108 and boxes[1, 2] > 126


def test_boxes_are_clipped_to_the_frame():
    patch = _texture(30, 20, seed=6)
    a = _scene([(patch, 0, 0)])
    b = _scene([(patch, 2, 1)])
    boxes = make_box_detector(BoxConfig(margin=6))(a, b, None)
    assert len(boxes) == 1
    assert boxes[0, 0] == 0 and boxes[0, 1] == 0 and boxes[0, 2] == 2 + 20 + 6 and boxes[0, 3] == 1 + 30 + 6
    assert (boxes[:, [0, 2]] <= W).all() and (boxes[:, [1, 3]] <= H).all()


def test_size_cap_cuts_a_group_into_object_sized_boxes():
    # three 40 px tall walkers side by side, 2 px apart: the closing bridges the gaps into one blob
    walkers = [_texture(40, 16, seed=10 + k) for k in range(3)]
    xs = [40, 58, 76]
    a = _scene([(p, x, 60) for p, x in zip(walkers, xs)])
    b = _scene([(p, x + 2, 60) for p, x in zip(walkers, xs)])
    merged = make_box_detector(BoxConfig(close_w=5, margin=0))(a, b, None)
    assert len(merged) == 1 and merged[0, 2] - merged[0, 0] == 76 + 2 + 16 - 40
    # typical height 40 px at every row (slope 0, floor 40): a 54 px wide blob > 1.0 x 40 is cut
    cfg = BoxConfig(close_w=5, margin=0, split_horizon=0.0, split_slope=0.0, split_min_height=40.0)
    cut = make_box_detector(cfg)(a, b, None)
    assert len(cut) >= 2 and (cut[:, 2] - cut[:, 0]).max() <= 40 and (cut[:, 3] - cut[:, 1]).max() <= 60
    # the pieces still cover the whole group (box recall is unchanged by cutting)
    mask = np.zeros((H, W), np.uint8)
    mask[60:100, 42:94] = 1
    assert box_recall_frame(mask, cut, min_cover=0.99) == (1, 1)
    # a blob within the cap is left whole
    single = make_box_detector(cfg)(_scene([(walkers[0], 40, 60)]), _scene([(walkers[0], 42, 60)]), None)
    assert len(single) == 1


def test_mog2_keeps_an_object_that_stopped():
    patch = _texture(30, 16, seed=7)
    pos = [20 + 3 * t for t in range(6)] + [35] * 10  # walks 5 frames, then stands still
    frames = [_scene([(patch, x, 40)], noise=2.0, seed=t) for t, x in enumerate(pos)]
    diff = _boxes(BoxConfig(method="diff"), frames)
    both = _boxes(BoxConfig(method="diff+mog2"), frames)
    assert all(len(b) >= 1 for b in diff[:5]) and all(len(b) == 0 for b in diff[6:])
    assert all(len(b) >= 1 for b in both[6:])
    for b in both[6:]:
        assert ((b[:, 0] <= 35) & (b[:, 2] >= 51)).any()


def test_detector_is_causal_and_reset_starts_over():
    patch = _texture(30, 16, seed=8)
    frames = [_scene([(patch, 10 + 4 * t, 30 + t)], noise=2.0, seed=t) for t in range(12)]
    cfg = BoxConfig(method="diff+mog2")
    det = make_box_detector(cfg)
    full = [det(frames[t - 1], frames[t], None) for t in range(1, 12)]
    det.reset()
    prefix = [det(frames[t - 1], frames[t], None) for t in range(1, 7)]
    for p, f in zip(prefix, full):  # later frames never change earlier boxes
        np.testing.assert_array_equal(p, f)


def test_flow_magnitude_boxes():
    flow = np.zeros((H, W, 2), np.float32)
    flow[30:70, 50:70] = (2.0, 0.5)
    g = np.full((H, W), 100, np.uint8)
    boxes = make_box_detector(BoxConfig(method="flow", margin=0))(g, g, flow)
    np.testing.assert_array_equal(boxes, np.array([[50, 30, 70, 70]], np.int32))
    with pytest.raises(DataError, match="needs an"):
        make_box_detector(BoxConfig(method="flow"))(g, g, None)


def test_box_settings_are_checked():
    with pytest.raises(ConfigError, match="unknown box method"):
        make_box_detector(BoxConfig(method="yolo"))
    with pytest.raises(ConfigError, match="unknown box method"):
        make_box_detector(BoxConfig(method="diff+diff"))
    with pytest.raises(ConfigError):
        make_box_detector(BoxConfig(max_area_frac=0.0))
    g = np.zeros((10, 10), np.uint8)
    with pytest.raises(DataError, match="differ in size"):
        make_box_detector(BoxConfig())(g, np.zeros((10, 11), np.uint8), None)


def test_presets_build_and_round_trip():
    for name in ("ped2", "synthetic", "avenue", "shanghaitech", "default"):
        p = get_preset(name)
        make_box_detector(p.prepare.boxes, np.zeros((8, 8), np.uint8))
        assert dataclasses.asdict(p.prepare.boxes) == dataclasses.asdict(
            BoxConfig(**dataclasses.asdict(p.prepare.boxes))
        )
    assert get_preset("ped2").prepare.boxes.split_horizon is not None


def test_merge_overlapping_unions_boxes_above_iou():
    b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    m = merge_overlapping(b, 0.6)
    assert sorted(map(tuple, m.tolist())) == [(0, 0, 11, 10), (50, 50, 60, 60)]
    assert len(merge_overlapping(b, 0.95)) == 3


# ---------------------------------------------------------------------------------------------
# Recall


def _mask():
    m = np.zeros((50, 80), np.uint8)
    m[10:20, 10:20] = 255  # object A: 100 px, bbox (10, 10, 20, 20)
    m[30:36, 40:45] = 255  # object B: 30 px, bbox (40, 30, 45, 36)
    m[2:4, 70:74] = 255  # 8 px: below min_px, not an object
    m[40, 60] = m[41, 61] = m[42, 62] = 255  # 3 px diagonal: one 8-connected component, below min_px
    return m


def test_anomalous_objects_exact():
    objs = anomalous_objects(_mask())
    assert objs.dtype == np.int32
    assert sorted(map(tuple, objs.tolist())) == [(10, 10, 20, 20), (40, 30, 45, 36)]
    assert len(anomalous_objects(_mask(), min_px=31)) == 1
    assert len(anomalous_objects(_mask(), min_px=3)) == 4
    assert anomalous_objects(np.zeros((5, 5), bool)).shape == (0, 4)


def test_box_recall_frame_exact_counts():
    m = _mask()
    assert box_recall_frame(m, np.zeros((0, 4), np.int32)) == (0, 2)
    assert box_recall_frame(np.zeros_like(m), np.array([[0, 0, 80, 50]])) == (0, 0)
    assert box_recall_frame(m, np.array([[0, 0, 80, 50]])) == (2, 2)
    # exactly half of A's bbox -> found; one column less -> not found
    assert box_recall_frame(m, np.array([[10, 10, 15, 20]])) == (1, 2)
    assert box_recall_frame(m, np.array([[10, 10, 14, 20]])) == (0, 2)
    # two boxes covering 30% each of A, disjoint: the union (60%) counts
    assert box_recall_frame(m, np.array([[10, 10, 13, 20], [17, 10, 20, 20]])) == (1, 2)
    # the same 30% twice does not add up
    assert box_recall_frame(m, np.array([[10, 10, 13, 20], [10, 10, 13, 20]])) == (0, 2)
    # boxes partly outside the frame are clipped; B covered by a box hanging off the edge
    assert box_recall_frame(m, np.array([[38, 28, 200, 200]])) == (1, 2)
    assert box_recall_frame(m, np.array([[10, 10, 14, 20]]), min_cover=0.4) == (1, 2)


def test_partly_visible_objects_at_the_border_are_dropped():
    # a sliver entering at the left border (8 px wide) and a whole object inside the frame
    sliver, whole = _texture(30, 8, seed=7), _texture(30, 20, seed=8)
    a = _scene([(whole, 100, 40)])
    b = _scene([(sliver, 0, 40), (whole, 103, 40)])
    kept = make_box_detector(BoxConfig(margin=2, edge_min_side=0))(a, b, None)
    assert len(kept) == 2 and kept[:, 0].min() == 0  # off: the sliver is a box
    cut = make_box_detector(BoxConfig(margin=2, edge_min_side=16))(a, b, None)
    assert len(cut) == 1 and cut[0, 0] > 90  # on: only the whole object is left
    # a box of the same width away from the border is kept
    c = _scene([])
    d = _scene([(sliver, 50, 40)])
    assert len(make_box_detector(BoxConfig(margin=2, edge_min_side=16, min_area=0))(c, d, None)) == 1
    with pytest.raises(ConfigError, match="edge_min_side"):
        make_box_detector(BoxConfig(edge_min_side=-1))


# ---------------------------------------------------------------------------------------------
# Box sources on one scene with known objects (issue 12)


def _walkers_scene(n_frames: int = 14, stop_from: int | None = None):
    """Three isolated textured 'walkers' (30x14 px, brighter than the ground by 40 grey levels or more)
    moving 2-3 px a frame on a noisy static ground from frame 1 on (frame 0 is the empty ground, where
    MOG2 starts its model), their masks per frame, and the empty ground. With ``stop_from`` the first
    one stands still from that frame on."""
    patches = [_texture(30, 14, seed=20 + k, lo=170, hi=250) for k in range(3)]
    starts, speeds = [(10, 8), (130, 45), (40, 85)], [(3, 0), (-2, 0), (2, 0)]
    frames, masks = [], []
    for t in range(n_frames):
        objs, mask = [], np.zeros((H, W), np.uint8)
        for k, ((x, y), (vx, vy)) in enumerate(zip(starts, speeds)):
            if t == 0:
                continue
            tt = min(t, stop_from) if (k == 0 and stop_from is not None) else t
            x, y = x + vx * tt, y + vy * tt
            objs.append((patches[k], x, y))
            mask[y : y + 30, x : x + 14] = 1
        frames.append(_scene(objs, noise=2.0, seed=t))
        masks.append(mask)
    return frames, masks, _background()


@pytest.mark.parametrize("method,most", [("diff", 4), ("mdiff", 3), ("bg", 3), ("mog2", 3), ("flow", 4), ("bg+diff", 3)])
def test_each_box_method_gives_one_box_per_isolated_walker(method, most):
    """Every walker found in every frame with a cube. The background sources and the multi-frame
    difference give one box per walker; the two-frame ones may add one fragment (the difference of a
    textured walker is a broken outline; DIS smears its motion onto the flat ground beside it)."""
    frames, masks, ground = _walkers_scene()
    # "flow": DIS smears 0.7 px onto a flat ground next to a walker (the BoxConfig default threshold)
    cfg = BoxConfig(method=method, close_w=3, close_h=9, min_area=60, flow_threshold=1.5)
    flows = None
    if method == "flow":
        flow = make_flow(FlowConfig())
        flows = [flow(frames[t - 1], frames[t]) for t in range(1, len(frames))]
    boxes = _boxes(cfg, frames, flows, background=ground)
    for t in range(4, len(frames)):  # from the first frame with a cube
        b = boxes[t - 1]
        assert box_recall_frame(masks[t], b, min_cover=0.8) == (3, 3), (method, t, b)
        assert 3 <= len(b) <= most, (method, t, b)


def test_bg_keeps_a_walker_that_stopped_and_diff_loses_it():
    frames, masks, ground = _walkers_scene(n_frames=16, stop_from=6)
    still = masks[-1] * 0
    still[8:38, 28:42] = 1  # walker 0 stands at x = 10 + 3 * 6 from frame 6 on
    cfg = dict(close_w=3, close_h=9)
    bg = _boxes(BoxConfig(method="bg", **cfg), frames, background=ground)
    diff = _boxes(BoxConfig(method="diff", **cfg), frames)
    for t in range(9, 16):
        assert box_recall_frame(still, bg[t - 1], min_cover=0.9) == (1, 1)
        assert box_recall_frame(still, diff[t - 1]) == (0, 1)


def test_mdiff_box_spans_the_cube_frames():
    """The multi-frame difference joins the object at t with where it was at t-1 .. t-4 (the frames
    the cube crops), where the two-frame difference spans t-1 and t only."""
    patch = _texture(30, 14, seed=30)
    xs = [20 + 4 * t for t in range(8)]
    frames = [_scene([(patch, x, 40)], noise=2.0, seed=t) for t, x in enumerate(xs)]
    cfg = dict(margin=0, close_w=3, close_h=9)
    t = 7
    (m,) = _boxes(BoxConfig(method="mdiff", **cfg), frames)[t - 1]
    (d,) = _boxes(BoxConfig(method="diff", **cfg), frames)[t - 1]
    assert abs(m[0] - xs[t - 4]) <= 1 and abs(m[2] - (xs[t] + 14)) <= 1, m
    assert abs(d[0] - xs[t - 1]) <= 1 and abs(d[2] - (xs[t] + 14)) <= 1, d
    # causal and per clip: reset forgets the past frames
    det = make_box_detector(BoxConfig(method="mdiff", **cfg))
    det(frames[0], frames[1])
    det.reset()
    (first,) = det(frames[6], frames[7])
    np.testing.assert_array_equal(first, d)


def test_persist_drops_a_fragment_seen_for_one_frame():
    patch, flash = _texture(30, 14, seed=31), _texture(16, 16, seed=32)
    frames = []
    for t in range(8):
        objs = [(patch, 20 + 3 * t, 40)]
        if t == 5:
            objs.append((flash, 120, 90))  # appears in one frame only
        frames.append(_scene(objs, noise=2.0, seed=t))
    plain = _boxes(BoxConfig(method="diff"), frames)
    kept = _boxes(BoxConfig(method="diff", persist=2), frames)
    assert len(plain[4]) == 2  # frame 5: the walker and the flash
    assert len(kept[4]) == 1 and kept[4][0, 0] < 60  # only the walker, which has boxes in frames 3 and 4
    assert all(len(b) == 1 for b in kept[2:4]) and len(kept[6]) == 1
    with pytest.raises(ConfigError, match="persist"):
        make_box_detector(BoxConfig(persist=-1))


@pytest.mark.parametrize("fields", [{"dis_refine": 5}, {"scale": 2.0}, {"scale": 0.5}])
def test_flow_refinement_and_scale_keep_image_pixels(fields):
    patch = _texture(40, 30, seed=1)
    x0, y0, dx, dy = 60, 40, 4, 2
    a = _scene([(patch, x0, y0)])
    b = _scene([(patch, x0 + dx, y0 + dy)])
    flow = make_flow(FlowConfig(**fields))(a, b)
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    med = np.median(flow[y0 + 8 : y0 + 32, x0 + 8 : x0 + 22].reshape(-1, 2), axis=0)
    assert abs(med[0] - dx) < 0.4 and abs(med[1] - dy) < 0.4, (fields, med)
    assert np.median(np.abs(flow[:20, :30])) < 0.1  # the still corner reads ~0


def test_flow_scale_and_refinement_are_checked():
    for bad in ({"scale": 0.0}, {"scale": float("nan")}, {"scale": 8.0}):
        with pytest.raises(ConfigError, match="flow scale"):
            make_flow(FlowConfig(**bad))
    with pytest.raises(ConfigError, match="dis_refine"):
        make_flow(FlowConfig(dis_refine=-1))


# ---------------------------------------------------------------------------------------------
# Detector plug-in (box method "det"): a tiny ONNX model built here


def _onnx_detector(path, rows, size=64, out_rank=3):
    """An ONNX 'detector' whose boxes are ``rows`` (x0, y0, x1, y1, class) in input pixels and whose
    score is the mean brightness of its input: a bright frame's boxes pass a 0.3 score, a dark one's not."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rows = np.asarray(rows, np.float32)
    n = len(rows)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Expand", ["m", "shape"], ["score"]),
        helper.make_node("Concat", ["xyxy", "score", "cls"], ["det"], axis=1),
    ]
    out = "det"
    if out_rank == 3:
        nodes.append(helper.make_node("Unsqueeze", ["det", "axis0"], ["dets"]))
        out = "dets"
    inits = [numpy_helper.from_array(rows[:, :4], "xyxy"), numpy_helper.from_array(rows[:, 4:5], "cls"),
             numpy_helper.from_array(np.array([n, 1], np.int64), "shape"), numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    shape = [1, n, 6] if out_rank == 3 else [n, 6]
    graph = helper.make_graph(nodes, "tiny_detector", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("engine", ["onnxruntime", "opencv"])
def test_onnx_detector_boxes_are_scored_filtered_and_mapped_to_the_frame(tmp_path, engine):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    # input 64x64; the frame is 120x160: x scales by 2.5, y by 1.875
    path = _onnx_detector(tmp_path / "det.onnx", [[8, 16, 24, 48, 0], [40, 8, 56, 32, 1]])
    cfg = BoxConfig(method="det", detector_onnx=path, detector_size=64, margin=0, min_area=0, detector_engine=engine)
    bright, dark = np.full((H, W), 220, np.uint8), np.full((H, W), 20, np.uint8)
    boxes = make_box_detector(cfg)(bright, bright)
    assert sorted(map(tuple, boxes.tolist())) == [(20, 30, 60, 90), (100, 15, 140, 60)]
    assert len(make_box_detector(cfg)(dark, dark)) == 0  # score 20/255 < 0.3
    only1 = make_box_detector(dataclasses.replace(cfg, detector_classes="1"))(bright, bright)
    assert only1.tolist() == [[100, 15, 140, 60]]


def test_detector_union_drops_motion_fragments_inside_a_detection(tmp_path):
    pytest.importorskip("onnxruntime")
    # a detection around the walker at (60, 40), 20x40; the walker's frame difference gives fragments
    path = _onnx_detector(tmp_path / "det.onnx", [[56, 36, 84, 84, 0]], size=W, out_rank=2)
    walker, other = _texture(40, 20, seed=40, lo=150, hi=250), _texture(20, 12, seed=41, lo=150, hi=250)
    a = _scene([(walker, 60, 40), (other, 120, 10)]) // 2 + 100
    b = _scene([(walker, 62, 40), (other, 123, 10)]) // 2 + 100
    cfg = BoxConfig(method="det+diff", detector_onnx=path, detector_size=W, margin=0, close_w=1, close_h=1, min_area=4)
    motion = make_box_detector(dataclasses.replace(cfg, method="diff"))(a, b)
    both = make_box_detector(cfg)(a, b)
    # the 64x64 input is the frame resized (W = 160 wide, H = 120 high): y scales by 120/160
    det_box = (56, 27, 84, 63)
    assert det_box in set(map(tuple, both.tolist()))
    inside = [tuple(m) for m in motion.tolist() if m[0] >= 56 and m[2] <= 84 and m[1] >= 27 and m[3] <= 63]
    assert inside and not set(inside) & set(map(tuple, both.tolist()))  # fragments inside the detection: gone
    assert any(m[0] >= 118 for m in both.tolist())  # the other object, found by motion alone, stays


def test_detector_plugin_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="detector_onnx"):
        make_box_detector(BoxConfig(method="det"))
    missing = tmp_path / "yolo.onnx"
    with pytest.raises(ConfigError, match=f"{missing}: the ONNX detector file"):
        make_box_detector(BoxConfig(method="det+bg", detector_onnx=str(missing)), np.zeros((H, W), np.uint8))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="cannot load"):
        make_box_detector(BoxConfig(method="det", detector_onnx=str(bad)))
    path = _onnx_detector(tmp_path / "det.onnx", [[8, 16, 24, 48, 0]])
    with pytest.raises(ConfigError, match="detector_classes"):
        make_box_detector(BoxConfig(method="det", detector_onnx=path, detector_classes="person"))
    g = np.zeros((H, W), np.uint8)
    with pytest.raises(ConfigError, match=r"\(1, 3, 32, 32\) input"):  # the model wants 64x64
        make_box_detector(BoxConfig(method="det", detector_onnx=path, detector_size=32))(g, g)


def test_fragment_counts_from_a_pixel_mask():
    """Two objects: one boxed whole, one cut in a head box (a fragment) and a legs box (>= half)."""
    from amsrc.prepare.recall import fragment_counts

    mask = np.zeros((100, 100), np.uint8)
    mask[10:50, 10:20] = 1  # 400 px, boxed whole
    mask[10:70, 60:70] = 1  # 600 px: head 10:25 (150 px), legs 25:70 (450 px)
    boxes = np.array([[8, 8, 22, 52], [58, 8, 72, 25], [58, 25, 72, 70], [80, 80, 95, 95]])
    assert fragment_counts(mask, boxes) == (1, 3)  # the last box holds no object
    assert fragment_counts(mask, boxes[:1]) == (0, 1)
    assert fragment_counts(np.zeros_like(mask), boxes) == (0, 0)
    assert fragment_counts(mask, np.array([[60, 10, 62, 11]])) == (0, 0)  # 2 px of an object: not on it
