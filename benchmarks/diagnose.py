"""Where is the score lost? Object- vs frame-level AUROC, per cue, per clip (for understanding only).

Uses test labels and pixel masks to *diagnose*; nothing here feeds back into a preset.

    python benchmarks/diagnose.py RUN_DIR [--variant amsrc] [--json OUT]

RUN_DIR is an `amsrc run` output folder (cubes/, train_<variant>/model.pt). Every row is scored by
the one scoring path (:mod:`amsrc.scoring` through :func:`amsrc.eval.evaluate.score_metrics`):
the preset's mix, each network cue alone (z(S_f), z(S_p)) and the non-learned baselines; frame
level micro AUROC raw and smoothed (Gaussian, sigma 3), object level where the store holds object
labels (from the pixel masks), and per clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--variant", default="amsrc")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from amsrc.config import ScoreConfig
    from amsrc.detector import AMSRC
    from amsrc.eval.baselines import BaselineScorer, baseline_names
    from amsrc.eval.evaluate import cue_clips, score_metrics
    from amsrc.eval.metrics import roc_auc
    from amsrc.prepare.store import CubeStore

    run = Path(args.run_dir)
    det = AMSRC.load(run / f"train_{args.variant}" / "model.pt")
    store = CubeStore.open(run / "cubes")
    gauss = ScoreConfig(smoothing="gaussian", gaussian_sigma=3.0)
    scorers = {"preset score": det.score_store(store, "testing")}
    scorers.update({f"z({k})": v for k, v in cue_clips(det, scorers["preset score"]).items()})
    for name in baseline_names():
        scorers[name] = BaselineScorer(name, gauss).fit(store).score_store(store, "testing")

    out: dict = {"frame": {}, "object": {}, "per_clip": {}}
    print(f"{'scorer':16s} {'frame raw':>10s} {'frame g3':>10s} {'object':>8s}")
    for name, clips in scorers.items():
        m = score_metrics(clips, gauss)
        out["frame"][name] = {"raw": m["raw"]["micro"], "gauss3": m["smoothed"]["micro"]}
        out["object"][name] = m["object"]
        obj = "n/a" if m["object"] is None else f"{m['object']:.4f}"
        print(f"{name:16s} {m['raw']['micro']:10.4f} {m['smoothed']['micro']:10.4f} {obj:>8s}")
        for c in clips:
            if 0 < c.labels.sum() < c.labels.size:
                out["per_clip"].setdefault(c.name, {})[name] = roc_auc(c.frame_raw, c.labels)
    print("per clip (raw frame AUROC; clips with one class omitted):")
    for n, d in out["per_clip"].items():
        print(f"  {n}: " + "  ".join(f"{k} {v:.3f}" for k, v in d.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
