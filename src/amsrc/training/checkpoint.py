"""The one model file: :class:`Checkpoint`, written and read here and nowhere else.

A final model (``model.pt``, written by ``amsrc train``, ``amsrc fit`` or ``AMSRC.save``) holds

    format          "amsrc-model"
    format_version  FORMAT_VERSION (the layout of this file, not the package version)
    model           CPU state dict of the network
    config          the Preset as a dict (the network is rebuilt from it)
    train_stats     TrainStats: mean / std of S_f and S_p over the training cubes
    epoch, n_cubes  how it was trained
    threshold       Threshold or None: the decision threshold ``amsrc fit`` learned
    footage         Footage facts or None: fitted frame size, fps, training speed distribution
    background      (H, W) uint8 tensor or None: the training background of box method "bg"
    store_key       key of the cube store it was trained on, or None
    motion_bank     (K, D) float32 tensor or None: S_m's memory
    calibration     {appearance, flow} tensors or None: training cubes the "onnxruntime-int8" engine
                    calibrates on (train.calib_size)
    extras          plain, JSON-like facts (fit sources, range, validation), for people to read
    version         the amsrc version that wrote it

Only plain types and tensors, so ``torch.load(weights_only=True)`` reads it (nothing is
unpickled). Files of format_version 1 (before the threshold and footage were typed; their
``threshold`` / ``frame_size`` / ``fps`` / ``speed_stats`` keys lay at the top level) are read;
a newer format_version is refused with a message saying to upgrade amsrc.

The training state ``last.pt`` (:func:`save_state` / :func:`load_state`) is a separate format:
it exists to resume training and never scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amsrc import __version__
from amsrc.config import Preset
from amsrc.errors import DataError
from amsrc.model.inputs import to_channels_last
from amsrc.model.network import build_model
from amsrc.prepare.cubes import T_APPEARANCE, T_FLOW
from amsrc.prepare.features import SpeedStats
from amsrc.scoring import STD_FLOOR, TrainStats
from amsrc.utils import atomic_path

MODEL_FORMAT = "amsrc-model"  # "format" of model.pt
STATE_FORMAT = "amsrc-train-state"  # "format" of last.pt
FORMAT_VERSION = 3  # 3: the box background; 2: threshold and footage typed, format_version key; 1: the first build


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on the causally smoothed frame score, and how it was set."""

    value: float  # an event starts at or above it
    low: float  # an open event ends below it (hysteresis; low <= value)
    rule: str  # how it was set, in words
    false_alarms_per_hour: float | None = None  # events the rule raised on held-out normal footage, per hour

    def to_dict(self) -> dict[str, Any]:
        return {"value": float(self.value), "low": float(self.low), "rule": str(self.rule),
                "false_alarms_per_hour": None if self.false_alarms_per_hour is None else float(self.false_alarms_per_hour)}

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> Threshold:
        try:
            value, low = float(d["value"]), float(d["low"])
            fa = d.get("false_alarms_per_hour")
            out = cls(value, low, str(d.get("rule", "")), None if fa is None else float(fa))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(source, f"the checkpoint's threshold is not readable: {exc!r}") from None
        if not (math.isfinite(value) and math.isfinite(low)):
            raise DataError(source, f"the checkpoint's threshold is not finite: value {value}, low {low}")
        return out


@dataclass(frozen=True)
class FootageInfo:
    """What ``amsrc fit`` knows about the footage a model was fitted on."""

    frame_size: tuple[int, int] | None = None  # (H, W) of the fitted frames
    fps: float | None = None  # their frame rate, None if unknown
    speed_stats: SpeedStats | None = None  # distribution of the training objects' speeds (for explanations)

    def to_dict(self) -> dict[str, Any]:
        return {"frame_size": None if self.frame_size is None else [int(v) for v in self.frame_size],
                "fps": None if self.fps is None else float(self.fps),
                "speed_stats": None if self.speed_stats is None else self.speed_stats.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> FootageInfo:
        try:
            fs, fps, sp = d.get("frame_size"), d.get("fps"), d.get("speed_stats")
            return cls(None if fs is None else (int(fs[0]), int(fs[1])), None if fps is None else float(fps),
                       None if sp is None else SpeedStats.from_dict(sp))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise DataError(source, f"the checkpoint's footage facts are not readable: {exc!r}") from None


@dataclass
class Checkpoint:
    """A final model: weights, settings, training statistics and what fitting learned."""

    model: dict[str, torch.Tensor]  # CPU state dict
    preset: Preset
    train_stats: TrainStats
    epoch: int | None = None
    n_cubes: int | None = None
    threshold: Threshold | None = None
    footage: FootageInfo | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    background: np.ndarray | None = None  # (H, W) uint8: box method "bg"'s training background
    store_key: str | None = None  # key of the cube store it was trained on (settings + sources)
    motion_bank: np.ndarray | None = None  # (K, w3 [+ 1]) float32: S_m's memory (amsrc.scoring.memory_key)
    # (appearance (N, 5, S, S, C) uint8, flow (N, 4, S, S, 2) float16): training cubes the "onnxruntime-int8"
    # engine calibrates on (train.calib_size); None in files written before it or with calib_size 0
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    version: str = __version__  # amsrc version that wrote the file
    format_version: int = FORMAT_VERSION

    @classmethod
    def of(cls, model: torch.nn.Module, preset: Preset, train_stats: TrainStats, **kw) -> Checkpoint:
        return cls(cpu_state(model), preset, train_stats, **kw)

    def build_model(self, device: str = "cpu", source: Any = None) -> torch.nn.Module:
        """The network this checkpoint describes, with its weights, in eval mode on ``device``."""
        p = self.preset
        model = build_model(p.model, p.prepare.channels, p.prepare.cube_size)
        try:
            model.load_state_dict(self.model)
        except RuntimeError as exc:
            raise DataError(source, f"the weights do not fit the network its config describes: {exc}") from None
        if p.model.channels_last:
            to_channels_last(model)
        return model.to(device).eval()

    def to_dict(self) -> dict[str, Any]:
        return {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "model": self.model,
                "config": self.preset.to_dict(), "train_stats": self.train_stats.to_dict(), "epoch": self.epoch,
                "n_cubes": self.n_cubes, "threshold": None if self.threshold is None else self.threshold.to_dict(),
                "footage": None if self.footage is None else self.footage.to_dict(), "extras": dict(self.extras),
                "background": None if self.background is None else torch.from_numpy(np.ascontiguousarray(self.background)),
                "store_key": self.store_key, "version": self.version,
                "motion_bank": None if self.motion_bank is None else torch.from_numpy(
                    np.ascontiguousarray(self.motion_bank, dtype=np.float32)),
                "calibration": None if self.calibration is None else {
                    "appearance": torch.from_numpy(np.ascontiguousarray(self.calibration[0], dtype=np.uint8)),
                    "flow": torch.from_numpy(np.ascontiguousarray(self.calibration[1], dtype=np.float16))}}

    def save(self, path: str | Path) -> Path:
        """Write atomically (a temporary name, then rename)."""
        path = Path(path)
        save_torch(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a final model file; DataError naming the file for anything else."""
        path = Path(path)
        state = _torch_load(path, "an amsrc checkpoint")
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            raise DataError(path, "this is a training state (last.pt), not a final model; finish training "
                                  "with --resume to get model.pt")
        needed = {"model", "config", "train_stats", "version"}
        if not isinstance(state, dict) or state.get("format", MODEL_FORMAT) != MODEL_FORMAT or not needed <= set(state):
            raise DataError(path, "not an amsrc model checkpoint (expected a file written by amsrc train or fit: "
                                  "a dict with model, config, train_stats, version)")
        fv = state.get("format_version", 1)
        if not isinstance(fv, int) or fv > FORMAT_VERSION:
            raise DataError(path, f"written in checkpoint format {fv!r} by amsrc {state['version']}; this amsrc "
                                  f"{__version__} reads formats up to {FORMAT_VERSION}: upgrade amsrc to read it")
        try:
            preset = Preset.from_dict(state["config"])
        except (KeyError, TypeError) as exc:
            raise DataError(path, f"the checkpoint's config does not match this amsrc version {__version__} "
                                  f"(written by {state['version']}): {exc}") from None
        stats = TrainStats.from_dict(state["train_stats"], source=path)
        _check_finite_weights(state["model"], path)
        bank = _motion_bank(state.get("motion_bank"), preset, stats, path)
        _check_used_stds(stats, preset, path)
        if fv == 1:  # the first build kept what `fit` learned at the top level
            thr = None if state.get("threshold") is None else {
                "value": state["threshold"], "low": state.get("threshold_low", state["threshold"]),
                "rule": state.get("threshold_rule") or "", "false_alarms_per_hour": state.get("false_alarms_per_hour")}
            foot = {k: state.get(k) for k in ("frame_size", "fps", "speed_stats")}
            extras = {k: state[k] for k in ("fit_sources", "fit_range", "validation") if k in state}
        else:
            thr, foot, extras = state.get("threshold"), state.get("footage"), state.get("extras") or {}
        return cls(
            model=state["model"], preset=preset, train_stats=stats, epoch=state.get("epoch"),
            n_cubes=state.get("n_cubes"),
            threshold=None if thr is None else Threshold.from_dict(thr, path),
            footage=None if foot is None or all(v is None for v in foot.values()) else FootageInfo.from_dict(foot, path),
            extras=dict(extras), background=_background(state.get("background"), path),
            store_key=state.get("store_key") if isinstance(state.get("store_key"), str) else None,
            motion_bank=bank, calibration=_calibration(state.get("calibration"), preset, path),
            version=str(state["version"]), format_version=FORMAT_VERSION,
        )


def _check_finite_weights(weights: Any, path: Path) -> None:
    """Refuse weights that hold NaN or infinity (a diverged training): every score would be NaN."""
    if not isinstance(weights, dict):
        raise DataError(path, "the checkpoint's model is not a state dict of tensors")
    for name, t in weights.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(path, f"the weights hold NaN or infinite values (tensor {name!r}): the training "
                                  "diverged or the file was damaged; train again")


def _check_used_stds(stats: TrainStats, preset: Preset, path: Path) -> None:
    """A cue the score uses (weight != 0) needs a spread over the training objects: a std of 0 would
    turn every score of that cue into +-1e6 (STD_FLOOR)."""
    for cue, w, std in (("S_f", preset.score.w_f, stats.s_f_std), ("S_p", preset.score.w_p, stats.s_p_std),
                        ("S_m", preset.score.w_m, stats.s_m_std)):
        if w != 0 and not (std is not None and std > STD_FLOOR):  # NaN too
            raise DataError(path, f"train_stats: the std of {cue} over the training objects is {std:g} but the "
                                  f"score weighs it by {w:g}; a constant training score cannot be standardised "
                                  "(a damaged file, or a training set of identical objects)")


def _motion_bank(value: Any, preset: Preset, stats: TrainStats, path: Path) -> np.ndarray | None:
    """The checkpoint's S_m memory, checked: (K, w3) finite floats (w3 + 1 with a speed column) with K >= train.bank_k, and S_m
    statistics beside it; None when there is none (then score.w_m must be 0)."""
    if value is None:
        if preset.score.w_m != 0:
            raise DataError(path, f"score.w_m = {preset.score.w_m} but the model holds no S_m memory (trained "
                                  "without a motion stream or with train.bank_size 0): set score.w_m 0")
        return None
    bank = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
    width = int(preset.model.widths[3]) + (stats.speed_key is not None)  # + the speed column (memory_key)
    if bank.ndim != 2 or bank.shape[1] != width or bank.shape[0] < preset.train.bank_k:
        raise DataError(path, f"the S_m memory must be (K >= {preset.train.bank_k}, {width}), got {bank.shape}")
    if not np.all(np.isfinite(bank)):
        raise DataError(path, "the S_m memory holds NaN or infinite values")
    if stats.s_m_mean is None:
        raise DataError(path, "the checkpoint holds an S_m memory but no S_m statistics (train_stats s_m_mean, s_m_std)")
    return bank


def _calibration(value: Any, preset: Preset, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The checkpoint's calibration cubes, checked against the cube contract of its preset; None when there are none."""
    if value is None:
        return None
    s, c = preset.prepare.cube_size, preset.prepare.channels
    a = value.get("appearance") if isinstance(value, dict) else None
    f = value.get("flow") if isinstance(value, dict) else None
    n = a.shape[0] if isinstance(a, torch.Tensor) and a.ndim else -1
    if (not isinstance(a, torch.Tensor) or not isinstance(f, torch.Tensor) or n < 1 or a.dtype != torch.uint8
            or tuple(a.shape) != (n, T_APPEARANCE, s, s, c) or f.dtype != torch.float16
            or tuple(f.shape) != (n, T_FLOW, s, s, 2)):
        got = {k: (tuple(v.shape), str(v.dtype)) if isinstance(v, torch.Tensor) else type(v).__name__
               for k, v in (value.items() if isinstance(value, dict) else [("calibration", value)])}
        raise DataError(path, f"the calibration cubes must be appearance (N, {T_APPEARANCE}, {s}, {s}, {c}) uint8 and flow "
                              f"(N, {T_FLOW}, {s}, {s}, 2) float16 with N >= 1, got {got}")
    return a.numpy().copy(), f.numpy().copy()


def _background(value: Any, path: Path) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.ndim != 2:
        raise DataError(path, "the checkpoint's box background is not an (H, W) uint8 image")
    return value.numpy().copy()


# ---------------------------------------------------------------- files
def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_torch(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _torch_load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(path, "no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not usable
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(path, f"not {what}: torch.load(weights_only=True) failed ({type(exc).__name__}: {first})") from None


def save_state(state: dict, path: Path) -> None:
    """Write the training state ``last.pt`` (tagged with :data:`STATE_FORMAT`)."""
    save_torch({"format": STATE_FORMAT, **state, "version": __version__}, path)


def load_state(path: Path) -> dict:
    """Read a training state written by :func:`save_state`."""
    state = _torch_load(path, "an amsrc training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DataError(path, "not an amsrc training state (expected last.pt written by amsrc train)")
    return state
