"""The Ped2 benchmark: accuracy (paper Table 1 row and Table 2 ablation) and speed, one command.

    python benchmarks/ped2.py --out runs/ped2-bench                 # CPU, all three variants
    python benchmarks/ped2.py --out runs/ped2-bench --variants amsrc
    python benchmarks/ped2.py --out runs/ped2-gpu --device cuda

For each variant it runs the whole pipeline (`amsrc run --preset ped2`: prepare, train, evaluate;
last-epoch model, no test label used for any choice); the first variant starts from an empty
``--out`` so its wall time is that of a whole run. Then it measures:
- end-to-end scoring frames/s over all Ped2 test frames (read JPEG -> flow -> boxes -> cubes ->
  network -> frame score, one frame at a time as a live stream, a frame's objects in one batch);
- training samples/s of each width preset (2 epochs over ``--speed-cubes`` training cubes, the
  second epoch timed) and scoring objects/s;
- peak resident memory of the process.
Writes ``OUT/benchmark.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
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


def stream_speed(model_path: Path, data: Path, device: str) -> dict:
    """Score every Ped2 test frame as a live stream; frames/s over the whole test split."""
    from amsrc.data.layouts import load_dataset
    from amsrc.data.readers import open_clip
    from amsrc.detector import AMSRC
    from amsrc.stream import StreamScorer

    det = AMSRC.load(model_path, device=device)
    scorer = StreamScorer(det)
    per_frame, n, t0 = [], 0, time.perf_counter()
    for clip in load_dataset(data).clips("testing"):
        scorer.reset()
        for frame in open_clip(clip).iter_frames():
            r = scorer.push(frame)
            per_frame.append(r.seconds)
            n += 1
    wall = time.perf_counter() - t0
    return {"frames": n, "wall_s": wall, "frames_per_s": n / wall,
            "median_ms_per_frame_excl_read": 1000 * float(np.median(per_frame))}


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
            last = (Path(tmp) / "train_log.csv").read_text().strip().splitlines()[-1].split(",")
            header = (Path(tmp) / "train_log.csv").read_text().splitlines()[0].split(",")
            sps = float(last[header.index("samples_per_s")])
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
    args = ap.parse_args(argv)

    from amsrc.pipeline import format_result, run_pipeline

    out, data = Path(args.out), Path(args.data)
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
    print(f"  {bench['stream']['frames_per_s']:.1f} frames/s", flush=True)
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
    print(f"| end-to-end scoring, one stream | {s['frames_per_s']:.0f} frames/s |")
    for w in bench["widths"]:
        print(f"| train / score, widths {w['widths']} {tuple(w['channels'])} | "
              f"{w['train_samples_per_s']:.0f} samples/s / {w['score_objects_per_s']:.0f} objects/s |")
    print(f"| peak memory | {bench['peak_rss_mib']:.0f} MiB (workers {bench['peak_rss_children_mib']:.0f} MiB) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
