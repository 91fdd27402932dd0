"""Cube extraction: shapes, the pure crop against a reference, flow kept in image pixels, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from amsrc.config import PrepareConfig
from amsrc.errors import DataError
from amsrc.prepare.cubes import CubeExtractor, crop_cubes, sanitize_boxes

cv2.setNumThreads(1)


class FixedBoxes:
    """A box detector that returns the boxes a function of t gives (t counted from reset)."""

    def __init__(self, fn):
        self.fn = fn
        self.t = 0
        self.calls = []

    def reset(self):
        self.t = 0
        self.calls = []

    def __call__(self, prev_gray, cur_gray, flow):
        self.t += 1  # the detector is first called for frame 1
        self.calls.append(self.t)
        return np.asarray(self.fn(self.t), dtype=np.int32).reshape(-1, 4)


def zero_flow(prev, cur):
    return np.zeros((*prev.shape, 2), np.float32)


def textured_scene(n, h, w, size, x0, y0, speed, seed=0):
    """n RGB frames: a textured size x size square moving ``speed`` px/frame right over a textured background."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (5, 5), 1.0) // 2 + 40
    tex = cv2.GaussianBlur(rng.integers(0, 256, (size, size)).astype(np.uint8), (3, 3), 0.8)
    frames = []
    for t in range(n):
        img = bg.copy()
        x = x0 + speed * t
        img[y0 : y0 + size, x : x + size] = tex
        frames.append(np.repeat(img[:, :, None], 3, axis=2))
    return frames


def test_crop_cubes_matches_reference_resize_grey_and_rgb():
    rng = np.random.default_rng(1)
    h, w = 40, 50
    rgb = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(5)]
    flows = [rng.normal(0, 3, (h, w, 2)).astype(np.float32) for _ in range(4)]
    boxes = np.array([[0, 0, 50, 40], [3, 5, 10, 30], [20, 10, 21, 11]], np.int32)  # downscale, mixed, 1x1
    for c in (1, 3):
        cfg = PrepareConfig(cube_size=16, channels=c)
        app, flo = crop_cubes(rgb, flows, boxes, cfg)
        assert app.shape == (3, 5, 16, 16, c) and app.dtype == np.uint8
        assert flo.shape == (3, 4, 16, 16, 2) and flo.dtype == np.float16
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            for j in range(5):
                plane = cv2.cvtColor(rgb[j], cv2.COLOR_RGB2GRAY) if c == 1 else rgb[j]
                ref = cv2.resize(np.ascontiguousarray(plane[y0:y1, x0:x1]), (16, 16), interpolation=cv2.INTER_LINEAR)
                np.testing.assert_array_equal(app[k, j], ref.reshape(16, 16, c))
            for j in range(4):
                ref = cv2.resize(np.ascontiguousarray(flows[j][y0:y1, x0:x1]), (16, 16), interpolation=cv2.INTER_LINEAR)
                np.testing.assert_array_equal(flo[k, j], ref.astype(np.float16))
    # grey planes given directly (as CubeExtractor does) give the same crops as RGB frames
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
    a1, f1 = crop_cubes(rgb, flows, boxes, PrepareConfig(cube_size=16))
    a2, f2 = crop_cubes(grey, flows, boxes, PrepareConfig(cube_size=16))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(f1, f2)


def test_crop_cubes_rejects_boxes_outside_and_sanitize_clips():
    frames = [np.zeros((20, 30, 3), np.uint8)] * 5
    flows = [np.zeros((20, 30, 2), np.float32)] * 4
    with pytest.raises(ValueError):
        crop_cubes(frames, flows, np.array([[0, 0, 31, 10]]), PrepareConfig())
    with pytest.raises(ValueError):
        crop_cubes(frames, flows, np.array([[5, 5, 5, 10]]), PrepareConfig())
    b = sanitize_boxes(np.array([[-3, -2, 10, 10], [25, 5, 40, 30], [7, 7, 7, 9]]), 20, 30)
    np.testing.assert_array_equal(b, [[0, 0, 10, 10], [25, 5, 30, 20]])
    assert b.dtype == np.int32


def test_constant_flow_keeps_image_pixels_through_a_2x_resize():
    h, w = 96, 128
    frames = [np.full((h, w, 3), 100, np.uint8)] * 5
    flows = [np.dstack([np.full((h, w), 2.0 + j), np.full((h, w), -1.5)]).astype(np.float32) for j in range(4)]
    _, flo = crop_cubes(frames, flows, np.array([[10, 20, 74, 84]]), PrepareConfig(cube_size=32))  # 64 -> 32
    for j in range(4):
        assert np.all(flo[0, j, :, :, 0] == np.float16(2.0 + j))
        assert np.all(flo[0, j, :, :, 1] == np.float16(-1.5))


def test_translation_of_known_speed_reads_as_that_speed_in_the_cube():
    """A textured object moving 2 px/frame, real DIS flow, 64x64 box resized to 32x32: ~2 px, not ~1."""
    h, w, size, speed = 96, 160, 40, 2
    frames = textured_scene(9, h, w, size, x0=20, y0=28, speed=speed, seed=3)
    box = lambda t: [[20 + speed * t - 12, 16, 20 + speed * t + size + 12, 80]]  # 64x64 around the object
    cfg = PrepareConfig(cube_size=32)
    ex = CubeExtractor(cfg, box_detector=FixedBoxes(box))
    out = [ex.push(f) for f in frames]
    obj = out[-1]
    assert obj.t == 8 and obj.boxes.tolist() == [box(8)[0]]
    assert obj.boxes[0, 2] - obj.boxes[0, 0] == 64 and obj.boxes[0, 3] - obj.boxes[0, 1] == 64
    centre = obj.flow[0, :, 10:22, 10:22].astype(np.float32)  # inside the object (40 of 64 px)
    dx, dy = np.median(centre[..., 0]), np.median(centre[..., 1])
    assert abs(dx - speed) < 0.25, dx
    assert abs(dy) < 0.25, dy


def test_push_frames_0_to_3_empty_then_cubes_equal_pure_crop():
    h, w = 48, 64
    frames = textured_scene(8, h, w, 12, x0=4, y0=10, speed=2, seed=5)
    boxes_fn = lambda t: [[2 * t, 6, 2 * t + 22, 28], [40, 30, 60, 46]] if t != 6 else []
    for c in (1, 3):
        cfg = PrepareConfig(cube_size=16, channels=c)
        det = FixedBoxes(boxes_fn)
        flows_seen = []

        def flow(prev, cur, flows_seen=flows_seen):  # bound now: each iteration has its own list
            f = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(prev, cur, None)
            flows_seen.append(f)
            return f

        ex = CubeExtractor(cfg, flow=flow, box_detector=det)
        out = [ex.push(f) for f in frames]
        assert det.calls == [1, 2, 3, 4, 5, 6, 7]  # the detector sees every frame from 1 on
        for t in range(4):
            assert out[t].t == t and len(out[t]) == 0
            assert out[t].appearance.shape == (0, 5, 16, 16, c) and out[t].flow.shape == (0, 4, 16, 16, 2)
        assert len(out[6]) == 0  # a frame with no objects: an empty entry
        for t in (4, 5, 7):
            o = out[t]
            np.testing.assert_array_equal(o.boxes, np.asarray(boxes_fn(t), np.int32))
            app, flo = crop_cubes(frames[t - 4 : t + 1], flows_seen[t - 4 : t], o.boxes, cfg)
            np.testing.assert_array_equal(o.appearance, app)
            np.testing.assert_array_equal(o.flow, flo)
        # reset starts a new stream: the same frames give the same objects
        ex.reset()
        again = [ex.push(f) for f in frames]
        for a, b in zip(out, again):
            np.testing.assert_array_equal(a.appearance, b.appearance)


def test_frames_of_different_sizes_raise_dataerror():
    ex = CubeExtractor(PrepareConfig(), flow=zero_flow, box_detector=FixedBoxes(lambda t: []))
    ex.push(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(DataError, match=r"frame 1 is 64x40 .* 64x48"):
        ex.push(np.zeros((40, 64, 3), np.uint8))
    with pytest.raises(DataError, match="uint8 RGB"):
        ex.push(np.zeros((48, 64), np.uint8))


def test_prepare_scale_works_on_a_smaller_frame_and_gives_source_pixels():
    """scale 0.5: a 40 px square moving 4 px/frame over a 192x320 frame, real DIS flow and the "bg"
    box method on a full-size background. The boxes come back in source pixels holding the square,
    the flow reads ~4 px/frame (not 2), and the box detector saw a half-size frame."""
    from amsrc.config import BoxConfig
    from amsrc.prepare.cubes import boxes_to_source

    h, w, size, speed, y0 = 192, 320, 40, 4, 76
    frames = textured_scene(9, h, w, size, x0=40, y0=y0, speed=speed, seed=4)
    rng = np.random.default_rng(4)  # textured_scene's background, without the square
    background = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (5, 5), 1.0) // 2 + 40
    seen = []

    class Spy:
        def __init__(self, det):
            self.det = det

        def reset(self):
            self.det.reset() if hasattr(self.det, "reset") else None

        def __call__(self, prev, cur, flow):
            seen.append((cur.shape, flow.shape))
            return self.det(prev, cur, flow)

    cfg = PrepareConfig(cube_size=32, scale=0.5, boxes=BoxConfig(method="bg", min_area=20, margin=2, close_w=3, close_h=3))
    ex = CubeExtractor(cfg, background=background)
    ex.box_detector = Spy(ex.box_detector)
    out = [ex.push(f) for f in frames]
    assert seen[0] == ((96, 160), (96, 160, 2))
    obj = out[-1]
    assert len(obj) == 1, obj.boxes
    x = 40 + speed * 8
    x0, y0b, x1, y1 = obj.boxes[0].tolist()
    assert x0 <= x and y0b <= y0 and x1 >= x + size and y1 >= y0 + size  # holds the square, source pixels
    assert x1 - x0 <= size + 12 and y1 - y0b <= size + 12
    dx = np.median(obj.flow[0, -1, 12:20, 12:20, 0].astype(np.float32))
    assert abs(dx - speed) < 0.5, dx
    np.testing.assert_array_equal(boxes_to_source(np.array([[3, 4, 8, 9]]), 0.5, 20, 18), [[6, 8, 16, 18]])
    # a box reaching the resized frame's right/bottom edge reaches the source frame's (1001 * 0.5 -> 500)
    np.testing.assert_array_equal(boxes_to_source(np.array([[490, 0, 500, 100]]), 0.5, 301, 1001), [[980, 0, 1001, 200]])
    np.testing.assert_array_equal(boxes_to_source(np.array([[0, 140, 20, 150]]), 0.5, 301, 1001), [[0, 280, 40, 301]])


@pytest.mark.parametrize("scale", [0, 1.5, "half"])
def test_bad_prepare_scale_is_a_config_error(scale):
    from amsrc.errors import ConfigError

    with pytest.raises(ConfigError, match="prepare scale"):
        CubeExtractor(PrepareConfig(scale=scale), box_detector=FixedBoxes(lambda t: []), flow=zero_flow)
