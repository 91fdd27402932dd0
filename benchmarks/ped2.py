"""The Ped2 benchmark: validation on injected held-out clips, the test (paper Table 1 row and
Table 2 ablation) with the non-learned baselines beside the network, and speed, one command.

    python benchmarks/ped2.py --out runs/ped2                 # CPU, all three variants
    python benchmarks/ped2.py --out runs/ped2 --variants amsrc --no-speed
    python benchmarks/ped2.py --out runs/ped2-gpu --device cuda

1. Validation (the protocol every choice is made on): the last ``--holdout`` (4) of Ped2's 16 normal
   training clips get pseudo-anomalies (`amsrc data inject`, seed 0) in ``OUT/val/data``; each
   variant trains on the other 12 and is evaluated on the injected clips (``OUT/val``). The
   threshold rule of `amsrc fit` is checked on the ORIGINAL held-out clips: set on two, measured on
   the other two.
2. The Ped2 test, read once to report: each variant runs the whole pipeline (`amsrc run --preset
   ped2`: prepare, train on all 16 clips, evaluate; last-epoch model, no test label used for any
   choice); the first starts from an empty ``--out`` so its wall time is that of a whole run.
Every table row is a scorer: the baselines (velocity, velocity-gmm, copy-last), the variants and
each network cue alone, at object level and frame level under both protocols. Then it measures:
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
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from speed import _machine, _stream_lines, stream_speed  # benchmarks/speed.py: end-to-end scoring speed

PAPER = {"amsrc": 99.3, "nogate": 97.6, "baseline": 92.9}


def train_speed(store_dir: Path, device: str, n_cubes: int) -> list[dict]:
    """samples/s (training) and objects/s (scoring) per width preset on real Ped2 cubes."""
    from amsrc.config import ModelConfig, get_preset
    from amsrc.detector import AMSRC
    from amsrc.prepare.store import CubeStore
    from amsrc.scoring import object_scores
    from amsrc.training.loop import train_model

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
            loaded = AMSRC.load(ckpt, device=device)
            model, preset = loaded.model_, loaded.preset_
            object_scores(model, app[:512], flow[:512], preset.model.flow_scale, device=device)  # warm-up
            t0 = time.perf_counter()
            object_scores(model, app, flow, preset.model.flow_scale, device=device)
            ops = len(app) / (time.perf_counter() - t0)
        rows.append({"widths": wname, "channels": list(widths), "train_samples_per_s": sps,
                     "score_objects_per_s": ops})
        print(f"  widths {wname:7s} {str(widths):20s} train {sps:8.1f} samples/s  score {ops:8.1f} objects/s", flush=True)
    return rows


SCORERS = ("velocity", "velocity-gmm", "copy-last", "baseline", "nogate", "amsrc")
PED2_FPS = 10.0  # UCSD Ped2 was recorded at 10 frames/s


def _rows(runs: dict) -> dict:
    """scorer -> metrics (raw, smoothed, paper, object), from the results of the variants' runs (the
    baselines and cues are in each run's results; the baselines come from the first run)."""
    out: dict = {}
    for res in runs.values():
        for name, m in res.get("baselines", {}).items():
            out.setdefault(name, m)
    for v in ("baseline", "nogate", "amsrc"):
        if v in runs:
            out[v] = runs[v]
            for cue, m in runs[v].get("cues", {}).items():
                out[f"{v}: z({cue}) alone"] = m
    return out


def _table(rows: dict, paper: dict | None = None) -> list[str]:
    def f(x):
        return "n/a" if x is None else f"{100 * x:.1f}"

    head = "| scorer | object | frame micro raw | frame micro smoothed (Gaussian sigma 3) | paper protocol | frame macro raw |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name in [*SCORERS, *[k for k in rows if k not in SCORERS]]:
        if name not in rows:
            continue
        m = rows[name]
        extra = f" (paper: {paper[name]})" if paper and name in paper else ""
        lines.append(f"| {name}{extra} | {f(m.get('object'))} | {f(m['raw']['micro'])} | {f(m['smoothed']['micro'])} | "
                     f"{f(m['paper']['micro'])} | {f(m['raw']['macro'])} |")
    return lines


def threshold_check(val_dir: Path, data: Path, variant: str, workers: int) -> dict:
    """The threshold rule of `amsrc fit` on real footage: the model trained on the fit clips sets its
    threshold on two held-out NORMAL clips (the original, un-injected 13 and 14) and is measured on the
    other two (15 and 16): the share of their frames above it against the 0.5% it was set for."""
    from amsrc.data.index import DatasetIndex
    from amsrc.data.layouts import load_dataset
    from amsrc.detector import AMSRC
    from amsrc.live.fit import THRESHOLD_Q, alarms, frame_scores_smoothed, learn_threshold
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore

    rec = json.loads((val_dir / "data" / "inject.json").read_text())
    held = [c for c in load_dataset(data).clips("training") if c.name in rec["held_out"]]
    if len(held) < 2:
        raise SystemExit(f"the threshold check needs >= 2 held-out clips, got {len(held)} (--holdout)")
    k = len(held) // 2
    idx = DatasetIndex(data, "frames", {"holdout": tuple(held[:k]), "check": tuple(held[k:])})
    det = AMSRC.load(val_dir / f"train_{variant}" / "model.pt")
    det.preset_.score.causal = True  # as amsrc fit and live scoring smooth
    prepare_dataset(idx, det.preset_.prepare, val_dir / "normal_cubes", workers=workers, progress=False,
                    preset_name=det.preset_.name, background=det.background_)
    store = CubeStore.open(val_dir / "normal_cubes")
    thr = learn_threshold(det, store, "holdout", f"normal clips {', '.join(c.name for c in held[:k])}", PED2_FPS)
    frames, above, events = alarms(frame_scores_smoothed(det, store, "check"), thr.value, thr.low)
    hours = frames / PED2_FPS / 3600
    return {"variant": variant, "set_on": [c.name for c in held[:k]], "checked_on": [c.name for c in held[k:]],
            "threshold": thr.value, "target_rate": 1 - THRESHOLD_Q / 100, "rate_set_on": thr.above,
            "rate_checked": above, "frames_checked": frames,
            "false_alarms_set_on": thr.events, "false_alarms_checked": int(events),
            "false_alarms_per_hour_checked": events / hours}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ped2"))
    ap.add_argument("--out", required=True, help="output folder (emptied first unless --keep)")
    ap.add_argument("--variants", default="amsrc,nogate,baseline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--holdout", type=int, default=4, help="Ped2 training clips held out and injected (the last ones)")
    ap.add_argument("--speed-cubes", type=int, default=2048, help="training cubes for the per-width speed rows")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed measurements")
    ap.add_argument("--keep", action="store_true", help="reuse what is in --out (wall time is then not a whole run)")
    ap.add_argument("--stream-only", action="store_true",
                    help="only the end-to-end scoring speed of --model; writes OUT/stream.json")
    ap.add_argument("--model", help="with --stream-only: a model.pt (default OUT/train_<first variant>/model.pt)")
    ap.add_argument("--stream-clips", type=int, default=None, help="with --stream-only: the first N test clips")
    args = ap.parse_args(argv)

    from amsrc.data.inject import InjectSettings, inject
    from amsrc.eval.pipeline import format_result, run_pipeline

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
    variants = args.variants.split(",")
    bench: dict = {"machine": _machine(args.device), "device": args.device, "data": str(data), "runs": {}, "val": {}}

    # 1. validation: the last --holdout normal training clips get injected anomalies; the models train
    #    on the other clips. Every choice is to be made here, never on the test labels.
    val = out / "val"
    t0 = time.perf_counter()
    res = inject([data], val / "data", InjectSettings(seed=0, holdout=args.holdout, fps=PED2_FPS), preview=val / "inject_preview.png")
    bench["inject"] = {"seconds": time.perf_counter() - t0, "held_out": res.held_out,
                       "events": [{"clip": e.clip, "kind": e.kind, "labelled": len(e.labelled)} for e in res.events]}
    print(res.format(), flush=True)
    for v in variants:
        t0 = time.perf_counter()
        r = run_pipeline(val / "data", "ped2", val, variant=v, workers=args.workers, device=args.device,
                         progress=False, log=lambda *_: None)
        bench["val"][v] = {**{k: r[k] for k in ("raw", "smoothed", "paper", "object", "cues", "baselines", "smoothing")},
                           "wall_s": time.perf_counter() - t0}
        print("validation (injected held-out clips):\n" + format_result(r), flush=True)
    bench["threshold"] = threshold_check(val, data, variants[0], args.workers)
    print(f"threshold check: {json.dumps(bench['threshold'])}", flush=True)

    # 2. the Ped2 test, read once to report
    for i, v in enumerate(variants):
        t0 = time.perf_counter()
        res = run_pipeline(data, "ped2", out, variant=v, workers=args.workers, device=args.device,
                           progress=False, log=lambda *_: None)
        wall = time.perf_counter() - t0
        bench["runs"][v] = {
            "wall_s": wall, "whole_run": i == 0 and not args.keep, "timings": res["timings"],
            **{k: res[k] for k in ("raw", "smoothed", "paper", "object", "cues", "baselines", "smoothing")},
            "widths": res["widths"], "epochs": res["epochs"], "weights": res["weights"],
        }
        print("Ped2 test:\n" + format_result(res), flush=True)
        print(f"  wall {wall:.0f} s", flush=True)
    first = variants[0]
    if not args.no_speed:
        print("end-to-end scoring (live stream over the Ped2 test frames) ...", flush=True)
        bench["stream"] = stream_speed(out / f"train_{first}" / "model.pt", data, args.device)
        print("\n".join(_stream_lines(bench["stream"])), flush=True)
        print("training and scoring speed per width preset ...", flush=True)
        bench["widths"] = train_speed(out / "cubes", args.device, args.speed_cubes)
    bench["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bench["peak_rss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    (out / "benchmark.json").write_text(json.dumps(bench, indent=2) + "\n")

    print(f"\nmachine: {bench['machine']}")
    print("\nInjected held-out Ped2 clips (validation; AUROC x100):")
    print("\n".join(_table(_rows(bench["val"]))))
    print("\nPed2 test (AUROC x100):")
    print("\n".join(_table(_rows(bench["runs"]), PAPER)))
    t = bench["threshold"]
    print(f"\nthreshold ({t['variant']}, set on normal clips {', '.join(t['set_on'])}): {100 * t['rate_checked']:.2f}% of "
          f"the {t['frames_checked']} frames of normal clips {', '.join(t['checked_on'])} above it (set for "
          f"{100 * t['target_rate']:.2f}%); {t['false_alarms_checked']} false alarm(s) there, "
          f"{t['false_alarms_per_hour_checked']:.0f} per hour")
    print("\n| run | wall time |\n|---|---|")
    for v, r in bench["runs"].items():
        print(f"| Ped2 {v} | {r['wall_s'] / 60:.1f} min{' (whole run)' if r['whole_run'] else ''} |")
    for v, r in bench["val"].items():
        print(f"| validation {v} | {r['wall_s'] / 60:.1f} min |")
    if "stream" not in bench:
        return 0
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
