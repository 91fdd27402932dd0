"""Scores of a fixed store and checkpoint through every entry point, at full precision, as JSON.

    python benchmarks/snapshot.py --store STORE --model MODEL.pt --data DATA --out scores.json

Written to check that a refactor changes no score: run it before and after on the same store and
checkpoint and compare the two files (``--compare OTHER.json``: the largest difference per entry).
Entry points: the estimator on the stored cubes (what ``evaluate`` scores), the live scorer over
the frames of the first ``--stream-clips`` test clips, the non-learned baselines, and the metrics
``evaluate`` reports.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def snapshot(store_dir: Path, model: Path, data: Path, stream_clips: int) -> dict:
    from amsrc.data.layouts import load_dataset
    from amsrc.data.readers import open_clip
    from amsrc.detector import AMSRC
    from amsrc.eval.baselines import BaselineScorer
    from amsrc.eval.evaluate import evaluate
    from amsrc.live.stream import StreamScorer
    from amsrc.prepare.store import CubeStore

    store = CubeStore.open(store_dir)
    det = AMSRC.load(model)
    out: dict = {"estimator": {}, "stream": {}, "baselines": {}}
    for c in det.score_store(store, "testing"):
        out["estimator"][c.name] = {"raw": c.frame_raw.tolist(), "smoothed": c.frame.tolist(),
                                    "objects": c.objects.tolist()}
    scorer = StreamScorer(det)
    for clip in load_dataset(data).clips("testing")[:stream_clips]:
        scorer.reset()
        rs = [scorer.push(f) for f in open_clip(clip).iter_frames()]
        out["stream"][clip.name] = {"raw": [r.raw for r in rs], "score": [r.score for r in rs]}
    for name in ("velocity", "copy-last"):
        b = BaselineScorer(name).fit(store)
        out["baselines"][name] = {c.name: c.frame_raw.tolist() for c in b.score_store(store, "testing")}
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate(det, store, Path(tmp), plots=False)
    out["metrics"] = {k: res[k] for k in ("raw", "smoothed", "paper", "object", "cues", "baselines")}
    return out


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}/")
    elif isinstance(d, list):
        yield prefix.rstrip("/"), d
    elif isinstance(d, (int, float)) or d is None:
        yield prefix.rstrip("/"), [d]


def compare(a: dict, b: dict) -> tuple[float, list[str]]:
    """Largest |a - b| over every number (timings left out), and the entries that differ in shape or presence."""
    fa = {k: v for k, v in _flat(a) if not k.endswith("seconds")}  # wall times differ between runs
    fb = {k: v for k, v in _flat(b) if not k.endswith("seconds")}
    bad = sorted(set(fa) ^ set(fb))
    worst = 0.0
    for k in set(fa) & set(fb):
        x, y = fa[k], fb[k]
        if len(x) != len(y):
            bad.append(f"{k}: length {len(x)} vs {len(y)}")
            continue
        xs = np.array([np.nan if v is None else v for v in x], np.float64)
        ys = np.array([np.nan if v is None else v for v in y], np.float64)
        if not np.array_equal(np.isnan(xs), np.isnan(ys)):
            bad.append(f"{k}: missing values differ")
            continue
        m = ~np.isnan(xs)
        if m.any():
            worst = max(worst, float(np.abs(xs[m] - ys[m]).max()))
    return worst, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the dataset root the store was prepared from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stream-clips", type=int, default=2)
    ap.add_argument("--compare", help="another snapshot: print the largest difference")
    args = ap.parse_args()
    snap = snapshot(Path(args.store), Path(args.model), Path(args.data), args.stream_clips)
    Path(args.out).write_text(json.dumps(snap))
    print(f"wrote {args.out}")
    if args.compare:
        worst, bad = compare(snap, json.loads(Path(args.compare).read_text()))
        print(f"largest difference {worst:.3g}; entries that differ in shape or presence: {bad or 'none'}")


if __name__ == "__main__":
    main()
