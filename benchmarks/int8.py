"""What the int8 engine gains and costs: engine "onnxruntime" (fp32) against "onnxruntime-int8" (issue 16).

    python benchmarks/int8.py runs/ped2/train_amsrc/model.pt runs/ped2/cubes [--threads 1]
    python benchmarks/int8.py runs/ped2s/train_amsrc/model.pt runs/ped2s/cubes --auroc   # + the AUROC cost

Builds the graphs of the engines "onnxruntime" and "onnxruntime-int8" (:func:`amsrc.export.quantize_int8`:
static QDQ, int8 weights per channel, uint8 activations) as the detector does, calibrated on the
training cubes model.pt keeps (``train.calib_size``) or, for a model written before it kept them, on
``--calib`` training cubes of the store drawn as training draws them; then times one batch of
``--objects`` test cubes (a Ped2 frame holds about 12) through each graph: the median of ``--reps``
runs after 20 warm-up runs. Also prints the largest difference of each output between the two
graphs. ``--auroc`` also scores the store's test split through each engine (the detector's own
scoring path) and prints micro AUROC raw / smoothed / object with the difference: the cost issue 16
bounds by 0.002 for a speed-up on by default, which is why int8 is opt-in.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("store")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", type=int, default=128, help="training cubes to calibrate on, for a model that keeps none")
    ap.add_argument("--objects", type=int, default=12, help="test cubes per timed batch")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--auroc", action="store_true", help="also score the store's test split through each engine")
    args = ap.parse_args(argv)

    from amsrc.detector import AMSRC
    from amsrc.export import OnnxRuntimeNet
    from amsrc.model.inputs import to_tensors
    from amsrc.prepare.store import CubeStore
    from amsrc.training.loop import CubeSet, calibration_cubes

    torch.set_num_threads(args.threads)
    store = CubeStore.open(args.store)
    dets = {name: AMSRC.load(args.model, engine=name) for name in ("onnxruntime", "onnxruntime-int8")}
    p = dets["onnxruntime"].preset_
    q = dets["onnxruntime-int8"]
    if q.calibration_ is None:  # drawn from the store's training cubes as train.calib_size draws them
        split = store.training_split()
        clips = [store.load(split, n) for n in store.clips(split)]
        q.calibration_ = calibration_cubes(CubeSet([(c.appearance, c.flow) for c in clips if len(c.frames)],
                                                   p.prepare.channels, p.prepare.cube_size), args.calib, p.train.seed)
        print(f"{args.model} keeps no calibration cubes: {len(q.calibration_[0])} drawn from {args.store}")
    nets = {name: det._engine() for name, det in dets.items()}
    app, flow = [], []
    for name in store.clips("testing"):
        c = store.load("testing", name)
        app.append(np.asarray(c.appearance[:args.objects]))
        flow.append(np.asarray(c.flow[:args.objects]))
        if sum(len(a) for a in app) >= args.objects:
            break
    ta, _, tf = to_tensors(np.concatenate(app)[:args.objects], np.concatenate(flow)[:args.objects], p.model.flow_scale)
    outs, med = {}, {}
    for name, net in nets.items():
        assert isinstance(net, OnnxRuntimeNet)
        for _ in range(20):
            net.run(ta, tf)
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            net.run(ta, tf)
            ts.append(time.perf_counter() - t0)
        med[name] = float(np.median(ts)) * 1000
        outs[name] = net.outputs_of(ta, tf)
    fp, i8 = "onnxruntime", "onnxruntime-int8"
    print(f"{args.objects} objects, {args.threads} thread(s): fp32 {med[fp]:.2f} ms, int8 {med[i8]:.2f} ms "
          f"({med[fp] / med[i8]:.2f}x)")
    for k in outs[fp]:
        print(f"  {k}: largest |int8 - fp32| {float((outs[i8][k] - outs[fp][k]).abs().max()):.4f}, "
              f"mean |fp32| {float(outs[fp][k].abs().mean()):.4f}")
    if args.auroc:
        import dataclasses

        from amsrc.eval.evaluate import score_metrics

        cfg = p.score if p.score.smoothing != "none" else dataclasses.replace(p.score, smoothing="gaussian")
        got = {}
        for name, det in dets.items():
            m = score_metrics(det.score_store(store, "testing"), cfg)
            got[name] = {"raw": m["raw"]["micro"], "smoothed": m["smoothed"]["micro"], "object": m["object"]}
        for k in got[fp]:
            a, b = got[fp][k], got[i8][k]
            print(f"  AUROC of the store's test split, {k}: fp32 {a:.4f}, int8 {b:.4f} (int8 - fp32 {b - a:+.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
