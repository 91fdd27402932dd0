"""Scoring speed, end to end, per stage and per engine, at 240x360 (Ped2) and 1280x720.

    python benchmarks/speed.py --out runs/speed                       # Ped2 + a synthetic 720p scene
    python benchmarks/speed.py --out runs/speed --engines torch --clips 2

What it measures (one process, nothing else should run; torch and OpenCV on one thread each, as
``amsrc score`` runs them):
- for each frame size and each engine (``--engines``, :attr:`amsrc.detector.AMSRC.ENGINES`): live
  scoring (``StreamScorer.push`` frame by frame) with its ms per frame per stage (read, flow,
  boxes, crops, inputs, network, rest), and file scoring (``StreamScorer.score_frames``: reading
  and the CPU stages in a thread overlapping the network), in frames/s; both must give the same
  raw scores (checked); and file scoring with ``BATCH`` frames' objects per network pass (within
  ``BATCH_TOLERANCE`` of live, checked);
- a live source as ``amsrc score`` scores it (pipelined, one prepared frame queued: ``LIVE_AHEAD``)
  against one frame at a time: the rate with frames available at once, and the latency (a frame
  available -> its result) with frames arriving at ``PACE_FPS`` (:func:`paced_latency`; same scores,
  checked);
- 240x360: the first ``--clips`` Ped2 test clips, with a ``ped2``-preset model fitted here on two
  Ped2 training clips for one epoch (``--model`` to give one: speed does not depend on the weights,
  only on the preset's sizes and the boxes per frame);
- 1280x720: a synthetic scene (``amsrc data synth``) of that size, scored by a model fitted on it
  with the fit-time defaults (the ``default`` preset scaled to the frame size), one epoch;
- the network's ms per object at batch sizes 1, 12, 48, 96 per engine (what batching several
  frames' objects together would gain);
- with ``--auroc``: the Ped2 test micro AUROC of the 240x360 model through each engine (the
  engines must agree within 0.002).
Writes ``OUT/speed.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path


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


STAGES = ("read", "flow", "boxes", "crops", "inputs", "network", "rest")
BATCH = 8  # frames per network pass in the batched file row
PACE_FPS = 50.0  # the camera of the latency rows: a frame becomes available every 1/PACE_FPS s


def _arriving(frames, fps: float | None, ready: list[float]):
    """``frames`` as a camera hands them over: frame i not before start + i / ``fps`` (None: at once),
    decoded only then; the time each became available is appended to ``ready``."""
    it, start = iter(frames), time.perf_counter()
    for i in itertools.count():
        if fps is None:
            ready.append(time.perf_counter())
        else:
            ready.append(start + i / fps)
            time.sleep(max(0.0, ready[-1] - time.perf_counter()))
        f = next(it, None)
        if f is None:
            return
        yield f


def paced_latency(det, clips, pipelined: bool, fps: float | None) -> dict:
    """Scoring as a camera feeds it: frame i of a clip becomes available at start + i / ``fps`` (None: all at
    once), is decoded then, and is scored one frame at a time (``push``, decoding in the same thread) or
    pipelined as ``amsrc score`` scores a live source (``score_frames`` with ``LIVE_AHEAD`` prepared frames
    queued, decoding and the CPU stages in a thread). Latency: from the time a frame became available
    (at once: the time its decoding began) to its result, ms. -> frames/s, latency median / 99th
    percentile / max, raw scores."""
    import numpy as np

    from amsrc.data.readers import open_clip
    from amsrc.live.run import LIVE_AHEAD
    from amsrc.live.stream import StreamScorer

    scorer, raw, lat = StreamScorer(det), [], []
    t0 = time.perf_counter()
    for clip in clips:
        scorer.reset()
        ready: list[float] = []
        frames = _arriving(open_clip(clip).iter_frames(), fps, ready)
        results = (scorer.score_frames(frames, depth=LIVE_AHEAD) if pipelined
                   else (scorer.push(f) for f in frames))
        for i, r in enumerate(results):
            lat.append(time.perf_counter() - ready[i])
            raw.append(r.raw)
    wall = time.perf_counter() - t0
    ms = 1000 * np.asarray(lat)
    return {"frames_per_s": len(raw) / wall, "arrival_fps": fps, "latency_ms_median": float(np.median(ms)),
            "latency_ms_p99": float(np.percentile(ms, 99)), "latency_ms_max": float(ms.max()), "raw": raw}


def _ms_per_frame(scorer, read_s: float, total_s: float, n: int) -> dict:
    """Per-stage ms per frame of a live StreamScorer from the times it records itself
    (``extractor.seconds``: flow, boxes, crops; ``scorer.seconds``: inputs, network): read (decode the
    JPEG, timed here), rest (speeds, smoothing, result)."""
    t = {"read": read_s, **scorer.extractor.seconds, **scorer.seconds}
    t["rest"] = total_s - sum(t[k] for k in ("flow", "boxes", "crops", "inputs", "network"))
    return {k: round(1000 * t[k] / max(n, 1), 3) for k in STAGES}


def stream_speed(model_path: Path, data: Path, device: str, n_clips: int | None = None, engine: str = "auto") -> dict:
    """End-to-end scoring of the Ped2 test frames (read JPEG -> flow -> boxes -> cubes -> network ->
    frame score), torch and OpenCV on one thread each (``amsrc score``'s defaults):

    - live: ``StreamScorer.push`` frame by frame, the frame read before it (lowest latency), with a
      per-stage breakdown (ms per frame);
    - throughput: ``StreamScorer.score_frames`` (how ``amsrc score`` runs files and folders): reading
      and the CPU stages in a thread, the network in this one.
    Both give the same raw scores (checked). Each frame's objects are one network batch. ``engine``:
    what runs the network (:attr:`AMSRC.ENGINES`).
    """
    import cv2
    import numpy as np
    import torch

    from amsrc.data.layouts import load_dataset
    from amsrc.data.readers import open_clip
    from amsrc.detector import AMSRC
    from amsrc.live.stream import BATCH_TOLERANCE, StreamScorer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    det = AMSRC.load(model_path, device=device, engine=engine)
    cv2.setNumThreads(1)  # the preset's flow threads; set again after loading
    clips = load_dataset(data).clips("testing")[:n_clips]
    out: dict = {"clips": len(clips), "torch_threads": 1, "cv2_threads": 1, "engine": engine}
    try:
        scorer = StreamScorer(det)
        out["decoder_run"] = scorer.need_pred
        if len(clips):  # the engine's set-up (ONNX conversion) is not part of a frame's time
            warm = StreamScorer(det)
            for f in itertools.islice(open_clip(clips[0]).iter_frames(), 8):
                warm.push(f)
        read_s = total_s = 0.0
        raw_live, n, objects = [], 0, 0
        t0 = time.perf_counter()
        for clip in clips:
            scorer.reset()
            frames = iter(open_clip(clip).iter_frames())
            while True:
                ta = time.perf_counter()
                frame = next(frames, None)
                tb = time.perf_counter()
                read_s += tb - ta
                if frame is None:
                    break
                r = scorer.push(frame)
                total_s += time.perf_counter() - tb
                raw_live.append(r.raw)
                objects += len(r.boxes)
                n += 1
        wall = time.perf_counter() - t0
        out["frames"], out["objects_per_frame"] = n, objects / max(n, 1)
        out["live"] = {"wall_s": wall, "frames_per_s": n / wall, "ms_per_frame": _ms_per_frame(scorer, read_s, total_s, n)}

        def file_rate(batch: int) -> tuple[list[float], float]:
            """Raw scores and wall seconds of file scoring, ``batch`` frames a network pass."""
            scorer, raw = StreamScorer(det), []
            t0 = time.perf_counter()
            for clip in clips:
                scorer.reset()
                raw.extend(r.raw for r in scorer.score_frames(open_clip(clip).iter_frames(), batch=batch))
            return raw, time.perf_counter() - t0

        raw_thr, wall = file_rate(1)
        out["throughput"] = {"wall_s": wall, "frames_per_s": len(raw_thr) / wall}
        out["same_scores"] = raw_thr == raw_live
        if not out["same_scores"]:
            raise AssertionError("throughput mode scored differently from live mode")
        # a live source: pipelined with one prepared frame queued (amsrc score's way), and one frame at a
        # time, with frames available at once (the rate) and arriving at PACE_FPS (the latency)
        for key, pipelined, fps in (("live_pipelined", True, None), ("paced_pipelined", True, PACE_FPS),
                                    ("paced_one_at_a_time", False, PACE_FPS)):
            r = paced_latency(det, clips, pipelined, fps)
            if r.pop("raw") != raw_live:
                raise AssertionError(f"{key} scored differently from live mode")
            out[key] = r
        # the same, BATCH frames' objects per network pass (StreamScorer.finish_many)
        raw_b, wall = file_rate(BATCH)
        diff = float(np.max(np.abs(np.subtract(raw_b, raw_live)))) if raw_b else 0.0
        out["throughput_batched"] = {"batch": BATCH, "wall_s": wall, "frames_per_s": len(raw_b) / wall,
                                     "max_abs_diff": diff}
        if diff > BATCH_TOLERANCE:
            raise AssertionError(f"batched scoring differs from live by {diff} > {BATCH_TOLERANCE}")
    finally:
        torch.set_num_threads(threads)
    out["frames_per_s"] = out["throughput"]["frames_per_s"]
    return out


def _stream_lines(s: dict) -> list[str]:
    ms = s["live"]["ms_per_frame"]
    pl, pp, po = s["live_pipelined"], s["paced_pipelined"], s["paced_one_at_a_time"]
    return [
        f"  live pipelined (one frame queued) {pl['frames_per_s']:.1f} frames/s, latency median "
        f"{pl['latency_ms_median']:.1f} ms, max {pl['latency_ms_max']:.1f}; frames arriving at {PACE_FPS:g}/s: "
        f"pipelined median {pp['latency_ms_median']:.1f} / p99 {pp['latency_ms_p99']:.1f} / max {pp['latency_ms_max']:.1f} ms, "
        f"one at a time {po['latency_ms_median']:.1f} / {po['latency_ms_p99']:.1f} / {po['latency_ms_max']:.1f} ms",
        f"  live (frame by frame) {s['live']['frames_per_s']:.1f} frames/s; file throughput "
        f"{s['throughput']['frames_per_s']:.1f} frames/s, {s['throughput_batched']['frames_per_s']:.1f} with "
        f"{s['throughput_batched']['batch']} frames a network pass ({s['frames']} frames, {s['objects_per_frame']:.1f} "
        f"objects/frame, decoder {'run' if s['decoder_run'] else 'skipped (w_p = 0)'})",
        "  live ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()),
    ]


def batch_sweep(model: Path, engines: list[str], sizes=(1, 12, 48, 96), repeats: int = 20) -> dict:
    """Network ms per object at several batch sizes (generated cubes, one thread), per engine: what
    batching several frames' objects into one forward pass would gain."""
    import torch

    from amsrc.detector import AMSRC
    from amsrc.export import random_cubes

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict = {}
    try:
        for e in engines:
            det = AMSRC.load(model, engine=e)
            p = det.preset_.prepare
            out[e] = {}
            for n in sizes:
                app, flow = random_cubes(n, p.cube_size, p.channels)
                inputs = det.network_inputs(app, flow)
                det.score_cubes(app, flow, inputs=inputs)  # warm-up (and the engine's set-up)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    det.score_cubes(app, flow, inputs=inputs)
                out[e][n] = round(1000 * (time.perf_counter() - t0) / repeats / n, 3)
    finally:
        torch.set_num_threads(threads)
    return out


def _fit(sources: list[Path], out: Path, preset: str | None, fps: float) -> Path:
    from amsrc.live.fit import fit_footage

    if not out.is_file():
        fit_footage([str(s) for s in sources], out, preset=preset, epochs=1, fps=fps, progress=False)
    return out


def _auroc(model: Path, data: Path, out: Path, engines: list[str]) -> dict:
    """Ped2 test micro AUROC of ``model`` through each engine, on one store prepared with its preset."""
    from amsrc.detector import AMSRC
    from amsrc.eval.evaluate import evaluate
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore

    det = AMSRC.load(model)
    store_dir = out / "ped2_store"
    if not (store_dir / "manifest.json").is_file():
        prepare_dataset(data, det.preset_.prepare, store_dir, workers=2, progress=False, preset_name=det.preset_.name,
                        background=det.background_)
    store = CubeStore.open(store_dir)
    res = {}
    for e in engines:
        r = evaluate(AMSRC.load(model, engine=e), store, out / f"eval_{e}", plots=False, baselines=False)
        res[e] = {"micro_raw": r["raw"]["micro"], "micro_smoothed": r["smoothed"]["micro"]}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (models, scenes, speed.json)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ped2"))
    ap.add_argument("--model", default=None, help="a ped2-preset model for the 240x360 rows (default: fitted here)")
    ap.add_argument("--engines", default="torch,onnxruntime")
    ap.add_argument("--clips", type=int, default=2, help="Ped2 test clips scored (the first N)")
    ap.add_argument("--no-720p", action="store_true", help="skip the 1280x720 rows")
    ap.add_argument("--auroc", action="store_true", help="also the Ped2 test micro AUROC through each engine")
    args = ap.parse_args(argv)

    import cv2

    from amsrc.data.synth import write_scene
    from amsrc.utils import write_json_atomic

    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    engines = args.engines.split(",")
    cv2.setNumThreads(1)
    train = sorted((data / "training" / "frames").iterdir())[:2]
    ped2_model = Path(args.model) if args.model else _fit(train, out / "ped2_1epoch.pt", "ped2", 10.0)
    sets = [("240x360", ped2_model, data, args.clips)]
    if not args.no_720p:
        scene = out / "scene720"
        if not (scene / "scene.json").is_file():
            write_scene(scene, seed=0, height=720, width=1280, n_train=2, n_test=1, train_frames=120, test_frames=120)
        sets.append(("1280x720", _fit(sorted((scene / "training" / "frames").iterdir()), out / "scene720_1epoch.pt",
                                      None, 10.0), scene, 1))
    res: dict = {"machine": _machine("cpu"), "python": platform.python_version(), "rows": []}
    for size, model, root, clips in sets:
        for e in engines:
            t0 = time.perf_counter()
            s = stream_speed(model, root, "cpu", clips, engine=e)
            s.update(size=size, model=str(model), seconds=time.perf_counter() - t0)
            res["rows"].append(s)
            print(f"{size} engine {e}:", *_stream_lines(s), sep="\n", flush=True)
    res["ms_per_object_by_batch"] = {size: batch_sweep(model, engines) for size, model, _, _ in sets}
    for size, sweep in res["ms_per_object_by_batch"].items():
        for e, row in sweep.items():
            print(f"{size} {e}: network ms per object at batch " + ", ".join(f"{n}: {v}" for n, v in row.items()))
    if args.auroc:
        res["auroc"] = _auroc(ped2_model, data, out, engines)
        print(json.dumps(res["auroc"], indent=1))
    write_json_atomic(out / "speed.json", res)
    print(f"\n{res['machine']}\n")
    print(f"| frames | engine | objects/frame | live frames/s (one at a time) | live latency ms at {PACE_FPS:g} frames/s, "
          f"median / max (one at a time) | file frames/s | file, {BATCH} frames a pass | ms/frame one at a time: "
          + ", ".join(STAGES) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for s in res["rows"]:
        ms = s["live"]["ms_per_frame"]
        pp, po = s["paced_pipelined"], s["paced_one_at_a_time"]
        print(f"| {s['size']} | {s['engine']} | {s['objects_per_frame']:.1f} | {s['live_pipelined']['frames_per_s']:.1f} "
              f"({s['live']['frames_per_s']:.1f}) | {pp['latency_ms_median']:.1f} / {pp['latency_ms_max']:.1f} "
              f"({po['latency_ms_median']:.1f} / {po['latency_ms_max']:.1f}) | "
              f"{s['throughput']['frames_per_s']:.1f} | {s['throughput_batched']['frames_per_s']:.1f} | "
              + ", ".join(f"{ms[k]:.2f}" for k in STAGES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
