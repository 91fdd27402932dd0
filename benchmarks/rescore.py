"""Other score rules on the folds' trained networks, with no training: how the cues are standardised and
combined, compared on the injected folds of `benchmarks/folds.py`.

    python benchmarks/rescore.py --out runs/folds --recipe speed --probe brisk

For each fold of ``OUT`` (``OUT/fold<k>``, written by `benchmarks/folds.py`), the model ``train_RECIPE``
scores every training object (S_m measured against the memory entries of the other clips, as training
measures it for the model's statistics), the fold's injected clips and each ``--probe`` set. The cues
and boxes are kept in ``OUT/fold<k>/cues_RECIPE.npz`` (reused). Then each rule of ``RULES`` turns the
three cues into an object score, learned from the training objects alone; the frame score is the max
over the counted objects (the model's frame rule, its border rule included), smoothed with a Gaussian
of sigma 3 per clip. Printed: per rule, the mix's micro AUROC raw and smoothed on the fold's injected
clips, the smoothed AUROC of each kind's frames against the normal frames, the mean of those kinds'
columns (the folds' choice rule), and the same mean for S_p and for S_f scored alone under the rule. Mean over the
folds, AUROC x100. The rule ``z`` is the model's own score (mean and std of each cue, the preset's
weights): its row repeats `folds.py`'s. No test label is read.

Rules: ``z``; ``tailQ``: (cue - median) / (Q-th percentile - median); ``cdf``: -log of the share of
training objects at or above the cue (beyond the largest, continued linearly in units of the std);
``zmax``: the max of the weighed cues' z instead of their weighted sum; ``FEATn``: each cue's mean and std
per quantile bin (n bins over the training objects) of the box's height, bottom row or area, so an
object is compared with training objects of its size or place (``FEATn S_x``: that cue only);
``RULE pooled-S_f``: the rule with S_f measured on the bottlenecks pooled over positions (1 - cos of the
(w3,) means of the standardised x and y; the network issue's "cosine on pooled vs flattened"), cached
beside the cues. A frame with no object scores as an object whose three cues are 0 (the median
training box for the binned rules).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CUES = ("s_f", "s_p", "s_m")
POOLED = " pooled-S_f"  # a rule's suffix: S_f measured on the pooled bottlenecks (pooled_sf)
RULES = ("z", "tail99.9", "tail99", "tail95", "cdf", "zmax", "height4", "height8", "row4", "row8", "area8",
         "height4 S_p", "height8 S_p", "row4 S_p", "height4 S_f", "z" + POOLED)


def dump_cues(fold: Path, recipe: str, probes: list[str]) -> dict[str, np.ndarray]:
    """Every object's cues and box under ``fold/train_RECIPE/model.pt``: the training objects (``train/...``)
    and the injected clips of the fold (``val/CLIP/...``) and of each probe (``PROBE/CLIP/...``)."""
    import torch

    from amsrc.detector import AMSRC
    from amsrc.prepare.store import CubeStore
    from amsrc.scoring import motion_rarity, object_scores
    from amsrc.training.loop import CubeSet, memory_groups, memory_indices, network_speeds, with_speed

    det = AMSRC.load(fold / f"train_{recipe}" / "model.pt")
    model, p, st = det.model_, det.preset_, det.train_stats_
    store = CubeStore.open(fold / "cubes")
    clips = [store.load("training", n) for n in store.clips("training")]
    clips = [c for c in clips if len(c.frames)]
    cubes = CubeSet([(c.appearance, c.flow) for c in clips], channels=p.prepare.channels, cube_size=p.prepare.cube_size)
    f, q, keys = [], [], []
    for a, fl in cubes.ranges(0, len(cubes)):
        sc = object_scores(model, a, fl, p.model.flow_scale, keep_m=True)
        f.append(sc.s_f)
        q.append(sc.s_p)
        keys.append(sc.m if st.speed_key is None else with_speed(sc.m, network_speeds(fl, p.model.flow_scale),
                                                                 st.speed_key))
    key = np.concatenate(keys).astype(np.float32)
    bank = np.asarray(det.motion_bank_, dtype=np.float32)
    groups = memory_groups(cubes)
    pick = memory_indices(len(key), p.train.bank_size, p.train.seed)
    if not np.allclose(key[pick], bank, atol=1e-4):
        raise SystemExit(f"rescore.py: {fold}: the memory rebuilt from the training cubes differs from model.pt's")
    s_m = motion_rarity(torch.from_numpy(key), torch.from_numpy(bank), p.train.bank_k, groups, groups[pick])
    out = {"train/s_f": np.concatenate(f), "train/s_p": np.concatenate(q), "train/s_m": s_m.double().numpy(),
           "train/box": np.concatenate([np.asarray(c.boxes) for c in clips])}
    for tag, at in (("val", fold), *((k, fold / f"probe_{k}") for k in probes)):
        kinds = {e["clip"]: e["kind"] for e in json.loads((at / "data" / "inject.json").read_text())["events"]}
        st_at = CubeStore.open(at / "cubes")
        for c in det.score_store(st_at, "testing"):
            for name in (*CUES, "offsets", "labels", "counted"):
                out[f"{tag}/{c.name}/{name}"] = np.asarray(getattr(c, name))
            out[f"{tag}/{c.name}/kind"] = np.asarray(kinds[c.name])
            out[f"{tag}/{c.name}/box"] = np.asarray(st_at.load("testing", c.name).boxes)
    return out


def pooled_sf(model, appearance, flow, flow_scale: float, batch: int = 512) -> np.ndarray:
    """S_f measured on the bottlenecks pooled over their S/8 x S/8 positions (the issue's "cosine on pooled
    vs flattened"): 1 - cos of the (B, w3) means of the model's standardised x and y, the same network."""
    import torch

    from amsrc.model.inputs import to_tensors

    out = []
    with torch.inference_mode():
        for i in range(0, len(appearance), batch):
            app_in, _, flow_in = to_tensors(appearance[i:i + batch], flow[i:i + batch], flow_scale)
            o = model.encode(app_in, flow_in)
            w3 = o.m.shape[1]
            x, y = (v.reshape(len(v), w3, -1).mean(2) for v in (o.x, o.y))
            out.append((1 - torch.nn.functional.cosine_similarity(x, y, dim=1)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def dump_pooled(fold: Path, recipe: str, probes: list[str]) -> dict[str, np.ndarray]:
    """Pooled S_f (:func:`pooled_sf`) of every object of :func:`dump_cues`, in its order: ``train/s_fp`` and
    ``SET/CLIP/s_fp``."""
    from amsrc.detector import AMSRC
    from amsrc.prepare.store import CubeStore

    det = AMSRC.load(fold / f"train_{recipe}" / "model.pt")
    model, scale = det.model_.eval(), det.preset_.model.flow_scale
    store = CubeStore.open(fold / "cubes")
    clips = [store.load("training", n) for n in store.clips("training")]
    out = {"train/s_fp": np.concatenate([pooled_sf(model, c.appearance, c.flow, scale) for c in clips if len(c.frames)])}
    for tag, at in (("val", fold), *((k, fold / f"probe_{k}") for k in probes)):
        st_at = CubeStore.open(at / "cubes")
        for name in st_at.clips("testing"):
            c = st_at.load("testing", name)
            out[f"{tag}/{name}/s_fp"] = pooled_sf(model, c.appearance, c.flow, scale)
    return out


def _box_feature(box: np.ndarray, feat: str) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    h = b[:, 3] - b[:, 1]
    return {"height": h, "row": b[:, 3], "area": h * (b[:, 2] - b[:, 0])}[feat]


def rule(name: str, train: dict[str, np.ndarray], weights: dict[str, float]):
    """The object score of rule ``name`` learned from the training cues: f(cues dict, boxes) -> (N,)."""
    def plain(c):
        mu, sd = train[c].mean(), train[c].std()
        return lambda s, box: (s - mu) / sd

    def tail(c, pct):
        med, hi = np.median(train[c]), np.percentile(train[c], pct)
        return lambda s, box: (s - med) / (hi - med)

    def cdf(c):
        srt = np.sort(train[c])
        n, sd, top = len(srt), srt.std(), srt[-1]

        def f(s, box):
            above = n - np.searchsorted(srt, s, side="left")
            return np.where(s > top, np.log(n + 1) + (s - top) / sd, -np.log((1 + above) / (n + 1)))
        return f

    def binned(c, feat, bins):
        x = _box_feature(train["box"], feat)
        edges = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
        b = np.searchsorted(edges, x)
        mu = np.array([train[c][b == i].mean() for i in range(bins)])
        sd = np.array([train[c][b == i].std() for i in range(bins)])

        def f(s, box):
            i = np.searchsorted(edges, _box_feature(box, feat))
            return (s - mu[i]) / sd[i]
        return f

    head, _, only = name.partition(" ")
    if head.startswith("tail"):
        per = {c: tail(c, float(head[4:])) for c in CUES}
    elif head == "cdf":
        per = {c: cdf(c) for c in CUES}
    elif head in ("z", "zmax"):
        per = {c: plain(c) for c in CUES}
    else:
        feat, bins = head.rstrip("0123456789"), int(head[len(head.rstrip("0123456789")):])
        per = {c: binned(c, feat, bins) if not only or c == only.lower() else plain(c) for c in CUES}
    if head == "zmax":
        return lambda cues, box: np.max([per[c](cues[c], box) for c in CUES if weights[c]], 0)
    return lambda cues, box: sum(weights[c] * per[c](cues[c], box) for c in CUES if weights[c])


def split_cues(d: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, dict]]]:
    """A fold's cached cues (:func:`dump_cues`) as (training cues and boxes, {set: {clip: fields}})."""
    train = {c: d[f"train/{c}"].astype(np.float64) for c in (*CUES, "s_fp")}
    train["box"] = d["train/box"]
    sets: dict[str, dict[str, dict]] = {}
    for key in d:
        if key.count("/") == 2:
            tag, clip, field = key.split("/")
            sets.setdefault(tag, {}).setdefault(clip, {})[field] = d[key]
    return train, sets


def score_rule(train: dict[str, np.ndarray], sets: dict[str, dict[str, dict]], name: str,
               weights: dict[str, float]) -> dict[str, float]:
    """One fold (:func:`split_cues`) under one rule: mix raw / smoothed on the injected clips and each kind's
    smoothed AUROC."""
    from amsrc.config import ScoreConfig
    from amsrc.eval.metrics import roc_auc
    from amsrc.scoring import frame_scores, smooth

    if name.endswith(POOLED):  # S_f measured on the pooled bottlenecks, then the rule as named
        name = name[:-len(POOLED)]
        train = {**train, "s_f": train["s_fp"]}
        sets = {tag: {n: {**cl, "s_f": cl["s_fp"]} for n, cl in clips.items()} for tag, clips in sets.items()}
    f = rule(name, train, weights)
    median_box = np.median(np.asarray(train["box"], dtype=np.float64), 0)[None]
    empty = float(f({c: np.zeros(1) for c in CUES}, median_box)[0])
    cfg = ScoreConfig(smoothing="gaussian", gaussian_sigma=3.0)
    out: dict[str, float] = {}
    for tag, clips in sets.items():
        rows = []
        for cl in clips.values():
            obj = f({c: cl[c].astype(np.float64) for c in CUES}, cl["box"])
            raw = frame_scores(obj, cl["offsets"], empty, 1, cl["counted"])
            rows.append((str(cl["kind"]), raw, smooth(raw, cfg), cl["labels"].astype(int)))
        normal = np.concatenate([s[y == 0] for _, _, s, y in rows])
        for kind in sorted({kd for kd, *_ in rows}):
            ab = np.concatenate([s[y == 1] for kd, _, s, y in rows if kd == kind])
            out[kind] = roc_auc(np.r_[normal, ab], np.r_[np.zeros(len(normal)), np.ones(len(ab))])
        if tag == "val":
            y = np.concatenate([r[3] for r in rows])
            out["raw"] = roc_auc(np.concatenate([r[1] for r in rows]), y)
            out["smoothed"] = roc_auc(np.concatenate([r[2] for r in rows]), y)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the folds' folder of benchmarks/folds.py")
    ap.add_argument("--recipe", default="speed", help="the trained recipe whose models are re-scored (train_RECIPE)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--probe", nargs="*", default=["brisk"], help="probe sets of folds.py --probe to score too")
    args = ap.parse_args(argv)

    from amsrc.detector import AMSRC
    from amsrc.utils import atomic_path

    out = Path(args.out)
    got: dict[str, list[dict]] = {r: [] for r in RULES}
    sp: dict[str, list[dict]] = {r: [] for r in RULES}
    sf: dict[str, list[dict]] = {r: [] for r in RULES}
    for k in args.folds:
        fold = out / f"fold{k}"
        cache = fold / f"cues_{args.recipe}.npz"
        d = dict(np.load(cache)) if cache.exists() else dump_cues(fold, args.recipe, args.probe)
        if "train/s_fp" not in d:  # a new cache, or one of before the pooled S_f: add it, then (re)write it
            d.update(dump_pooled(fold, args.recipe, args.probe))
            with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **d)
        train, sets = split_cues(d)
        sc = AMSRC.load(fold / f"train_{args.recipe}" / "model.pt").preset_.score
        weights = {"s_f": sc.w_f, "s_p": sc.w_p, "s_m": sc.w_m}
        for r in RULES:
            got[r].append(score_rule(train, sets, r, weights))
            sp[r].append(score_rule(train, sets, r, {"s_f": 0.0, "s_p": 1.0, "s_m": 0.0}))
            sf[r].append(score_rule(train, sets, r, {"s_f": 1.0, "s_p": 0.0, "s_m": 0.0}))
        print(f"fold {k}: {len(train['s_f'])} training objects", flush=True)

    kinds = sorted(set(got["z"][0]) - {"raw", "smoothed"})

    def mean(rows, key):
        return 100 * float(np.mean([r[key] for r in rows]))

    print(f"\nRecipe {args.recipe}, mean over folds {', '.join(map(str, args.folds))} (AUROC x100; kinds: smoothed):\n")
    print("| rule | mix raw | mix smoothed | " + " | ".join(kinds)
          + " | kinds' mean | S_p alone: kinds' mean | S_f alone: kinds' mean |")
    print("|" + "---|" * (6 + len(kinds)))
    for r in RULES:
        vals = [mean(got[r], kd) for kd in kinds]
        print(f"| {r} | {mean(got[r], 'raw'):.1f} | {mean(got[r], 'smoothed'):.1f} | "
              + " | ".join(f"{v:.1f}" for v in vals)
              + f" | {np.mean(vals):.1f} | {np.mean([mean(sp[r], kd) for kd in kinds]):.1f}"
              + f" | {np.mean([mean(sf[r], kd) for kd in kinds]):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
