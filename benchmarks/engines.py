"""Which CPU engine runs the network fastest: the network stage alone, on real cubes (issue 16, item 2).

    python benchmarks/engines.py runs/ped2s/train_amsrc/model.pt runs/ped2s/cubes [--objects 12 96] [--threads 1]

Times one batch of ``--objects`` test cubes of the store (a Ped2 frame holds about 12; 96 is eight
frames a pass) through each engine, the median of ``--reps`` runs after 20 warm-up runs, torch and
every engine on ``--threads`` threads (one: how `amsrc score` runs them):
- ``torch``: the model in eval mode under ``torch.inference_mode`` (the engine "torch");
- ``torch channels-last``: the same with channels-last weights and inputs;
- ``torch.compile``: ``torch.compile(model)`` (Inductor; needs a C++ compiler, skipped with the reason
  when it fails);
- ``onnxruntime``: the graph the detector builds for its engine "onnxruntime" (:func:`amsrc.export.onnx_model`);
- ``openvino``: the same graph compiled by OpenVINO for the CPU (f32, latency hint), where the
  ``openvino`` package is installed (it is not a dependency of amsrc; skipped otherwise).
Each engine's outputs are compared with torch's (largest difference of the predicted frame and of the
appearance bottleneck). The int8 engine has its own benchmark (`benchmarks/int8.py`).

``--parts``: also where torch's time goes, for the first ``--objects`` batch: the whole network, the
encoders alone (``model.encode``, what the score needs without S_p), each encoder, and S_m's memory
search (the model's k nearest of its memory rows, :func:`amsrc.scoring.nearest_mean_distance`).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch


def _median_ms(f, reps: int, *args) -> float:
    """Median wall time of ``f(*args)`` in ms over ``reps`` calls, after 20 warm-up calls."""
    for _ in range(20):
        f(*args)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("store")
    ap.add_argument("--objects", type=int, nargs="+", default=[12, 96], help="test cubes per timed batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--parts", action="store_true", help="also time the parts of the torch network")
    args = ap.parse_args(argv)

    from amsrc.detector import AMSRC
    from amsrc.export import OnnxRuntimeNet, onnx_model
    from amsrc.model.inputs import to_channels_last, to_tensors
    from amsrc.prepare.store import CubeStore

    torch.set_num_threads(args.threads)
    det = AMSRC.load(args.model, engine="torch")
    p, model = det.preset_, det.model_.eval()
    store = CubeStore.open(args.store)
    app, flow = [], []
    for name in store.clips("testing"):
        c = store.load("testing", name)
        app.append(np.asarray(c.appearance))
        flow.append(np.asarray(c.flow))
        if sum(len(a) for a in app) >= max(args.objects):
            break
    app_all, flow_all = np.concatenate(app), np.concatenate(flow)
    if len(app_all) < max(args.objects):
        raise SystemExit(f"engines.py: {args.store} holds {len(app_all)} test cubes, fewer than {max(args.objects)}")

    graph = onnx_model(model, p, det.train_stats_.to_dict()).SerializeToString()
    def torch_runner(net, layout=torch.contiguous_format):
        def run(a, f):
            out = net(a.contiguous(memory_format=layout), f.contiguous(memory_format=layout))
            return out.pred.numpy(), out.x.numpy()
        return run

    runners = {}  # name -> f(app_in, flow_in) -> (pred, x) as numpy
    runners["torch"] = torch_runner(model)
    runners["torch channels-last"] = torch_runner(to_channels_last(copy.deepcopy(model)), torch.channels_last)
    skipped = {}
    try:
        compiled = torch.compile(copy.deepcopy(model))
        with torch.inference_mode():
            compiled(*to_tensors(app_all[:2], flow_all[:2], p.model.flow_scale)[::2])
        runners["torch.compile"] = torch_runner(compiled)
    except Exception as e:  # Inductor needs a working C++ toolchain
        skipped["torch.compile"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    ort = OnnxRuntimeNet(graph, threads=args.threads)
    runners["onnxruntime"] = lambda a, f: (lambda o: (o["pred"].numpy(), o["x"].numpy()))(ort.outputs_of(a, f))
    try:
        import openvino as ov

        core = ov.Core()
        ovm = core.compile_model(core.read_model(graph), "CPU", {
            "INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        req = ovm.create_infer_request()

        def run_ov(a, f):
            out = req.infer({"app_in": a.numpy(), "flow_in": f.numpy()})
            return out[ovm.output("pred")], out[ovm.output("x")]
        runners[f"openvino {ov.__version__.split('-')[0]}"] = run_ov
    except ImportError:
        skipped["openvino"] = "the openvino package is not installed (pip install openvino)"

    print(f"{args.model}: network stage, {args.threads} thread(s), median of {args.reps} runs, ms per batch")
    print("| engine | " + " | ".join(f"{n} objects" for n in args.objects) + " | largest difference from torch (pred, x) |")
    print("|---" * (2 + len(args.objects)) + "|")
    for name, run in runners.items():
        cells, diff = [], ""
        for n in args.objects:
            app_in, _, flow_in = to_tensors(app_all[:n], flow_all[:n], p.model.flow_scale)
            with torch.inference_mode():
                cells.append(_median_ms(run, args.reps, app_in, flow_in))
                if n == args.objects[0]:
                    got, ref = run(app_in, flow_in), runners["torch"](app_in, flow_in)
                    diff = f"{float(np.abs(got[0] - ref[0]).max()):.1e}, {float(np.abs(got[1] - ref[1]).max()):.1e}"
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in cells) + f" | {diff} |", flush=True)
    for name, why in skipped.items():
        print(f"{name}: skipped ({why})")
    if args.parts:
        print_parts(det, app_all[:args.objects[0]], flow_all[:args.objects[0]], args.reps)
    return 0


def print_parts(det, app: np.ndarray, flow: np.ndarray, reps: int) -> None:
    """Median ms of the torch network's parts on these cubes (the ``--parts`` table)."""
    from amsrc.model.inputs import to_tensors
    from amsrc.scoring import memory_key, nearest_mean_distance

    p, model = det.preset_, det.model_.eval()
    app_in, _, flow_in = to_tensors(app, flow, p.model.flow_scale, channels_last=p.model.channels_last)
    parts = {"whole network (encoders, fusion, decoder)": lambda: model(app_in, flow_in),
             "encoders only (model.encode)": lambda: model.encode(app_in, flow_in),
             "appearance encoder": lambda: model._appearance(app_in),
             "motion encoder": lambda: model._motion(flow_in)}
    bank = det.motion_bank_
    if bank is not None:
        bank_t = torch.as_tensor(np.asarray(bank), dtype=torch.float32)
        with torch.inference_mode():
            key = memory_key(model.encode(app_in, flow_in).m, flow_in, det.train_stats_.speed_key)
        parts[f"S_m memory search ({len(bank_t)} rows, k = {p.train.bank_k})"] = (
            lambda: nearest_mean_distance(key, bank_t, p.train.bank_k))
    print(f"\ntorch, {len(app)} objects, {torch.get_num_threads()} thread(s): median ms of {reps} runs")
    print("| part | ms |\n|---|---|")
    with torch.inference_mode():
        for name, f in parts.items():
            print(f"| {name} | {_median_ms(f, reps):.2f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
