"""Box and flow quality on a dataset with pixel masks (e.g. real UCSD Ped2). Not run in tests.

    python benchmarks/box_quality.py [ROOT] [--preset ped2] [--threads 1]
    python benchmarks/box_quality.py ROOT --fit-perspective     # the size model's numbers, from training
    python benchmarks/box_quality.py ROOT --flow-table [--val VAL --out runs/flows]   # flow methods: error, speed (velocity)
    python benchmarks/box_quality.py --sources --val VAL --out runs/boxes   # box sources, val then test
    python benchmarks/box_quality.py --sources --val VAL --only mdiff      # only the sources named so
    python benchmarks/box_quality.py SCENE --preset avenue --methods diff,bg   # box methods on a validation scene

Default run: streams every clip of every split through the preset's flow and box detector (the
same calls as ``CubeExtractor.push``) and prints, per split, boxes per frame, box area median /
p90 / p99 / max (pixels, margin included), ms per frame for flow and for boxes, and where pixel
masks exist the box recall: an anomalous object (a mask component >= 20 px) is found when its
bounding box is >= 50% covered by the union of the frame's boxes. Frame 0 of a clip has no
previous frame, so no boxes; recall is given over frames t >= 1 and over all frames.

``--fit-perspective`` fits the ground-plane size model of ``BoxConfig.split_*`` on the TRAINING
split only: boxes with cutting off and no margin, kept when isolated (no other box within 10 px)
and upright (0.3 <= w/h <= 0.75, a single walker); a median (quantile 0.5) linear regression of
box height on the box's bottom row gives ``height = slope * (row - horizon)``.

``--sources`` compares box sources (``SOURCES``: the preset's boxes with a few fields replaced). Each
is prepared (2 workers) on the injected validation set ``--val`` (`amsrc data inject ROOT --holdout 4
--seed 0 --fps 10`) and on ROOT; per set it reports the box recall of the labelled objects, boxes per
frame, the share of the boxes on a labelled object that hold less than half of its mask pixels
(fragments: a head, a wheel; ``amsrc.prepare.recall.fragment_counts``), prepare frames/s, the
``velocity`` and ``copy-last`` baselines (frame micro AUROC raw, and with a
Gaussian of sigma 3 with the first 4 frames of each clip left out) and, on the validation set only,
the coverage of the moving pixels of its NORMAL frames from frame 4 on (|I_t - I_t-1| > 18 after a
2x2 opening: the share inside a box), a recall with no labels. The validation columns are what chooses; ROOT's test
columns are read to report.

``--methods`` keeps every box setting of ``--preset`` and replaces only ``method``, each prepared on ROOT,
where ROOT is itself a validation scene (a synthetic one of another size, `amsrc data synth S --seed 1
--size 640x360`): the same columns as ``--sources``, on ROOT's test split. It is how a preset with no
data at hand (``avenue``; the fit-time settings, whose box settings are the same at 640x360) is checked.

``--flow-table`` compares the flows of ``FLOWS``: endpoint error (EPE, px) on textured patches of two
sizes moving at six known speeds over a real background frame, the flow magnitude on the still ground
within 9 px of a patch (true flow 0: what a box around a moving object averages in), and the warp
error on real pairs (grey levels: |I_t-1(x) - I_t(x + flow(x))| on pixels that changed by more than
18), with ms per pair. With ``--val`` each flow (TV-L1 excepted: ~1 s a pair) is also prepared with
the preset's boxes on the validation set and on ROOT, for the ``velocity`` AUROC (as ``--sources``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "ped2"


def _grey(frame_rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)  # as CubeExtractor.push


def _iter_grey(clip):
    from amsrc.data.readers import open_clip

    reader = open_clip(clip)
    for frame in reader.iter_frames():
        yield _grey(frame)


def _background(index, cfg):
    """Box method "bg": the background learned from the training split, as `amsrc prepare` learns it."""
    from amsrc.prepare.background import needs_background, training_background

    return training_background(index, cfg) if needs_background(cfg) else None


def run_boxes(index, preset, splits, max_clips=None) -> dict:
    from amsrc.prepare.boxes import make_box_detector
    from amsrc.prepare.flow import make_flow
    from amsrc.prepare.recall import box_recall_frame

    flow = make_flow(preset.prepare.flow)
    det = make_box_detector(preset.prepare.boxes, _background(index, preset.prepare.boxes))
    out = {}
    for split in splits:
        clips = index.clips(split)[:max_clips]
        areas, per_frame = [], []
        t_flow = t_box = 0.0
        n_pairs = 0
        rec = {"objects": 0, "found": 0, "objects_frame0": 0, "anom_frames": 0, "anom_frames_all_found": 0}
        for clip in clips:
            det.reset()
            prev = None
            for t, grey in enumerate(_iter_grey(clip)):
                boxes = np.zeros((0, 4), np.int32)
                if prev is not None:
                    t0 = time.perf_counter()
                    f = flow(prev, grey)
                    t1 = time.perf_counter()
                    boxes = det(prev, grey, f)
                    t2 = time.perf_counter()
                    t_flow += t1 - t0
                    t_box += t2 - t1
                    n_pairs += 1
                    per_frame.append(len(boxes))
                    areas.append((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
                if clip.masks is not None:
                    found, n = box_recall_frame(clip.masks.read(t), boxes)
                    if t == 0:
                        rec["objects_frame0"] += n
                    rec["objects"] += n
                    rec["found"] += found
                    if n:
                        rec["anom_frames"] += 1
                        rec["anom_frames_all_found"] += int(found == n)
                prev = grey
        a = np.concatenate(areas) if areas else np.zeros(0)
        r = {
            "clips": len(clips),
            "frames_with_boxes_run": n_pairs,
            "boxes_per_frame": float(np.mean(per_frame)) if per_frame else 0.0,
            "area_median": float(np.median(a)) if a.size else 0.0,
            "area_p90": float(np.percentile(a, 90)) if a.size else 0.0,
            "area_p99": float(np.percentile(a, 99)) if a.size else 0.0,
            "area_max": int(a.max()) if a.size else 0,
            "boxes_over_5000px": int((a > 5000).sum()),
            "ms_flow": 1000 * t_flow / max(n_pairs, 1),
            "ms_boxes": 1000 * t_box / max(n_pairs, 1),
        }
        if rec["objects"]:
            n1 = rec["objects"] - rec["objects_frame0"]
            r["recall_objects_t>=1"] = rec["found"] / max(n1, 1)
            r["recall_objects_all"] = rec["found"] / rec["objects"]
            r["anomalous_frames_all_found"] = rec["anom_frames_all_found"] / rec["anom_frames"]
            r["objects"] = rec["objects"]
            r["objects_frame0"] = rec["objects_frame0"]
        out[split] = r
    return out


def fit_perspective(index, preset) -> dict:
    """Median regression of isolated upright box heights on their bottom row, training split."""
    import dataclasses

    from sklearn.linear_model import QuantileRegressor

    from amsrc.prepare.boxes import make_box_detector

    cfg = dataclasses.replace(preset.prepare.boxes, split_horizon=None, margin=0)
    det = make_box_detector(cfg, _background(index, cfg))
    heights, rows = [], []
    frame_h = None
    for clip in index.clips("training"):
        det.reset()
        prev = None
        for grey in _iter_grey(clip):
            frame_h = grey.shape[0]
            if prev is not None:
                b = det(prev, grey, None).astype(np.int64)
                for i in range(len(b)):
                    o = np.delete(b, i, 0)
                    if len(o):
                        gx = np.maximum(0, np.maximum(o[:, 0] - b[i, 2], b[i, 0] - o[:, 2]))
                        gy = np.maximum(0, np.maximum(o[:, 1] - b[i, 3], b[i, 1] - o[:, 3]))
                        if np.maximum(gx, gy).min() < 10:
                            continue
                    w, h = b[i, 2] - b[i, 0], b[i, 3] - b[i, 1]
                    if h >= 8 and 0.3 <= w / h <= 0.75:
                        heights.append(h)
                        rows.append(b[i, 3])
            prev = grey
    y, h = np.asarray(rows, float), np.asarray(heights, float)
    m = QuantileRegressor(quantile=0.5, alpha=0.0, solver="highs").fit(y[:, None], h)
    slope, icpt = float(m.coef_[0]), float(m.intercept_)
    horizon = -icpt / slope
    return {
        "boxes_used": int(len(h)),
        "slope": slope,
        "horizon_row": horizon,
        "horizon_frac": horizon / frame_h,
        "frame_height": frame_h,
        "median_height_by_row": {
            f"{lo}-{lo + 20}": float(np.median(h[(y >= lo) & (y < lo + 20)]))
            for lo in range(0, frame_h, 20)
            if ((y >= lo) & (y < lo + 20)).sum() >= 20
        },
    }


FLOWS = {  # name -> FlowConfig fields; "fine" is OpenCV's ultrafast one pyramid level finer
    "dis-ultrafast": {"dis_preset": "ultrafast"},
    "dis-fast": {"dis_preset": "fast"},
    "dis-medium": {"dis_preset": "medium"},
    "dis-fine": {"dis_preset": "fine"},
    "dis-fine refine 1": {"dis_preset": "fine", "dis_refine": 1},
    "dis-fine refine 3": {"dis_preset": "fine", "dis_refine": 3},
    "dis-fine refine 5": {"dis_preset": "fine", "dis_refine": 5},
    "dis-fine refine 10": {"dis_preset": "fine", "dis_refine": 10},
    "dis-fine 2x": {"dis_preset": "fine", "scale": 2.0},
    "dis-fine refine 5 2x": {"dis_preset": "fine", "dis_refine": 5, "scale": 2.0},
    "farneback": {"method": "farneback"},
    "tvl1": {"method": "tvl1"},
}
SLOW_FLOWS = ("tvl1",)  # about 1 s per pair: endpoint and warp error only, on 8 pairs


def flow_cases(bg: np.ndarray):
    """Textured patches (a small, top-of-frame walker size and a large one) moving at six known speeds
    over a real frame: (frame a, frame b, region of the patch in a, dx, dy, patch height)."""
    import cv2

    H, W = bg.shape
    cases = []
    speeds = [(3, 1), (1.5, -0.5), (0.5, 0.5), (6, 2), (-9, 3), (2, -4)]
    for k, (dx, dy) in enumerate(speeds):
        for ph, pw, fx, fy in ((30, 15, 0.28, 0.25), (60, 30, 0.55, 0.62)):
            rng = np.random.default_rng(k)
            p = cv2.GaussianBlur(rng.integers(0, 255, (ph, pw)).astype(np.uint8), (0, 0), 1.5)
            p = cv2.normalize(p, None, 30, 220, cv2.NORM_MINMAX).astype(np.float32)
            x0, y0 = int(fx * W), int(fy * H)
            big = np.zeros((H, W), np.float32)
            alpha = np.zeros((H, W), np.float32)
            big[y0 : y0 + ph, x0 : x0 + pw] = p
            alpha[y0 : y0 + ph, x0 : x0 + pw] = 1
            a = (bg * (1 - alpha) + big).astype(np.uint8)
            M = np.float32([[1, 0, dx], [0, 1, dy]])
            bw, aw = cv2.warpAffine(big, M, (W, H)), cv2.warpAffine(alpha, M, (W, H))
            b = (bg * (1 - aw) + bw).round().clip(0, 255).astype(np.uint8)
            cases.append((a, b, alpha > 0, dx, dy, ph))
    return cases


def flow_table(index, n_pairs=60, names=None) -> list[dict]:
    """Per flow of ``FLOWS``: endpoint error on known motion, error on the still ground around it, warp
    error on real pairs, ms per pair."""
    import cv2

    from amsrc.config import FlowConfig
    from amsrc.prepare.flow import make_flow

    clips = index.clips("testing") or index.clips("training")
    bg = next(_iter_grey(index.clips("training")[0] if index.clips("training") else clips[0]))
    H, W = bg.shape
    cases = flow_cases(bg)
    ring = np.ones((9, 9), np.uint8)
    pairs = []
    for clip in clips:
        frames = list(_iter_grey(clip))
        step = max(1, len(frames) // 6)
        pairs += [(frames[i - 1], frames[i]) for i in range(1, len(frames), step)]
    pairs = pairs[:n_pairs]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    rows = []
    for name in names or FLOWS:
        fl = make_flow(FlowConfig(threads=1, **FLOWS[name]))
        eps, epl, still = [], [], []
        for a, b, reg, dx, dy, ph in cases:
            f = fl(a, b)
            e = float(np.hypot(f[..., 0] - dx, f[..., 1] - dy)[reg].mean())
            (eps if ph == 30 else epl).append(e)
            # the still ground within 9 px of the patch at t-1 and t: true flow 0
            moved = cv2.warpAffine(reg.astype(np.uint8), np.float32([[1, 0, dx], [0, 1, dy]]), (W, H)) > 0
            near = (cv2.dilate((reg | moved).astype(np.uint8), ring) > 0) & ~reg & ~moved
            still.append(float(np.hypot(f[..., 0], f[..., 1])[near].mean()))
        use = pairs if name not in SLOW_FLOWS else pairs[:8]
        t_best = float("inf")
        for _rep in range(1 if name in SLOW_FLOWS else 3):
            t0 = time.perf_counter()
            flows = [fl(a, b) for a, b in use]
            t_best = min(t_best, (time.perf_counter() - t0) / len(use))
        warp = []
        for (a, b), f in zip(use, flows):
            w = cv2.remap(b, gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            m = cv2.absdiff(a, b) > 18
            if m.any():
                warp.append(float(np.abs(w.astype(np.float32) - a)[m].mean()))
        rows.append({
            "method": name,
            "fields": FLOWS[name],
            "epe_small_patch": float(np.mean(eps)),
            "epe_large_patch": float(np.mean(epl)),
            "epe_max": float(max(eps + epl)),
            "still_ground": float(np.mean(still)),
            "warp_error": float(np.mean(warp)),
            "pairs": len(use),
            "ms_per_pair": 1000 * t_best,
        })
    zero = [float(np.mean(np.abs(b.astype(np.float32) - a)[cv2.absdiff(a, b) > 18])) for a, b in pairs]
    rows.append({"method": "(zero flow)", "fields": {}, "epe_small_patch": float(np.mean([np.hypot(c[3], c[4]) for c in cases])),
                 "epe_large_patch": float("nan"), "epe_max": float("nan"), "still_ground": 0.0,
                 "warp_error": float(np.mean(zero)), "pairs": len(pairs), "ms_per_pair": 0.0})
    return rows


def _preset_with(preset_name: str, section: str, fields: dict):
    """The named preset with ``fields`` of its prepare section ("boxes" or "flow") replaced."""
    from amsrc.config import get_preset

    preset = get_preset(preset_name)
    for k, v in fields.items():
        setattr(getattr(preset.prepare, section), k, v)
    return preset


def flow_velocity(root: Path, vals: list[Path], preset_name: str, out: Path, names) -> dict:
    """Per flow: the preset's boxes prepared with it on the validation sets and on ROOT; velocity AUROC."""
    rows = {}
    for name in names:
        if name in SLOW_FLOWS:
            continue
        preset = _preset_with(preset_name, "flow", FLOWS[name])
        rows[name] = {"val": _val_rows(vals, preset, out, False), "test": _source_row(root, preset, out / "test", False)}
        v = rows[name]
        print(f"velocity with {name}: val {100 * v['val']['mean']['velocity']['smoothed_drop4']:.1f} (sets: "
              + ", ".join(f"{100 * r['velocity']['smoothed_drop4']:.1f}" for r in v["val"]["sets"].values())
              + f"), test recall {v['test']['recall']:.4f}, raw {100 * v['test']['velocity']['raw']:.1f}, "
              f"smoothed {100 * v['test']['velocity']['smoothed_drop4']:.1f}", flush=True)
    return rows


SOURCES = {  # name -> BoxConfig fields replaced in the preset's boxes
    "diff 3x9": {"method": "diff", "close_w": 3, "close_h": 9, "edge_min_side": 0},
    "bg 3x9, edges kept (the ped2 preset)": {"method": "bg", "close_w": 3, "close_h": 9, "edge_min_side": 0},
    "bg+diff 3x9, edges kept": {"method": "bg+diff", "close_w": 3, "close_h": 9, "edge_min_side": 0},
    "mdiff 3x9": {"method": "mdiff", "close_w": 3, "close_h": 9, "edge_min_side": 0},
    "bg+mdiff 3x9": {"method": "bg+mdiff", "close_w": 3, "close_h": 9, "edge_min_side": 0},
    "bg 3x9, persist 1": {"method": "bg", "close_w": 3, "close_h": 9, "edge_min_side": 0, "persist": 1},
    "bg 3x9, persist 2": {"method": "bg", "close_w": 3, "close_h": 9, "edge_min_side": 0, "persist": 2},
    "bg+diff 3x9, persist 2": {"method": "bg+diff", "close_w": 3, "close_h": 9, "edge_min_side": 0, "persist": 2},
    "bg 3x9, no size cap": {"method": "bg", "close_w": 3, "close_h": 9, "edge_min_side": 0, "split_horizon": None},
}


def _motion_coverage(store, index, split: str = "testing") -> float:
    """Share of the moving pixels of the normal frames of ``split`` (from frame 4 on) that lie in a box."""
    import cv2

    from amsrc.prepare.cubes import T_APPEARANCE

    inside_n = moving_n = 0
    kernel = np.ones((2, 2), np.uint8)
    for clip in index.clips(split):
        c = store.load(split, clip.name)
        prev = None
        for t, grey in enumerate(_iter_grey(clip)):
            if t >= T_APPEARANCE - 1 and not c.labels[t]:  # frames 0-3 hold no cubes, so no boxes
                m = cv2.morphologyEx((cv2.absdiff(prev, grey) > 18).astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
                inside = np.zeros_like(m)
                for x0, y0, x1, y1 in np.asarray(c.boxes[c.offsets[t]:c.offsets[t + 1]]):
                    inside[y0:y1, x0:x1] = True
                inside_n += int((m & inside).sum())
                moving_n += int(m.sum())
            prev = grey
    return inside_n / max(moving_n, 1)


def _fragments(store, index, split: str = "testing") -> dict:
    """Boxes of ``split`` lying on an anomalous object (holding >= 20 of its mask pixels), and the share
    of them holding less than half of that object's pixels (fragments: a head, a wheel), from frame 4 on."""
    from amsrc.prepare.recall import fragment_counts

    frag = on = 0
    for clip in index.clips(split):
        if clip.masks is None:
            continue
        c = store.load(split, clip.name)
        for t in np.flatnonzero(c.offsets[1:] > c.offsets[:-1]):
            f, o = fragment_counts(np.asarray(clip.masks.read(int(t))), c.boxes[c.offsets[t]:c.offsets[t + 1]])
            frag += f
            on += o
    return {"boxes_on_objects": on, "fragment_share": frag / on if on else float("nan")}


def _source_row(root: Path, preset, out: Path, coverage: bool) -> dict:
    from amsrc.config import ScoreConfig
    from amsrc.data.layouts import load_dataset
    from amsrc.eval.baselines import BaselineScorer
    from amsrc.eval.evaluate import PAPER_DROP
    from amsrc.eval.metrics import micro_auroc
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore
    from amsrc.scoring import smooth

    index = load_dataset(root)
    rep = prepare_dataset(index, preset.prepare, out, workers=2, progress=False, preset_name=preset.name)
    store = CubeStore.open(out)
    rec = rep.recall or {}
    row = {"recall": rec.get("found", 0) / max(rec.get("objects", 0), 1), "objects": rec.get("objects", 0),
           "frames_per_s": rep.frames_built / max(rep.build_seconds, 1e-9)}
    n_cubes = sum(store.load("testing", c).n_cubes for c in store.clips("testing"))
    row["boxes_per_frame"] = n_cubes / sum(store.load("testing", c).n_frames for c in store.clips("testing"))
    cfg = ScoreConfig(smoothing="gaussian", gaussian_sigma=3.0)
    for name in ("velocity", "copy-last"):
        clips = BaselineScorer(name, cfg).fit(store).score_store(store, "testing")
        # smoothed over the whole clip, then its first PAPER_DROP frames left out (the target metric)
        smoothed = [smooth(c.frame_raw, cfg)[PAPER_DROP:] for c in clips]
        row[name] = {"raw": micro_auroc([c.frame_raw for c in clips], [c.labels for c in clips]),
                     "smoothed_drop4": micro_auroc(smoothed, [c.labels[PAPER_DROP:] for c in clips])}
    row.update(_fragments(store, index))
    if coverage:
        row["motion_coverage"] = _motion_coverage(store, index)
    return row


def _val_rows(vals: list[Path], preset, out: Path, coverage: bool) -> dict:
    """``_source_row`` on each validation set, and their mean (key "mean": what chooses)."""
    sets = {str(v): _source_row(v, preset, out / f"val{i}", coverage) for i, v in enumerate(vals)}

    def mean(rows):
        if isinstance(rows[0], dict):
            return {k: mean([r[k] for r in rows]) for k in rows[0]}
        return float(np.mean(rows))

    return {"mean": mean(list(sets.values())), "sets": sets}


def compare_sources(root: Path, vals: list[Path], preset_name: str, out: Path, names: list[str] | None = None) -> dict:
    rows = {}
    for name, fields in SOURCES.items():
        if names is not None and name not in names:
            continue
        preset = _preset_with(preset_name, "boxes", fields)
        rows[name] = {"fields": fields, "val": _val_rows(vals, preset, out, True),
                      "test": _source_row(root, preset, out / "test", False)}
        r = rows[name]
        v = r["val"]["mean"]
        print(f"| {name} | {v['recall']:.3f} | {v['motion_coverage']:.3f} | {v['fragment_share']:.3f} | "
              f"{v['boxes_per_frame']:.2f} | "
              f"{100 * v['velocity']['smoothed_drop4']:.1f} | {100 * v['copy-last']['smoothed_drop4']:.1f} | "
              f"{r['test']['recall']:.4f} | {r['test']['fragment_share']:.3f} | {r['test']['boxes_per_frame']:.2f} | "
              f"{r['test']['frames_per_s']:.0f} | "
              f"{100 * r['test']['velocity']['raw']:.1f} | {100 * r['test']['velocity']['smoothed_drop4']:.1f} | "
              f"{100 * r['test']['copy-last']['smoothed_drop4']:.1f} |", flush=True)
    return rows


def compare_methods(root: Path, preset_name: str, methods: list[str], out: Path) -> dict:
    """``_source_row`` on ROOT (a validation scene) for the preset's boxes with each ``method``."""
    rows = {}
    for m in methods:
        r = rows[m] = _source_row(root, _preset_with(preset_name, "boxes", {"method": m}), out / m.replace("+", "_"), True)
        print(f"| {m} | {r['recall']:.4f} | {r['motion_coverage']:.3f} | {r['fragment_share']:.3f} | "
              f"{r['boxes_per_frame']:.2f} | {r['frames_per_s']:.0f} | {100 * r['velocity']['raw']:.1f} | "
              f"{100 * r['velocity']['smoothed_drop4']:.1f} | {100 * r['copy-last']['smoothed_drop4']:.1f} |", flush=True)
    return rows


def picture(index, preset, clip_name: str, t: int, path: Path) -> dict:
    """The box pipeline on frame ``t`` of test clip ``clip_name`` in one PNG: the background learned from
    the training frames, the foreground mask after the closing, and the frame with its boxes (red: a box
    holding an anomalous object by the pixel masks, green: the others; the masks outlined in yellow)."""
    import cv2

    from amsrc.data.readers import open_clip
    from amsrc.prepare.boxes import make_box_detector
    from amsrc.prepare.flow import make_flow
    from amsrc.prepare.recall import box_labels

    clip = next((c for c in index.clips("testing") if c.name == clip_name), None)
    if clip is None:
        raise SystemExit(f"--picture: no test clip {clip_name!r} in {index.root}")
    cfg = preset.prepare.boxes
    bg = _background(index, cfg)
    flow, det = make_flow(preset.prepare.flow), make_box_detector(cfg, bg)
    prev = None
    for i, rgb in enumerate(open_clip(clip).iter_frames()):
        grey = _grey(rgb)
        if prev is not None:
            f = flow(prev, grey)
            mask = det.foreground(prev, grey, f)
            boxes = det.boxes_of(mask)
        if i == t:
            break
        prev = grey
    else:
        raise SystemExit(f"--picture: clip {clip_name} has no frame {t}")
    if prev is None:
        raise SystemExit("--picture: frame 0 has no previous frame, so no boxes; pick t >= 1")
    gt = clip.masks.read(t) if clip.masks is not None else np.zeros(grey.shape, np.uint8)
    labels = box_labels(gt, boxes)
    scale = 2  # Ped2 frames are 240x360: drawn 2x so the lines and labels read
    up = lambda img: cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    left = up(cv2.cvtColor(bg if bg is not None else grey, cv2.COLOR_GRAY2BGR))
    middle = up(cv2.cvtColor(mask * 255, cv2.COLOR_GRAY2BGR))
    right = up(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    contours, _ = cv2.findContours(up((gt != 0).astype(np.uint8)), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(right, contours, -1, (0, 220, 255), 1)
    for (x0, y0, x1, y1), lab in zip(boxes.tolist(), labels):
        cv2.rectangle(right, (x0 * scale, y0 * scale), (x1 * scale - 1, y1 * scale - 1), (0, 0, 255) if lab else (0, 200, 0), 2)
    titles = ("background B (median of training frames)", f"|I_t - B| > {cfg.bg_threshold:g}, closed {cfg.close_w}x{cfg.close_h}"
              if "bg" in cfg.method else f"motion mask ({cfg.method}), closed {cfg.close_w}x{cfg.close_h}",
              f"boxes of clip {clip_name} frame {t} (0-based): {len(boxes)}")
    panels = []
    for img, title in zip((left, middle, right), titles):
        band = np.full((28, img.shape[1], 3), 255, np.uint8)
        cv2.putText(band, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.vstack([band, img]))
    sep = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    out = np.hstack([panels[0], sep, panels[1], sep, panels[2]])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), out, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"--picture: could not write {path}")
    return {"picture": str(path), "clip": clip_name, "frame": t, "boxes": len(boxes), "anomalous_boxes": int(labels.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="dataset root (default: ../shared/data/ped2)")
    ap.add_argument("--preset", default="ped2")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    ap.add_argument("--splits", default="training,testing")
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--fit-perspective", action="store_true")
    ap.add_argument("--flow-table", action="store_true")
    ap.add_argument("--no-tvl1", action="store_true", help="skip TV-L1 in --flow-table (about 1 s per pair)")
    ap.add_argument("--flows", default=None, help="with --flow-table: comma-separated names of FLOWS (default: all)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--sources", action="store_true", help="compare the box sources of SOURCES (needs --val)")
    ap.add_argument("--val", action="append", default=None,
                    help="with --sources (needed) or --flow-table (adds the velocity columns): an injected validation set "
                    "(amsrc data inject); give it several times (other --seed) and the validation columns are their mean")
    ap.add_argument("--out", default="runs/boxes", help="with --sources: where the cube stores go (reused)")
    ap.add_argument("--only", action="append", default=None,
                    help="with --sources: only the sources whose name holds this text (repeatable)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated box methods: the preset's boxes with only the method replaced, on ROOT (a "
                    "validation scene); stores under --out")
    ap.add_argument("--picture", default=None, help="write the box pipeline on one test frame to this PNG")
    ap.add_argument("--picture-frame", default="02:100", help="with --picture: CLIP:T, a test clip and a 0-based frame")
    args = ap.parse_args(argv)
    if args.methods:
        from amsrc.config import BoxConfig
        from amsrc.errors import ConfigError
        from amsrc.prepare.boxes import make_box_detector

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in methods:
            try:  # a stand-in background: only the settings are checked here
                make_box_detector(BoxConfig(method=m), np.zeros((8, 8), np.uint8))
            except ConfigError as e:  # the library's own message names the bad method
                ap.error(f"--methods: {e}")
        print("| method | recall | motion coverage | fragments | boxes/frame | prepare frames/s | velocity raw | "
              "velocity | copy-last |")
        print("|---" * 9 + "|")
        rows = compare_methods(Path(args.root), args.preset, methods, Path(args.out))
        if args.json:
            from amsrc.utils import write_json_atomic

            write_json_atomic(args.json, {"root": args.root, "preset": args.preset, "methods": rows})
        return 0
    if args.sources:
        if not args.val:
            ap.error("--sources needs --val (an injected validation set)")
        print("| source | val recall | val motion coverage | val fragments | val boxes/frame | val velocity | val copy-last | "
              "test recall | test fragments | test boxes/frame | prepare frames/s | test velocity raw | test velocity | "
              "test copy-last |")
        print("|---" * 14 + "|")
        names = None
        if args.only:
            names = [n for n in SOURCES if any(o in n for o in args.only)]
            if not names:
                ap.error(f"--only {args.only}: no source of SOURCES matches ({'; '.join(SOURCES)})")
        rows = compare_sources(Path(args.root), [Path(v) for v in args.val], args.preset, Path(args.out), names)
        if args.json:
            from amsrc.utils import write_json_atomic

            write_json_atomic(args.json, {"sources": rows})
        return 0

    import cv2

    from amsrc.config import get_preset
    from amsrc.data.layouts import load_dataset

    cv2.setNumThreads(args.threads)
    preset = get_preset(args.preset)
    preset.prepare.flow.threads = args.threads
    index = load_dataset(Path(args.root))
    result: dict = {"root": args.root, "preset": args.preset, "threads": args.threads}

    if args.picture:
        clip_name, t = args.picture_frame.rsplit(":", 1)
        result["picture"] = picture(index, preset, clip_name, int(t), Path(args.picture))
        print(result["picture"])
    elif args.flow_table:
        names = [n for n in FLOWS if not (args.no_tvl1 and n in SLOW_FLOWS)]
        if args.flows:
            names = [n.strip() for n in args.flows.split(",")]
            unknown = [n for n in names if n not in FLOWS]
            if unknown:
                ap.error(f"--flows: unknown {unknown}; FLOWS has {list(FLOWS)}")
        rows = flow_table(index, names=names)
        result["flow_table"] = rows
        vel = flow_velocity(Path(args.root), [Path(v) for v in args.val], args.preset, Path(args.out), names) if args.val else {}
        result["flow_velocity"] = vel
        print("| flow | EPE small patch | EPE large patch | EPE max | still ground | warp error | ms/pair |"
              + (" val velocity | test recall | test velocity raw | test velocity |" if vel else ""))
        print("|---" * (7 + 4 * bool(vel)) + "|")
        for r in rows:
            line = (f"| {r['method']} | {r['epe_small_patch']:.3f} | {r['epe_large_patch']:.3f} | {r['epe_max']:.2f} | "
                    f"{r['still_ground']:.3f} | {r['warp_error']:.2f} | {r['ms_per_pair']:.2f} |")
            v = vel.get(r["method"])
            if v:
                line += (f" {100 * v['val']['mean']['velocity']['smoothed_drop4']:.1f} | {v['test']['recall']:.4f} | "
                         f"{100 * v['test']['velocity']['raw']:.1f} | {100 * v['test']['velocity']['smoothed_drop4']:.1f} |")
            elif vel:
                line += " | | | |"
            print(line, flush=True)
    elif args.fit_perspective:
        r = fit_perspective(index, preset)
        result["perspective"] = r
        print(f"isolated upright training boxes: {r['boxes_used']}")
        print(f"median height by bottom row: {r['median_height_by_row']}")
        print(f"fit: height = {r['slope']:.3f} * (row - {r['horizon_row']:.1f})   "
              f"-> split_slope={r['slope']:.3f}, split_horizon={r['horizon_frac']:.3f}")
    else:
        t0 = time.perf_counter()
        res = run_boxes(index, preset, [s for s in args.splits.split(",") if index.clips(s)], args.max_clips)
        result["boxes"] = res
        b = preset.prepare.boxes
        print(f"preset {args.preset}: flow {preset.prepare.flow.method}/{preset.prepare.flow.dis_preset}, boxes "
              f"{b.method} thr {b.threshold} close {b.close_w}x{b.close_h} min_area {b.min_area} margin {b.margin} "
              f"split {'off' if b.split_horizon is None else f'horizon {b.split_horizon} slope {b.split_slope}'}")
        for split, r in res.items():
            line = (f"{split:9s} boxes/frame {r['boxes_per_frame']:.2f}  area median {r['area_median']:.0f} "
                    f"p90 {r['area_p90']:.0f} p99 {r['area_p99']:.0f} max {r['area_max']}  (>5000 px: "
                    f"{r['boxes_over_5000px']})  ms/frame flow {r['ms_flow']:.2f} boxes {r['ms_boxes']:.2f}")
            print(line)
            if "objects" in r:
                print(f"{'':9s} recall {r['recall_objects_t>=1']:.4f} of objects in frames t>=1 "
                      f"({r['objects'] - r['objects_frame0']}), {r['recall_objects_all']:.4f} of all {r['objects']} "
                      f"({r['objects_frame0']} in frame 0, no boxes there); anomalous frames with all objects "
                      f"found {r['anomalous_frames_all_found']:.4f}")
        print(f"wall {time.perf_counter() - t0:.1f} s")
    if args.json:
        from amsrc.utils import write_json_atomic

        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
