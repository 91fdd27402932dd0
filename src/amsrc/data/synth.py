"""Synthetic surveillance scenes in the frames layout: the built-in default for the demo and tests.

A fixed camera looks down a paved walkway through grass (lamp posts, a bench, a bin, hedges). Grey
walkers walk up and down the walkway with a walking gait; their size and on-screen speed follow
the perspective of a ground plane (smaller and slower at the top). Test clips add anomalies:

    cyclist   a rider on a bicycle along the walkway at 4-5x walking speed
    skater    a skateboarder along the walkway at 3-3.5x walking speed, gliding (no gait)
    cart      a vehicle-like cart (a large box) along the walkway at about twice walking speed
    crosser   a walker crossing the walkway sideways at walking speed (against the flow)
    loiterer  a walker who stops and stands still for 3-4 s (anomalous only while stopped)

A frame is anomalous when an anomaly object shows at least ``min_visible_px`` pixels (not hidden
by a nearer object or by the frame edge); its pixel mask is exactly those pixels. Fewer visible
pixels count as not visible: the frame is normal and its mask empty.

Written (``write_scene``)::

    OUT/training/frames/<clip>/NNN.png      grey 8-bit PNG (one channel), NNN 0-based
    OUT/testing/frames/<clip>/NNN.png
    OUT/testing/pixel_masks/<clip>/NNN.png  uint8 0/255, one per test frame
    OUT/synthetic.mat                       gt: 1xK cell, per test clip a 2xM int32 array of
                                            [start; end] anomalous intervals, 1-based, inclusive
    OUT/scene.json                          generator version, seed, settings, per-clip events
    OUT/tracks.json                         per clip and object: kind, frames, visible boxes, speeds
    OUT/README.txt                          what the scene is and how it was made

The same seed and settings give byte-identical files. The geometry (walkway, camera) scales with
the frame height, so other sizes keep the same scene. Writing is atomic (a temporary folder beside
OUT, renamed at the end). An OUT that exists and is not empty is refused, except when it holds the
complete scene of the same seed, settings and generator version: that one is reused as it is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from amsrc.data.groundtruth import FolderMasks, labels_to_intervals, write_mat_intervals
from amsrc.data.index import Clip, DatasetIndex
from amsrc.data.layouts import write_dataset_file
from amsrc.errors import ConfigError, DataError

GENERATOR_VERSION = 1  # bump when the rendered output of a given seed/settings changes
KINDS = ("cyclist", "skater", "cart", "crosser", "loiterer")

FPS = 10.0  # nominal frame rate of the scene (Ped2 is 10 fps)
WALK_SPEED = 1.3  # typical walking speed, m/s
_MAT_NAME = "synthetic.mat"

# Anomaly programme of a test clip, cycled over the test clips: (kind, start as a fraction of the clip).
_PROGRAMS: tuple[tuple[tuple[str, float], ...], ...] = (
    (("cyclist", 0.10), ("skater", 0.58)),
    (("cart", 0.12),),
    (("crosser", 0.30),),
    (("loiterer", 0.15), ("cyclist", 0.72)),
)


@dataclass(frozen=True)
class SceneSettings:
    """Everything that decides the output besides the seed."""

    height: int = 160  # frame height, pixels
    width: int = 240  # frame width, pixels
    n_train: int = 4  # training clips (normal walkers only)
    n_test: int = 4  # test clips (walkers + anomalies)
    train_frames: int = 120  # frames per training clip
    test_frames: int = 120  # frames per test clip
    min_walkers: int = 4  # fewer walkers on the walkway than this: one enters at once
    max_walkers: int = 10  # no walker enters while this many are on the walkway
    noise: float = 2.0  # std of the per-frame sensor noise, grey levels
    min_visible_px: int = 20  # an anomaly object counts as visible from this many pixels

    def check(self) -> None:
        if self.height < 64 or self.width < 64:
            raise ConfigError(f"synthetic frames must be at least 64x64, got {self.width}x{self.height}")
        if self.n_train < 1 or self.n_test < 1:
            raise ConfigError("a synthetic scene needs at least one training and one test clip")
        if self.train_frames < 10 or self.test_frames < 60:
            raise ConfigError("synthetic clips need >= 10 training and >= 60 test frames")
        if not 1 <= self.min_walkers <= self.max_walkers:
            raise ConfigError("need 1 <= min_walkers <= max_walkers")
        if self.noise < 0 or self.min_visible_px < 1:
            raise ConfigError("noise must be >= 0 and min_visible_px >= 1")


# ------------------------------------------------------------------ camera and drawing
@dataclass(frozen=True)
class _Camera:
    """Pinhole over a ground plane. World: a = lateral metres, Z = depth metres, z = height metres."""

    height: int
    width: int
    cam_h: float = 19.0  # camera height above the ground, m

    @property
    def y_h(self) -> float:  # image row of the horizon (above the frame)
        return -1.5 * self.height

    @property
    def f(self) -> float:  # focal length in pixels
        return 2.7 * self.height

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def z_near(self) -> float:  # depth of the ground at the bottom row
        return self.f * self.cam_h / (self.height - self.y_h)

    @property
    def z_far(self) -> float:  # depth of the ground at the top row
        return self.f * self.cam_h / (0.0 - self.y_h)

    def project(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) image x, y (pixel centres at integer + 0.5)."""
        p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
        inv = self.f / p[:, 1]
        out = np.empty((len(p), 2))
        out[:, 0] = self.cx + p[:, 0] * inv
        out[:, 1] = self.y_h + (self.cam_h - p[:, 2]) * inv
        return out

    def scale(self, depth: float) -> float:
        """Pixels per metre at depth Z."""
        return self.f / depth

    def half_width_m(self, depth: float) -> float:
        """Half the visible width of the ground at depth Z, metres."""
        return self.width / 2.0 * depth / self.f


# A drawing primitive: (kind, 3D points, grey tone, size in metres)
#   "poly": filled convex hull of the points; "line": thick segment p0-p1 of width size;
#   "disc": filled disc of radius size at p0; "ring": closed polyline through the points.
_Prim = tuple


def _draw(canvas: np.ndarray, kind: str, xy: np.ndarray, size_px: float) -> None:
    """Draw one primitive as 255 (anti-aliased) into a zeroed uint8 canvas.

    xy: (N, 2) projected points in canvas pixel coordinates; size_px: line width or disc radius."""
    aa = cv2.LINE_AA
    if kind == "poly":
        hull = cv2.convexHull(np.round(xy * 16).astype(np.int32))
        cv2.fillConvexPoly(canvas, hull, 255, aa, shift=4)
    elif kind == "line":
        p0, p1 = xy[0], xy[1]
        w = max(1.0, size_px)
        d = p1 - p0
        n = math.hypot(d[0], d[1])
        u = d / n if n > 1e-6 else np.array([0.0, 1.0])
        v = np.array([-u[1], u[0]]) * (w / 2)
        e = u * (w / 4)
        quad = np.array([p0 - e + v, p1 + e + v, p1 + e - v, p0 - e - v])
        cv2.fillConvexPoly(canvas, np.round(quad * 16).astype(np.int32), 255, aa, shift=4)
    elif kind == "disc":
        r = max(0.7, size_px)
        c = np.round(xy[0] * 16).astype(np.int32)
        cv2.circle(canvas, (int(c[0]), int(c[1])), int(round(r * 16)), 255, -1, aa, shift=4)
    elif kind == "ring":
        cv2.polylines(canvas, [np.round(xy * 16).astype(np.int32)], True, 255, 1, aa, shift=4)
    else:  # pragma: no cover - programming error
        raise ValueError(kind)


def _render_object(
    img: np.ndarray, labels: np.ndarray | None, prims: list[_Prim], cam: _Camera, obj_id: int
) -> None:
    """Composite an object's primitives (in order) onto img (float32) and write obj_id into labels."""
    if not prims:
        return
    pts = np.concatenate([p[1] for p in prims])
    if np.any(pts[:, 1] <= 0.5):
        return
    xy_all = cam.project(pts)
    bounds = np.cumsum([0] + [len(p[1]) for p in prims])
    sizes = []  # width / radius in pixels at the primitive's depth
    for i, p in enumerate(prims):
        if p[0] == "line":
            sizes.append(p[3] * cam.f * 2.0 / float(pts[bounds[i], 1] + pts[bounds[i] + 1, 1]))
        elif p[0] == "disc":
            sizes.append(p[3] * cam.f / float(pts[bounds[i], 1]))
        else:
            sizes.append(0.0)
    pad = 2.0 + max(sizes)
    h, w = img.shape
    x0 = max(0, int(math.floor(xy_all[:, 0].min() - pad)))
    y0 = max(0, int(math.floor(xy_all[:, 1].min() - pad)))
    x1 = min(w, int(math.ceil(xy_all[:, 0].max() + pad)) + 1)
    y1 = min(h, int(math.ceil(xy_all[:, 1].max() + pad)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    xy_all -= np.array([x0 + 0.5, y0 + 0.5])  # to canvas pixel coordinates
    region = img[y0:y1, x0:x1]
    lab = None if labels is None else labels[y0:y1, x0:x1]
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for i, prim in enumerate(prims):
        canvas[:] = 0
        _draw(canvas, prim[0], xy_all[bounds[i]: bounds[i + 1]], sizes[i])
        alpha = canvas.astype(np.float32) * np.float32(1.0 / 255.0)
        region += alpha * (np.float32(prim[2]) - region)
        if lab is not None:
            lab[canvas >= 128] = obj_id


def _box_faces(
    c: np.ndarray, d: np.ndarray, n: np.ndarray, half_len: float, half_wid: float,
    z0: float, z1: float, tones: tuple[float, float, float], cam: _Camera,
) -> list[_Prim]:
    """Visible faces of an oriented box on the ground plane. c, d, n: 2D (a, Z) centre, heading, side.

    tones = (top, sides, front/back)."""
    cam_pos = np.array([0.0, 0.0, cam.cam_h])

    def p(sl: float, sw: float, z: float) -> np.ndarray:
        g = c + d * sl * half_len + n * sw * half_wid
        return np.array([g[0], g[1], z])

    faces = []
    for axis, sign in (("l", 1), ("l", -1), ("w", 1), ("w", -1), ("z", 1)):
        if axis == "l":
            pts = [p(sign, sw, z) for sw in (-1, 1) for z in (z0, z1)]
            normal = np.array([d[0] * sign, d[1] * sign, 0.0])
            tone = tones[2]
        elif axis == "w":
            pts = [p(sl, sign, z) for sl in (-1, 1) for z in (z0, z1)]
            normal = np.array([n[0] * sign, n[1] * sign, 0.0])
            tone = tones[1]
        else:
            pts = [p(sl, sw, z1) for sl in (-1, 1) for sw in (-1, 1)]
            normal = np.array([0.0, 0.0, 1.0])
            tone = tones[0]
        pts = np.array(pts)
        if float(np.dot(normal, cam_pos - pts.mean(axis=0))) > 0:
            faces.append(("poly", pts, tone, 0.0))
    return faces


def _pt(g: np.ndarray, z: float) -> np.ndarray:
    """A ground position (a, Z) lifted to height z: (3,) world point."""
    return np.array([g[0], g[1], z])


def _seg(p0: np.ndarray, p1: np.ndarray, tone: float, width: float) -> _Prim:
    """A thick segment between two world points, ``width`` metres wide."""
    return ("line", np.array([p0, p1]), tone, width)


# ------------------------------------------------------------------ objects
@dataclass
class _Obj:
    """One moving object. Position (a, Z) on the ground, velocity in metres per frame."""

    oid: int
    kind: str  # "walker" (normal) or one of KINDS
    a: float
    z: float
    va: float
    vz: float
    size: float  # body height, m (walkers); scale factor for others
    tones: tuple[float, ...]
    phase: float = 0.0
    extra: dict = field(default_factory=dict)
    stopped: bool = False
    t_alive: int = 0

    @property
    def heading(self) -> np.ndarray:
        v = np.array([self.va, self.vz])
        n = float(np.hypot(*v))
        if n < 1e-9:
            v = np.array(self.extra.get("last_heading", (0.0, 1.0)))
            return v / float(np.hypot(*v))
        return v / n

    def anomalous(self) -> bool:
        if self.kind == "walker":
            return False
        if self.kind == "loiterer":
            return self.stopped
        return True


def _walker_prims(o: _Obj, cam: _Camera, t: int) -> list[_Prim]:
    """A walker (also crosser and loiterer): legs, arms, torso box, head, optional backpack."""
    k = o.size / 1.75
    g = np.array([o.a, o.z])
    d = o.heading
    n = np.array([-d[1], d[0]])
    trousers, shirt, hair = o.tones[:3]
    if o.stopped:
        sway = 0.04 * math.sin(0.45 * t + o.oid)
        g = g + n * sway
        s, bob = 0.0, 0.0
    else:
        s, bob = math.sin(o.phase), 0.025 * abs(math.cos(o.phase))
    stride = 0.30 * k
    hip_z = 0.90 * k + bob
    prims: list[_Prim] = []
    for side in (1, -1):
        foot = g + n * (0.09 * k * side) + d * (stride * s * side)
        lift = 0.06 * k * max(0.0, -math.cos(o.phase) * side) if not o.stopped else 0.0
        hip = g + n * (0.09 * k * side)
        prims.append(("line", np.array([_pt(hip, hip_z), _pt(foot, 0.03 + lift)]), trousers, 0.15 * k))
    # torso: an oriented box
    corners = []
    for sl in (-1, 1):
        for sw in (-1, 1):
            for z in (0.86 * k + bob, 1.45 * k + bob):
                c = g + d * (0.10 * k * sl) + n * ((0.20 if z > k else 0.17) * k * sw)
                corners.append(_pt(c, z))
    prims.append(("poly", np.array(corners), shirt, 0.0))
    if o.extra.get("backpack"):
        bp = []
        for sl in (-1.0, -2.2):
            for sw in (-1, 1):
                for z in (1.0 * k + bob, 1.38 * k + bob):
                    bp.append(_pt(g + d * (0.10 * k * sl) + n * (0.14 * k * sw), z))
        prims.append(("poly", np.array(bp), o.tones[3], 0.0))
    for side in (1, -1):
        sh = g + n * (0.22 * k * side)
        if o.stopped and side == 1 and o.extra.get("phone"):
            hand = _pt(g + n * 0.12 * k + d * 0.18 * k, 1.40 * k)
        else:
            hand = _pt(g + n * (0.25 * k * side) - d * (0.22 * k * s * side), 0.80 * k + bob)
        prims.append(("line", np.array([_pt(sh, 1.40 * k + bob), hand]), shirt * 0.8, 0.09 * k))
    prims.append(("disc", np.array([_pt(g, 1.62 * k + bob)]), hair, 0.11 * k))
    # painter's order inside the body: farthest from the camera first
    cents = np.array([p[1].sum(axis=0) / len(p[1]) for p in prims]) - np.array([0.0, 0.0, cam.cam_h])
    keys = -np.einsum("ij,ij->i", cents, cents)
    order = sorted(range(len(prims)), key=lambda i: (keys[i], i))
    return [prims[i] for i in order]


def _skater_prims(o: _Obj, cam: _Camera, t: int) -> list[_Prim]:
    k = o.size / 1.75
    g = np.array([o.a, o.z])
    d = o.heading
    n = np.array([-d[1], d[0]])
    trousers, shirt, hair = o.tones[:3]
    lean = 0.06 * math.sin(0.5 * t + o.oid)
    prims: list[_Prim] = []
    board = []
    for sl in (-1, 1):
        for sw in (-1, 1):
            for z in (0.06, 0.12):
                board.append(_pt(g + d * 0.42 * sl + n * 0.11 * sw, z))
    prims.append(("poly", np.array(board), o.tones[3], 0.0))
    hip = g + n * lean
    for sl in (-1, 1):  # feet one behind the other on the board
        prims.append(_seg(_pt(hip + d * 0.08 * sl, 0.85 * k), _pt(g + d * 0.25 * sl, 0.14), trousers, 0.15 * k))
    corners = []
    for sl in (-1, 1):
        for sw in (-1, 1):
            for z in (0.82 * k, 1.40 * k):
                corners.append(_pt(hip + d * 0.17 * k * sl + n * 0.10 * k * sw, z))
    prims.append(("poly", np.array(corners), shirt, 0.0))
    for sl in (-1, 1):  # arms out for balance
        hand = _pt(hip + d * 0.55 * k * sl + n * 0.1, 1.05 * k)
        prims.append(_seg(_pt(hip + d * 0.18 * k * sl, 1.36 * k), hand, shirt * 0.8, 0.09 * k))
    prims.append(("disc", np.array([_pt(hip, 1.57 * k)]), hair, 0.11 * k))
    return prims


def _cyclist_prims(o: _Obj, cam: _Camera, t: int) -> list[_Prim]:
    k = o.size / 1.75
    g = np.array([o.a, o.z])
    d = o.heading
    n = np.array([-d[1], d[0]])
    trousers, shirt, hair, bike = o.tones[:4]
    r = 0.34
    prims: list[_Prim] = []
    ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    for sl in (-1, 1):  # wheels in the vertical plane along the heading
        c = g + d * 0.52 * sl
        ring = np.array([_pt(c + d * r * math.cos(q), r + r * math.sin(q)) for q in ang])
        prims.append(("ring", ring, bike, 0.0))
    seat, bar, crank = g - d * 0.12, g + d * 0.40, g + d * 0.02
    frame = [(_pt(g - d * 0.52, r), _pt(crank, 0.30)), (_pt(crank, 0.30), _pt(seat, 0.86)),
             (_pt(seat, 0.86), _pt(bar, 0.95)), (_pt(bar, 0.95), _pt(g + d * 0.52, r)),
             (_pt(crank, 0.30), _pt(bar, 0.95))]
    for p0, p1 in frame:
        prims.append(("line", np.array([p0, p1]), bike, 0.05))
    ph = o.phase
    for side in (1, -1):  # legs to the rotating pedals
        pd = crank + d * 0.17 * math.cos(ph + (0 if side == 1 else math.pi)) + n * 0.1 * side
        pz = 0.30 + 0.17 * math.sin(ph + (0 if side == 1 else math.pi))
        prims.append(("line", np.array([_pt(seat + n * 0.08 * side, 0.92), _pt(pd, pz)]), trousers, 0.14 * k))
    torso = []
    for top in (0, 1):
        base = seat + d * (0.22 * top)
        z = 0.92 + 0.52 * k * top
        for sw in (-1, 1):
            for sl in (-1, 1):
                torso.append(_pt(base + n * 0.19 * k * sw + d * 0.08 * sl, z))
    prims.append(("poly", np.array(torso), shirt, 0.0))
    for side in (1, -1):
        shoulder = _pt(seat + d * 0.22 + n * 0.2 * side, 0.92 + 0.48 * k)
        prims.append(_seg(shoulder, _pt(bar + n * 0.25 * side, 0.97), shirt * 0.8, 0.08 * k))
    prims.append(("disc", np.array([_pt(seat + d * 0.3, 0.92 + 0.70 * k)]), hair, 0.11 * k))
    return prims


def _cart_prims(o: _Obj, cam: _Camera, t: int) -> list[_Prim]:
    g = np.array([o.a, o.z])
    d = o.heading
    n = np.array([-d[1], d[0]])
    body, cabin, wheel = o.tones[:3]
    L, Wd = 1.30 * o.size, 0.72 * o.size  # half length, half width
    prims: list[_Prim] = []
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    for sl in (-0.7, 0.7):
        for sw in (-1, 1):
            c = g + d * L * sl + n * Wd * sw
            rim = np.array([_pt(c + d * 0.3 * math.cos(q), 0.3 + 0.3 * math.sin(q)) for q in ang])
            prims.append(("poly", rim, wheel, 0.0))
    prims += _box_faces(g, d, n, L, Wd, 0.30, 1.05, (min(255.0, body + 25), body, body - 30), cam)
    cab_c = g + d * 0.30 * L
    prims += _box_faces(cab_c, d, n, 0.55 * L, 0.92 * Wd, 1.05, 1.85, (min(255.0, body + 35), cabin, cabin - 40), cam)
    # cargo in the back
    prims += _box_faces(g - d * 0.6 * L, d, n, 0.28 * L, 0.7 * Wd, 1.05, 1.35, (body - 60, body - 70, body - 80), cam)
    return prims


_PRIMS = {
    "walker": _walker_prims, "crosser": _walker_prims, "loiterer": _walker_prims,
    "skater": _skater_prims, "cyclist": _cyclist_prims, "cart": _cart_prims,
}


# ------------------------------------------------------------------ background
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(h, w) float32 smooth noise, std about 1, with features about ``cell`` pixels across."""
    c = max(1, int(cell))
    gh, gw = h // c + 3, w // c + 3
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(g, (gw * c, gh * c), interpolation=cv2.INTER_CUBIC)
    return big[c: c + h, c: c + w]


class _Scene:
    """The fixed part: camera, walkway and the static background image."""

    half_walk = 3.6  # half width of the walkway, m

    def __init__(self, s: SceneSettings, seed: int):
        self.cam = cam = _Camera(s.height, s.width)
        rng = np.random.default_rng([seed, 7001])
        h, w = s.height, s.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        depth = cam.f * cam.cam_h / (yy - cam.y_h)
        lat = (xx - cam.cx) * depth / cam.f
        px_lat = cam.f / depth  # px per metre across
        px_dep = cam.f * cam.cam_h / depth**2  # px per metre in depth
        walk = np.abs(lat) <= self.half_walk
        curb = (np.abs(lat) > self.half_walk) & (np.abs(lat) <= self.half_walk + 0.25)

        grass = 98 + 9 * _smooth_noise(rng, h, w, 24) + 5 * _smooth_noise(rng, h, w, 6)
        grass += cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (3, 3), 0.7) * 9
        pave = 160 + 5 * _smooth_noise(rng, h, w, 40) + 2.5 * _smooth_noise(rng, h, w, 5)
        pave += rng.standard_normal((h, w)).astype(np.float32) * 1.5
        tile = 1.2
        dl = np.abs(((lat + self.half_walk) / tile + 0.5) % 1.0 - 0.5) * tile * px_lat
        dd = np.abs((depth / tile + 0.5) % 1.0 - 0.5) * tile * px_dep
        joints = np.maximum(np.exp(-((dl / 0.6) ** 2)), np.exp(-((dd / 0.6) ** 2)))
        pave -= 16 * joints
        img = np.where(walk, pave, grass)
        img = np.where(curb, 188 + 3 * _smooth_noise(rng, h, w, 8), img).astype(np.float32)

        # static clutter, far to near: hedges at the back, lamp posts, a bench, a bin
        props: list[tuple[float, list[_Prim]]] = []
        zf = cam.z_far
        for side in (-1, 1):
            a = self.half_walk + 1.2
            while a < cam.half_width_m(zf + 2.0) + 2:
                r = float(rng.uniform(0.7, 1.3))
                zc = zf + float(rng.uniform(-1.5, 1.0))
                props.append((zc, [("disc", np.array([[side * a, zc, r * 0.8]]), float(rng.uniform(45, 65)), r)]))
                a += r * float(rng.uniform(1.0, 1.6))
        for side, zc in ((-1, cam.z_near + 3.0), (1, cam.z_near + 7.5), (-1, cam.z_near + 12.0)):
            a = side * (self.half_walk + 0.7)
            props.append((zc, [
                ("line", np.array([[a, zc, 0.0], [a, zc, 4.2]]), 45.0, 0.14),
                ("disc", np.array([[a, zc, 4.2]]), 70.0, 0.25),
            ]))
        bz = cam.z_near + 5.0
        props.append((bz, _box_faces(np.array([-(self.half_walk + 1.6), bz]), np.array([0.0, 1.0]),
                                     np.array([-1.0, 0.0]), 0.9, 0.28, 0.0, 0.45, (120.0, 70.0, 55.0), cam)))
        cz = cam.z_near + 2.0
        props.append((cz, _box_faces(np.array([self.half_walk + 1.3, cz]), np.array([0.0, 1.0]),
                                     np.array([-1.0, 0.0]), 0.25, 0.25, 0.0, 0.9, (80.0, 60.0, 50.0), cam)))
        for _, prims in sorted(props, key=lambda p: -p[0]):
            _render_object(img, None, prims, cam, 0)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        self.background = (img * (1.0 - 0.05 * r2)).astype(np.float32)  # (H, W) float32 grey levels


# ------------------------------------------------------------------ simulation of one clip
@dataclass
class _ClipResult:
    frames: list[np.ndarray]  # n x (H, W) uint8
    masks: list[np.ndarray]  # n x (H, W) uint8 0/255 (empty list for training clips)
    labels: np.ndarray  # (n,) uint8
    tracks: list[dict]  # per object: kind, frames, boxes, speeds
    events: list[dict]  # anomaly objects: kind, direction, spawn frame


class _Sim:
    def __init__(self, scene: _Scene, s: SceneSettings, rng: np.random.Generator):
        self.scene, self.s, self.rng, self.cam = scene, s, rng, scene.cam
        self.objs: list[_Obj] = []
        self.next_id = 1
        self.z_in = self._entry_depth()  # depth where an upward walker starts, fully below the frame
        self.z_out = self.cam.z_far + 0.6  # depth beyond which a walker has left at the top

    def _entry_depth(self) -> float:
        cam = self.cam
        # feet below the frame and the head (1.9 m) too: y(head) >= H
        return cam.f * (cam.cam_h - 1.95) / (self.s.height - cam.y_h)

    def _tones(self) -> tuple[float, ...]:
        rng = self.rng
        trousers = float(rng.uniform(25, 85))
        shirt = float(rng.uniform(30, 105)) if rng.random() < 0.72 else float(rng.uniform(185, 235))
        hair = float(rng.uniform(15, 70))
        bag = float(rng.uniform(30, 90))
        return (trousers, shirt, hair, bag)

    def _new(self, kind: str, a: float, z: float, va: float, vz: float, size: float, tones, **extra) -> _Obj:
        o = _Obj(self.next_id, kind, a, z, va, vz, size, tones, float(self.rng.uniform(0, 2 * np.pi)), extra)
        self.next_id += 1
        self.objs.append(o)
        return o

    def spawn_walkers(self) -> None:
        rng, hw = self.rng, self.scene.half_walk
        up = rng.random() < 0.5
        speed = float(rng.uniform(1.05, 1.6)) / FPS
        lane = float(np.clip(rng.normal(1.1 if up else -1.1, 1.0), -hw + 0.4, hw - 0.4))
        n = 2 if rng.random() < 0.25 else 1
        z0 = self.z_in - float(rng.uniform(0, 0.8)) if up else self.z_out + float(rng.uniform(0, 0.8))
        for i in range(n):
            a = float(np.clip(lane + (i - (n - 1) / 2) * 0.7, -hw + 0.3, hw - 0.3))
            self._new("walker", a, z0 + float(rng.normal(0, 0.15)), float(rng.normal(0, 0.008)),
                      speed if up else -speed, float(rng.uniform(1.6, 1.9)), self._tones(),
                      backpack=bool(rng.random() < 0.35))

    def spawn_anomaly(self, kind: str, force: bool = True) -> dict | None:
        """Start an anomaly of this kind; None if a loiterer finds no walker to stop (unless force)."""
        rng, cam, hw = self.rng, self.cam, self.scene.half_walk
        up = bool(rng.random() < 0.5)
        sign = 1.0 if up else -1.0
        z0 = self.z_in - 0.5 if up else self.z_out + 1.0
        a = float(rng.uniform(-hw + 1.2, hw - 1.2))
        ev: dict = {"kind": kind}
        if kind == "cyclist":
            v = float(rng.uniform(4.0, 5.0)) * WALK_SPEED / FPS
            z0 = z0 - 1.0 if up else z0 + 0.5
            o = self._new(kind, a, z0, 0.0, sign * v, float(rng.uniform(1.65, 1.85)),
                          self._tones()[:3] + (float(rng.uniform(20, 50)),))
        elif kind == "skater":
            v = float(rng.uniform(3.0, 3.5)) * WALK_SPEED / FPS
            o = self._new(kind, a, z0, 0.0, sign * v, float(rng.uniform(1.6, 1.85)),
                          self._tones()[:3] + (float(rng.uniform(20, 45)),))
        elif kind == "cart":
            v = float(rng.uniform(1.8, 2.2)) * WALK_SPEED / FPS
            z0 = z0 - 2.0 if up else z0 + 2.0
            body = float(rng.uniform(195, 230)) if rng.random() < 0.6 else float(rng.uniform(40, 70))
            o = self._new(kind, float(rng.uniform(-1.0, 1.0)), z0, 0.0, sign * v, float(rng.uniform(0.95, 1.1)),
                          (body, float(rng.uniform(60, 110)), 20.0))
        elif kind == "crosser":
            v = float(rng.uniform(1.05, 1.4)) / FPS
            zc = float(rng.uniform(cam.z_near + 1.5, cam.z_near + 5.5))
            a0 = cam.half_width_m(zc) + 0.6
            o = self._new(kind, -sign * a0, zc, sign * v, float(rng.normal(0, 0.01)), float(rng.uniform(1.6, 1.9)),
                          self._tones(), backpack=bool(rng.random() < 0.35))
            up = None
            ev["direction"] = "left-to-right" if sign > 0 else "right-to-left"
        elif kind == "loiterer":
            # a walker already in the middle of the walkway stops there (or, if none, one enters)
            zn = cam.z_near
            cands = [w for w in self.objs if w.kind == "walker" and zn + 1.0 <= w.z <= cam.z_far - 3.0]
            if not cands and not force:
                return None
            if cands:
                o = min(cands, key=lambda w: (abs(w.z - (zn + 4.0)), w.oid))
                walk_in = o.t_alive + 1
            else:
                speed = float(rng.uniform(1.1, 1.4)) / FPS
                o = self._new("walker", a, self.z_in, 0.0, speed, float(rng.uniform(1.6, 1.9)), self._tones(),
                              backpack=bool(rng.random() < 0.35))
                walk_in = int((zn + 2.5 - self.z_in) / speed)
            o.kind = kind
            o.extra.update(phone=bool(rng.random() < 0.5), walk_in=walk_in, stop_for=int(rng.integers(24, 34)))
            up = o.vz > 0
        else:
            raise ValueError(kind)
        if up is not None:
            ev["direction"] = "up (away from the camera)" if up else "down (towards the camera)"
        ev["oid"] = o.oid
        return ev

    def n_walkers(self) -> int:
        """Walkers in view or entering (those already leaving do not count)."""
        zn, zf = self.cam.z_near, self.cam.z_far
        return sum(1 for o in self.objs if o.kind == "walker" and (o.z <= zf if o.vz > 0 else o.z >= zn))

    def step(self) -> None:
        """Advance one frame: move, retire objects that left, let new walkers in."""
        rng, hw = self.rng, self.scene.half_walk
        kept = []
        for o in self.objs:
            o.t_alive += 1
            if o.kind == "loiterer":
                wi, sf = o.extra["walk_in"], o.extra["stop_for"]
                if o.t_alive == wi:
                    o.extra["v"] = (o.va, o.vz)
                    o.extra["last_heading"] = tuple(o.heading)
                    o.va = o.vz = 0.0
                    o.stopped = True
                elif o.t_alive == wi + sf:
                    o.va, o.vz = o.extra["v"]
                    o.stopped = False
            if o.kind in ("walker", "crosser", "loiterer"):
                if not o.stopped:
                    spd = float(np.hypot(o.va, o.vz))
                    o.phase += 2 * np.pi * spd / (1.45 * o.size / 1.75)  # one stride cycle per ~1.45 m
                    if o.kind == "walker":  # small lateral wander inside the walkway
                        o.va = float(np.clip(o.va + rng.normal(0, 0.002), -0.015, 0.015))
                        if abs(o.a) > hw - 0.3:
                            o.va = -abs(o.va) * np.sign(o.a)
            elif o.kind == "cyclist":
                o.phase += float(np.hypot(o.va, o.vz)) / 0.9
            o.a += o.va + (float(rng.normal(0, 0.004)) if o.kind in ("walker", "crosser") else 0.0)
            o.z += o.vz
            gone_far = o.vz > 0 and o.z > self.z_out + (2.0 if o.kind == "cart" else 0.0)
            gone_near = o.vz < 0 and o.z < self.z_in - (2.5 if o.kind == "cart" else 0.0)
            gone_side = abs(o.a) > self.cam.half_width_m(o.z) + 1.2 and o.kind == "crosser" and o.t_alive > 5
            if not (gone_far or gone_near or gone_side):
                kept.append(o)
        self.objs = kept
        n = self.n_walkers()
        if n < self.s.min_walkers or (n < self.s.max_walkers and rng.random() < 0.05):
            self.spawn_walkers()

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float32 frame before noise and (H, W) int32 object-id map of this frame."""
        img = self.scene.background.copy()
        labels = np.zeros(img.shape, np.int32)
        for o in sorted(self.objs, key=lambda o: (-o.z, o.oid)):  # far to near
            _render_object(img, labels, _PRIMS[o.kind](o, self.cam, t), self.cam, o.oid)
        return img, labels


def _simulate_clip(scene: _Scene, s: SceneSettings, rng: np.random.Generator, n_frames: int,
                   program: tuple[tuple[str, float], ...], with_masks: bool) -> _ClipResult:
    sim = _Sim(scene, s, rng)
    for _ in range(160):  # warm up so that the walkway is populated at frame 0
        sim.step()
    starts = {}
    for kind, frac in program:
        starts.setdefault(max(3, int(round(frac * n_frames)) + int(rng.integers(-3, 4))), []).append((kind, 0))
    events: list[dict] = []
    frames, masks = [], []
    labels = np.zeros(n_frames, np.uint8)
    track: dict[int, dict] = {}
    prev_xy: dict[int, np.ndarray] = {}
    cam = scene.cam
    for t in range(n_frames):
        for kind, tries in starts.get(t, []):
            ev = sim.spawn_anomaly(kind, force=tries >= 20)
            if ev is None:  # a loiterer waits (up to 20 frames) for a walker in the middle of the walkway
                starts.setdefault(t + 1, []).append((kind, tries + 1))
                continue
            ev["spawn_frame"] = t
            events.append(ev)
        sim.step()
        img, lab = sim.render(t)
        img = cv2.GaussianBlur(img, (3, 3), 0.6)
        if s.noise > 0:
            img += rng.standard_normal(img.shape).astype(np.float32) * np.float32(s.noise)
        img += np.float32(1.0 * math.sin(2 * np.pi * t / 47.0))  # slow global flicker
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))

        counts = np.bincount(lab.ravel(), minlength=sim.next_id)
        slices = ndimage.find_objects(lab)
        anom = np.zeros(lab.shape, bool)
        for o in sim.objs:
            g = cam.project(np.array([[o.a, o.z, 0.0]]))[0]
            speed = float(np.hypot(*(g - prev_xy[o.oid]))) if o.oid in prev_xy else None
            prev_xy[o.oid] = g
            vis = int(counts[o.oid]) if o.oid < len(counts) else 0
            if vis == 0:
                continue
            sl = slices[o.oid - 1]
            is_anom = o.anomalous() and vis >= s.min_visible_px
            if is_anom:
                anom |= lab == o.oid
            tr = track.setdefault(o.oid, {"id": o.oid, "kind": o.kind, "frames": [], "boxes": [],
                                          "visible_px": [], "speed_px": [], "anomalous": []})
            tr["kind"] = o.kind  # a walker that turns loiterer is recorded as the loiterer
            tr["frames"].append(t)
            tr["boxes"].append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
            tr["visible_px"].append(vis)
            tr["speed_px"].append(None if speed is None else round(speed, 3))
            tr["anomalous"].append(int(is_anom))
        labels[t] = 1 if anom.any() else 0
        if with_masks:
            masks.append(anom.astype(np.uint8) * 255)
    tracks = [track[k] for k in sorted(track)]
    by_id = {tr["id"]: tr for tr in tracks}
    for ev in events:
        tr = by_id.get(ev["oid"])
        ev["anomalous_frames"] = [] if tr is None else [f for f, a in zip(tr["frames"], tr["anomalous"]) if a]
    return _ClipResult(frames, masks, labels, tracks, events)


# ------------------------------------------------------------------ writing
def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise DataError(path, "PNG encoding failed")
    path.write_bytes(buf.tobytes())


def _write_mat(path: Path, intervals: list[list[tuple[int, int]]]) -> None:
    write_mat_intervals(path, intervals, f"MATLAB 5.0 MAT-file, written by amsrc synthetic scene v{GENERATOR_VERSION}")


def _names(n: int, width: int) -> list[str]:
    return [f"{i:0{width}d}" for i in range(n)]


def _clip_names(n: int) -> list[str]:
    return [f"{i:0{max(2, len(str(n)))}d}" for i in range(1, n + 1)]


def _frame_width(n: int) -> int:
    return max(3, len(str(n - 1)))


def _index(out: Path, s: SceneSettings, labels: dict[str, list[np.ndarray]]) -> DatasetIndex:
    splits = {}
    for split, n_clips, n_frames in (("training", s.n_train, s.train_frames), ("testing", s.n_test, s.test_frames)):
        clips = []
        for ci, name in enumerate(_clip_names(n_clips)):
            src = out / split / "frames" / name
            fnames = _names(n_frames, _frame_width(n_frames))
            files = tuple(src / f"{f}.png" for f in fnames)
            masks = None
            lab = None
            if split == "testing":
                lab = labels["testing"][ci]
                masks = FolderMasks(tuple(out / "testing" / "pixel_masks" / name / f"{f}.png" for f in fnames))
            clips.append(Clip(name=name, split=split, source=src, n_frames=n_frames, frame_files=files,
                              labels=lab, masks=masks, fps=FPS))
        splits[split] = tuple(clips)
    return DatasetIndex(root=out, layout="frames", splits=splits)


def _readme(seed: int, s: SceneSettings, meta: dict) -> str:
    cam = _Camera(s.height, s.width)
    lines = [
        "AMSRC synthetic surveillance scene",
        "==================================",
        "",
        f"Generator version {GENERATOR_VERSION}, seed {seed}. Same seed and settings => byte-identical files.",
        f"Settings: {json.dumps(asdict(s))}",
        "",
        "A fixed camera looks down a paved walkway (tiles, curbs) through grass with hedges at the back,",
        "lamp posts, a bench and a bin. Frames are grey (8-bit single-channel PNG) with Gaussian sensor",
        f"noise (std {s.noise}) and a slow global flicker. Nominal frame rate {FPS:g} fps.",
        f"Ground plane: camera {cam.cam_h:g} m high, visible depth {cam.z_near:.1f}-{cam.z_far:.1f} m; "
        f"a 1.75 m walker is {1.75 * cam.scale(cam.z_near):.0f} px tall",
        f"at the bottom and {1.75 * cam.scale(cam.z_far):.0f} px at the top; walking "
        f"speed {WALK_SPEED} m/s is {WALK_SPEED / FPS * cam.f * cam.cam_h / cam.z_near ** 2:.1f} px/frame",
        f"(up/down) at the bottom and {WALK_SPEED / FPS * cam.f * cam.cam_h / cam.z_far ** 2:.1f} px/frame at the top.",
        "",
        "Normal: walkers (alone or in pairs, some with backpacks) walk up and down the walkway at 1.05-1.6 m/s",
        f"with a gait and small lateral wander; {s.min_walkers}-{s.max_walkers} on the walkway at a time; they enter",
        "and leave at the top and bottom edges. Training clips hold only normal walkers.",
        "",
        "Anomalies (test clips only, always together with normal walkers):",
        "  cyclist   bicycle along the walkway, 4-5x walking speed",
        "  skater    skateboard along the walkway, 3-3.5x walking speed, no gait",
        "  cart      vehicle-like cart (about 2.6 x 1.4 x 1.9 m) along the walkway, about 2x walking speed",
        "  crosser   a walker crossing the walkway sideways at walking speed",
        "  loiterer  a walker who stops for 3-4 s; anomalous only while stopped (no motion: hard for",
        "            motion-based boxes)",
        f"A frame is anomalous when an anomaly object shows >= {s.min_visible_px} pixels; the pixel mask is exactly",
        "the visible pixels of the anomaly objects (nearer objects occlude).",
        "",
        "Files: training/frames/<clip>/NNN.png, testing/frames/<clip>/NNN.png (0-based NNN),",
        "testing/pixel_masks/<clip>/NNN.png (0/255), synthetic.mat (gt: 1xK cell of 2xM [start; end],",
        "1-based inclusive), scene.json (settings and events), tracks.json (per object and frame: visible",
        "box x0,y0,x1,y1 exclusive, visible pixels, ground-point speed in px/frame, anomalous flag).",
        "",
        "Test clips (frames numbered from 0, as the file names and every amsrc output; synthetic.mat",
        "alone keeps its format's 1-based intervals):",
    ]
    for clip in meta["testing"]:
        iv = ", ".join(f"{a - 1}-{b - 1}" for a, b in clip["intervals"])
        lines.append(f"  {clip['name']}: {clip['n_frames']} frames, {clip['n_anomalous']} anomalous (frames {iv})")
        for ev in clip["events"]:
            fr = ev["anomalous_frames"]
            span = f"frames {fr[0]}-{fr[-1]}, {len(fr)} labelled" if fr else "never visible"
            lines.append(f"      {ev['kind']:9s} {ev['direction']}: {span}")
    lines.append("")
    return "\n".join(lines)


def _settings_record(seed: int, s: SceneSettings) -> dict:
    return {"generator": "amsrc.data.synth", "version": GENERATOR_VERSION, "seed": seed, "settings": asdict(s)}


def _reuse(out: Path, seed: int, s: SceneSettings) -> DatasetIndex | None:
    """The index of an existing complete scene with the same seed/settings, else None."""
    meta_path = out / "scene.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("stamp") != _settings_record(seed, s):
        return None
    labels = []
    for clip in meta["testing"]:
        lab = np.zeros(clip["n_frames"], np.uint8)
        for a, b in clip["intervals"]:
            lab[a - 1: b] = 1
        labels.append(lab)
    index = _index(out, s, {"testing": labels})
    for split in ("training", "testing"):
        for c in index.clips(split):
            files = list(c.frame_files or ())
            if split == "testing":
                files += list(c.masks.files)  # type: ignore[union-attr]
            missing = [f for f in files if not f.is_file()]
            if missing or len(list(c.source.iterdir())) != c.n_frames:
                raise DataError(out, f"holds an incomplete synthetic scene ({c.source} does not have exactly "
                                     f"{c.n_frames} frames and masks); delete it and generate again")
    return index


def write_scene(
    out: str | Path,
    seed: int = 0,
    *,
    height: int = 160,
    width: int = 240,
    n_train: int = 4,
    n_test: int = 4,
    train_frames: int = 120,
    test_frames: int = 120,
    min_walkers: int = 4,
    max_walkers: int = 10,
    noise: float = 2.0,
    min_visible_px: int = 20,
) -> DatasetIndex:
    """Write a synthetic scene to ``out`` (frames layout) and return its index.

    Atomic: everything is written to a temporary folder beside ``out`` and renamed at the end.
    If ``out`` exists and is not empty it is refused with a DataError, except when it already
    holds the complete scene of the same seed and settings (and generator version): then
    nothing is written and the index of that scene is returned.
    """
    s = SceneSettings(height, width, n_train, n_test, train_frames, test_frames, min_walkers, max_walkers,
                      float(noise), min_visible_px)
    s.check()
    if seed < 0:
        raise ConfigError(f"the seed must be >= 0, got {seed}")
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise DataError(out, "exists and is not a folder")
        if any(out.iterdir()):
            index = _reuse(out, seed, s)
            if index is not None:
                return index
            raise DataError(out, "exists and is not empty (and is not the synthetic scene of this seed and "
                                 "these settings); choose another folder or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # (not mkdtemp: the folder keeps the user's umask permissions after the rename)
    try:
        meta = _generate(tmp, seed, s)
        (tmp / "README.txt").write_text(_readme(seed, s, meta))
        if out.exists():
            try:
                out.rmdir()  # empty (checked above); anything that appeared since makes this fail
            except OSError:
                raise DataError(out, "appeared while the scene was being written; not replaced") from None
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    labels = [np.asarray(c["labels"], np.uint8) for c in meta["testing_labels"]]
    return _index(out, s, {"testing": labels})


def _generate(root: Path, seed: int, s: SceneSettings) -> dict:
    """Render and write every file except README.txt; return the scene record."""
    scene = _Scene(s, seed)
    meta: dict = {"stamp": _settings_record(seed, s), "training": [], "testing": []}
    tracks_out: dict = {"training": {}, "testing": {}}
    test_labels = []
    intervals_all = []
    for split, split_id, n_clips, n_frames in (("training", 1, s.n_train, s.train_frames),
                                               ("testing", 2, s.n_test, s.test_frames)):
        for ci, name in enumerate(_clip_names(n_clips)):
            rng = np.random.default_rng([seed, split_id, ci])
            program = _PROGRAMS[ci % len(_PROGRAMS)] if split == "testing" else ()
            res = _simulate_clip(scene, s, rng, n_frames, program, with_masks=split == "testing")
            fdir = root / split / "frames" / name
            fdir.mkdir(parents=True)
            fnames = _names(n_frames, _frame_width(n_frames))
            for f, img in zip(fnames, res.frames):
                _write_png(fdir / f"{f}.png", img)
            rec = {"name": name, "n_frames": n_frames}
            if split == "testing":
                mdir = root / "testing" / "pixel_masks" / name
                mdir.mkdir(parents=True)
                for f, m in zip(fnames, res.masks):
                    _write_png(mdir / f"{f}.png", m)
                iv = labels_to_intervals(res.labels)
                if not iv or len(iv) == 1 and iv[0] == (1, n_frames):
                    raise DataError(None, f"synthetic test clip {name} came out all normal or all anomalous; "
                                          "use other sizes or another seed")
                intervals_all.append(iv)
                test_labels.append({"labels": res.labels.tolist()})
                rec.update(n_anomalous=int(res.labels.sum()), intervals=iv,
                           events=[{k: v for k, v in ev.items() if k != "oid"} | {"object": ev["oid"]}
                                   for ev in res.events])
            meta[split].append(rec)
            tracks_out[split][name] = res.tracks
    _write_mat(root / _MAT_NAME, intervals_all)
    (root / "scene.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_dataset_file(root, FPS, "amsrc data synth")
    (root / "tracks.json").write_text(json.dumps(tracks_out, separators=(",", ":")) + "\n")
    meta["testing_labels"] = test_labels
    return meta
