"""AMSRC-Net: appearance UNet encoder, motion encoder, gated fusion, decoder with appearance skips
(all three, as the paper's UNet, by default; ``ModelConfig.skips`` keeps only the coarsest ones).

Pure ``nn.Module``s: no device moves, optimizers, paths or prints. A variant is a registered
function (``@register_variant``) ``(cfg, channels, cube_size) -> AMSRCNet``; :func:`build_model`
looks it up by ``cfg.variant``.

Shapes (S = cube size, a multiple of 8; C = image channels; w = cfg.widths):

    app_in  (B, 4*C, S, S) float32 in [0, 1]   frames t-4 .. t-1, frame-major channels; the appearance
                                                stream reads the last cfg.appearance_frames of them
    flow_in (B, 8, S, S)   float32              flows (t-4->t-3) .. (t-1->t) as (dx, dy), / flow_scale; the
                                                motion stream reads the first 2 * cfg.motion_flows channels
    pred    (B, C, S, S)   in [0, 1]            predicted frame t
    x, y    (B, w[3] * (S/8)**2)                appearance / motion bottlenecks, flattened (y None: baseline)
    m       (B, w[3])                           motion bottleneck averaged over its S/8 x S/8 positions, before
                                                any standardisation (None: baseline): the motion semantics
                                                S_m compares with the training objects' (amsrc.scoring)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from amsrc.config import ModelConfig
from amsrc.errors import ConfigError
from amsrc.model.losses import CONSISTENCY
from amsrc.prepare.cubes import T_APPEARANCE, T_FLOW


class NetOutput(NamedTuple):
    pred: torch.Tensor | None  # (B, C, S, S) predicted frame t, in [0, 1]; None from ``encode``
    x: torch.Tensor  # (B, D) appearance bottleneck, flattened
    y: torch.Tensor | None  # (B, D) motion bottleneck, flattened; None for the baseline
    m: torch.Tensor | None = None  # (B, w3) motion bottleneck pooled over positions; None for the baseline


class DoubleConv(nn.Sequential):
    """2x (conv3x3 + BN + ReLU)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """maxpool 2 + DoubleConv: halves the side."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out))


class Up(nn.Module):
    """Transposed conv x2, concatenate the appearance skip (``skip=False``: none), DoubleConv."""

    def __init__(self, c_in: int, c_out: int, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = DoubleConv(2 * c_out if skip else c_out, c_out)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = self.up(h)
        return self.conv(torch.cat([h, skip], dim=1) if self.skip else h)


class AppearanceEncoder(nn.Module):
    """UNet encoder: DoubleConv at S, three Down stages to (w[3], S/8, S/8). Returns all four maps."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int]):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.inc = DoubleConv(c_in, w0)
        self.down1 = Down(w0, w1)
        self.down2 = Down(w1, w2)
        self.down3 = Down(w2, w3)

    def forward(self, a: torch.Tensor) -> list[torch.Tensor]:
        s0 = self.inc(a)  # (B, w0, S, S)
        s1 = self.down1(s0)  # (B, w1, S/2, S/2)
        s2 = self.down2(s1)  # (B, w2, S/4, S/4)
        s3 = self.down3(s2)  # (B, w3, S/8, S/8) bottleneck
        return [s0, s1, s2, s3]


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class MotionEncoder(nn.Sequential):
    """conv3x3 at S, then three stride-2 conv3x3 to (w[3], S/8, S/8); every conv is followed by BN + ReLU
    (so the bottleneck ends with a ReLU, like the appearance one)."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int]):
        w0, w1, w2, w3 = widths
        super().__init__(
            *_conv_bn_relu(c_in, w0, 1),
            *_conv_bn_relu(w0, w1, 2),
            *_conv_bn_relu(w1, w2, 2),
            *_conv_bn_relu(w2, w3, 2),
        )


class AMSRCNet(nn.Module):
    """The network. ``fusion``: "gate" (x + sigmoid(x) * y), "add" (x + y) or None (appearance only)."""

    def __init__(self, channels: int, widths: tuple[int, int, int, int], fusion: str | None,
                 standardise: bool = False, cube_size: int = 32, skips: int = 3, motion_flows: int = T_FLOW,
                 consistency: str = "cosine", appearance_frames: int = T_APPEARANCE - 1):
        super().__init__()
        if fusion not in ("gate", "add", None):
            raise ConfigError(f"unknown fusion {fusion!r}; expected 'gate', 'add' or None")
        if skips not in (0, 1, 2, 3):
            raise ConfigError(f"model.skips must be 0, 1, 2 or 3 (appearance skips into the decoder), got {skips!r}")
        if motion_flows not in range(1, T_FLOW + 1):
            raise ConfigError(f"model.motion_flows must be 1 .. {T_FLOW} (the earliest flows of a cube the motion "
                              f"stream sees), got {motion_flows!r}")
        if appearance_frames not in range(1, T_APPEARANCE):
            raise ConfigError(f"model.appearance_frames must be 1 .. {T_APPEARANCE - 1} (the latest input frames the "
                              f"appearance stream sees), got {appearance_frames!r}")
        if consistency not in CONSISTENCY:
            raise ConfigError(f"model.consistency must be one of {', '.join(CONSISTENCY)}, got {consistency!r}")
        if consistency == "squared" and fusion is not None and not standardise:
            raise ConfigError("model.consistency=squared needs model.standardise=true: unstandardised bottlenecks "
                              "can meet by shrinking to 0")
        w0, w1, w2, w3 = widths
        self.fusion = fusion
        self.motion_flows = motion_flows
        self.in_channels = (T_APPEARANCE - 1) * channels  # app_in: frames t-4 .. t-1
        self.app_channels = appearance_frames * channels  # the appearance stream's: the last ones, frames t-k .. t-1
        self.consistency = consistency  # how S_f and the consistency loss compare x and y (model.losses)
        self.appearance = AppearanceEncoder(self.app_channels, widths)
        self.motion = MotionEncoder(2 * motion_flows, widths) if fusion is not None else None
        # skips, coarsest first: up1 takes the S/4 map, up2 the S/2 one, up3 the full-size one
        self.up1 = Up(w3, w2, skip=skips >= 1)
        self.up2 = Up(w2, w1, skip=skips >= 2)
        self.up3 = Up(w1, w0, skip=skips >= 3)
        self.out = nn.Conv2d(w0, channels, 1)
        # Standardised consistency: x and y are returned per-feature standardised (batch statistics
        # in training, running training statistics in eval), so a constant bottleneck cannot make
        # 1 - cos(x, y) vanish. The fusion still sees the raw bottlenecks.
        self.std_x = self.std_y = None
        if standardise and fusion is not None:
            dim = w3 * (cube_size // 8) ** 2  # flattened bottleneck (w3, S/8, S/8)
            self.std_x = nn.BatchNorm1d(dim, affine=False)
            self.std_y = nn.BatchNorm1d(dim, affine=False)

    def _consistency_pair(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bottleneck maps -> the (B, D) x, y that the consistency and S_f compare (flattened, and
        standardised when the net was built with ``standardise``)."""
        x, y = x.flatten(1), None if y is None else y.flatten(1)
        if self.std_x is not None:
            x, y = self.std_x(x), self.std_y(y)
        return x, y

    def _motion(self, flow_in: torch.Tensor | None) -> torch.Tensor | None:
        if self.motion is None:
            return None
        if flow_in is None:
            raise ValueError("this variant needs flow_in")
        if self.motion_flows < T_FLOW:
            flow_in = flow_in[:, : 2 * self.motion_flows]
        return self.motion(flow_in)

    def _appearance(self, app_in: torch.Tensor):
        if self.app_channels < self.in_channels:
            app_in = app_in[:, -self.app_channels:]
        return self.appearance(app_in)

    def forward(self, app_in: torch.Tensor, flow_in: torch.Tensor | None = None) -> NetOutput:
        s0, s1, s2, x = self._appearance(app_in)
        y = self._motion(flow_in)
        if y is None:
            fused = x
        else:
            fused = x + torch.sigmoid(x) * y if self.fusion == "gate" else x + y
        h = self.up1(fused, s2)
        h = self.up2(h, s1)
        h = self.up3(h, s0)
        pred = torch.sigmoid(self.out(h))
        return NetOutput(pred, *self._consistency_pair(x, y), _pooled(y))

    def encode(self, app_in: torch.Tensor, flow_in: torch.Tensor | None = None) -> NetOutput:
        """What :meth:`forward` returns (same x, y, m) without the decoder (``pred`` is None): for scores
        that need no prediction (S_f, S_m)."""
        y = self._motion(flow_in)
        return NetOutput(None, *self._consistency_pair(self._appearance(app_in)[-1], y), _pooled(y))


def _pooled(y: torch.Tensor | None) -> torch.Tensor | None:
    """(B, w3, S/8, S/8) motion bottleneck -> (B, w3), its mean over positions."""
    return None if y is None else y.mean((2, 3))


# ---------------------------------------------------------------- variant registry
VariantFn = Callable[[ModelConfig, int, int], AMSRCNet]
_VARIANTS: dict[str, VariantFn] = {}


def register_variant(fn: VariantFn) -> VariantFn:
    """Decorator: register ``fn`` under its function name as a ``cfg.variant``."""
    if fn.__name__ in _VARIANTS:
        raise ValueError(f"variant {fn.__name__!r} registered twice")
    _VARIANTS[fn.__name__] = fn
    return fn


def variant_names() -> list[str]:
    return sorted(_VARIANTS)


def resolve_widths(widths: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Check a width tuple (named ones: ``ModelConfig.WIDTH_PRESETS``)."""
    widths = tuple(int(w) for w in widths)
    if len(widths) != 4 or min(widths) < 1:
        raise ConfigError(f"model widths must be 4 positive integers, got {widths}")
    return widths  # type: ignore[return-value]


@register_variant
def amsrc(cfg: ModelConfig, channels: int, cube_size: int) -> AMSRCNet:
    """Full AMSRC-Net: gated fusion x + sigmoid(x) * y."""
    return AMSRCNet(channels, resolve_widths(cfg.widths), fusion="gate", standardise=cfg.standardise, cube_size=cube_size,
                    skips=cfg.skips, motion_flows=cfg.motion_flows, consistency=cfg.consistency,
                    appearance_frames=cfg.appearance_frames)


@register_variant
def nogate(cfg: ModelConfig, channels: int, cube_size: int) -> AMSRCNet:
    """Ablation "w/o gated fusion": the two bottlenecks are added."""
    return AMSRCNet(channels, resolve_widths(cfg.widths), fusion="add", standardise=cfg.standardise, cube_size=cube_size,
                    skips=cfg.skips, motion_flows=cfg.motion_flows, consistency=cfg.consistency,
                    appearance_frames=cfg.appearance_frames)


@register_variant
def baseline(cfg: ModelConfig, channels: int, cube_size: int) -> AMSRCNet:
    """Ablation "baseline": appearance stream only (no motion encoder, y is None)."""
    return AMSRCNet(channels, resolve_widths(cfg.widths), fusion=None, skips=cfg.skips, motion_flows=cfg.motion_flows,
                    consistency=cfg.consistency, appearance_frames=cfg.appearance_frames)  # no motion stream: flow settings only checked


def build_model(cfg: ModelConfig, channels: int, cube_size: int) -> AMSRCNet:
    """The registered variant ``cfg.variant`` for ``channels``-channel cubes of side ``cube_size``."""
    if cube_size < 8 or cube_size % 8:
        raise ConfigError(f"cube_size must be a positive multiple of 8 (three 2x downsamplings), got {cube_size}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    try:
        fn = _VARIANTS[cfg.variant]
    except KeyError:
        raise ConfigError(f"unknown model variant {cfg.variant!r}; choose one of {', '.join(variant_names())}") from None
    return fn(cfg, channels, cube_size)
