"""``amsrc fit``: train on normal footage and learn a decision threshold from it.

Sources are video files, frame folders or dataset roots (their training split). The cubes are
built by :func:`~amsrc.prepare.run.prepare_dataset` (the one cube code path) into a cube store
under the work folder; a ``--range`` is applied by slicing a frame folder's files, or for a video
by decoding that range once into a PNG frame folder (lossless: the same frames the video gives).

The threshold comes from the normal data only: the training footage is scored as ``amsrc score``
would (causal smoothing), and the threshold is a high percentile of those frame scores
(:data:`THRESHOLD_Q`); the end of an event uses a lower percentile (:data:`THRESHOLD_LOW_Q`).
The checkpoint carries threshold, rule, fitted frame size, fps and the training objects' speed
distribution (for explanations), next to the usual model, config and train stats.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amsrc.config import Preset, get_preset
from amsrc.data.index import Clip, DatasetIndex
from amsrc.errors import ConfigError, DataError

THRESHOLD_Q = 99.5  # percentile of the training frame scores (smoothed, causal) that is the threshold
THRESHOLD_LOW_Q = 98.0  # percentile below which an open event ends (hysteresis)
LARGE_FRAME_PX = 640 * 480  # frames with more pixels get the fastest DIS flow in the automatic settings
REFERENCE_HEIGHT = 240  # the default preset's box settings are for 240-pixel-high frames (Ped2)


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
    for CPU-sized runs). Returns the preset and one line per choice."""
    p = get_preset(base)
    s = height / REFERENCE_HEIGHT
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
    f = fps or 25.0
    p.score.smoothing = "gaussian"
    p.score.gaussian_sigma = round(3.0 * f / 25.0, 3)
    p.score.causal = True
    p.train.lr = 1e-3
    # Score weights: the paper's mix for Avenue (a general scene); S_f alone is Ped2-specific, and the
    # synthetic preset's validation scene also found the prediction error carrying the score.
    p.score.w_f, p.score.w_p = 0.2, 0.8
    p.name = f"{base}-auto"
    notes = [
        f"frame size {width}x{height}, {f:g} fps{'' if fps else ' (assumed)'}: box settings scaled by H/240 = {s:.3g}: "
        f"closing {b.close_w}x{b.close_h}, min_area {b.min_area}, margin {b.margin}; {flow_note}",
        f"causal gaussian smoothing sigma {p.score.gaussian_sigma:g} frames; lr {p.train.lr:g}, "
        f"{p.train.epochs} epochs, widths {tuple(p.model.widths)}, w_f={p.score.w_f} w_p={p.score.w_p}",
    ]
    return p, notes


# ---------------------------------------------------------------- sources -> index
def _clips_of(source: Path) -> list[Clip]:
    from amsrc.data.layouts import load_dataset

    idx = load_dataset(source)
    for split in ("training", "all"):
        if idx.clips(split):
            return list(idx.clips(split))
    raise DataError(source, f"has no training clips (splits: {sorted(idx.splits)})")


def _clip_size(clip: Clip) -> tuple[int, int]:
    from amsrc.data.readers import open_clip

    r = open_clip(clip)
    try:
        return tuple(r.shape)
    finally:
        if hasattr(r, "close"):
            r.close()


def _video_range_to_folder(clip: Clip, a: int, b: int | None, out: Path) -> Clip:
    """Decode frames [a, b) of a video into ``out/000000.png ...`` (atomic: temp folder then rename)."""
    import shutil

    import cv2

    from amsrc.data.readers import iter_video

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
        clips += _clips_of(Path(src))
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
            a, b = frame_range.frames(c.fps or fps_found or 25.0)
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


# ---------------------------------------------------------------- fit
@dataclass
class FitResult:
    model_path: Path
    threshold: float
    threshold_low: float
    rule: str
    frame_size: tuple[int, int]
    fps: float | None
    n_frames: int
    n_cubes: int
    notes: list[str]


def training_speeds(store, split: str, chunk: int = 4096) -> np.ndarray:
    """Speeds (median last-flow magnitude, pixels/frame) of every training cube: (N,) float32."""
    from amsrc.stream import object_speeds

    out = []
    for name in store.clips(split):
        c = store.load(split, name)
        for i in range(0, len(c.flow), chunk):
            out.append(object_speeds(c.flow[i:i + chunk]))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit_footage(sources: list[str | Path], out: str | Path, *, preset: str | None = None,
                frame_range: str | FrameRange | None = None, epochs: int | None = None,
                widths: str | None = None, work: str | Path | None = None, fps: float | None = None,
                device: str = "cpu", progress: bool = True, log=print) -> FitResult:
    """Prepare cubes of the footage, train, learn the threshold; write the model to ``out``."""
    from amsrc.alerts import SpeedStats
    from amsrc.detector import AMSRC, _training_split
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore
    from amsrc.scoring import smooth
    from amsrc.train import save_checkpoint

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
        from amsrc.config import ModelConfig

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

    report = prepare_dataset(foot.index, p.prepare, work / "cubes", progress=progress, preset_name=p.name)
    log(report.format())
    store = CubeStore.open(work / "cubes")
    det = AMSRC(preset=p, device=device, progress=progress).fit(store, work / "train")

    # Threshold from the normal footage, scored as live scoring does (causal smoothing per clip).
    split = _training_split(store)
    frame_scores = []
    n_cubes = 0
    for name in store.clips(split):
        cs = det.score_clip(store.load(split, name))
        frame_scores.append(smooth(cs.frame_raw, det.preset_.score))
        n_cubes += len(cs.objects)
    allf = np.concatenate(frame_scores)
    thr = float(np.percentile(allf, THRESHOLD_Q))
    thr_low = float(np.percentile(allf, THRESHOLD_LOW_Q))
    rule = (f"threshold = {THRESHOLD_Q}th percentile of the {allf.size} training frame scores "
            f"(causal {det.preset_.score.smoothing} smoothing); events end below the {THRESHOLD_LOW_Q}th percentile")
    speeds = SpeedStats.from_speeds(training_speeds(store, split))
    save_checkpoint(out, det.model_, det.preset_, det.train_stats_.to_dict(), det.preset_.train.epochs,
                    threshold=thr, threshold_low=thr_low, threshold_rule=rule, frame_size=[int(h), int(w)],
                    fps=float(foot.fps) if foot.fps else None, speed_stats=speeds.to_dict(),
                    fit_sources=[str(s) for s in sources],
                    fit_range=frame_range if isinstance(frame_range, str) else None)
    log(f"fit: {rule}: {thr:.4f} (low {thr_low:.4f})")
    log(f"fit: model written to {out}")
    return FitResult(out, thr, thr_low, rule, (h, w), foot.fps, n_frames, n_cubes, notes)


# ---------------------------------------------------------------- load
@dataclass
class FittedModel:
    detector: object  # a fitted AMSRC
    threshold: float | None  # None for a model from `amsrc train` (no threshold learned)
    threshold_low: float | None
    rule: str | None
    frame_size: tuple[int, int] | None  # (H, W) fitted on
    fps: float | None
    speeds: object  # SpeedStats or None


def load_fitted(path: str | Path, device: str = "cpu") -> FittedModel:
    """A model written by ``amsrc fit`` (or ``amsrc train``: then no threshold/size/speeds)."""
    import torch

    from amsrc.alerts import SpeedStats
    from amsrc.detector import AMSRC

    det = AMSRC.load(path, device=device)
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    thr = state.get("threshold")
    fs = state.get("frame_size")
    sp = state.get("speed_stats")
    return FittedModel(
        det,
        None if thr is None else float(thr),
        None if state.get("threshold_low") is None else float(state["threshold_low"]),
        state.get("threshold_rule"),
        None if fs is None else (int(fs[0]), int(fs[1])),
        None if state.get("fps") is None else float(state["fps"]),
        None if sp is None else SpeedStats.from_dict(sp),
    )
