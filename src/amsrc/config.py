"""Settings as dataclasses (one comment per field) and named presets.

A preset fixes every choice of a run. Values come from the paper, from training data, or from
the synthetic scenes; none is chosen by looking at test labels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from amsrc.errors import ConfigError


@dataclass
class FlowConfig:
    method: str = "dis"  # "dis" (default), "farneback", "tvl1", "raft" (needs a local weights file)
    dis_preset: str = "medium"  # DIS preset: "ultrafast", "fast" or "medium"
    raft_weights: str | None = None  # path to local RAFT weights, only for method="raft"


@dataclass
class BoxConfig:
    method: str = "diff"  # motion boxes: "diff" (frame differencing) or "mog2" (background subtraction)
    threshold: float = 18.0  # grey-level difference that counts as motion
    min_area: int = 60  # smallest box kept, in pixels (after the margin)
    max_area_frac: float = 0.25  # largest box kept, as a fraction of the frame area
    max_aspect: float = 6.0  # longest/shortest side above this is dropped (lines, flicker)
    margin: int = 4  # pixels added on each side of a box
    morph: int = 3  # size of the morphological closing/opening kernel
    nms_iou: float = 0.6  # boxes overlapping more than this are merged


@dataclass
class PrepareConfig:
    flow: FlowConfig = field(default_factory=FlowConfig)  # optical flow between t-1 and t
    boxes: BoxConfig = field(default_factory=BoxConfig)  # foreground boxes at t
    cube_size: int = 32  # side of each resized crop
    channels: int = 1  # 1 = grey appearance crops, 3 = RGB


@dataclass
class ModelConfig:
    variant: str = "amsrc"  # "amsrc" (gated fusion), "nogate" (bottlenecks added), "baseline" (appearance only)
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of the four encoder stages
    flow_scale: float = 4.0  # flow vectors (image pixels) are divided by this before the network


@dataclass
class TrainConfig:
    epochs: int = 20  # the last epoch is the final model
    batch_size: int = 128  # paper
    lr: float = 2e-4  # Adam, paper
    lr_decay: float = 0.8  # multiply the learning rate by this ...
    lr_step: int = 10  # ... every this many epochs (paper)
    weight_decay: float = 1e-4  # lambda_model of the L2 term on the weights
    w_intensity: float = 1.0  # weight of the intensity loss
    w_gradient: float = 1.0  # weight of the gradient loss
    w_consistency: float = 1.0  # weight of the 1 - cos consistency loss
    seed: int = 0  # seeds data order and initial weights
    threads: int = 0  # torch threads; 0 = torch's default


@dataclass
class ScoreConfig:
    w_f: float = 1.0  # weight of z(S_f), the appearance-motion inconsistency 1 - cos
    w_p: float = 0.0  # weight of z(S_p), the prediction error
    smoothing: str = "none"  # temporal smoothing of frame scores: "none", "median", "gaussian"
    median_k: int = 9  # window of the median filter (odd)
    gaussian_sigma: float = 3.0  # sigma of the Gaussian filter, in frames
    causal: bool = False  # True: smoothing looks only backwards (live scoring)


@dataclass
class Preset:
    name: str  # preset name
    prepare: PrepareConfig = field(default_factory=PrepareConfig)  # flow, boxes, cubes
    model: ModelConfig = field(default_factory=ModelConfig)  # network
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation
    score: ScoreConfig = field(default_factory=ScoreConfig)  # scoring

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preset":
        return cls(
            name=d["name"],
            prepare=PrepareConfig(
                flow=FlowConfig(**d["prepare"]["flow"]),
                boxes=BoxConfig(**d["prepare"]["boxes"]),
                **{k: v for k, v in d["prepare"].items() if k not in ("flow", "boxes")},
            ),
            model=ModelConfig(**{**d["model"], "widths": tuple(d["model"]["widths"])}),
            train=TrainConfig(**d["train"]),
            score=ScoreConfig(**d["score"]),
        )


def _synthetic() -> Preset:
    p = Preset(name="synthetic")
    p.train.epochs = 8
    p.model.widths = (16, 32, 64, 128)
    return p


def _ped2() -> Preset:
    p = Preset(name="ped2")
    p.score.w_f, p.score.w_p = 1.0, 0.0  # official code scores Ped2 with S_f alone
    return p


def _avenue() -> Preset:
    p = Preset(name="avenue")
    p.prepare.channels = 3
    p.score.w_f, p.score.w_p = 0.2, 0.8  # paper
    return p


def _shanghaitech() -> Preset:
    p = Preset(name="shanghaitech")
    p.prepare.channels = 3
    p.score.w_f, p.score.w_p = 0.4, 0.6  # paper
    return p


def _default() -> Preset:
    return Preset(name="default")


_PRESETS = {
    "default": _default,
    "synthetic": _synthetic,
    "ped2": _ped2,
    "avenue": _avenue,
    "shanghaitech": _shanghaitech,
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """A fresh copy of a named preset."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}") from None
