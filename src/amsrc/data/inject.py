"""Pseudo-anomalies composited into real normal footage: a labelled validation set with no test label.

``inject(sources, out)`` splits normal clips into FIT clips (copied unchanged to
``OUT/training/frames``) and HELD-OUT clips (the last ``holdout`` clips; ``fold`` k holds out the
k-th block of ``holdout`` clips counted from the end instead, so several sets together cross-validate
over all the footage), into which it pastes anomalies, written to
``OUT/testing/frames`` with frame labels (``OUT/<name>.mat``) and pixel masks
(``OUT/testing/pixel_masks``): the frames layout, so ``amsrc run OUT`` trains on the fit clips and
reports on the injected ones. Every choice made on it (epochs, weights, smoothing, boxes, flow,
thresholds) then comes from normal footage alone.

What is measured from the normal footage first (:class:`SceneModel`, all clips):
- a median background per clip; foreground = where a frame differs from it;
- the ground-plane size model: the height of upright foreground blobs against their bottom row
  (a median per band of rows, then a straight line): ``height(row) = slope * (row - horizon)``;
- the typical walker speed in walker heights per frame (median over upright blobs followed from
  one frame to the next of their feet point's step divided by their height; blob tracking, not
  optical flow, which underestimates flat-toned objects), so on-screen speed follows the perspective;
- the main direction of motion: the principal axis of those steps; when people go both
  ways along it (as on a walkway), "against the flow" is across it, otherwise the opposite way.

Kinds of anomaly (``--kinds``), one event per held-out clip in turn (seeded):
- ``fast``: a walker cut from the clip (median background separates its silhouette) glides along
  the main direction at 2-4x the typical walker speed (a skater, a cyclist, a runner);
- ``contraflow``: a walker moving against the main direction at 1-1.5x the walker speed;
- ``loiter``: a walker that walks in for a second and then stands still for several seconds where
  people only pass;
- ``rigid``: a foreign textured box (a cart, a small vehicle) 1.6 walker heights long, crossing
  at 4-6x the walker speed;
- ``brisk`` (not in the default mix; ``--kinds brisk``): a cut walker gliding along the main
  direction at 1.3-2x the walker speed, a skater or a slow cyclist. The hard case for speed alone:
  Ped2's test anomalies move at 1.2-2.1x the walkers' flow speed (quartiles of the cube store's
  ``velocity`` feature of its anomalous objects against the normal objects' median,
  ``benchmarks/anomaly_speeds.py``; read on the test labels to design this kind, which chooses
  nothing by itself).
Each pasted object is scaled by the size model at its row, its brightness is shifted so that its
contrast with the background is the one it had where it was cut, its edges are soft (a Gaussian
alpha), and the mask of a frame is the pasted pixels with alpha >= 0.5. A frame is anomalous when
at least 20 pixels of its mask are visible (the object-label rule of the cube store).

Same sources, settings and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from amsrc.data.groundtruth import labels_to_intervals, write_mat_intervals
from amsrc.data.index import Clip
from amsrc.data.layouts import load_dataset, normal_clips, write_dataset_file
from amsrc.data.readers import open_clip
from amsrc.data.sources import DEFAULT_FPS
from amsrc.errors import ConfigError, DataError
from amsrc.prepare.cubes import T_APPEARANCE
from amsrc.prepare.recall import OBJECT_MIN_PX
from amsrc.prepare.store import source_hash

INJECT_VERSION = 2  # bump when the compositing changes (recorded in inject.json)
KINDS = ("fast", "contraflow", "loiter", "rigid", "brisk")  # every kind ``--kinds`` takes
DEFAULT_KINDS = KINDS[:4]  # the default mix; sets written before ``brisk`` existed keep their bytes
MIN_CLIP_FRAMES = T_APPEARANCE  # a cube needs frames t-4 .. t
FG_THRESHOLD = 25  # grey-level difference from the median background that counts as foreground
MIN_LABEL_PX = OBJECT_MIN_PX  # visible mask pixels for a frame to be anomalous (the cube store's object rule)
RECORD = "inject.json"
SAMPLE_EVERY = 3  # frames t = 0, 3, 6, ... (and t + 1, to follow blobs) are kept to measure the scene
BACKGROUND_FRAMES = 60  # about this many frames of a clip, evenly spaced, give its median background


# ---------------------------------------------------------------- reading
def _read_clip(clip: Clip, keep_rgb: bool) -> tuple[np.ndarray | None, list, np.ndarray]:
    """Stream a clip once: (all RGB frames (T, H, W, 3) uint8 when ``keep_rgb``, else None; the grey
    frames (H, W) uint8 at t % SAMPLE_EVERY in (0, 1), None elsewhere; the (H, W) float32 median
    background of about BACKGROUND_FRAMES evenly spaced frames). Only the held-out clips are kept
    whole. DataError on a short clip (the readers refuse a frame of another size, naming its file)."""

    step = max(1, clip.n_frames // BACKGROUND_FRAMES)
    rgb, grey, for_bg = [], [], []
    for t, fr in enumerate(open_clip(clip).iter_frames()):
        g = cv2.cvtColor(fr, cv2.COLOR_RGB2GRAY)
        grey.append(g if t % SAMPLE_EVERY in (0, 1) else None)
        if t % step == 0:
            for_bg.append(g)
        if keep_rgb:
            rgb.append(fr)
    if len(grey) < MIN_CLIP_FRAMES:
        raise DataError(clip.source, f"has {len(grey)} frames; a clip needs at least {MIN_CLIP_FRAMES} "
                                     "(one cube: frames t-4 .. t)")
    return (np.stack(rgb) if keep_rgb else None), grey, np.median(np.stack(for_bg), axis=0).astype(np.float32)


def source_clips(sources: list[str | Path]) -> list[Clip]:
    """Clips of the sources in order: clip folders and video files one by one, or a dataset
    root's normal split (:func:`amsrc.data.layouts.normal_clips`)."""
    return [c for src in sources for c in normal_clips(Path(src))]


# ---------------------------------------------------------------- the scene, measured
@dataclass
class Blob:
    clip: int  # index of the clip
    t: int  # frame
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass
class SceneModel:
    """What the normal footage says about its walkers (see the module docstring)."""

    size: tuple[int, int]  # (H, W)
    slope: float  # walker height (px) per image row below the horizon
    horizon: float  # image row where the walker height reaches 0 (may be negative: above the frame)
    speed: float  # typical walker speed, walker heights per frame
    axis: tuple[float, float]  # unit (dx, dy) of the main direction of motion
    two_way: bool  # True when objects move both ways along the axis
    n_blobs: int  # upright blobs the size model was fitted on
    fg_rows: list[int] = field(default_factory=list)  # bottom rows of those blobs (where people walk)
    fg_cols: list[int] = field(default_factory=list)  # their centre columns

    def height_at(self, row: float) -> float:
        """Typical walker height (px) whose feet are at image ``row`` (at least 6 px)."""
        return max(6.0, self.slope * (row - self.horizon))

    def against(self) -> tuple[float, float]:
        """Direction of "against the flow": across a two-way axis, else opposite to it."""
        ax, ay = self.axis
        return (-ay, ax) if self.two_way else (-ax, -ay)


def _frame_blobs(grey_t: np.ndarray, bg: np.ndarray, clip_index: int, t: int) -> tuple[list[Blob], np.ndarray]:
    """Foreground blobs of one frame (not touching the border, >= 30 px) and its foreground mask."""
    h, w = bg.shape
    fg = (np.abs(grey_t.astype(np.float32) - bg) > FG_THRESHOLD).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < 30 or x == 0 or y == 0 or x + bw >= w or y + bh >= h:
            continue
        out.append(Blob(clip_index, t, x, y, x + bw, y + bh))
    return out, fg


def _blobs(grey: np.ndarray, bg: np.ndarray, clip_index: int, every: int = SAMPLE_EVERY) -> tuple[list[Blob], list[np.ndarray]]:
    """Foreground blobs of every ``every``-th frame (and the foreground masks)."""
    out, masks = [], []
    for t in range(0, len(grey), every):
        b, fg = _frame_blobs(grey[t], bg, clip_index, t)
        out += b
        masks.append(fg)
    return out, masks


def _iou(a: Blob, b: Blob) -> float:
    ix = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * a.height + (b.x1 - b.x0) * b.height - inter
    return inter / union if union > 0 else 0.0


def _upright(b: Blob) -> bool:
    return 0.2 <= (b.x1 - b.x0) / max(b.height, 1) <= 0.8 and b.height >= 8


def _fit_size_model(blobs: list[Blob], height: int) -> tuple[float, float, list[Blob]]:
    """Median height per band of bottom rows of upright blobs, then a least-squares line."""
    upright = [b for b in blobs if _upright(b)]
    if len(upright) < 5:
        raise DataError(None, f"found {len(upright)} upright moving objects in the normal footage; "
                              "at least 5 are needed to learn their size (footage with no moving object?)")
    rows = np.array([b.y1 for b in upright], np.float64)
    hts = np.array([b.height for b in upright], np.float64)
    edges = np.linspace(rows.min(), rows.max() + 1, 9)
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (rows >= a) & (rows < b)
        if sel.sum() >= 3:
            xs.append(float(np.median(rows[sel])))
            ys.append(float(np.median(hts[sel])))
    if len(xs) >= 2 and np.ptp(xs) > 0.1 * height:
        slope, icpt = np.polyfit(xs, ys, 1)
    else:
        slope, icpt = 0.0, float(np.median(hts))
    if slope <= 1e-3:  # no perspective seen: constant height
        med = float(np.median(hts))
        return 1e-3, -med / 1e-3, upright
    return float(slope), float(-icpt / slope), upright


def measure_scene(frames: list[list], backgrounds: list[np.ndarray]) -> SceneModel:
    """The :class:`SceneModel` of normal clips: per clip its grey frames as :func:`_read_clip` keeps
    them (a list over t, None where not sampled) and its (H, W) float32 median background."""
    h, w = backgrounds[0].shape
    blobs = []
    for k, (g, bg) in enumerate(zip(frames, backgrounds)):
        blobs += _blobs(g, bg, k)[0]
    slope, horizon, upright = _fit_size_model(blobs, h)

    # speed and direction from blobs tracked over one frame: the same upright blob at t and t+1
    # (best IoU >= 0.3, similar height); its feet point moves by (dx, dy)
    speeds, vecs = [], []
    for b in upright:
        g, bg = frames[b.clip], backgrounds[b.clip]
        if b.t + 1 >= len(g):
            continue
        nxt, _ = _frame_blobs(g[b.t + 1], bg, b.clip, b.t + 1)
        best = max(nxt, key=lambda o: _iou(b, o), default=None)
        if best is None or _iou(b, best) < 0.3 or not 0.8 <= best.height / b.height <= 1.25:
            continue
        dx = (best.x0 + best.x1 - b.x0 - b.x1) / 2.0
        dy = float(best.y1 - b.y1)
        step = float(np.hypot(dx, dy))
        if step < 0.25:  # a still object says nothing about walking speed
            continue
        speeds.append(step / b.height)
        vecs.append((dx, dy))
    if len(speeds) < 5:
        raise DataError(None, f"found {len(speeds)} moving objects that could be followed from one frame to the "
                              "next in the normal footage; at least 5 are needed (footage with no moving object?)")
    vecs = np.asarray(vecs, np.float64)
    u = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
    evals, evecs = np.linalg.eigh(u.T @ u)
    axis = evecs[:, int(np.argmax(evals))]
    proj = u @ axis
    if proj.mean() < 0:
        axis, proj = -axis, -proj
    two_way = bool(np.mean(proj < -0.5) > 0.15)  # a sizeable share goes the other way along the axis
    return SceneModel(
        size=(int(h), int(w)), slope=slope, horizon=horizon, speed=float(np.median(speeds)),
        axis=(float(axis[0]), float(axis[1])), two_way=two_way, n_blobs=len(upright),
        fg_rows=[b.y1 for b in upright], fg_cols=[(b.x0 + b.x1) // 2 for b in upright],
    )


# ---------------------------------------------------------------- sprites
@dataclass
class Sprite:
    rgb: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32 in [0, 1], soft edges
    bg_level: float  # mean grey level of the background under the sprite where it was cut
    row: int  # bottom row where it was cut (for the size model)


def _grey1(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _soft_alpha(mask: np.ndarray) -> np.ndarray:
    """Soft edges inside the silhouette: a Gaussian (sigma 0.8 px) of the mask, remapped so alpha
    is 1 a pixel inside the outline and 0 a pixel outside it. No rim of the ground the object was
    cut from is carried along (it would show as a halo on other ground)."""
    a = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)
    return np.clip((a - 0.25) / 0.5, 0.0, 1.0)


def cut_walker(frames: np.ndarray, grey: list, bg: np.ndarray, scene: SceneModel,
               rng: np.random.Generator, where: Path) -> Sprite:
    """A walker's silhouette cut from one frame of the clip (median background against the frame)."""
    blobs, masks = _blobs(grey, bg, 0)
    good = []
    for b in blobs:
        want = scene.height_at(b.y1)
        aspect = (b.x1 - b.x0) / max(b.height, 1)
        fill = masks[b.t // SAMPLE_EVERY][b.y0:b.y1, b.x0:b.x1].mean()
        if 0.75 * want <= b.height <= 1.33 * want and 0.2 <= aspect <= 0.8 and fill >= 0.35:
            good.append(b)
    if not good:
        raise DataError(where, "no walker-sized moving object to cut a sprite from (footage with no moving object?)")
    b = good[int(rng.integers(len(good)))]
    pad = 2
    y0, y1 = max(b.y0 - pad, 0), min(b.y1 + pad, bg.shape[0])
    x0, x1 = max(b.x0 - pad, 0), min(b.x1 + pad, bg.shape[1])
    m = masks[b.t // SAMPLE_EVERY][y0:y1, x0:x1]

    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n > 2:  # keep the largest component: the walker, not a neighbour's elbow
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        m = (lab == keep).astype(np.uint8)
    alpha = _soft_alpha(m)
    bg_level = float((bg[y0:y1, x0:x1] * alpha).sum() / max(alpha.sum(), 1e-6))
    return Sprite(frames[b.t, y0:y1, x0:x1].astype(np.float32), alpha, bg_level, b.y1)


def rigid_object(scene: SceneModel, bg: np.ndarray, rng: np.random.Generator, row: float,
                 colour: bool = True) -> Sprite:
    """A foreign textured box 1.6 x 0.9 walker heights (a cart, a small vehicle), darker or
    lighter than the ground, with a smooth noise texture and a darker rim; tinted only in colour
    footage."""
    hh = scene.height_at(row)
    h, w = max(int(round(0.9 * hh)), 6), max(int(round(1.6 * hh)), 10)
    level = float(np.median(bg))
    tone = level - 70 if level > 110 else level + 70
    cell = max(2, h // 4)
    noise = rng.normal(0, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    tex = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    grey = np.clip(tone + 18 * tex, 0, 255)
    rim = max(1, h // 8)
    grey[:rim] *= 0.7
    grey[-rim:] *= 0.6
    grey[:, :rim] *= 0.8
    grey[:, -rim:] *= 0.8
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    if not colour:
        tint[:] = 1.0
    rgb = np.clip(grey[..., None] * tint[None, None, :], 0, 255).astype(np.float32)
    m = np.zeros((h + 4, w + 4), np.uint8)
    cv2.rectangle(m, (2, 2), (w + 1, h + 1), 1, thickness=-1)
    rgb = np.pad(rgb, ((2, 2), (2, 2), (0, 0)), mode="edge")
    return Sprite(rgb, _soft_alpha(m), level, int(round(row)))


# ---------------------------------------------------------------- events
@dataclass
class Event:
    kind: str
    clip: str
    start: int  # first frame the object is in the clip
    end: int  # last frame (inclusive) it is composited
    speed_factor: float  # times the typical walker speed (0 while standing)
    direction: tuple[float, float]
    labelled: list[int] = field(default_factory=list)  # frames with >= MIN_LABEL_PX visible mask pixels
    preview_frame: int | None = None  # the frame where the mask is largest


def _walkway_point(scene: SceneModel, rng: np.random.Generator) -> tuple[float, float]:
    """(x, bottom row) of a random upright blob of the normal footage: a place where people walk,
    away from the left and right tenth of the frame (where an object is only partly in view)."""
    h, w = scene.size
    inside = [i for i, x in enumerate(scene.fg_cols) if 0.1 * w <= x <= 0.9 * w] or list(range(len(scene.fg_cols)))
    i = inside[int(rng.integers(len(inside)))]
    return float(scene.fg_cols[i]), float(scene.fg_rows[i])


def _entry(scene: SceneModel, p: tuple[float, float], d: tuple[float, float]) -> tuple[float, float]:
    """Where the line through p along d enters the frame (walking backwards from p)."""
    h, w = scene.size
    x, y = p
    for _ in range(4 * (h + w)):
        nx, ny = x - d[0], y - d[1]
        if not (0 <= nx < w and 0 <= ny < h):
            break
        x, y = nx, ny
    return x, y


def _paste(frame: np.ndarray, grey_bg: np.ndarray, sprite: Sprite, x: float, y_bottom: float,
           scale: float) -> np.ndarray:
    """Composite ``sprite`` (bottom-centre at x, y_bottom, scaled) into ``frame`` in place; returns
    the (H, W) bool mask of the pasted pixels (alpha >= 0.5)."""
    H, W = frame.shape[:2]
    sh, sw = sprite.alpha.shape
    nh, nw = max(int(round(sh * scale)), 2), max(int(round(sw * scale)), 2)
    rgb = cv2.resize(sprite.rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.resize(sprite.alpha, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x0, y0 = int(round(x - nw / 2)), int(round(y_bottom - nh))
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + nw, W), min(y0 + nh, H)
    mask = np.zeros((H, W), bool)
    if fx0 >= fx1 or fy0 >= fy1:
        return mask
    a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    s = rgb[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    local = float((grey_bg[fy0:fy1, fx0:fx1] * a).sum() / max(a.sum(), 1e-6))
    s = np.clip(s + (local - sprite.bg_level), 0, 255)  # same contrast with the ground as where it was cut
    dst = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.clip(a[..., None] * s + (1 - a[..., None]) * dst + 0.5, 0, 255).astype(np.uint8)
    mask[fy0:fy1, fx0:fx1] = a >= 0.5
    return mask


def _schedule(kind: str, n: int, scene: SceneModel, rng: np.random.Generator, fps: float) -> tuple:
    """(start, positions (list of (x, y_bottom) per frame from start), speed factor, direction)."""
    start = int(rng.integers(max(int(0.2 * n), 0), max(int(0.45 * n), 1) + 1))
    start = min(start, n - MIN_CLIP_FRAMES)
    p = _walkway_point(scene, rng)
    if kind == "loiter":
        d = scene.axis if rng.random() < 0.5 else (-scene.axis[0], -scene.axis[1])
        walk = int(round(1.0 * fps))
        stand = int(round(rng.uniform(4.0, 6.0) * fps))
        pos = []
        x, y = p
        v = scene.speed * scene.height_at(y)
        xs = [(x - d[0] * v * (walk - i), y - d[1] * v * (walk - i)) for i in range(walk)]
        pos = xs + [(x, y)] * stand
        return start, pos[: n - start], 0.0, d
    if kind == "contraflow":
        factor, d = float(rng.uniform(1.0, 1.5)), scene.against()
        if rng.random() < 0.5:
            d = (-d[0], -d[1])
    elif kind in ("fast", "brisk"):
        factor = float(rng.uniform(2.0, 4.0) if kind == "fast" else rng.uniform(1.3, 2.0))
        d = scene.axis if rng.random() < 0.5 else (-scene.axis[0], -scene.axis[1])
    else:  # rigid
        factor = float(rng.uniform(4.0, 6.0))
        d = scene.axis if rng.random() < 0.5 else (-scene.axis[0], -scene.axis[1])
    x, y = _entry(scene, p, d)
    h, w = scene.size
    pos = []
    for _ in range(n - start):
        pos.append((x, y))
        step = factor * scene.speed * scene.height_at(y)
        x, y = x + d[0] * step, y + d[1] * step
        if not (-0.2 * w <= x <= 1.2 * w and 0 <= y <= 1.3 * h):
            break
    return start, pos, factor, d


# ---------------------------------------------------------------- writing
@dataclass
class InjectSettings:
    seed: int = 0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    holdout: int | None = None  # held-out clips (the last ones, or the fold's); None: a quarter, at least 1
    fold: int = 0  # which block of `holdout` clips is held out, counted from the end: 0 the last ones, 1 those before
    fps: float | None = None  # frame rate of the footage (times of loiter events); None: the clip's, else DEFAULT_FPS

    def check(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"--kinds: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(KINDS)}")
        if self.holdout is not None and self.holdout < 1:
            raise ConfigError(f"--holdout must be >= 1, got {self.holdout}")
        if not isinstance(self.fold, int) or self.fold < 0:
            raise ConfigError(f"--fold must be an integer >= 0, got {self.fold!r}")
        if self.fps is not None and not (self.fps > 0 and np.isfinite(self.fps)):
            raise ConfigError(f"--fps must be a positive number, got {self.fps}")


def _frame_ext(clip: Clip) -> str:
    if clip.frame_files is not None and clip.frame_files[0].suffix.lower() in (".jpg", ".jpeg"):
        return ".jpg"
    return ".png"


def _encode(path: Path, rgb: np.ndarray) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(path.suffix, bgr, params)
    if not ok:  # pragma: no cover
        raise DataError(path, "image encoding failed")
    path.write_bytes(buf.tobytes())


def _copy_clip(clip: Clip, dst: Path) -> None:
    """A fit clip, unchanged: frame files copied, a video decoded to PNG frames."""
    dst.mkdir(parents=True)
    if clip.frame_files is not None:
        for f in clip.frame_files:
            shutil.copyfile(f, dst / f.name)
        return

    width = max(3, len(str(clip.n_frames - 1)))
    for i, fr in enumerate(open_clip(clip).iter_frames()):
        _encode(dst / f"{i:0{width}d}.png", fr)


def _fingerprint(clips: list[Clip], settings: InjectSettings) -> str:
    fields = asdict(settings)
    if fields["fold"] == 0:  # the sets written before folds existed keep their key
        del fields["fold"]
    h = hashlib.sha256(json.dumps({"v": INJECT_VERSION, **fields}, sort_keys=True).encode())
    for c in clips:
        h.update(source_hash(c).encode())
    return h.hexdigest()


@dataclass
class InjectResult:
    root: Path
    fit: list[str]  # clip names copied to training/frames
    held_out: list[str]  # clip names injected into testing/frames
    events: list[Event]
    scene: SceneModel
    reused: bool = False

    def format(self) -> str:
        s = self.scene
        lines = [
            f"{self.root}: {'found the same injected set (not rewritten)' if self.reused else 'wrote an injected validation set'}",
            f"  fit clips   {len(self.fit):3d}  ({', '.join(self.fit)})  -> training/frames, unchanged",
            f"  held out    {len(self.held_out):3d}  ({', '.join(self.held_out)})  -> testing/frames, with anomalies",
            f"  scene: walker height = {s.slope:.3f} * (row - {s.horizon:.1f}) px from {s.n_blobs} upright blobs; "
            f"speed {s.speed:.4f} walker heights/frame; main axis ({s.axis[0]:+.2f}, {s.axis[1]:+.2f})"
            f"{' two-way' if s.two_way else ' one-way'}",
        ]
        for e in self.events:
            lines.append(f"  clip {e.clip}: {e.kind:10s} frames {e.start}-{e.end} (0-based), {len(e.labelled)} labelled, "
                         f"{e.speed_factor:.1f}x walker speed")
        return "\n".join(lines)


def _split(clips: list[Clip], holdout: int | None, fold: int = 0) -> tuple[list[Clip], list[Clip]]:
    """(fit clips, held-out clips): the ``fold``-th block of ``holdout`` clips counted from the end is held out."""
    n = len(clips)
    if n < 2:
        raise ConfigError(f"inject needs at least 2 normal clips (one to fit on, one to hold out), got {n}")
    k = holdout if holdout is not None else max(1, n // 4)
    if k >= n:
        raise ConfigError(f"--holdout {k} leaves no clip to fit on ({n} clips)")
    end = n - fold * k
    if end - k < 0:
        raise ConfigError(f"--fold {fold} with --holdout {k} needs {(fold + 1) * k} clips, there are {n}: "
                          f"folds 0..{n // k - 1} exist")
    return clips[:end - k] + clips[end:], clips[end - k:end]


def _check_names(clips: list[Clip]) -> None:
    seen: dict[str, Path] = {}
    for c in clips:
        if c.name in seen:
            raise ConfigError(f"two clips are named {c.name!r} ({seen[c.name]} and {c.source}); give clips with distinct names")
        seen[c.name] = c.source


def inject(sources: list[str | Path], out: str | Path, settings: InjectSettings | None = None,
           preview: str | Path | None = None, log=None) -> InjectResult:
    """Write the injected validation set to ``out`` (see the module docstring). Written to a
    temporary folder beside ``out`` and renamed at the end: nothing half-written is left. An
    ``out`` that holds the same set (same sources, settings, seed) is kept; one with other
    content is refused."""
    settings = settings or InjectSettings()
    settings.check()
    out = Path(out)
    clips = source_clips(list(sources))
    _check_names(clips)
    fit, held = _split(clips, settings.holdout, settings.fold)
    key = _fingerprint(clips, settings)
    if out.exists():
        rec = out / RECORD
        if rec.is_file():
            try:
                old = json.loads(rec.read_text())
            except ValueError:
                old = {}
            if old.get("key") == key:
                if preview is not None:
                    write_preview_of(out, Path(preview))
                return _result_from_record(out, old)
        if not out.is_dir() or any(out.iterdir()):
            raise DataError(out, "exists with other content; give a new or empty folder for the injected set")

    # measure the scene on every clip (fit and held out: all normal footage)
    greys, bgs, all_frames = [], [], []
    size = None
    for c in clips:
        fr, g, bg = _read_clip(c, keep_rgb=c in held)
        if size is None:
            size = bg.shape
        elif bg.shape != size:
            raise DataError(c.source, f"frames are {bg.shape[1]}x{bg.shape[0]} but the first clip's are "
                                      f"{size[1]}x{size[0]}; inject clips of one camera and size")
        greys.append(g)
        bgs.append(bg)
        all_frames.append(fr)
    try:
        scene = measure_scene(greys, bgs)
    except DataError as exc:
        raise DataError(Path(str(sources[0])) if len(sources) == 1 else None,
                        f"{exc} (sources: {', '.join(str(x) for x in sources)})") from None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for c in fit:
            _copy_clip(c, tmp / "training" / "frames" / c.name)
        events, intervals = [], []
        for j, c in enumerate(held):
            k = clips.index(c)
            rng = np.random.default_rng([settings.seed, j])
            kind = settings.kinds[(j + settings.seed) % len(settings.kinds)]
            frames = all_frames[k].copy()
            ev, masks = _inject_clip(c, kind, frames, greys[k], bgs[k], scene, rng, settings.fps)
            events.append(ev)
            ext = _frame_ext(c)
            names = ([f.stem for f in c.frame_files] if c.frame_files is not None
                     else [f"{i:0{max(3, len(str(len(frames) - 1)))}d}" for i in range(len(frames))])
            fdir = tmp / "testing" / "frames" / c.name
            mdir = tmp / "testing" / "pixel_masks" / c.name
            fdir.mkdir(parents=True)
            mdir.mkdir(parents=True)
            labels = np.zeros(len(frames), np.uint8)
            labels[ev.labelled] = 1

            for i, name in enumerate(names):
                _encode(fdir / f"{name}{ext}", frames[i])
                ok, buf = cv2.imencode(".png", masks[i].astype(np.uint8) * 255)
                (mdir / f"{name}.png").write_bytes(buf.tobytes())
            intervals.append(labels_to_intervals(labels))
        write_mat_intervals(tmp / f"{out.name}.mat", intervals, f"MATLAB 5.0 MAT-file, written by amsrc inject v{INJECT_VERSION}")
        record = {
            "key": key, "version": INJECT_VERSION, "settings": asdict(settings),
            "sources": [str(Path(c.source).resolve()) for c in clips], "fit": [c.name for c in fit],
            "held_out": [c.name for c in held], "held_out_sources": [str(Path(c.source).resolve()) for c in held],
            "scene": asdict(scene), "events": [asdict(e) for e in events],
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        rates = [c.fps for c in clips if c.fps]
        write_dataset_file(tmp, settings.fps or (float(np.median(rates)) if rates else None), "amsrc data inject")
        (tmp / "README.txt").write_text(_readme(record))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preview is not None:
        write_preview_of(out, Path(preview))
    return InjectResult(out, [c.name for c in fit], [c.name for c in held], events, scene)


def _inject_clip(clip: Clip, kind: str, frames: np.ndarray, grey: list, bg: np.ndarray,
                 scene: SceneModel, rng: np.random.Generator, fps: float | None = None):
    """Composite one event of ``kind`` into ``frames`` (in place). Returns the event and the (T, H, W)
    bool masks."""
    n = len(frames)
    fps = fps or clip.fps or DEFAULT_FPS
    start, pos, factor, d = _schedule(kind, n, scene, rng, fps)
    if kind == "rigid":
        colour = bool(np.any(frames[0, ..., 0] != frames[0, ..., 1]) or np.any(frames[0, ..., 1] != frames[0, ..., 2]))
        sprite = rigid_object(scene, bg, rng, pos[0][1] if pos else scene.size[0] / 2, colour)
    else:
        sprite = cut_walker(frames, grey, bg, scene, rng, clip.source)
    masks = np.zeros((n, *scene.size), bool)
    original = frames.copy()
    for i, (x, y) in enumerate(pos):
        masks[start + i] = _paste(frames[start + i], bg, sprite, x, y, scene.height_at(y) / scene.height_at(sprite.row))
    area = masks.reshape(n, -1).sum(1)
    labelled = [int(t) for t in np.flatnonzero(area >= MIN_LABEL_PX)]
    end = start + max(len(pos) - 1, 0)
    # preview: a large, unoccluded view (the pasted pixels that covered a real object count against it)
    covered = np.array([(np.abs(_grey1(original[t]) - bg)[masks[t]] > FG_THRESHOLD).sum() if area[t] else 0
                        for t in range(n)])
    preview = int(np.argmax(np.where(area >= MIN_LABEL_PX, area - 4 * covered, -np.inf))) if labelled else None
    return Event(kind, clip.name, start, end, factor, (float(d[0]), float(d[1])), labelled, preview), masks


def write_preview(path: Path, original: np.ndarray, injected: np.ndarray, mask: np.ndarray) -> Path:
    """PNG: the original frame, the injected frame, and the injected frame with the mask outlined."""
    outlined = injected.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (255, 40, 40), 1)
    gap = np.full((original.shape[0], 6, 3), 255, np.uint8)
    img = np.concatenate([original, gap, injected, gap, outlined], axis=1)
    if img.shape[0] < 480:  # small frames (Ped2: 240 rows) are shown twice as large
        img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _encode(tmp.with_suffix(".png"), img)
    os.replace(tmp.with_suffix(".png"), path)
    return path


def _result_from_record(out: Path, rec: dict) -> InjectResult:
    scene = SceneModel(**{**rec["scene"], "size": tuple(rec["scene"]["size"]), "axis": tuple(rec["scene"]["axis"])})
    events = [Event(**{**e, "direction": tuple(e["direction"])}) for e in rec["events"]]
    return InjectResult(out, rec["fit"], rec["held_out"], events, scene, reused=True)


def write_preview_of(out: Path, path: Path) -> Path | None:
    """The preview of an injected set on disk: for the first event, the frame where its mask is
    largest, read from the held-out clip's source (original) and from ``out`` (injected)."""
    rec = json.loads((out / RECORD).read_text())
    test = {c.name: c for c in load_dataset(out).clips("testing")}
    for e, src in zip(rec["events"], rec["held_out_sources"]):
        if e.get("preview_frame") is None:
            continue
        t = int(e["preview_frame"])
        c = test.get(e["clip"])
        original = [x for x in source_clips([src]) if x.name == e["clip"]]
        if c is None or not original:
            raise DataError(out / RECORD, f"event of clip {e['clip']} has no injected clip or source ({src}) to preview")
        return write_preview(path, open_clip(original[0]).read(t), open_clip(c).read(t), c.masks.read(t))
    return None


def _readme(rec: dict) -> str:
    s = rec["scene"]
    lines = [
        "Injected validation set written by `amsrc data inject` (amsrc.data.inject).",
        "",
        "training/frames: the fit clips, unchanged. testing/frames: held-out normal clips with",
        "pseudo-anomalies composited in; labels in the .mat file (gt, 1-based inclusive intervals),",
        "masks in testing/pixel_masks (same numbering as the frames). Every anomaly is synthetic;",
        "no test label of any dataset was used.",
        "",
        f"seed {rec['settings']['seed']}, kinds {', '.join(rec['settings']['kinds'])}",
        f"scene: walker height = {s['slope']:.3f} * (row - {s['horizon']:.1f}); speed {s['speed']:.4f} heights/frame",
        "",
        "events (frames 0-based):",
    ]
    for e in rec["events"]:
        lines.append(f"  {e['clip']}: {e['kind']} frames {e['start']}-{e['end']}, {len(e['labelled'])} labelled, "
                     f"{e['speed_factor']:.2f}x walker speed")
    return "\n".join(lines) + "\n"
