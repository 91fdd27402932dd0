"""Where is the score lost? Object- vs frame-level AUROC, per cue, per clip (for understanding only).

Uses test labels and pixel masks to *diagnose*; nothing here feeds back into a preset.

    python benchmarks/diagnose.py RUN_DIR [--data ROOT] [--variant amsrc] [--json OUT]

RUN_DIR is an `amsrc run` output folder (cubes/, train_<variant>/model.pt). Prints frame-level
micro AUROC of z(S_f), z(S_p), their sum and a plain speed statistic (90th percentile of the
pixel-unit flow magnitude of the last flow in a box, max over the frame's boxes), raw and with
a Gaussian (sigma 3); the object-level AUROC of each cue, where an object is anomalous when its
box covers anomalous mask pixels (needs pixel masks in the dataset); and per-clip AUROC.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--variant", default="amsrc")
    ap.add_argument("--data", default=None, help="dataset root, for pixel masks (object-level AUROC)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from amsrc.config import ScoreConfig
    from amsrc.data.layouts import load_dataset
    from amsrc.detector import AMSRC
    from amsrc.metrics import roc_auc
    from amsrc.prepare.store import CubeStore
    from amsrc.scoring import frame_scores, smooth, zscore
    from amsrc.stream import last_flow_magnitudes

    run = Path(args.run_dir)
    det = AMSRC.load(run / f"train_{args.variant}" / "model.pt")
    store = CubeStore.open(run / "cubes")
    st = det.train_stats_
    clips = det.score_store(store, "testing")
    cubes = {c.name: store.load("testing", c.name) for c in clips}

    def speed(c) -> np.ndarray:
        f = cubes[c.name].flow
        return np.percentile(last_flow_magnitudes(f), 90, axis=1) if len(f) else np.zeros(0)

    cues = {
        "z(S_f)": lambda c: zscore(c.s_f, st.s_f_mean, st.s_f_std),
        "z(S_p)": lambda c: zscore(c.s_p, st.s_p_mean, st.s_p_std),
        "z(S_f)+z(S_p)": lambda c: zscore(c.s_f, st.s_f_mean, st.s_f_std) + zscore(c.s_p, st.s_p_mean, st.s_p_std),
        "preset score": lambda c: c.objects,
        "speed p90": speed,
    }
    gauss = ScoreConfig(smoothing="gaussian", gaussian_sigma=3.0)
    y = np.concatenate([c.labels for c in clips])
    out: dict = {"frame": {}, "object": {}, "per_clip": {}}

    # object labels from pixel masks: an object is anomalous when its box holds >= 20 anomalous pixels
    masks = {}
    if args.data:
        masks = {c.name: c.masks for c in load_dataset(Path(args.data)).clips("testing") if c.masks is not None}
    obj_y = {}
    for c in clips:
        m = masks.get(c.name)
        if m is None:
            continue
        cc = cubes[c.name]
        lab = np.zeros(len(cc.frames), np.uint8)
        for t in range(cc.n_frames):
            a, b = cc.offsets[t], cc.offsets[t + 1]
            if a == b or not c.labels[t]:
                continue
            mk = m.read(t)
            for i in range(a, b):
                x0, y0, x1, y1 = cc.boxes[i]
                lab[i] = mk[y0:y1, x0:x1].sum() >= 20
        obj_y[c.name] = lab

    print(f"{'cue':16s} {'frame raw':>10s} {'frame g3':>10s} {'object':>8s}")
    for name, fn in cues.items():
        per = {c.name: fn(c) for c in clips}
        fs = [frame_scores(per[c.name], cubes[c.name].offsets, float(np.min(per[c.name])) - 1 if len(per[c.name]) else 0.0)
              for c in clips]
        s = np.concatenate(fs)
        g = np.concatenate([smooth(f, gauss) for f in fs])
        raw_auc, g_auc = roc_auc(s, y), roc_auc(g, y)
        obj = None
        if obj_y:
            os_ = np.concatenate([per[n] for n in obj_y])
            oy = np.concatenate([obj_y[n] for n in obj_y])
            obj = roc_auc(os_, oy) if 0 < oy.sum() < oy.size else None
        out["frame"][name] = {"raw": raw_auc, "gauss3": g_auc}
        out["object"][name] = obj
        print(f"{name:16s} {raw_auc:10.4f} {g_auc:10.4f} {obj if obj is None else round(obj, 4)!s:>8s}")
        for c, f in zip(clips, fs):
            if 0 < c.labels.sum() < c.labels.size:
                out["per_clip"].setdefault(c.name, {})[name] = roc_auc(f, c.labels)
    print("per clip (raw frame AUROC; clips with one class omitted):")
    for n, d in out["per_clip"].items():
        print(f"  {n}: " + "  ".join(f"{k} {v:.3f}" for k, v in d.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
