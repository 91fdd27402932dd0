"""Training samples/s and scoring objects/s of AMSRC-Net on this machine, per width preset, with and
without the channels-last memory layout.

    python benchmarks/train_speed.py --threads 2 --wait-idle 300
    python benchmarks/train_speed.py --widths small,paper --layouts cl --device cuda

Training speed is that of the real loop (``train_model`` on memory-mapped random cubes, batch 128):
the samples/s of the LAST epoch in train_log.csv (the first one pays the warm-up). Scoring speed is
``object_scores`` (batch 512) on the same cubes, best of ``--repeat`` passes after one warm-up pass.
Cube content does not change the speed, so random cubes are used.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _busy_s() -> float:
    """CPU-seconds all processes have spent busy since boot (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def _own_s() -> float:
    t = os.times()
    return t.user + t.system


class OtherLoad:
    """Cores' worth of CPU used by OTHER processes between start() and stop()."""

    def start(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_s(), _own_s()
        return self

    def stop(self) -> float:
        dt = time.perf_counter() - self.t
        return max(0.0, (_busy_s() - self.busy) - (_own_s() - self.own)) / dt


def wait_idle(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (up to limit_s) until other processes use < threshold cores over 2 s; return that load."""
    t_end = time.perf_counter() + limit_s
    while True:
        m = OtherLoad().start()
        time.sleep(2.0)
        load = m.stop()
        if load < threshold or time.perf_counter() > t_end:
            return load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="small,medium,paper", help="ModelConfig.WIDTH_PRESETS names, comma-separated")
    ap.add_argument("--layouts", default="nchw,cl", help="nchw (contiguous) and/or cl (channels-last)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--cubes", type=int, default=512, help="training cubes per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (the last one is measured)")
    ap.add_argument("--score-cubes", type=int, default=2048, help="cubes scored per pass")
    ap.add_argument("--repeat", type=int, default=2, help="scoring passes (best is reported)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each measurement wait up to this many seconds for other processes to go quiet")
    args = ap.parse_args(argv)

    import torch

    from amsrc.config import ModelConfig, get_preset
    from amsrc.detector import AMSRC
    from amsrc.scoring import object_scores
    from amsrc.training.loop import train_model

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = max(args.cubes, args.score_cubes)
        np.save(tmp / "a.npy", rng.integers(0, 256, (n, 5, 32, 32, args.channels), dtype=np.uint8))
        np.save(tmp / "f.npy", (rng.normal(size=(n, 4, 32, 32, 2)) * 2).astype(np.float16))
        app, flow = np.load(tmp / "a.npy", mmap_mode="r"), np.load(tmp / "f.npy", mmap_mode="r")
        for wname in args.widths.split(","):
            for layout in args.layouts.split(","):
                p = get_preset("default")
                p.prepare.channels = args.channels
                p.model.widths = ModelConfig.WIDTH_PRESETS[wname]
                p.model.channels_last = layout == "cl"
                p.train.epochs, p.train.threads = args.epochs, args.threads
                out = tmp / f"{wname}-{layout}"
                if args.wait_idle > 0:
                    wait_idle(args.wait_idle)
                other = OtherLoad().start()
                path = train_model([(app[: args.cubes], flow[: args.cubes])], p, out, device=args.device, progress=False)
                with open(out / "train_log.csv", newline="") as fh:
                    train_sps = float(list(csv.DictReader(fh))[-1]["samples_per_s"])
                model = AMSRC.load(path, device=args.device).model_
                sc_a, sc_f = app[: args.score_cubes], flow[: args.score_cubes]
                object_scores(model, sc_a[:512], sc_f[:512], p.model.flow_scale, device=args.device)  # warm-up
                best = float("inf")
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    object_scores(model, sc_a, sc_f, p.model.flow_scale, device=args.device)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - t0)
                row = {"widths": wname, "channels": list(p.model.widths), "layout": layout,
                       "train_samples_per_s": round(train_sps, 1), "score_objects_per_s": round(len(sc_a) / best, 1),
                       "other_cores_busy": round(other.stop(), 2)}
                rows.append(row)
                print(f"{wname:7s} {str(tuple(p.model.widths)):20s} {layout:5s} train {row['train_samples_per_s']:8.1f} "
                      f"samples/s   score {row['score_objects_per_s']:8.1f} objects/s   "
                      f"(other processes: {row['other_cores_busy']:.2f} cores)", flush=True)
    info = {"torch": torch.__version__, "threads": args.threads, "device": args.device, "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "load_avg_1m": os.getloadavg()[0]}
    print(json.dumps(info))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
