"""Cubes -> network inputs, and per-object scores (DESIGN.md section 6).

:func:`to_tensors` is the one conversion from stored cubes to network inputs; training and
scoring both use it. :func:`object_scores` gives per object

    S_f = 1 - cos(x, y)                 appearance/motion inconsistency (0 for the baseline)
    S_p = sum((pred - target)^2)        prediction error of frame t, summed over C x S x S

Higher = more anomalous for both. S_f needs only the two encoders: with ``need_pred=False`` the
decoder is skipped (:meth:`AMSRCNet.encode`, about 2.5x fewer operations) and S_p is NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from amsrc.errors import DataError


class ObjectScores(NamedTuple):
    s_f: np.ndarray  # (N,) float32 1 - cos(x, y); zeros for the baseline variant
    s_p: np.ndarray  # (N,) float32 sum of squared prediction error of frame t; NaN when not computed (need_pred=False)


def check_cubes(appearance, flow, channels: int | None = None, cube_size: int | None = None) -> int:
    """Check a pair of cube arrays and return N. Raises DataError naming the file (for memmaps) and
    what was expected: appearance (N, 5, S, S, C) uint8, flow (N, 4, S, S, 2) float."""
    where = getattr(appearance, "filename", None)
    a_shape = tuple(appearance.shape)
    if len(a_shape) != 5 or a_shape[1] != 5 or a_shape[2] != a_shape[3]:
        raise DataError(where, f"appearance cubes must be (N, 5, S, S, C), got shape {a_shape}")
    if np.dtype(str(appearance.dtype).replace("torch.", "")) != np.uint8:
        raise DataError(where, f"appearance cubes must be uint8, got {appearance.dtype}")
    if cube_size is not None and a_shape[2] != cube_size:
        raise DataError(where, f"appearance cubes have side {a_shape[2]}, the preset expects {cube_size}")
    if channels is not None and a_shape[4] != channels:
        raise DataError(where, f"appearance cubes have {a_shape[4]} channels, the preset expects {channels}")
    where_f = getattr(flow, "filename", None)
    f_shape = tuple(flow.shape)
    n, s = a_shape[0], a_shape[2]
    if f_shape != (n, 4, s, s, 2):
        raise DataError(where_f, f"flow cubes must be {(n, 4, s, s, 2)} to match the appearance cubes, got {f_shape}")
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
        f = f.permute(0, 2, 3, 1, 4).reshape(b, s, s, 8).permute(0, 3, 1, 2)
        fmt = torch.channels_last
    else:
        a = a.permute(0, 1, 4, 2, 3).reshape(b, t * c, s, s)
        f = f.permute(0, 1, 4, 2, 3).reshape(b, 8, s, s)
        fmt = torch.contiguous_format
    frames = a.to(torch.float32).div_(255.0)
    app_in = frames[:, : 4 * c].contiguous(memory_format=fmt)
    target = frames[:, 4 * c :].contiguous(memory_format=fmt)
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
    :func:`object_scores` builds, made ahead of time (e.g. in another thread) and passed as ``inputs``."""
    return to_tensors(appearance, flow, flow_scale, channels_last=uses_channels_last(model))


def object_scores(model: torch.nn.Module, appearance, flow, flow_scale: float, batch_size: int = 512,
                  device: str = "cpu", need_pred: bool = True, inputs=None) -> ObjectScores:
    """S_f and S_p for every cube, in eval mode under ``torch.inference_mode``.

    appearance (N, 5, S, S, C) uint8 and flow (N, 4, S, S, 2) float16 may be memory-mapped: they are
    read ``batch_size`` cubes at a time. N = 0 gives empty arrays. The model is moved to ``device``
    if it is not there; its train/eval mode is restored afterwards.
    ``need_pred=False``: only the encoders run (``model.encode``); S_f is the same as with the
    decoder, S_p is NaN (not computed).
    ``inputs``: :func:`network_inputs` of these N cubes, already made (same values, no conversion here).
    """
    n = check_cubes(appearance, flow)
    s_f = np.zeros(n, np.float32)
    s_p = np.zeros(n, np.float32) if need_pred else np.full(n, np.nan, np.float32)
    if n == 0:
        return ObjectScores(s_f, s_p)
    if inputs is not None and any(int(t.shape[0]) != n for t in inputs):
        raise ValueError(f"inputs hold {[int(t.shape[0]) for t in inputs]} cubes, the cube arrays {n}")
    from amsrc.model.losses import cosine_distance

    dev = torch.device(device)
    first = next(model.parameters())
    if first.device != dev and not (dev.type == first.device.type and dev.index is None):
        model.to(dev)
    cl = uses_channels_last(model)
    was_training = model.training
    switch = any(m.training for m in model.modules())  # eval() walks every module: skip when already in eval mode
    if switch:
        model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                j = min(i + batch_size, n)
                if inputs is None:
                    app_in, target, flow_in = to_tensors(appearance[i:j], flow[i:j], flow_scale, channels_last=cl)
                else:
                    app_in, target, flow_in = (t[i:j] for t in inputs)
                app_in, flow_in = app_in.to(dev, non_blocking=True), flow_in.to(dev, non_blocking=True)
                if need_pred:
                    out = model(app_in, flow_in)
                    x, y = out.x, out.y
                    s_p[i:j] = (out.pred - target.to(dev, non_blocking=True)).pow(2).flatten(1).sum(1).float().cpu().numpy()
                else:
                    x, y = model.encode(app_in, flow_in)
                if y is not None:
                    s_f[i:j] = cosine_distance(x, y).float().cpu().numpy()
    finally:
        if switch:
            model.train(was_training)
    return ObjectScores(s_f, s_p)
