"""``amsrc prepare``: every clip of a dataset through :class:`CubeExtractor` into a :class:`CubeStore`.

One shard per clip. Clips already done with the same key are reused (after a full CRC-32 check);
``workers`` builds clips in parallel processes (spawn-safe, one OpenCV thread each); ``shard=(k, N)``
builds only clips ``i`` (in dataset order, over all splits) with ``i % N == k - 1``, so array jobs or
ranks prepare disjoint parts and a final run without a shard finds them done and writes the
complete manifest.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue as queue_mod
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from amsrc.config import PrepareConfig
from amsrc.data.index import Clip, DatasetIndex
from amsrc.data.layouts import load_dataset
from amsrc.data.readers import open_clip
from amsrc.errors import AmsrcError, ConfigError, DataError, WorkerError
from amsrc.prepare import store as st
from amsrc.prepare.background import background_hash, needs_background, training_background, write_background
from amsrc.prepare.cubes import T_APPEARANCE, CubeExtractor
from amsrc.prepare.detect import OnnxDetector, file_digest
from amsrc.prepare.recall import box_labels, box_recall_frame
from amsrc.utils import log, show_bars

MIN_FRAMES = T_APPEARANCE  # a clip needs 5 frames for one cube
_PROGRESS_EVERY = 16  # frames between progress messages from a worker


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"k/N"`` or ``(k, N)`` (1-based k) -> (k, N); None stays None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            k_s, n_s = shard.split("/")
            k, n = int(k_s), int(n_s)
        except ValueError:
            raise ConfigError(f"--shard must look like k/N (e.g. 2/4), got {shard!r}") from None
    else:
        k, n = (int(v) for v in shard)
    if not (n >= 1 and 1 <= k <= n):
        raise ConfigError(f"--shard k/N needs 1 <= k <= N, got {k}/{n}")
    return k, n


# ---------------------------------------------------------------- one clip
@dataclass
class _Job:
    split: str
    clip: Clip
    out: str
    cfg: PrepareConfig
    settings_hash: str
    source_hash: str
    key: str
    background: np.ndarray | None = None  # box method "bg": the training background


def _recall_counts(clip: Clip, t: int, boxes: np.ndarray, frame_shape: tuple[int, int], acc: dict) -> np.ndarray:
    """Add frame t's box recall to ``acc``; return the (K,) object labels of its boxes."""
    mask = np.asarray(clip.masks.read(t))
    if mask.shape != frame_shape:
        raise DataError(
            clip.source,
            f"pixel mask of frame {t} is {mask.shape[1]}x{mask.shape[0]} but the frames are "
            f"{frame_shape[1]}x{frame_shape[0]}",
        )
    mask = mask.astype(bool, copy=False)
    found, n = box_recall_frame(mask, boxes)
    if n == 0:
        return np.zeros(len(boxes), np.uint8)
    if t < MIN_FRAMES - 1:  # frames 0..3 have no cubes by design: counted apart
        acc["objects_first_frames"] += n
        return np.zeros(len(boxes), np.uint8)
    acc["objects"] += n
    acc["found"] += found
    acc["anomalous_frames"] += 1
    acc["frames_all_found"] += int(found == n)
    return box_labels(mask, boxes)


def build_clip(job: _Job, progress: Callable[[int], None] | None = None) -> dict:
    """Build one clip's shard; returns its done.json record."""
    clip = job.clip
    st.remove_stale_temps(Path(job.out), job.split, clip.name)
    t0 = time.perf_counter()
    extractor = CubeExtractor(job.cfg, background=job.background)
    writer = st.ClipWriter(Path(job.out), job.split, clip.name, job.cfg.cube_size, job.cfg.channels)
    recall = None
    object_labels: list[np.ndarray] | None = None
    if clip.masks is not None:
        object_labels = []
        recall = {"objects": 0, "found": 0, "anomalous_frames": 0, "frames_all_found": 0, "objects_first_frames": 0}
    try:
        reader = open_clip(clip)
        pending = 0
        frame_size = None
        for t, frame in enumerate(reader.iter_frames()):
            if frame_size is None:
                frame_size = [int(frame.shape[0]), int(frame.shape[1])]
            if t >= clip.n_frames:
                raise DataError(clip.source, f"has more frames than the {clip.n_frames} indexed")
            try:
                obj = extractor.push(frame)
            except DataError as exc:
                if exc.path is None:
                    raise DataError(clip.source, str(exc)) from None
                raise
            writer.add(obj)
            if recall is not None:
                object_labels.append(_recall_counts(clip, t, obj.boxes, frame.shape[:2], recall))
            pending += 1
            if progress is not None and pending >= _PROGRESS_EVERY:
                progress(pending)
                pending = 0
        if writer.n_frames != clip.n_frames:
            raise DataError(clip.source, f"yielded {writer.n_frames} frames, expected {clip.n_frames}")
        if progress is not None and pending:
            progress(pending)
        info = {
            "key": job.key,
            "settings_hash": job.settings_hash,
            "source_hash": job.source_hash,
            "split": job.split,
            "name": clip.name,
            "source": str(clip.source),
            "frame_size": frame_size,
            "stats": {"seconds": round(time.perf_counter() - t0, 3), "recall": recall},
        }
        obj_labels = None if object_labels is None else np.concatenate([np.zeros(0, np.uint8), *object_labels])
        return writer.commit(info, labels=clip.labels, object_labels=obj_labels)
    except BaseException:
        writer.abort()
        raise


# ---------------------------------------------------------------- worker processes
_QUEUE = None


def _worker_init(queue) -> None:
    global _QUEUE
    _QUEUE = queue

    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _worker_run(job: _Job) -> dict:
    """Run in a worker: never lets an exception cross the process boundary (DataError does not pickle)."""
    try:
        return {"ok": build_clip(job, progress=_QUEUE.put if _QUEUE is not None else None)}
    except AmsrcError as exc:
        return {"error": str(exc), "kind": type(exc).__name__}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", "kind": "internal"}


def _raise_worker_error(res: dict, job: _Job) -> None:
    if res["kind"] == "DataError":
        raise DataError(None, res["error"])
    if res["kind"] == "ConfigError":
        raise ConfigError(res["error"])
    raise RuntimeError(f"preparing {job.split}/{job.clip.name} failed in a worker: {res['error']}")


def _clip_done(job: _Job, k: int, n: int) -> None:
    log.info(f"prepare: {job.split}/{job.clip.name} done ({job.clip.n_frames} frames; {k}/{n} clips)")


def _run_parallel(jobs: list[_Job], workers: int, bar) -> None:
    """Build ``jobs`` in ``workers`` spawned processes. A worker that dies (killed, crashed, or a
    script without an ``if __name__ == "__main__":`` guard) fails the run instead of hanging it."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()

    def drain(block: bool) -> None:
        try:
            bar.update(q.get(timeout=0.1) if block else q.get_nowait())
            while True:
                bar.update(q.get_nowait())
        except queue_mod.Empty:
            pass

    ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init, initargs=(q,))
    try:
        futures = {ex.submit(_worker_run, job): job for job in jobs}
        pending, n_done = set(futures), 0
        while pending:
            drain(block=True)
            done, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    job = futures[fut]
                    raise WorkerError(
                        f"a prepare worker process died while preparing {job.split}/{job.clip.name} ({job.clip.source}): "
                        "killed, out of memory, or the calling script lacks an `if __name__ == \"__main__\":` guard, "
                        "which spawned workers need; run the same command again to resume (finished clips are kept)"
                    ) from None
                if "error" in res:
                    _raise_worker_error(res, futures[fut])
                n_done += 1
                _clip_done(futures[fut], n_done, len(jobs))
        drain(block=False)
    except BaseException:
        # stop: queued clips are cancelled; clips being built finish or are abandoned (never half-published)
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


# ---------------------------------------------------------------- report
@dataclass
class PrepareReport:
    """What ``amsrc prepare`` did and measured."""

    store: str  # the store folder
    preset: str  # preset name
    key: str  # store key (settings + sources)
    complete: bool  # every clip of the dataset is done (False after a --shard run)
    shard: tuple[int, int] | None  # (k, N) or None
    workers: int  # worker processes used
    clips_total: int  # clips in the dataset
    built: list[str] = field(default_factory=list)  # "split/name" built by this run
    reused: list[str] = field(default_factory=list)  # "split/name" found done with the same key
    rebuild_reasons: dict[str, str] = field(default_factory=dict)  # clip -> why a stored clip was not reused
    short_clips: list[str] = field(default_factory=list)  # clips under 5 frames (no cubes)
    frames_built: int = 0  # frames processed by this run
    build_seconds: float = 0.0  # wall time spent building
    total_seconds: float = 0.0  # wall time of the whole call
    frames_per_split: dict[str, int] = field(default_factory=dict)  # over the clips of this run (shard)
    cubes_per_split: dict[str, int] = field(default_factory=dict)
    clips_per_split: dict[str, int] = field(default_factory=dict)
    boxes_per_frame: float = 0.0  # cubes / frames that can hold cubes (frames t >= 4)
    box_area: dict[str, float] = field(default_factory=dict)  # median, p90, max box area in px
    recall: dict | None = None  # box recall over clips with pixel masks; None when there are none
    disk_bytes: int = 0  # bytes of the shards of this run's clips

    @property
    def frames_per_s(self) -> float:
        return self.frames_built / self.build_seconds if self.build_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["frames_per_s"] = self.frames_per_s
        return d

    def format(self) -> str:
        lines = [f"cube store {self.store}  (preset {self.preset}, key {self.key[:12]})"]
        part = f" in shard {self.shard[0]}/{self.shard[1]}" if self.shard else ""
        lines.append(
            f"  clips{part}: {len(self.built)} built, {len(self.reused)} reused"
            f"  ({self.clips_total} in the dataset)"
        )
        if self.rebuild_reasons:
            reasons: dict[str, list[str]] = {}
            for clip, why in self.rebuild_reasons.items():
                reasons.setdefault(why if len(why) < 60 else "damaged shard", []).append(clip)
            for why, clips in reasons.items():
                lines.append(f"  rebuilt {len(clips)} clip(s): {why}" + (f" ({clips[0]}, ...)" if len(clips) > 1 else f" ({clips[0]})"))
        if self.frames_built:
            lines.append(
                f"  {self.frames_built} frames in {self.build_seconds:.1f} s: {self.frames_per_s:.0f} frames/s "
                f"({self.workers} worker{'s' if self.workers != 1 else ''})"
            )
        for split in self.cubes_per_split:
            lines.append(
                f"  {split:9s} {self.clips_per_split[split]:4d} clips {self.frames_per_split[split]:8d} frames "
                f"{self.cubes_per_split[split]:9d} cubes"
            )
        lines.append(f"  boxes per frame: {self.boxes_per_frame:.2f}  (frames 0-3 of a clip hold no cubes)")
        if self.box_area:
            a = self.box_area
            lines.append(f"  box area px: median {a['median']:.0f}, p90 {a['p90']:.0f}, max {a['max']:.0f}")
        if self.recall is not None:
            r = self.recall
            obj = r["found"] / r["objects"] if r["objects"] else float("nan")
            fr = r["frames_all_found"] / r["anomalous_frames"] if r["anomalous_frames"] else float("nan")
            lines.append(
                f"  box recall (pixel masks): {obj:.4f} of {r['objects']} anomalous objects found; "
                f"{fr:.4f} of {r['anomalous_frames']} anomalous frames have all objects found"
            )
            if r["objects_first_frames"]:
                lines.append(
                    f"    (not counted: {r['objects_first_frames']} objects in frames 0-3 of clips, which hold no cubes)"
                )
        lines.append(f"  disk: {self.disk_bytes / 2**20:.1f} MiB; took {self.total_seconds:.1f} s")
        if self.short_clips:
            shown = ", ".join(self.short_clips[:5]) + (" ..." if len(self.short_clips) > 5 else "")
            lines.append(
                f"warning: {len(self.short_clips)} clip(s) shorter than {MIN_FRAMES} frames have no cubes "
                f"(their frames are recorded, all empty): {shown}"
            )
        if not self.complete:
            lines.append("note: the store is not complete yet (other shards); run without --shard to finish it")
        return "\n".join(lines)


def _collect(report: PrepareReport, out: Path, chosen: list[tuple[str, Clip]]) -> None:
    areas = []
    recall = None
    eligible = 0
    for split, clip in chosen:
        done = st.read_done(out, split, clip.name)
        if done is None:  # cannot happen after a successful run
            raise DataError(st.clip_dir(out, split, clip.name), "clip missing after prepare")
        report.clips_per_split[split] = report.clips_per_split.get(split, 0) + 1
        report.frames_per_split[split] = report.frames_per_split.get(split, 0) + done["n_frames"]
        report.cubes_per_split[split] = report.cubes_per_split.get(split, 0) + done["n_cubes"]
        report.disk_bytes += sum(f["bytes"] for f in done["files"].values())
        eligible += max(0, done["n_frames"] - (MIN_FRAMES - 1))
        if done["n_cubes"]:
            b = np.load(st.clip_dir(out, split, clip.name) / "boxes.npy", mmap_mode="r", allow_pickle=False)
            b = np.asarray(b, dtype=np.int64)
            areas.append((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        r = done.get("stats", {}).get("recall")
        if r is not None:
            recall = dict.fromkeys(r, 0) if recall is None else recall
            for k, v in r.items():
                recall[k] = recall.get(k, 0) + v
    n_cubes = sum(report.cubes_per_split.values())
    report.boxes_per_frame = n_cubes / eligible if eligible else 0.0
    if areas:
        a = np.concatenate(areas)
        report.box_area = {
            "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)),
            "max": float(a.max()),
        }
    report.recall = recall


# ---------------------------------------------------------------- entry point
def prepare_dataset(
    root: Path | str | DatasetIndex,
    cfg: PrepareConfig,
    out: Path | str,
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    preset_name: str = "default",
    background: np.ndarray | None = None,
) -> PrepareReport:
    """Prepare every clip of every split of ``root`` into the cube store ``out``.

    Box method "bg" needs a background: ``background`` (a fitted model's ``background_``, to prepare
    other footage as that model saw its own), else it is learned from ``root``'s training split."""
    t_start = time.perf_counter()
    if isinstance(root, DatasetIndex):
        index = root
    else:
        index = load_dataset(Path(root))
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    shard_t = parse_shard(shard)
    out = Path(out)
    detector = None
    if "det" in cfg.boxes.method.split("+"):
        OnnxDetector(cfg.boxes)  # a missing or unloadable detector file fails here, before anything is written
        detector = file_digest(cfg.boxes.detector_onnx)
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(cfg)
    if needs_background(cfg.boxes):
        if background is None:
            background = training_background(index, cfg.boxes)
        write_background(out, background)
        settings["background"] = background_hash(background)  # a new background rebuilds every clip
    if detector is not None:
        settings["detector"] = detector  # another model file rebuilds every clip
    sh = st.settings_hash(settings)

    all_clips: list[tuple[str, Clip, str, str]] = []  # split, clip, source hash, key
    for split, clips in index.splits.items():
        for clip in clips:
            st.clip_dir(out, split, clip.name)  # validates names
            src = st.source_hash(clip)
            all_clips.append((split, clip, src, st.clip_key(sh, src)))
    if not all_clips:
        raise DataError(index.root, "the dataset has no clips")
    clip_order = [(split, clip.name, key) for split, clip, _, key in all_clips]
    chosen = [c for i, c in enumerate(all_clips) if shard_t is None or i % shard_t[1] == shard_t[0] - 1]

    report = PrepareReport(
        store=str(out),
        preset=preset_name,
        key="",
        complete=False,
        shard=shard_t,
        workers=workers,
        clips_total=len(all_clips),
    )
    jobs: list[_Job] = []
    for split, clip, src, key in chosen:
        label = f"{split}/{clip.name}"
        if clip.n_frames < MIN_FRAMES:
            report.short_clips.append(label)
        why = st.reuse_problem(out, split, clip.name, sh, src, full=True)
        if why is None:
            report.reused.append(label)
            continue
        if why != "not built":
            report.rebuild_reasons[label] = why
        jobs.append(_Job(split, clip, str(out), cfg, sh, src, key, background))

    if jobs:
        # The previous manifest may describe other settings: mark the store incomplete first.
        st.write_manifest(out, settings, preset_name, [(s, n, "") for s, n, _ in clip_order])
        frames = sum(j.clip.n_frames for j in jobs)
        t0 = time.perf_counter()
        log.info(f"prepare: {len(jobs)} clip(s), {frames} frames, {min(workers, len(jobs))} worker(s)")
        with tqdm(total=frames, unit="frame", desc="prepare", disable=not show_bars(progress), dynamic_ncols=True) as bar:
            if workers == 1 or len(jobs) == 1:
                for k, job in enumerate(jobs, 1):
                    build_clip(job, progress=bar.update)
                    _clip_done(job, k, len(jobs))
            else:
                _run_parallel(jobs, workers, bar)
        report.build_seconds = time.perf_counter() - t0
        report.frames_built = frames
        report.built = [f"{j.split}/{j.clip.name}" for j in jobs]

    manifest = st.write_manifest(out, settings, preset_name, clip_order)
    report.key = manifest["key"]
    report.complete = manifest["complete"]
    _collect(report, out, [(s, c) for s, c, _, _ in chosen])
    report.total_seconds = time.perf_counter() - t_start
    return report
