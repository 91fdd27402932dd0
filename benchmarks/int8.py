"""How much faster an int8 network would be: ONNX Runtime fp32 against static int8 (issue 16's probe).

    python benchmarks/int8.py runs/ped2/train_amsrc/model.pt runs/ped2/cubes [--threads 1]
    python benchmarks/int8.py runs/ped2s/train_amsrc/model.pt runs/ped2s/cubes --auroc   # + the AUROC cost

Exports the model's network (:func:`amsrc.export.onnx_model`, without the S_m memory), quantises it
statically (QDQ, int8 weights per channel, uint8 activations) with ONNX Runtime's tools, calibrated
on ``--calib`` training cubes of the store, and times one batch of ``--objects`` test cubes (a Ped2
frame holds about 12) through each graph: the median of ``--reps`` runs after 20 warm-up runs. Also
prints the largest difference of each output between the two graphs. ``--auroc`` also scores the
store's test split through each graph (the detector's own scoring path, its network swapped for the
graph) and prints micro AUROC raw / smoothed / object with the difference: the cost issue 16 bounds
by 0.002 for a speed-up on by default. Not an engine: nothing in the scoring path uses int8.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("store")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", type=int, default=512, help="training cubes to calibrate on")
    ap.add_argument("--objects", type=int, default=12, help="test cubes per timed batch")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--auroc", action="store_true", help="also score the store's test split through each graph")
    args = ap.parse_args(argv)

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from amsrc.export import OnnxRuntimeNet, onnx_model
    from amsrc.model.inputs import to_tensors
    from amsrc.prepare.store import CubeStore
    from amsrc.training.checkpoint import Checkpoint

    torch.set_num_threads(args.threads)
    ck = Checkpoint.load(args.model)
    p = ck.preset
    store = CubeStore.open(args.store)

    def inputs(split: str, n: int):
        app, flow = [], []
        for name in store.clips(split):
            c = store.load(split, name)
            app.append(np.asarray(c.appearance[:n]))
            flow.append(np.asarray(c.flow[:n]))
            if sum(len(a) for a in app) >= n:
                break
        a, _, f = to_tensors(np.concatenate(app)[:n], np.concatenate(flow)[:n], p.model.flow_scale, channels_last=False)
        return a.numpy(), f.numpy()

    cal_a, cal_f = inputs(store.training_split(), args.calib)

    def test_auroc(net) -> dict[str, float]:
        import dataclasses

        from amsrc.detector import AMSRC
        from amsrc.eval.evaluate import score_metrics

        det = AMSRC.load(args.model, engine="onnxruntime")
        det.engine_ = net  # the probe's graph in place of the fp32 one the detector would build
        cfg = p.score if p.score.smoothing != "none" else dataclasses.replace(p.score, smoothing="gaussian")
        m = score_metrics(det.score_store(store, "testing"), cfg)
        return {"raw": m["raw"]["micro"], "smoothed": m["smoothed"]["micro"], "object": m["object"]}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(cal_a):
                return None
            batch = {"app_in": cal_a[self.i:self.i + 32], "flow_in": cal_f[self.i:self.i + 32]}
            self.i += 32
            return batch

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_model(ck.build_model("cpu", source=args.model).eval(), p, ck.train_stats.to_dict())
                         .SerializeToString())
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        ta, tf = (torch.from_numpy(x) for x in inputs("testing", args.objects))
        outs, med, aurocs = {}, {}, {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            net = OnnxRuntimeNet(str(path), threads=args.threads)
            for _ in range(20):
                net.run(ta, tf)
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                net.run(ta, tf)
                ts.append(time.perf_counter() - t0)
            med[name] = float(np.median(ts)) * 1000
            outs[name] = net.outputs_of(ta, tf)
            if args.auroc:
                aurocs[name] = test_auroc(net)
    print(f"{args.objects} objects, {args.threads} thread(s): fp32 {med['fp32']:.2f} ms, int8 {med['int8']:.2f} ms "
          f"({med['fp32'] / med['int8']:.2f}x)")
    for k in outs["fp32"]:
        print(f"  {k}: largest |int8 - fp32| {float((outs['int8'][k] - outs['fp32'][k]).abs().max()):.4f}, "
              f"mean |fp32| {float(outs['fp32'][k].abs().mean()):.4f}")
    for k in aurocs.get("fp32", {}):
        a, b = aurocs["fp32"][k], aurocs["int8"][k]
        print(f"  AUROC of the store's test split, {k}: fp32 {a:.4f}, int8 {b:.4f} (int8 - fp32 {b - a:+.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
