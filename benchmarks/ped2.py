"""The Ped2 benchmark: accuracy (paper Table 1 row and Table 2 ablation) and speed, one command.

    python benchmarks/ped2.py --out runs/ped2-bench                 # CPU, all three variants
    python benchmarks/ped2.py --out runs/ped2-bench --variants amsrc
    python benchmarks/ped2.py --out runs/ped2-gpu --device cuda

For each variant it runs the whole pipeline (`amsrc run --preset ped2`: prepare, train, evaluate;
last-epoch model, no test label used for any choice); the first variant starts from an empty
``--out`` so its wall time is that of a whole run. Then it measures:
- end-to-end scoring frames/s over all Ped2 test frames (read JPEG -> flow -> boxes -> cubes ->
  network -> frame score, a frame's objects in one batch): live (frame by frame, with a per-stage
  breakdown) and file throughput (reading and CPU stages in a thread overlapping the network);
  ``--stream-only --model PATH`` measures only this (``--stream-clips N``: the first N test clips);
- training samples/s of each width preset (2 epochs over ``--speed-cubes`` training cubes, the
  second epoch timed) and scoring objects/s;
- peak resident memory of the process.
Writes ``OUT/benchmark.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

PAPER = {"amsrc": 99.3, "nogate": 97.6, "baseline": 92.9}


def _machine(device: str) -> str:
    import os

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


class _Stages:
    """Per-stage wall time of a live StreamScorer by wrapping its flow, box detector, cube extractor,
    input conversion and network call (a few µs per frame): read (decode the JPEG), flow, boxes,
    crops (cube crops and resizes, grey conversion), inputs (cubes -> float tensors), network
    (encoders or the whole net, S_f/S_p, combine), rest (speeds, smoothing, result)."""

    NAMES = ("read", "flow", "boxes", "crops", "inputs", "network", "rest")

    def __init__(self, scorer):
        self.t = dict.fromkeys(self.NAMES + ("extract", "total"), 0.0)
        ex, det = scorer.extractor, scorer.detector
        ex.flow = self._wrap(ex.flow, "flow")
        box = ex.box_detector
        wrapped = self._wrap(box, "boxes")

        class _Box:  # keeps the detector's reset()
            def __call__(self_, *a):
                return wrapped(*a)

            def reset(self_):
                if hasattr(box, "reset"):
                    box.reset()

        ex.box_detector = _Box()
        ex.push = self._wrap(ex.push, "extract")
        det.network_inputs = self._wrap(det.network_inputs, "inputs")
        det.score_cubes = self._wrap(det.score_cubes, "network")

    def _wrap(self, fn, name):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[name] += time.perf_counter() - t0
        return run

    def ms_per_frame(self, n: int) -> dict:
        t = self.t
        out = {"read": t["read"], "flow": t["flow"], "boxes": t["boxes"],
               "crops": t["extract"] - t["flow"] - t["boxes"], "inputs": t["inputs"], "network": t["network"],
               "rest": t["total"] - t["extract"] - t["inputs"] - t["network"]}
        return {k: round(1000 * v / max(n, 1), 3) for k, v in out.items()}


def stream_speed(model_path: Path, data: Path, device: str, n_clips: int | None = None) -> dict:
    """End-to-end scoring of the Ped2 test frames (read JPEG -> flow -> boxes -> cubes -> network ->
    frame score), torch and OpenCV on one thread each (``amsrc score``'s defaults):

    - live: ``StreamScorer.push`` frame by frame, the frame read before it (lowest latency), with a
      per-stage breakdown (ms per frame);
    - throughput: ``StreamScorer.score_frames`` (how ``amsrc score`` runs files and folders): reading
      and the CPU stages in a thread, the network in this one.
    Both give the same raw scores (checked). Each frame's objects are one network batch.
    """
    import cv2
    import torch

    from amsrc.data.layouts import load_dataset
    from amsrc.data.readers import open_clip
    from amsrc.detector import AMSRC
    from amsrc.stream import StreamScorer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    det = AMSRC.load(model_path, device=device)
    cv2.setNumThreads(1)  # the preset's flow threads; set again after loading
    clips = load_dataset(data).clips("testing")[:n_clips]
    out: dict = {"clips": len(clips), "torch_threads": 1, "cv2_threads": 1}
    try:
        scorer = StreamScorer(det)
        out["decoder_run"] = scorer.need_pred
        stages = _Stages(scorer)
        raw_live, n, objects = [], 0, 0
        t0 = time.perf_counter()
        for clip in clips:
            scorer.reset()
            frames = iter(open_clip(clip).iter_frames())
            while True:
                ta = time.perf_counter()
                frame = next(frames, None)
                tb = time.perf_counter()
                stages.t["read"] += tb - ta
                if frame is None:
                    break
                r = scorer.push(frame)
                stages.t["total"] += time.perf_counter() - tb
                raw_live.append(r.raw)
                objects += len(r.boxes)
                n += 1
        wall = time.perf_counter() - t0
        out["frames"], out["objects_per_frame"] = n, objects / max(n, 1)
        out["live"] = {"wall_s": wall, "frames_per_s": n / wall, "ms_per_frame": stages.ms_per_frame(n)}

        scorer = StreamScorer(det)
        raw_thr = []
        t0 = time.perf_counter()
        for clip in clips:
            scorer.reset()
            raw_thr.extend(r.raw for r in scorer.score_frames(open_clip(clip).iter_frames()))
        wall = time.perf_counter() - t0
        out["throughput"] = {"wall_s": wall, "frames_per_s": len(raw_thr) / wall}
        out["same_scores"] = raw_thr == raw_live
        if not out["same_scores"]:
            raise AssertionError("throughput mode scored differently from live mode")
    finally:
        torch.set_num_threads(threads)
    out["frames_per_s"] = out["throughput"]["frames_per_s"]
    return out


def _stream_lines(s: dict) -> list[str]:
    ms = s["live"]["ms_per_frame"]
    return [
        f"  live (frame by frame) {s['live']['frames_per_s']:.1f} frames/s; file throughput "
        f"{s['throughput']['frames_per_s']:.1f} frames/s ({s['frames']} frames, {s['objects_per_frame']:.1f} "
        f"objects/frame, decoder {'run' if s['decoder_run'] else 'skipped (w_p = 0)'})",
        "  live ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()),
    ]


def train_speed(store_dir: Path, device: str, n_cubes: int) -> list[dict]:
    """samples/s (training) and objects/s (scoring) per width preset on real Ped2 cubes."""
    from amsrc.config import ModelConfig, get_preset
    from amsrc.inference import object_scores
    from amsrc.prepare.store import CubeStore
    from amsrc.train import load_checkpoint, train_model

    store = CubeStore.open(store_dir)
    app, flow = [], []
    for name in store.clips("training"):
        c = store.load("training", name)
        app.append(np.asarray(c.appearance))
        flow.append(np.asarray(c.flow))
    app, flow = np.concatenate(app)[:n_cubes], np.concatenate(flow)[:n_cubes]
    rows = []
    for wname, widths in ModelConfig.WIDTH_PRESETS.items():
        if wname == "tiny":
            continue
        p = get_preset("ped2")
        p.model.widths, p.train.epochs = widths, 2
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = train_model([(app, flow)], p, Path(tmp), device=device, progress=False)
            with open(Path(tmp) / "train_log.csv", newline="") as fh:
                sps = float(list(csv.DictReader(fh))[-1]["samples_per_s"])
            model, preset, _ = load_checkpoint(ckpt, device=device)
            object_scores(model, app[:512], flow[:512], preset.model.flow_scale, device=device)  # warm-up
            t0 = time.perf_counter()
            object_scores(model, app, flow, preset.model.flow_scale, device=device)
            ops = len(app) / (time.perf_counter() - t0)
        rows.append({"widths": wname, "channels": list(widths), "train_samples_per_s": sps,
                     "score_objects_per_s": ops})
        print(f"  widths {wname:7s} {str(widths):20s} train {sps:8.1f} samples/s  score {ops:8.1f} objects/s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ped2"))
    ap.add_argument("--out", required=True, help="output folder (emptied first unless --keep)")
    ap.add_argument("--variants", default="amsrc,nogate,baseline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--speed-cubes", type=int, default=2048, help="training cubes for the per-width speed rows")
    ap.add_argument("--keep", action="store_true", help="reuse what is in --out (wall time is then not a whole run)")
    ap.add_argument("--stream-only", action="store_true",
                    help="only the end-to-end scoring speed of --model; writes OUT/stream.json")
    ap.add_argument("--model", help="with --stream-only: a model.pt (default OUT/train_<first variant>/model.pt)")
    ap.add_argument("--stream-clips", type=int, default=None, help="with --stream-only: the first N test clips")
    args = ap.parse_args(argv)

    from amsrc.pipeline import format_result, run_pipeline

    out, data = Path(args.out), Path(args.data)
    if args.stream_only:
        from amsrc.utils import write_json_atomic

        model = Path(args.model) if args.model else out / f"train_{args.variants.split(',')[0]}" / "model.pt"
        s = stream_speed(model, data, args.device, args.stream_clips)
        s["machine"] = _machine(args.device)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "stream.json", s)
        print("\n".join(_stream_lines(s)))
        return 0
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    bench: dict = {"machine": _machine(args.device), "device": args.device, "data": str(data), "runs": {}}
    for i, v in enumerate(args.variants.split(",")):
        t0 = time.perf_counter()
        res = run_pipeline(data, "ped2", out, variant=v, workers=args.workers, device=args.device,
                           progress=False, log=lambda *_: None)
        wall = time.perf_counter() - t0
        bench["runs"][v] = {
            "wall_s": wall, "whole_run": i == 0 and not args.keep, "timings": res["timings"],
            "raw": res["raw"], "smoothed": res["smoothed"], "smoothing": res["smoothing"],
            "widths": res["widths"], "epochs": res["epochs"], "weights": res["weights"],
        }
        print(format_result(res), flush=True)
        print(f"  wall {wall:.0f} s", flush=True)
    first = args.variants.split(",")[0]
    print("end-to-end scoring (live stream over the Ped2 test frames) ...", flush=True)
    bench["stream"] = stream_speed(out / f"train_{first}" / "model.pt", data, args.device)
    print("\n".join(_stream_lines(bench["stream"])), flush=True)
    print("training and scoring speed per width preset ...", flush=True)
    bench["widths"] = train_speed(out / "cubes", args.device, args.speed_cubes)
    bench["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bench["peak_rss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    (out / "benchmark.json").write_text(json.dumps(bench, indent=2) + "\n")

    print(f"\nmachine: {bench['machine']}")
    print("\n| variant | micro AUROC raw | micro AUROC smoothed | macro AUROC raw | paper micro | wall time |")
    print("|---|---|---|---|---|---|")
    for v, r in bench["runs"].items():
        print(f"| {v} | {100 * r['raw']['micro']:.1f} | {100 * r['smoothed']['micro']:.1f} ({r['smoothing']}) | "
              f"{100 * r['raw']['macro']:.1f} | {PAPER.get(v, float('nan'))} | {r['wall_s'] / 60:.1f} min"
              f"{' (whole run)' if r['whole_run'] else ''} |")
    s = bench["stream"]
    first_run = bench["runs"][first]["timings"]
    print("\n| speed | value |\n|---|---|")
    from amsrc.data.layouts import load_dataset

    n_frames = sum(row["frames"] for row in load_dataset(data).summary().values())
    print(f"| prepare (flow, boxes, cubes), {args.workers} workers | {n_frames / max(first_run['prepare_s'], 1e-9):.0f} frames/s |"
          if bench["runs"][first]["whole_run"] else "| prepare | cached |")
    print(f"| end-to-end scoring, live (frame by frame) | {s['live']['frames_per_s']:.0f} frames/s |")
    print(f"| end-to-end scoring, file (CPU stages overlap the network) | {s['throughput']['frames_per_s']:.0f} frames/s |")
    print("| live ms/frame: " + ", ".join(f"{k} {v:.1f}" for k, v in s["live"]["ms_per_frame"].items()) + " | |")
    for w in bench["widths"]:
        print(f"| train / score, widths {w['widths']} {tuple(w['channels'])} | "
              f"{w['train_samples_per_s']:.0f} samples/s / {w['score_objects_per_s']:.0f} objects/s |")
    print(f"| peak memory | {bench['peak_rss_mib']:.0f} MiB (workers {bench['peak_rss_children_mib']:.0f} MiB) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
