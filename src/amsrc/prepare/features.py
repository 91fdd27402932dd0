"""Per-object features of cubes that need no network: on-screen speed, and its distribution.

Speeds are in image pixels per frame at the prepared size (flow is kept in image pixels through
the crop, DESIGN.md section 3). :func:`object_speeds` is what a live result reports per object;
:class:`SpeedStats` is the training objects' distribution, stored with a fitted model so an alert
can say how fast an object is compared with normal ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 4096  # cubes read from a memory-mapped store at a time


def last_flow_magnitudes(flow: np.ndarray) -> np.ndarray:
    """Flow magnitude (pixels/frame) at every pixel of each cube's last flow (t-1 -> t):
    (N, T_FLOW, S, S, 2) -> (N, S*S) float32."""
    last = np.asarray(flow[:, -1], dtype=np.float32)  # (N, S, S, 2)
    return np.sqrt((last ** 2).sum(-1)).reshape(len(last), -1)


def mean_l1_speeds(flow: np.ndarray) -> np.ndarray:
    """Mean ``|dx| + |dy|`` (pixels/frame) over each cube's last flow (t-1 -> t): (N, T_FLOW, S, S, 2) -> (N,)
    float32. The ``velocity`` baseline's feature, and the speed S_m's memory can hold (train.bank_speed)."""
    last = np.asarray(flow[:, -1], dtype=np.float32)  # (N, S, S, 2)
    if len(last) == 0:
        return np.zeros(0, np.float32)
    return np.abs(last).sum(-1).reshape(len(last), -1).mean(1).astype(np.float32)


def object_speeds(flow: np.ndarray) -> np.ndarray:
    """Median flow magnitude (pixels/frame) of each cube's last flow (t-1 -> t): (N, T_FLOW, S, S, 2) -> (N,) float32."""
    if len(flow) == 0:
        return np.zeros(0, np.float32)
    return np.median(last_flow_magnitudes(flow), axis=1).astype(np.float32)


def store_speeds(store, split: str) -> np.ndarray:
    """:func:`object_speeds` of every cube of a split of a cube store: (N,) float32."""
    out = []
    for name in store.clips(split):
        c = store.load(split, name)
        for i in range(0, len(c.flow), CHUNK):
            out.append(object_speeds(c.flow[i:i + CHUNK]))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@dataclass
class SpeedStats:
    """Distribution of training objects' speeds (median flow magnitude, pixels/frame)."""

    levels: np.ndarray  # (Q,) float64 percentiles 0..100, increasing
    values: np.ndarray  # (Q,) float64 speed at each percentile, non-decreasing

    @classmethod
    def from_speeds(cls, speeds: np.ndarray) -> SpeedStats:
        levels = np.array(list(range(0, 100)) + [99.5, 99.9, 100.0])
        s = np.asarray(speeds, np.float64)
        values = np.percentile(s, levels) if s.size else np.zeros(levels.size)
        return cls(levels.astype(np.float64), np.asarray(values, np.float64))

    def to_dict(self) -> dict:
        return {"levels": [float(v) for v in self.levels], "values": [float(v) for v in self.values]}

    @classmethod
    def from_dict(cls, d) -> SpeedStats:
        return cls(np.asarray(d["levels"], np.float64), np.asarray(d["values"], np.float64))

    def percentile(self, speed: float) -> float:
        """Share (in %) of training objects slower than ``speed``."""
        return float(np.interp(speed, self.values, self.levels))

    def robust_z(self, speed: float) -> float:
        """(speed - median) / half the 16-84 percentile spread (a z-score for a Gaussian)."""
        q16, q50, q84 = (float(np.interp(q, self.levels, self.values)) for q in (16, 50, 84))
        return (float(speed) - q50) / max((q84 - q16) / 2.0, 1e-3)
