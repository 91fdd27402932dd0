"""Plots of an evaluation: per-clip score curves (cf. the AMSRC paper's Fig. 5) and
prediction-error maps of the most anomalous objects (cf. Fig. 6).

Matplotlib is imported inside the functions and figures are drawn on an explicit Agg canvas
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): no pyplot, no global backend switch, no
state left behind. PNGs are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amsrc.scoring import SCORE_NAME, SCORE_UNIT
from amsrc.utils import atomic_path


def labels_to_intervals(labels: Any) -> list[tuple[int, int]]:
    """Runs of anomalous frames as half-open intervals: (n,) 0/1 -> [(start, end), ...], end exclusive.

    ``[0, 1, 1, 0, 1]`` -> ``[(1, 3), (4, 5)]``. Any non-zero label counts as anomalous.
    """
    y = np.asarray(labels).reshape(-1) != 0
    if y.size == 0:
        return []
    edges = np.diff(np.r_[0, y.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def error_map(target: Any, pred: Any) -> np.ndarray:
    """Per-pixel squared prediction error summed over channels: (S, S, C) x2 -> (S, S) float32.

    A uint8 target is scaled to [0, 1] first (predictions are in [0, 1]).
    """
    t = _as_unit_image(target, "target")
    p = _as_unit_image(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"error_map: target {t.shape} but prediction {p.shape}")
    return ((p - t) ** 2).sum(axis=2).astype(np.float32)


def _as_unit_image(img: Any, what: str) -> np.ndarray:
    """(S, S) or (S, S, C) uint8/float -> (S, S, C) float32 in [0, 1] (uint8 / 255)."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"{what}: expected an (S, S, 1|3) image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: non-finite pixel values")
    return np.clip(a, 0.0, 1.0)


def _new_figure(width_in: float, height_in: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, out_png: str | Path, dpi: int) -> Path:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out_png


def score_curves_figure(
    scores_per_clip: Mapping[str, Any],
    labels_per_clip: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    ncols: int = 4,
    dpi: int = 100,
):
    """The figure :func:`plot_score_curves` saves (a matplotlib Figure on an Agg canvas).

    One panel per clip, in the mapping's order: the score curve, each run of ground-truth
    anomalous frames [start, end) shaded as a red ``Rectangle`` (gid "gt") spanning
    x = start - 0.5 .. end - 0.5 over the panel's full height, and ``threshold`` as a dashed line.
    """
    from matplotlib.patches import Rectangle

    if not isinstance(scores_per_clip, Mapping) or len(scores_per_clip) == 0:
        raise ValueError("plot_score_curves: scores_per_clip must be a non-empty dict name -> (n,) scores")
    names = list(scores_per_clip)
    ncols = max(1, min(int(ncols), len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure(3.2 * ncols, 2.0 * nrows + 0.3, dpi)
    for i, name in enumerate(names):
        s = np.asarray(scores_per_clip[name], dtype=np.float64).reshape(-1)
        ax = fig.add_subplot(nrows, ncols, i + 1)
        y = None if labels_per_clip is None else labels_per_clip.get(name)
        if y is not None:
            y = np.asarray(y).reshape(-1)
            if y.size != s.size:
                raise ValueError(f"plot_score_curves: clip {name!r} has {s.size} scores but {y.size} labels")
            for a, b in labels_to_intervals(y):
                ax.add_patch(
                    Rectangle(
                        (a - 0.5, 0.0), b - a, 1.0, transform=ax.get_xaxis_transform(),
                        facecolor="tab:red", alpha=0.25, edgecolor="none", gid="gt",
                    )
                )
        ax.plot(np.arange(s.size), s, color="tab:blue", linewidth=1.0)
        if threshold is not None:
            ax.axhline(float(threshold), color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(-0.5, max(s.size - 0.5, 0.5))
        ax.set_title(str(name), fontsize=9)
        ax.tick_params(labelsize=7)
        if i % ncols == 0:
            ax.set_ylabel(f"{SCORE_NAME} ({SCORE_UNIT})", fontsize=8)
        if i // ncols == nrows - 1:
            ax.set_xlabel("frame (0-based)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_score_curves(
    scores_per_clip: Mapping[str, Any],
    labels_per_clip: Mapping[str, Any] | None,
    out_png: str | Path,
    threshold: float | None = None,
    ncols: int = 4,
    dpi: int = 100,
) -> Path:
    """Per-clip frame-score curves with the ground-truth anomalous frames shaded (cf. paper Fig. 5).

    scores_per_clip: dict clip name -> (n,) scores; labels_per_clip: dict name -> (n,) 0/1 labels,
    or None (a clip missing from it, or mapped to None, is drawn unshaded); threshold: an
    optional horizontal line. Written atomically to ``out_png``; returns its path.
    """
    fig = score_curves_figure(scores_per_clip, labels_per_clip, threshold=threshold, ncols=ncols, dpi=dpi)
    return _save_png(fig, out_png, dpi)


def error_maps_figure(items: Sequence[tuple[str, Any, Any, Any]], dpi: int = 100):
    """The figure :func:`plot_error_maps` saves: one row per item, columns target / prediction / error."""
    if len(items) == 0:
        raise ValueError("plot_error_maps: no items")
    fig = _new_figure(6.6, 2.1 * len(items) + 0.2, dpi)
    for r, item in enumerate(items):
        if len(item) != 4:
            raise ValueError(f"plot_error_maps item {r}: expected (title, target, pred, error map)")
        title, target, pred, err = item
        t = _as_unit_image(target, f"item {r} target")
        p = _as_unit_image(pred, f"item {r} pred")
        e = np.asarray(err, dtype=np.float32)
        if t.shape != p.shape or e.shape != t.shape[:2]:
            raise ValueError(
                f"plot_error_maps item {r}: target {t.shape}, prediction {p.shape} and error map {e.shape} "
                "must be (S, S, C), (S, S, C) and (S, S)"
            )
        for c, (img, label) in enumerate(((t, "target"), (p, "prediction"))):
            ax = fig.add_subplot(len(items), 3, 3 * r + c + 1)
            if img.shape[2] == 1:
                ax.imshow(img[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{title}\n{label}" if c == 0 else label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = fig.add_subplot(len(items), 3, 3 * r + 3)
        im = ax.imshow(e, cmap="jet", vmin=0.0, vmax=max(float(e.max()), 1e-12), interpolation="nearest")
        ax.set_title("squared error per pixel\n(intensities 0-1; its sum is S_p)", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def plot_error_maps(items: Sequence[tuple[str, Any, Any, Any]], out_png: str | Path, dpi: int = 100) -> Path:
    """Grid of target / prediction / squared-error heat map for chosen objects (cf. paper Fig. 6).

    items: list of (title, target (S, S, C) uint8 or float in [0, 1], prediction (S, S, C) float
    in [0, 1], error map (S, S) float, e.g. :func:`error_map`), one row each, C = 1 or 3.
    Written atomically to ``out_png``; returns its path.
    """
    fig = error_maps_figure(items, dpi=dpi)
    return _save_png(fig, out_png, dpi)
