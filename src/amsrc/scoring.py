"""THE score: network -> object scores -> normalisation -> frame max -> smoothing.

Every scorer calls these functions: evaluation (:meth:`AMSRC.score_store`), live scoring
(:class:`~amsrc.live.stream.StreamScorer`), the ONNX check (:func:`~amsrc.export.check_onnx`),
the baselines, the benchmarks and the diagnosis. A change to the score is made here.

Per object (DESIGN.md section 6): ``S_f = 1 - cos(x, y)`` (or, with ``model.consistency=squared``,
the mean squared difference of the standardised bottlenecks) and ``S_p = ||pred - target||^2``
(:func:`cue_scores`, run by :func:`object_scores`), and, where the model kept a memory of its
training objects, ``S_m`` (:func:`motion_rarity`): the mean distance from the object's pooled motion
bottleneck to the k nearest training objects' (motion semantics never seen in normal footage), with,
where ``train.bank_speed`` > 0, the object's speed as one more coordinate (:func:`memory_key`); each
is z-normalised with the mean and std over the TRAINING cubes under the final model
(:class:`TrainStats`, stored in the checkpoint); ``S = w_f z(S_f) + w_p z(S_p) + w_m z(S_m)``
(:func:`combine`); a frame's score is the max over its objects (:func:`frame_scores`);
:func:`clip_scores` assembles one clip. Higher = more anomalous.

A frame without any object gets :func:`empty_frame_score`: the score of a perfect object
(``S_f = 0``, ``S_p = 0``, ``S_m = 0``), i.e. the most normal object possible. It needs no test data and is
causal, so offline and live scoring agree.

Smoothing (:func:`smooth`) works on ONE clip, so no value ever leaks across a clip boundary;
:class:`CausalSmoother` gives the causal values frame by frame.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from amsrc.config import ScoreConfig
from amsrc.errors import ConfigError, DataError
from amsrc.model.inputs import check_cubes, to_tensors, uses_channels_last
from amsrc.model.losses import consistency_distance

# Smallest standard deviation used by zscore. Training statistics with a smaller (or zero) std,
# e.g. S_f of the "baseline" variant, which is identically 0, are divided by this instead, so a
# constant score maps to 0 instead of NaN/inf. S_f lies in [0, 2] and S_p in [0, S*S*C], so any
# informative spread is far above it.
STD_FLOOR = 1e-6

# A Gaussian kernel is cut at this many sigmas (scipy.ndimage.gaussian_filter1d's default).
GAUSS_TRUNCATE = 4.0

# The one score a person sees, in the words every output uses (curves, overlay, events, CSV, report).
SCORE_NAME = "anomaly score"
SCORE_UNIT = "z"  # standard deviations of normal training objects
SCORE_MEANING = ("anomaly score, in standard deviations of normal training objects (z): each object's cues "
                 "(appearance-motion inconsistency S_f, prediction error S_p, motion rarity S_m) are measured against the objects "
                 "the model was trained on and weighted together; 0 is a typical normal object, negative is more "
                 "normal than typical; a frame's score is its highest object's")
RAW_MEANING = "raw: the frame's score as computed; smoothed (the anomaly score): causally smoothed over the frames before"
FRAME_BASE = "frames are numbered from 0"

@dataclass(frozen=True)
class TrainStats:
    """Mean and std of the object scores over the training cubes, under the final model."""

    s_f_mean: float  # mean of S_f (1 - cos(x, y) by default)
    s_f_std: float  # population std (ddof=0) of S_f
    s_p_mean: float  # mean of S_p = sum of squared prediction error per object
    s_p_std: float  # population std (ddof=0) of S_p
    s_m_mean: float | None = None  # mean of S_m (each training object against the memory of the OTHER clips); None: no memory
    s_m_std: float | None = None  # population std of S_m
    # S_m's speed coordinate (train.bank_speed > 0; :func:`memory_key`): (speed - speed_mean) * speed_scale,
    # speed = :func:`object_speed` of the network's flow input; None: the memory holds the motion bottleneck alone
    speed_mean: float | None = None
    speed_scale: float | None = None

    KEYS = ("s_f_mean", "s_f_std", "s_p_mean", "s_p_std")  # required; the pairs of OPTIONAL are optional
    OPTIONAL = (("s_m_mean", "s_m_std"), ("speed_mean", "speed_scale"))

    @property
    def speed_key(self) -> tuple[float, float] | None:
        """(speed_mean, speed_scale) of S_m's speed coordinate, or None when the memory has none."""
        return None if self.speed_scale is None else (float(self.speed_mean), float(self.speed_scale))

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: Any = None) -> TrainStats:
        """From a dict with the four keys, and optionally the pairs s_m_mean / s_m_std and speed_mean /
        speed_scale (e.g. ``checkpoint["train_stats"]``).

        ``source`` (the checkpoint path) is named in the DataError raised for missing keys or
        non-finite / negative values.
        """
        if not isinstance(d, Mapping):
            raise DataError(source, f"train_stats must be a mapping with keys {cls.KEYS}, got {type(d).__name__}")
        missing = [k for k in cls.KEYS if k not in d]
        if missing:
            raise DataError(source, f"train_stats lacks {', '.join(missing)}")
        for a, b in cls.OPTIONAL:
            if (a in d) != (b in d):
                raise DataError(source, f"train_stats must hold both {a} and {b}, or neither")
        vals = {}
        for k in (*cls.KEYS, *(k for pair in cls.OPTIONAL for k in pair if k in d)):
            try:
                v = float(d[k])
            except (TypeError, ValueError):
                raise DataError(source, f"train_stats[{k!r}] is not a number: {d[k]!r}") from None
            if not math.isfinite(v) or (k.endswith("_std") and v < 0):
                raise DataError(source, f"train_stats[{k!r}] = {v} is not a valid {'std' if k.endswith('_std') else 'mean'}")
            vals[k] = v
        return cls(**vals)


def _finite_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        i = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name}: non-finite value {a[i]} at index {i}")
    return a


# ---------------------------------------------------------------- network -> object scores
class ObjectScores(NamedTuple):
    s_f: np.ndarray  # (N,) float32 S_f (1 - cos(x, y) by default); zeros for the baseline variant (no motion stream)
    s_p: np.ndarray  # (N,) float32 sum of squared prediction error of frame t; NaN when not computed (need_pred=False)
    s_m: np.ndarray | None = None  # (N,) float32 motion rarity; NaN without a memory (bank) or motion stream
    pred: np.ndarray | None = None  # (N, C, S, S) float32 predicted frame t, with keep_pred=True
    target: np.ndarray | None = None  # (N, C, S, S) float32 frame t, with keep_pred=True
    m: np.ndarray | None = None  # (N, w3) float32 pooled motion bottlenecks, with keep_m=True (None: baseline)


def nearest_mean_distance(m: torch.Tensor, bank: torch.Tensor, k: int,
                          left_out: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D) rows, (K, D) bank -> (B,) mean Euclidean distance of each row to its ``k`` nearest bank rows,
    leaving out those where ``left_out`` (B, K) is True. The nearest are found in the matrix-product form
    |m|^2 + |b|^2 - 2 m.b (one matrix product for the whole bank); their distances are then computed
    directly from the k rows, which keeps float32 rounding off small distances (the product form cancels
    large norms: its square root near 0 is mostly rounding, and differs between engines). Plain tensor
    operations, so the ONNX export traces this same function (:mod:`amsrc.export`)."""
    d2 = (m * m).sum(1, keepdim=True) + (bank * bank).sum(1)[None] - 2 * m @ bank.T
    if left_out is not None:
        d2 = d2.masked_fill(left_out, float("inf"))
    near, idx = d2.topk(k, dim=1, largest=False)  # (B, k)
    d = (bank[idx] - m[:, None, :]).pow(2).sum(2).sqrt()
    if left_out is not None:  # fewer than k rows left: infinite, as the caller checks
        d = d.masked_fill(torch.isinf(near), float("inf"))
    return d.mean(1)


def object_speed(flow_in: torch.Tensor) -> torch.Tensor:
    """(B, 8, S, S) network flow input -> (B,) the mean ``|dx| + |dy|`` of its last flow (t-1 -> t) over the
    S x S pixels, in the input's units (image pixels / flow_scale): the ``velocity`` baseline's feature
    (:mod:`amsrc.eval.baselines`) divided by flow_scale. Plain tensor operations (the ONNX export traces it)."""
    return flow_in[:, 6:8].abs().sum(1).mean((1, 2))


def memory_key(m: torch.Tensor, flow_in: torch.Tensor, speed_key: tuple[float, float] | None) -> torch.Tensor:
    """What S_m's memory compares: the pooled motion bottleneck ``m`` (B, w3) as it is, or, with
    ``speed_key`` = (speed_mean, speed_scale) (:attr:`TrainStats.speed_key`), ``m`` with one more column,
    ``(object_speed(flow_in) - speed_mean) * speed_scale`` (B, w3 + 1). The pooled bottleneck alone ranks
    objects that move like a walker, only faster, close to walkers; the speed coordinate keeps them apart."""
    if speed_key is None:
        return m
    mean, scale = speed_key
    return torch.cat([m, ((object_speed(flow_in) - mean) * scale).to(m.dtype)[:, None]], 1)


def motion_rarity(m: Any, bank: Any, k: int, groups: Any = None, bank_groups: Any = None,
                  chunk: int = 2048) -> torch.Tensor:
    """S_m: the mean Euclidean distance from each row of ``m`` (N, D) to its ``k`` nearest rows of ``bank``
    (K, D) -> (N,) float32 tensor on m's device (rows of :func:`memory_key`). ``groups`` (N,) / ``bank_groups`` (K,) ints: a row may
    not use the bank rows of its own group (a training object against the memory of the other clips);
    each row must keep at least ``k`` of them.

    The distances come from :func:`nearest_mean_distance` (float32; the k nearest found in
    matrix-product form, their distances computed directly).
    """
    m = torch.as_tensor(m, dtype=torch.float32)
    bank = torch.as_tensor(bank, dtype=torch.float32, device=m.device)
    if m.dim() != 2 or bank.dim() != 2 or m.shape[1] != bank.shape[1]:
        raise ValueError(f"motion_rarity: m (N, D) and bank (K, D) must share D, got {tuple(m.shape)} and {tuple(bank.shape)}")
    k = int(k)
    if not 1 <= k <= bank.shape[0]:
        raise ConfigError(f"train.bank_k must be between 1 and the memory's size {bank.shape[0]}, got {k}")
    if (groups is None) != (bank_groups is None):
        raise ValueError("motion_rarity: give both groups and bank_groups, or neither")
    if groups is not None:
        groups = torch.as_tensor(np.asarray(groups), device=m.device)
        bank_groups = torch.as_tensor(np.asarray(bank_groups), device=m.device)
    out = torch.empty(m.shape[0], dtype=torch.float32, device=m.device)
    for i in range(0, m.shape[0], chunk):
        left_out = None if groups is None else groups[i:i + chunk, None] == bank_groups[None, :]
        out[i:i + chunk] = nearest_mean_distance(m[i:i + chunk], bank, k, left_out)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"motion_rarity: a row has fewer than k = {k} memory entries outside its own group")
    return out


def cue_scores(pred: torch.Tensor | None, target: torch.Tensor | None, x: torch.Tensor,
               y: torch.Tensor | None, m: torch.Tensor | None = None, bank: torch.Tensor | None = None,
               k: int = 5, consistency: str = "cosine") -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The cues of a batch, float32: S_f = the model's ``consistency`` distance of flatten(x) and
    flatten(y) (:func:`~amsrc.model.losses.consistency_distance`; 1 - cos by default) (B,) (zeros without y),
    S_p = sum((pred - target)^2) over C x S x S (B,) (None without pred) and S_m = :func:`motion_rarity`
    of ``m`` against ``bank`` (None without either); ``m`` is the memory's key (:func:`memory_key`)."""
    s_f = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device) if y is None else consistency_distance(x, y, consistency)
    s_p = None if pred is None else (pred - target).pow(2).flatten(1).sum(1)
    s_m = None if m is None or bank is None else motion_rarity(m, bank, k)
    return s_f, s_p, s_m


def object_scores(model: torch.nn.Module, appearance, flow, flow_scale: float, batch_size: int = 512,
                  device: str = "cpu", need_pred: bool = True, inputs=None, keep_pred: bool = False,
                  engine=None, bank=None, bank_k: int = 5, keep_m: bool = False,
                  speed_key: tuple[float, float] | None = None) -> ObjectScores:
    """S_f, S_p and S_m for every cube, in eval mode under ``torch.inference_mode``.

    appearance (N, 5, S, S, C) uint8 and flow (N, 4, S, S, 2) float16 may be memory-mapped: they are
    read ``batch_size`` cubes at a time. N = 0 gives empty arrays. The model is moved to ``device``
    if it is not there; its train/eval mode is restored afterwards.
    ``need_pred=False``: only the encoders run (``model.encode``, about 2.5x fewer operations); S_f
    and S_m are the same as with the decoder, S_p is NaN (not computed).
    ``inputs``: :func:`~amsrc.model.inputs.network_inputs` of these N cubes, already made (same values).
    ``keep_pred``: also return the predicted and the true frame t (for error maps).
    ``model``: the :class:`~amsrc.model.network.AMSRCNet` (its ``consistency`` decides S_f's formula).
    ``engine``: another runner of the same network (:class:`amsrc.export.OnnxRuntimeNet`: its
    ``run(app_in, flow_in)`` gives (x, y, pred, m) on the CPU); the scores come from the same formulas.
    ``bank`` (K, w3): the training objects' pooled motion bottlenecks (the model's memory), ``bank_k``
    the k of S_m; without a bank (or a motion stream) S_m is NaN. ``speed_key``: the memory's speed
    coordinate (:attr:`TrainStats.speed_key`; the bank's rows then have w3 + 1 columns, :func:`memory_key`).
    ``keep_m``: also return the pooled motion bottlenecks (N, w3) as ``m`` (to build a memory).
    """
    n = check_cubes(appearance, flow)
    s_f = np.zeros(n, np.float32)
    s_p = np.zeros(n, np.float32) if need_pred else np.full(n, np.nan, np.float32)
    s_m = np.full(n, np.nan, np.float32)
    ms = []
    preds, targets = [], []
    if n == 0:
        return ObjectScores(s_f, s_p, s_m)
    if inputs is not None and any(int(t.shape[0]) != n for t in inputs):
        raise ValueError(f"inputs hold {[int(t.shape[0]) for t in inputs]} cubes, the cube arrays {n}")
    keep_pred = keep_pred and need_pred
    dev = torch.device("cpu" if engine is not None else device)
    first = next(model.parameters())
    if engine is None and first.device != dev and not (dev.type == first.device.type and dev.index is None):
        model.to(dev)
    if bank is not None:
        bank = torch.as_tensor(bank, dtype=torch.float32, device=dev)
    cl = uses_channels_last(model) and engine is None
    was_training = model.training
    # eval() walks every module: skip when already in eval mode (or when the engine runs the network)
    switch = engine is None and any(m.training for m in model.modules())
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
                if engine is not None:  # the whole graph runs; its pred is dropped when not needed
                    x, y, pred, m = engine.run(app_in, flow_in)
                    pred, target = (pred, target) if need_pred else (None, None)
                else:
                    out = model(app_in, flow_in) if need_pred else model.encode(app_in, flow_in)
                    x, y, pred, m = out.x, out.y, out.pred, out.m
                    target = target.to(dev, non_blocking=True) if need_pred else None
                key = None if m is None or bank is None else memory_key(m, flow_in, speed_key)
                f, p, r = cue_scores(pred, target, x, y, key, bank, bank_k, model.consistency)
                s_f[i:j] = f.float().cpu().numpy()
                if p is not None:
                    s_p[i:j] = p.float().cpu().numpy()
                if r is not None:
                    s_m[i:j] = r.float().cpu().numpy()
                if keep_m and m is not None:
                    ms.append(m.float().cpu().numpy())
                if keep_pred:
                    preds.append(pred.float().cpu().numpy())
                    targets.append(target.float().cpu().numpy())
    finally:
        if switch:
            model.train(was_training)
    return ObjectScores(s_f, s_p, s_m, np.concatenate(preds) if keep_pred else None,
                        np.concatenate(targets) if keep_pred else None, np.concatenate(ms) if ms else None)


# ---------------------------------------------------------------- object scores -> frame scores
def zscore(x: Any, mean: float, std: float, floor: float = STD_FLOOR) -> np.ndarray:
    """``(x - mean) / max(std, floor)`` as float64 (see STD_FLOOR for why there is a floor)."""
    return (np.asarray(x, dtype=np.float64) - mean) / max(float(std), floor)


def combine(s_f: Any, s_p: Any, stats: TrainStats, w_f: float, w_p: float, s_m: Any = None,
            w_m: float = 0.0) -> np.ndarray:
    """Object anomaly scores ``w_f * z(S_f) + w_p * z(S_p) + w_m * z(S_m)``: s_f, s_p, s_m (N,) -> (N,) float64.

    A term whose weight is 0 is left out (so e.g. the baseline's S_f never matters with w_f = 0, and
    ``s_m`` may be None with w_m = 0).
    """
    f = _finite_1d(s_f, "s_f")
    p = _finite_1d(s_p, "s_p")
    if f.shape != p.shape:
        raise ValueError(f"combine: {f.size} S_f values but {p.size} S_p values")
    out = np.zeros(f.shape, dtype=np.float64)
    if w_f != 0:
        out += w_f * zscore(f, stats.s_f_mean, stats.s_f_std)
    if w_p != 0:
        out += w_p * zscore(p, stats.s_p_mean, stats.s_p_std)
    if w_m != 0:
        if s_m is None or stats.s_m_mean is None:
            raise ConfigError("score.w_m != 0 needs S_m: a model trained with a memory of its training objects "
                              "(train.bank_size > 0) and a motion stream")
        r = _finite_1d(s_m, "s_m")
        if r.shape != f.shape:
            raise ValueError(f"combine: {f.size} S_f values but {r.size} S_m values")
        out += w_m * zscore(r, stats.s_m_mean, stats.s_m_std)
    return out


def empty_frame_score(stats: TrainStats, w_f: float, w_p: float, w_m: float = 0.0) -> float:
    """Score of a frame with no object: that of a perfect object (S_f = 0, S_p = 0, S_m = 0).

    A frame where nothing moves scores as the most normal object possible. This is a fixed
    number from the training statistics: causal, and no test data is looked at.
    """
    return float(combine(np.zeros(1), np.zeros(1), stats, w_f, w_p, np.zeros(1), w_m)[0])


def counted_objects(boxes: Any, frame_size: tuple[int, int] | None, edge_min_side: int) -> np.ndarray | None:
    """(K,) bool: the objects that count in the frame score (:attr:`ScoreConfig.edge_min_side`). An
    object is left out when its box x0, y0, x1, y1 touches a border of the (H, W) frame and its side
    across that border (the width at the left/right border, the height at the top/bottom) is shorter
    than ``edge_min_side``: it is partly out of view. None (every object counts) when
    ``edge_min_side`` is 0."""
    if not edge_min_side:
        return None
    if frame_size is None:
        raise ConfigError(f"score.edge_min_side = {edge_min_side} needs the frame size the boxes are in")
    h, w = frame_size
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cut = ((b[:, 0] <= 0) | (b[:, 2] >= w)) & (bw < edge_min_side)
    cut |= ((b[:, 1] <= 0) | (b[:, 3] >= h)) & (bh < edge_min_side)
    return ~cut


def frame_scores(object_scores: Any, offsets: Any, empty_score: float, topk: int = 1,
                 counted: Any = None) -> np.ndarray:
    """Frame score = max over the frame's objects (``topk`` > 1: the mean of its ``topk`` highest, or
    of all its objects when it has fewer); ``empty_score`` where a frame has none.

    object_scores (N,) float; offsets (n_frames + 1,) int with offsets[0] = 0, offsets[-1] = N,
    non-decreasing: the objects of frame t are ``object_scores[offsets[t]:offsets[t+1]]``.
    ``counted`` (N,) bool (:func:`counted_objects`): objects that are False are left out, as if the
    frame did not hold them; None: all count.
    Returns (n_frames,) float64.
    """
    s = _finite_1d(object_scores, "object_scores")
    if counted is not None:
        keep = np.asarray(counted, dtype=bool)
        if keep.shape != s.shape:
            raise ValueError(f"counted: expected ({s.size},) booleans, got shape {keep.shape}")
        if not keep.all():
            off = np.asarray(offsets).astype(np.int64)
            kept = np.concatenate([[0], np.cumsum(keep)])
            return frame_scores(s[keep], kept[off], empty_score, topk)
    off = np.asarray(offsets)
    if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
        raise ValueError(f"offsets: expected a 1-D integer array (n_frames + 1,), got {off.dtype} {off.shape}")
    off = off.astype(np.int64)
    if off[0] != 0 or off[-1] != s.size or np.any(np.diff(off) < 0):
        raise ValueError(
            f"offsets must start at 0, end at the number of objects ({s.size}) and never decrease; "
            f"got start {int(off[0])}, end {int(off[-1])}"
        )
    n_frames = off.size - 1
    out = np.full(n_frames, float(empty_score), dtype=np.float64)
    starts = off[:-1]
    nonempty = off[1:] > starts
    if int(topk) < 1:
        raise ConfigError(f"score.frame_topk must be >= 1, got {topk}")
    if np.any(nonempty) and int(topk) == 1:
        # reduceat over the starts of non-empty frames: each run ends where the next non-empty
        # frame starts (only empty frames lie between), the last one at N.
        out[nonempty] = np.maximum.reduceat(s, starts[nonempty])
    elif np.any(nonempty):
        for t in np.flatnonzero(nonempty):
            v = s[off[t]:off[t + 1]]
            out[t] = float(np.mean(np.sort(v)[-int(topk):]))
    return out



@dataclass
class ClipScores:
    """Scores of one clip, frame by frame and object by object."""

    name: str  # clip name
    frame_raw: np.ndarray  # (n_frames,) float64 frame scores before smoothing (max over objects)
    frame: np.ndarray  # (n_frames,) float64 frame scores after the smoothing
    objects: np.ndarray  # (N,) float64 combined object scores
    s_f: np.ndarray  # (N,) float32 raw S_f (1 - cos(x, y) by default); NaN where not computed (baselines)
    s_p: np.ndarray  # (N,) float32 raw squared prediction error; NaN where not computed
    labels: np.ndarray | None  # (n_frames,) uint8 frame labels where known
    offsets: np.ndarray | None = None  # (n_frames + 1,) int64: objects of frame t are [offsets[t], offsets[t+1])
    object_labels: np.ndarray | None = None  # (N,) uint8 per-object labels from pixel masks, where the store has them
    s_m: np.ndarray | None = None  # (N,) float32 raw motion rarity; None / NaN where not computed
    counted: np.ndarray | None = None  # (N,) bool objects that count in the frame score (ScoreConfig.edge_min_side); None: all


def clip_scores(clip, objects: Any, s_f: Any, s_p: Any, empty_score: float, cfg: ScoreConfig,
                s_m: Any = None) -> ClipScores:
    """:class:`ClipScores` of one clip from its object scores (N,): the frame max
    (:func:`frame_scores`, ``empty_score`` for frames without objects) and ``cfg``'s smoothing.
    ``clip`` gives name, offsets, labels and object_labels (a stored clip or another ClipScores); the
    objects that count in the frame max are a ClipScores' ``counted``, or for a stored clip those of
    ``cfg.edge_min_side`` (:func:`counted_objects` on its boxes and frame size)."""
    objects = np.asarray(objects, dtype=np.float64)
    if isinstance(clip, ClipScores) or not cfg.edge_min_side:
        counted = getattr(clip, "counted", None)
    else:
        counted = counted_objects(clip.boxes, clip.frame_size, cfg.edge_min_side)
    raw = frame_scores(objects, clip.offsets, empty_score, cfg.frame_topk, counted)
    return ClipScores(clip.name, raw, smooth(raw, cfg), objects, s_f, s_p, clip.labels,
                      np.asarray(clip.offsets), clip.object_labels, s_m, counted)

# ---------------------------------------------------------------- smoothing
def _check_cfg(cfg: ScoreConfig) -> None:
    if cfg.smoothing not in ("none", "median", "gaussian"):
        raise ConfigError(f"score.smoothing must be 'none', 'median' or 'gaussian', got {cfg.smoothing!r}")
    if cfg.smoothing == "median" and (int(cfg.median_k) != cfg.median_k or cfg.median_k < 1 or cfg.median_k % 2 == 0):
        raise ConfigError(f"score.median_k must be an odd integer >= 1, got {cfg.median_k}")
    if cfg.smoothing == "gaussian" and not (cfg.gaussian_sigma > 0 and math.isfinite(cfg.gaussian_sigma)):
        raise ConfigError(f"score.gaussian_sigma must be > 0, got {cfg.gaussian_sigma}")


def _half_gaussian(sigma: float) -> np.ndarray:
    """Weights for lags 0, 1, ..., R (R = int(4 sigma + 0.5)): exp(-j^2 / (2 sigma^2)), unnormalised."""
    radius = int(GAUSS_TRUNCATE * sigma + 0.5)
    j = np.arange(radius + 1, dtype=np.float64)
    return np.exp(-0.5 * (j / sigma) ** 2)


def _causal_median(x: np.ndarray, k: int) -> np.ndarray:
    n = x.size
    out = np.empty(n, dtype=np.float64)
    head = min(k - 1, n)
    for t in range(head):  # the first frames: all frames so far
        out[t] = np.median(x[: t + 1])
    if n >= k:
        out[k - 1 :] = np.median(np.lib.stride_tricks.sliding_window_view(x, k), axis=1)
    return out


def _causal_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    w = _half_gaussian(sigma)
    r = w.size - 1
    padded = np.concatenate([np.zeros(r), x])
    # windows[t] = x[t-r .. t] (zeros before the clip); reversed so that column j is lag j
    windows = np.lib.stride_tricks.sliding_window_view(padded, r + 1)[:, ::-1]
    num = windows @ w
    norm = np.cumsum(w)  # weights of the lags that exist: frames before the clip are missing
    den = np.full(x.size, norm[-1])
    m = min(r, x.size)
    den[:m] = norm[:m]
    return num / den


def smooth(scores: Any, cfg: ScoreConfig) -> np.ndarray:
    """Temporally smooth the frame scores of ONE clip: (n,) -> (n,) float64.

    cfg.smoothing:
      - "none": unchanged.
      - "median": median of a window of ``median_k`` (odd) frames. Offline (causal=False) the
        window is centred and the clip is extended at both ends by repeating its first/last
        value ("nearest"; equals ``scipy.ndimage.median_filter(mode="nearest")``). Causal: the
        median of the last k frames t-k+1 .. t; in the first k-1 frames, of all frames so far.
      - "gaussian": offline, ``scipy.ndimage.gaussian_filter1d(sigma, mode="nearest",
        truncate=4)``. Causal: a half-Gaussian over lags 0 .. R (R = int(4 sigma + 0.5)),
        weights exp(-j^2 / 2 sigma^2), normalised over the lags that exist (so the first frames
        average only what came before). It peaks at lag 0 but lags behind the offline filter.
    Causal outputs at frame t depend only on frames <= t, so :class:`CausalSmoother` (frame by
    frame, live) gives the same values. Never apply this to clips concatenated together.
    """
    _check_cfg(cfg)
    x = _finite_1d(scores, "scores").copy()
    if x.size == 0 or cfg.smoothing == "none":
        return x
    if cfg.smoothing == "median":
        k = int(cfg.median_k)
        if k == 1:
            return x
        if cfg.causal:
            return _causal_median(x, k)
        h = k // 2
        padded = np.pad(x, h, mode="edge")
        return np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)
    # gaussian
    if cfg.causal:
        return _causal_gaussian(x, float(cfg.gaussian_sigma))
    return gaussian_filter1d(x, float(cfg.gaussian_sigma), mode="nearest", truncate=GAUSS_TRUNCATE)


class CausalSmoother:
    """Frame-by-frame causal smoothing for live scoring; equals ``smooth(..., causal=True)``.

    ``push(score)`` returns the smoothed score of the frame just pushed; ``reset()`` starts a new
    clip/stream. The config's ``causal`` flag is ignored (this is always causal).
    """

    def __init__(self, cfg: ScoreConfig):
        _check_cfg(cfg)
        self.method = cfg.smoothing
        if self.method == "median":
            self._n = int(cfg.median_k)
        elif self.method == "gaussian":
            self._w = _half_gaussian(float(cfg.gaussian_sigma))
            self._norm = np.cumsum(self._w)
            self._n = self._w.size
        else:
            self._n = 1
        self._buf: deque[float] = deque(maxlen=self._n)

    def reset(self) -> None:
        self._buf.clear()

    def push(self, score: float) -> float:
        v = float(score)
        if not math.isfinite(v):
            raise ValueError(f"CausalSmoother.push: non-finite score {v}")
        self._buf.append(v)
        if self.method == "none":
            return v
        past = np.fromiter(self._buf, dtype=np.float64, count=len(self._buf))
        if self.method == "median":
            return float(np.median(past))
        m = past.size  # lags 0 .. m-1, newest first
        window = np.concatenate([np.zeros(self._n - m), past])[::-1]
        return float(window @ self._w / self._norm[m - 1])
