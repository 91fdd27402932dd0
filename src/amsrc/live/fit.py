"""``amsrc fit``: train on normal footage and learn a decision threshold from it.

Sources are video files, frame folders or dataset roots (their training split). The cubes are
built by :func:`~amsrc.prepare.run.prepare_dataset` (the one cube code path) into a cube store
under the work folder; a ``--range`` is applied by slicing a frame folder's files, or for a video
by decoding that range once into a PNG frame folder (lossless: the same frames the video gives).

The threshold comes from normal footage the model did NOT train on: the clips named with
``holdout`` or, by default, the last :data:`HOLDOUT_TAIL` of every clip are held out of training,
scored as ``amsrc score`` would (causal smoothing), and the threshold is a high percentile of their
frame scores (:data:`THRESHOLD_Q`, so about 0.5% of normal frames lie above it); the end of an
event uses a lower percentile (:data:`THRESHOLD_LOW_Q`). The events that the live event rule
(:func:`amsrc.live.events.offline_events`) finds in the held-out footage give the expected false
alarms per hour. With an injected validation set (``validate``, `amsrc data inject`) fit also
reports the share of injected events alerted and the time to alert.
The checkpoint carries threshold, rule, fitted frame size, fps and the training objects' speed
distribution (for explanations), next to the usual model, config and train stats.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from amsrc.config import ModelConfig, Preset, get_preset
from amsrc.data.groundtruth import labels_to_intervals
from amsrc.data.index import Clip, DatasetIndex
from amsrc.data.layouts import load_dataset, normal_clips
from amsrc.data.readers import iter_video, open_clip
from amsrc.data.sources import DEFAULT_FPS
from amsrc.detector import AMSRC
from amsrc.errors import ConfigError, DataError
from amsrc.live.events import offline_events
from amsrc.prepare.cubes import T_APPEARANCE
from amsrc.prepare.features import SpeedStats, store_speeds
from amsrc.prepare.run import prepare_dataset
from amsrc.prepare.store import CubeStore
from amsrc.training.checkpoint import FootageInfo
from amsrc.training.checkpoint import Threshold as ThresholdRecord

THRESHOLD_Q = 99.5  # percentile of the training frame scores (smoothed, causal) that is the threshold
THRESHOLD_LOW_Q = 98.0  # percentile below which an open event ends (hysteresis)
HOLDOUT_TAIL = 0.2  # without named held-out clips: this last share of every clip is held out of training
HOLDOUT_SPLIT = "holdout"  # split of the cube store that holds the held-out footage
LARGE_FRAME_PX = 640 * 480  # frames with more pixels get the fastest DIS flow in the automatic settings
REFERENCE_HEIGHT = 240  # the default preset's box settings are for 240-pixel-high frames (Ped2)
REFERENCE_FPS = 25.0  # ... and its smoothing (sigma 3 frames) for 25 fps footage: sigma scales with the rate
MAX_FULL_HEIGHT = 480  # frames taller than this are prepared resized to PROCESS_HEIGHT rows (PrepareConfig.scale)
PROCESS_HEIGHT = 360


# ---------------------------------------------------------------- range
@dataclass(frozen=True)
class FrameRange:
    start: float  # first frame (unit "frames") or second (unit "s")
    stop: float | None  # exclusive end; None = to the end
    unit: str  # "frames" or "s"

    def frames(self, fps: float) -> tuple[int, int | None]:
        if self.unit == "frames":
            return int(self.start), None if self.stop is None else int(self.stop)
        return int(round(self.start * fps)), None if self.stop is None else int(round(self.stop * fps))


def parse_range(text: str | None) -> FrameRange | None:
    """``"0:60s"`` (seconds), ``"100:900"`` (frames), ``"10s:"`` / ``":500"`` (open ends)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.]*)(s?)\s*:\s*([0-9.]*)(s?)\s*", text)
    if not m:
        raise ConfigError(f"--range must look like 0:60s (seconds) or 100:900 (frames), got {text!r}")
    a, ua, b, ub = m.groups()
    sec = bool(ua or ub)
    try:
        start = float(a) if a else 0.0
        stop = float(b) if b else None
    except ValueError:
        raise ConfigError(f"--range: not a number in {text!r}") from None
    if not sec and (start != int(start) or (stop is not None and stop != int(stop))):
        raise ConfigError(f"--range in frames needs whole numbers (add 's' for seconds), got {text!r}")
    if stop is not None and stop <= start:
        raise ConfigError(f"--range {text!r} is empty (end <= start)")
    return FrameRange(start, stop, "s" if sec else "frames")


# ---------------------------------------------------------------- automatic settings
def _nearest_odd(x: float) -> int:
    """The odd integer nearest to x (ties go down): 4.5 -> 5, 6 -> 5, 13.5 -> 13, 18 -> 17."""
    return max(1, 2 * math.ceil((x - 1) / 2 - 0.5) + 1)


def auto_preset(height: int, width: int, fps: float | None, base: str = "default") -> tuple[Preset, list[str]]:
    """The ``base`` preset adapted to the footage: what depends on resolution scales with H / 240
    (closing kernel, min box area, margin, as the avenue/shanghaitech presets do), the causal
    smoothing spans ~0.12 s, training uses lr 1e-3 (the rate the ped2/synthetic presets settled on
    for CPU-sized runs). Frames taller than MAX_FULL_HEIGHT are prepared at PROCESS_HEIGHT rows (the
    box settings then scale with that height) with the ``small`` widths. Returns the preset and one
    line per choice."""
    p = get_preset(base)
    proc = 1.0
    if height > MAX_FULL_HEIGHT:
        # Chosen on a synthetic 1280x720 scene (write_scene seed 1, two trainings each; micro AUROC raw /
        # smoothed): prepared at 360 rows with the small widths 88.2 / 91.3 and 88.4 / 91.9, at full size
        # with the medium widths 90.0 / 92.7 and 85.3 / 89.3 (velocity 79.0 / 82.8). The CPU stages cost
        # ~1/4 (flow + boxes 12.8 -> 3.1 ms a frame), the network ~1/3 and training ~1/3.5.
        proc = PROCESS_HEIGHT / height
        p.prepare.scale = round(proc, 6)
        p.model.widths = ModelConfig.WIDTH_PRESETS["small"]
    s = height * proc / REFERENCE_HEIGHT
    b = p.prepare.boxes
    b.close_w = _nearest_odd(b.close_w * s)
    b.close_h = _nearest_odd(b.close_h * s)
    b.min_area = int(round(b.min_area * s * s))
    b.margin = max(1, int(round(b.margin * s)))
    b.edge_min_side = int(round(b.edge_min_side * s))
    flow_note = f"flow DIS {p.prepare.flow.dis_preset}"
    if height * width > LARGE_FRAME_PX and p.prepare.flow.method == "dis":
        # Real time at 25 fps leaves < 40 ms a frame; DIS "fine" alone takes ~33 ms at 1280x720 on one
        # core here, "ultrafast" ~10 ms (measured, see the fit/score report). Objects span more pixels
        # in large frames, so the coarser flow still resolves their motion.
        p.prepare.flow.dis_preset = "ultrafast"
        flow_note = f"flow DIS ultrafast (frames above {LARGE_FRAME_PX} px)"
    f = fps or DEFAULT_FPS
    p.score.smoothing = "gaussian"
    p.score.gaussian_sigma = round(3.0 * f / REFERENCE_FPS, 3)
    p.score.causal = True
    p.train.lr = 1e-3
    # Score weights: the paper's mix for Avenue (a general scene); S_f alone is Ped2-specific, and the
    # synthetic preset's validation scene also found the prediction error carrying the score.
    p.score.w_f, p.score.w_p = 0.2, 0.8
    p.name = f"{base}-auto"
    size_note = (f"prepared at {round(height * proc)} rows (scale {proc:.3g}); box settings scaled by {round(height * proc)}/240"
                 if proc != 1 else "box settings scaled by H/240")
    notes = [
        f"frame size {width}x{height}, {f:g} fps{'' if fps else ' (assumed)'}: {size_note} = {s:.3g}: "
        f"closing {b.close_w}x{b.close_h}, min_area {b.min_area}, margin {b.margin}; {flow_note}",
        f"causal gaussian smoothing sigma {p.score.gaussian_sigma:g} frames; lr {p.train.lr:g}, "
        f"{p.train.epochs} epochs, widths {tuple(p.model.widths)}, w_f={p.score.w_f} w_p={p.score.w_p}",
    ]
    return p, notes


# ---------------------------------------------------------------- sources -> index
def _clip_size(clip: Clip) -> tuple[int, int]:
    r = open_clip(clip)
    try:
        return tuple(r.shape)
    finally:
        if hasattr(r, "close"):
            r.close()


def _video_range_to_folder(clip: Clip, a: int, b: int | None, out: Path) -> Clip:
    """Decode frames [a, b) of a video into ``out/000000.png ...`` (atomic: temp folder then rename)."""
    if out.is_dir() and (out / "done").is_file():
        files = tuple(sorted(out.glob("*.png")))
        return Clip(clip.name, "training", out, len(files), files, fps=clip.fps)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n = 0
    for fr in iter_video(clip.source, a, b):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(fr, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise DataError(tmp, "could not encode a PNG frame")
        buf.tofile(str(tmp / f"{n:06d}.png"))
        n += 1
    if n == 0:
        raise DataError(clip.source, f"--range selects no frames (the video has {clip.n_frames})")
    (tmp / "done").write_text(f"{clip.source} {a}:{b}\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    files = tuple(sorted(out.glob("*.png")))
    return Clip(clip.name, "training", out, len(files), files, fps=clip.fps)


@dataclass
class Footage:
    index: DatasetIndex  # split "training": the clips to fit on (range applied)
    size: tuple[int, int]  # (H, W) of every clip
    fps: float | None  # frame rate (videos), None if unknown
    notes: list[str] = field(default_factory=list)


def build_footage(sources: list[str | Path], work: Path, frame_range: FrameRange | None = None,
                  fps: float | None = None) -> Footage:
    """Index the sources as one training split, with ``frame_range`` applied to every clip."""
    clips: list[Clip] = []
    for src in sources:
        clips += normal_clips(Path(src))
    if not clips:
        raise DataError(Path(str(sources[0])), "no clips found")
    sizes = {}
    for c in clips:
        sizes.setdefault(_clip_size(c), []).append(c.name)
    if len(sizes) > 1:
        desc = ", ".join(f"{w}x{h} ({', '.join(n[:3])})" for (h, w), n in sizes.items())
        raise ConfigError(f"the footage mixes frame sizes: {desc}; fit one model per camera/resolution")
    size = next(iter(sizes))
    rates = [c.fps for c in clips if c.fps]
    fps_found = fps or (float(np.median(rates)) if rates else None)
    out: list[Clip] = []
    names: dict[str, int] = {}
    for c in clips:
        base = c.name
        k = names.get(base, 0)
        names[base] = k + 1
        name = base if k == 0 else f"{base}_{k}"
        if frame_range is not None:
            a, b = frame_range.frames(c.fps or fps_found or DEFAULT_FPS)
            if c.frame_files is not None:
                files = c.frame_files[a:b]
                if not files:
                    raise DataError(c.source, f"--range selects no frames (the clip has {c.n_frames})")
                c = Clip(name, "training", c.source, len(files), tuple(files), fps=c.fps)
            else:
                c = _video_range_to_folder(c, a, b, work / "frames" / f"{name}_{a}_{b if b is not None else 'end'}")
                c = Clip(name, "training", c.source, c.n_frames, c.frame_files, fps=c.fps)
        else:
            c = Clip(name, "training", c.source, c.n_frames, c.frame_files, fps=c.fps)
        out.append(c)
    root = Path(str(sources[0]))
    return Footage(DatasetIndex(root=root, layout="fit", splits={"training": tuple(out)}), size, fps_found)


# ---------------------------------------------------------------- held-out footage and the threshold
def hold_out(foot: Footage, work: Path, holdout: list[str] | None = None,
             tail: float = HOLDOUT_TAIL) -> tuple[DatasetIndex, str]:
    """Split the footage into the clips to train on (split "training") and the held-out footage
    that sets the threshold (split :data:`HOLDOUT_SPLIT`): the named clips, or else the last
    ``tail`` of every clip long enough to keep two cubes' worth of frames on each side."""
    clips = list(foot.index.clips("training"))
    if holdout:
        names = {c.name for c in clips}
        unknown = [n for n in holdout if n not in names]
        if unknown:
            raise ConfigError(f"--holdout: no clip named {', '.join(unknown)}; the clips are {', '.join(sorted(names))}")
        fit = [c for c in clips if c.name not in holdout]
        held = [Clip(c.name, HOLDOUT_SPLIT, c.source, c.n_frames, c.frame_files, fps=c.fps) for c in clips if c.name in holdout]
        if not fit:
            raise ConfigError("--holdout names every clip: none is left to train on")
        desc = f"held-out clip(s) {', '.join(holdout)}"
    else:
        fit, held = [], []
        for c in clips:
            k = int(round(tail * c.n_frames))
            if k < 2 * T_APPEARANCE or c.n_frames - k < 2 * T_APPEARANCE:
                fit.append(c)  # too short to split: trained on whole
                continue
            a = c.n_frames - k
            if c.frame_files is not None:
                fit.append(Clip(c.name, "training", c.source, a, c.frame_files[:a], fps=c.fps))
                held.append(Clip(c.name, HOLDOUT_SPLIT, c.source, k, c.frame_files[a:], fps=c.fps))
            else:
                head = _video_range_to_folder(c, 0, a, work / "frames" / f"{c.name}_0_{a}")
                tl = _video_range_to_folder(c, a, None, work / "frames" / f"{c.name}_{a}_end")
                fit.append(Clip(c.name, "training", head.source, head.n_frames, head.frame_files, fps=c.fps))
                held.append(Clip(c.name, HOLDOUT_SPLIT, tl.source, tl.n_frames, tl.frame_files, fps=c.fps))
        if not held:
            need = int(np.ceil((2 * T_APPEARANCE - 0.5) / tail))
            raise ConfigError(f"the footage is too short to hold out its last {tail:.0%}: a clip needs about "
                              f"{need} frames (clips: {', '.join(f'{c.name} {c.n_frames}' for c in clips)}); "
                              "name a held-out clip with --holdout")
        desc = f"the last {tail:.0%} of every clip"
    splits = {"training": tuple(fit), HOLDOUT_SPLIT: tuple(held)}
    return DatasetIndex(root=foot.index.root, layout="fit", splits=splits), desc


@dataclass
class Threshold:
    value: float  # decision threshold on the causally smoothed frame score
    low: float  # an open event ends below this
    rule: str  # how it was set, in words
    frames: int  # held-out normal frames it was set on
    above: float  # share of those frames at or above it
    events: int  # events the live event rule finds in them (false alarms)
    hours: float  # their duration
    fps: float  # frame rate used for the duration
    fps_assumed: bool

    @property
    def false_alarms_per_hour(self) -> float:
        return self.events / self.hours if self.hours > 0 else float("nan")

    def format(self) -> str:
        per = self.hours * 3600
        return (f"threshold {self.value:.4f} (low {self.low:.4f}): {self.rule}; on those {self.frames} held-out normal "
                f"frames ({per:.0f} s at {self.fps:g} fps{' (assumed)' if self.fps_assumed else ''}) "
                f"{100 * self.above:.2f}% of frames are above it and the event rule raises {self.events} alarm(s): "
                f"expected false alarms {self.false_alarms_per_hour:.1f} per hour of normal footage"
                + (f" (fewer than 1 per {per:.0f} s seen)" if self.events == 0 else ""))


def frame_scores_smoothed(det, store, split: str) -> list[np.ndarray]:
    """Smoothed frame scores of every clip of a split (the preset's smoothing; causal for a fitted
    model, as live scoring computes them)."""
    return [det.score_clip(store.load(split, n)).frame for n in store.clips(split)]


def alarms(scores: list[np.ndarray], value: float, low: float) -> tuple[int, float, int]:
    """(frames, share of frames >= value, events of the live event rule) of clips' smoothed scores."""
    allf = np.concatenate(scores) if scores else np.zeros(0)
    events = sum(len(offline_events(s, value, low)) for s in scores)
    return int(allf.size), float(np.mean(allf >= value)) if allf.size else float("nan"), int(events)


def learn_threshold(det, store, split: str, desc: str, fps: float | None) -> Threshold:
    """:data:`THRESHOLD_Q`-th percentile of the held-out frames' smoothed scores, with its false alarms."""
    scores = frame_scores_smoothed(det, store, split)
    allf = np.concatenate(scores) if scores else np.zeros(0)
    if allf.size == 0:
        raise ConfigError(f"{store.root}: no held-out frames to set the threshold on")
    thr = float(np.percentile(allf, THRESHOLD_Q))
    low = float(np.percentile(allf, THRESHOLD_LOW_Q))
    frames, above, events = alarms(scores, thr, low)
    rate = fps or DEFAULT_FPS
    rule = (f"{THRESHOLD_Q}th percentile of the causally smoothed frame scores of {desc} (not trained on); "
            f"events end below the {THRESHOLD_LOW_Q}th percentile")
    return Threshold(thr, low, rule, frames, above, events, frames / rate / 3600.0, float(rate), fps is None)


def validate_alerts(det, threshold: Threshold, val_root: str | Path, work: Path, progress: bool = False) -> dict:
    """Alerts on an injected validation set (`amsrc data inject`): its labelled test clips are
    prepared with the model's settings and scored as live; an injected event is detected when an
    alert event overlaps it; time to alert = alert frame - its first labelled frame."""
    idx = load_dataset(Path(val_root))
    test = [c for c in idx.clips("testing") if c.labels is not None]
    if not test:
        raise DataError(Path(val_root), "has no labelled test clips (expected a set written by `amsrc data inject`)")
    sub = DatasetIndex(root=idx.root, layout=idx.layout, splits={"testing": tuple(test)})
    prepare_dataset(sub, det.preset_.prepare, work / "validate_cubes", progress=progress, preset_name=det.preset_.name,
                    background=det.background_)
    store = CubeStore.open(work / "validate_cubes")
    scores = frame_scores_smoothed(det, store, "testing")
    n_ev = detected = false_alarms = normal = 0
    delays = []

    def overlaps(e: dict, a: int, b: int) -> bool:  # an alert event and labelled frames a..b (inclusive)
        return e["start_frame"] <= b and e["end_frame"] >= a

    for c, s in zip(test, scores):
        evs = offline_events(s, threshold.value, threshold.low)
        truth = [(a - 1, b - 1) for a, b in labels_to_intervals(c.labels)]  # 0-based inclusive
        normal += int((c.labels == 0).sum())
        n_ev += len(truth)
        for a, b in truth:
            hits = [e for e in evs if overlaps(e, a, b)]
            if hits:
                detected += 1
                delays.append(max(0, min(e["alert_frame"] for e in hits) - a))
        false_alarms += sum(1 for e in evs if not any(overlaps(e, a, b) for a, b in truth))
    rate = threshold.fps
    return {"events": n_ev, "detected": detected, "detection_rate": detected / n_ev if n_ev else float("nan"),
            "median_delay_s": float(np.median(delays)) / rate if delays else None,
            "false_alarms": false_alarms, "normal_s": normal / rate, "root": str(val_root)}


def format_validation(v: dict) -> str:
    delay = "n/a" if v["median_delay_s"] is None else f"{v['median_delay_s']:.1f} s"
    return (f"validation on {v['root']}: {v['detected']} of {v['events']} injected events alerted "
            f"({100 * v['detection_rate']:.0f}%), median time to alert {delay}; {v['false_alarms']} false alarm(s) "
            f"in {v['normal_s']:.0f} s of its normal frames")


# ---------------------------------------------------------------- fit
@dataclass
class FitResult:
    model_path: Path
    threshold: float
    threshold_low: float
    rule: str
    false_alarms_per_hour: float
    validation: dict | None
    frame_size: tuple[int, int]
    fps: float | None
    n_frames: int
    n_cubes: int
    notes: list[str]


def fit_footage(sources: list[str | Path], out: str | Path, *, preset: str | None = None,
                frame_range: str | FrameRange | None = None, epochs: int | None = None,
                widths: str | None = None, work: str | Path | None = None, fps: float | None = None,
                holdout: list[str] | None = None, validate: str | Path | None = None,
                device: str = "cpu", progress: bool = True, log=print) -> FitResult:
    """Prepare cubes of the footage, train on all but the held-out footage, learn the threshold on
    the held-out footage (:func:`hold_out`, :func:`learn_threshold`), optionally measure the alerts
    on an injected validation set; write the model to ``out``."""
    out = Path(out)
    work = Path(work) if work is not None else out.with_name(out.stem + "_work")
    work.mkdir(parents=True, exist_ok=True)
    rng = parse_range(frame_range) if isinstance(frame_range, str) else frame_range
    foot = build_footage(list(sources), work, rng, fps)
    h, w = foot.size
    if preset is None:
        p, notes = auto_preset(h, w, foot.fps)
    else:
        p = get_preset(preset)
        p.score.causal = True
        notes = [f"preset {p.name} as given (frame size {w}x{h}, "
                 f"{foot.fps:g} fps)" if foot.fps else f"preset {p.name} as given (frame size {w}x{h})"]
    if widths is not None:
        if widths not in ModelConfig.WIDTH_PRESETS:
            raise ConfigError(f"--widths must be one of {', '.join(ModelConfig.WIDTH_PRESETS)}, got {widths!r}")
        p.model.widths = ModelConfig.WIDTH_PRESETS[widths]
        notes.append(f"widths {widths} {p.model.widths}")
    if epochs is not None:
        p.train.epochs = int(epochs)
        notes.append(f"epochs {epochs}")
    n_frames = sum(c.n_frames for c in foot.index.clips("training"))
    notes.insert(0, f"footage: {len(foot.index.clips('training'))} clip(s), {n_frames} frames"
                    + (f" (range {frame_range})" if frame_range else ""))
    for line in notes:
        log(f"fit: {line}")

    index, desc = hold_out(foot, work, holdout)
    log(f"fit: threshold set on {desc}: {sum(c.n_frames for c in index.clips(HOLDOUT_SPLIT))} frames held out of training")
    report = prepare_dataset(index, p.prepare, work / "cubes", progress=progress, preset_name=p.name)
    log(report.format())
    store = CubeStore.open(work / "cubes")
    det = AMSRC(preset=p, device=device, progress=progress).fit(store, work / "train")

    # Threshold from held-out normal footage, scored as live scoring does (causal smoothing per clip).
    thr = learn_threshold(det, store, HOLDOUT_SPLIT, desc, foot.fps)
    log(f"fit: {thr.format()}")
    validation = None
    if validate is not None:
        validation = validate_alerts(det, thr, validate, work, progress=progress)
        log(f"fit: {format_validation(validation)}")
    n_cubes = sum(store.load("training", n, verify=False).n_cubes for n in store.clips("training"))
    det.threshold_ = ThresholdRecord(thr.value, thr.low, thr.rule, thr.false_alarms_per_hour)
    det.footage_ = FootageInfo((int(h), int(w)), float(foot.fps) if foot.fps else None,
                               SpeedStats.from_speeds(store_speeds(store, "training")))
    det.extras_ = {"fit_sources": [str(s) for s in sources],
                   "fit_range": frame_range if isinstance(frame_range, str) else None, "validation": validation}
    det.save(out)
    log(f"fit: model written to {out}")
    return FitResult(out, thr.value, thr.low, thr.rule, thr.false_alarms_per_hour, validation, (h, w), foot.fps,
                     n_frames, n_cubes, notes)
