"""Cubes -> network inputs (DESIGN.md section 3), and the memory layout the network runs in.

:func:`to_tensors` is the one conversion from stored cubes to network inputs; training, scoring
and the export check all use it. The cube contract (T_APPEARANCE frames t-4 .. t, T_FLOW flows
ending at t, 2 flow components) comes from :mod:`amsrc.prepare.cubes`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from amsrc.errors import DataError
from amsrc.prepare.cubes import T_APPEARANCE, T_FLOW

FLOW_CHANNELS = 2 * T_FLOW  # (dx, dy) of each flow: the network's flow input (its motion stream reads 2 * motion_flows)


class ObjectScores(NamedTuple):
    s_f: np.ndarray  # (N,) float32 S_f (1 - cos(x, y) by default); zeros for the baseline variant
    s_p: np.ndarray  # (N,) float32 sum of squared prediction error of frame t; NaN when not computed (need_pred=False)


def check_cubes(appearance, flow, channels: int | None = None, cube_size: int | None = None) -> int:
    """Check a pair of cube arrays and return N. Raises DataError naming the file (for memmaps) and
    what was expected: appearance (N, T_APPEARANCE, S, S, C) uint8, flow (N, T_FLOW, S, S, 2) float."""
    where = getattr(appearance, "filename", None)
    a_shape = tuple(appearance.shape)
    if len(a_shape) != 5 or a_shape[1] != T_APPEARANCE or a_shape[2] != a_shape[3]:
        raise DataError(where, f"appearance cubes must be (N, {T_APPEARANCE}, S, S, C), got shape {a_shape}")
    if np.dtype(str(appearance.dtype).replace("torch.", "")) != np.uint8:
        raise DataError(where, f"appearance cubes must be uint8, got {appearance.dtype}")
    if cube_size is not None and a_shape[2] != cube_size:
        raise DataError(where, f"appearance cubes have side {a_shape[2]}, the preset expects {cube_size}")
    if channels is not None and a_shape[4] != channels:
        raise DataError(where, f"appearance cubes have {a_shape[4]} channels, the preset expects {channels}")
    where_f = getattr(flow, "filename", None)
    f_shape = tuple(flow.shape)
    n, s = a_shape[0], a_shape[2]
    if f_shape != (n, T_FLOW, s, s, 2):
        raise DataError(where_f, f"flow cubes must be {(n, T_FLOW, s, s, 2)} to match the appearance cubes, got {f_shape}")
    if not np.issubdtype(np.dtype(str(flow.dtype).replace("torch.", "")), np.floating):
        raise DataError(where_f, f"flow cubes must be float16/float32, got {flow.dtype}")
    return n


def _writable(x):
    """A numpy array torch can wrap without a warning (read-only memmap slices are copied; tensors pass)."""
    if isinstance(x, torch.Tensor):
        return x
    x = np.asarray(x)
    return x if x.flags.writeable else np.array(x)


def to_tensors(appearance_u8, flow_f16, flow_scale: float, channels_last: bool = False):
    """Stored cubes -> (app_in, target, flow_in), float32 CPU tensors.

    appearance_u8 (B, 5, S, S, C) uint8 crops of frames t-4 .. t
    flow_f16      (B, 4, S, S, 2) float16 flows (t-4->t-3) .. (t-1->t), image pixels
    returns app_in (B, 4*C, S, S) in [0, 1] (frames t-4 .. t-1; channel k*C + c = frame k, colour c),
            target (B, C, S, S) in [0, 1] (frame t),
            flow_in (B, 8, S, S) = flow / flow_scale, channels (dx, dy) of flow 0, then flow 1, ...
    ``channels_last``: return tensors in channels-last memory layout (same values).
    """
    a = torch.as_tensor(_writable(appearance_u8))
    f = torch.as_tensor(_writable(flow_f16))
    b, t, s, _, c = a.shape
    if channels_last:
        # (B, 5, S, S, C) -> (B, S, S, 5*C) contiguous -> NCHW view with channels-last strides
        a = a.permute(0, 2, 3, 1, 4).reshape(b, s, s, t * c).permute(0, 3, 1, 2)
        f = f.permute(0, 2, 3, 1, 4).reshape(b, s, s, FLOW_CHANNELS).permute(0, 3, 1, 2)
        fmt = torch.channels_last
    else:
        a = a.permute(0, 1, 4, 2, 3).reshape(b, t * c, s, s)
        f = f.permute(0, 1, 4, 2, 3).reshape(b, FLOW_CHANNELS, s, s)
        fmt = torch.contiguous_format
    frames = a.to(torch.float32).div_(255.0)
    past = (T_APPEARANCE - 1) * c  # frames t-4 .. t-1 are the input, frame t the target
    app_in = frames[:, :past].contiguous(memory_format=fmt)
    target = frames[:, past:].contiguous(memory_format=fmt)
    flow_in = f.to(torch.float32).div_(float(flow_scale)).contiguous(memory_format=fmt)
    return app_in, target, flow_in


def uses_channels_last(model: torch.nn.Module) -> bool:
    """True when the model's first 3x3 conv weight is stored channels-last."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def network_inputs(model: torch.nn.Module, appearance, flow, flow_scale: float):
    """:func:`to_tensors` in the memory layout ``model`` runs in: the (app_in, target, flow_in) that
    :func:`amsrc.scoring.object_scores` builds, made ahead of time (e.g. in another thread) and passed as ``inputs``."""
    return to_tensors(appearance, flow, flow_scale, channels_last=uses_channels_last(model))


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Channels-last weights, in place. 1x1 kernels keep standard strides (for them both layouts are
    the same memory, and DDP's gradient buckets expect the strides autograd gives their gradients)."""
    model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        if p.dim() == 4 and p.shape[-2:] == (1, 1):
            p.data = p.data.clone(memory_format=torch.contiguous_format)
    return model


def mirror_cubes(app_in: torch.Tensor, target: torch.Tensor, flow_in: torch.Tensor, mask: torch.Tensor):
    """Network inputs (:func:`to_tensors`) with the cubes where ``mask`` (B,) bool is True mirrored
    left-right: frames and flows flipped along the width, the flows' x components (channels 0, 2, ...)
    negated, so the mirrored cube shows the mirrored motion. Others unchanged; memory layout kept."""
    if not bool(mask.any()):
        return app_in, target, flow_in
    sign = torch.ones(flow_in.shape[1], dtype=flow_in.dtype, device=flow_in.device)
    sign[0::2] = -1.0
    m = mask.to(flow_in.device)
    out = []
    for t, s in ((app_in, None), (target, None), (flow_in, sign)):
        f = t[m].flip(-1)
        r = t.clone()  # keeps the memory layout (channels-last or not)
        r[m] = f if s is None else f * s.view(1, -1, 1, 1)
        out.append(r)
    return tuple(out)
