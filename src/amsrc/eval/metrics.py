"""Evaluation metrics: frame-level AUROC (micro and macro), EER, average precision, pixel AUROC.

Conventions (everywhere): a higher score means more anomalous, label 1 = anomalous. Nothing here
flips a score or a label to make a number look better; an AUROC below 0.5 is reported as it is.

AUROC, the ROC curve and AP are computed by scikit-learn (``roc_auc_score``, ``roc_curve``,
``average_precision_score``; imported on first use, so importing this module stays numpy-only).
This module adds the input checks, the micro/macro rule over clips, the EER (interpolated on
the ROC polyline) and a memory-bounded histogram AUROC for very large pixel counts.

Bad input raises :class:`MetricInputError` (a ``ValueError`` and an
:class:`amsrc.errors.AmsrcError`) whose message names the clip: length mismatch, NaN/inf scores,
labels outside {0, 1}, or only one class overall.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from amsrc.errors import AmsrcError

# Pixel AUROC is exact (roc_auc_score on all pixels) up to this many pixels; above it, a memory-bounded
# histogram of scores is used (see pixel_auroc). The exact path needs ~100 bytes per pixel (5 M
# pixels: 2.6 s, 0.46 GB here), the histogram ~60 MB whatever the size (5 M pixels: 0.12 s).
PIXEL_EXACT_MAX = 5_000_000
# Bins of the histogram for the memory-bounded pixel AUROC (2**20 bins = 16 MB of counts).
PIXEL_BINS = 1 << 20


class MetricInputError(ValueError, AmsrcError):
    """Scores or labels handed to a metric are malformed (the message names the clip)."""


@dataclass(frozen=True)
class MacroResult:
    """Macro AUROC: the mean of per-clip AUROCs over the clips that have both classes."""

    value: float  # mean AUROC over the used clips
    n_used: int  # clips with both normal and anomalous frames (averaged)
    n_skipped: int  # clips with one class only (AUROC undefined there; left out of the mean)
    per_clip: tuple  # (n_clips,) AUROC of each clip in input order, None where skipped


# ---------------------------------------------------------------- input checks
def _as_scores(x: Any, where: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise MetricInputError(f"{where}: scores must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False).reshape(-1)
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a))
        raise MetricInputError(
            f"{where}: {bad.size} non-finite score(s) (NaN or inf), first at index {int(bad[0])}"
        )
    return a


def _as_labels(y: Any, where: str) -> np.ndarray:
    a = np.asarray(y)
    if a.dtype == bool:
        return a.reshape(-1)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise MetricInputError(f"{where}: labels must be 0/1 numbers or booleans, got dtype {a.dtype}")
    a = a.reshape(-1)
    ok = (a == 0) | (a == 1)
    if not np.all(ok):
        bad = np.flatnonzero(~ok)
        raise MetricInputError(
            f"{where}: labels must be 0 (normal) or 1 (anomalous); found {a[bad[0]].item()!r} at index {int(bad[0])}"
        )
    return a == 1


def _check_pair(scores: Any, labels: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    s_arr, y_arr = np.asarray(scores), np.asarray(labels)
    if s_arr.ndim != 1 or y_arr.ndim != 1:
        raise MetricInputError(
            f"{where}: scores and labels must be 1-D, got shapes {s_arr.shape} and {y_arr.shape}"
        )
    s, y = _as_scores(s_arr, where), _as_labels(y_arr, where)
    if s.shape[0] != y.shape[0]:
        raise MetricInputError(f"{where}: {s.shape[0]} scores but {y.shape[0]} labels")
    return s, y


def _clip_pairs(scores_per_clip: Any, labels_per_clip: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Validate per-clip inputs: two sequences of equal length, or two mappings name -> array."""
    if isinstance(scores_per_clip, Mapping) or isinstance(labels_per_clip, Mapping):
        if not (isinstance(scores_per_clip, Mapping) and isinstance(labels_per_clip, Mapping)):
            raise MetricInputError("scores and labels must both be sequences or both be mappings name -> array")
        missing = [k for k in scores_per_clip if k not in labels_per_clip]
        extra = [k for k in labels_per_clip if k not in scores_per_clip]
        if missing or extra:
            raise MetricInputError(
                f"clip names differ: no labels for {missing[:5]}, no scores for {extra[:5]}"
            )
        items = [(f"clip {k!r}", scores_per_clip[k], labels_per_clip[k]) for k in scores_per_clip]
    else:
        for what, seq in (("scores", scores_per_clip), ("labels", labels_per_clip)):
            if isinstance(seq, np.ndarray) or not isinstance(seq, Sequence):
                raise MetricInputError(
                    f"{what}: expected a list of per-clip 1-D arrays (wrap a single clip as [array]), "
                    f"got {type(seq).__name__}"
                )
        if len(scores_per_clip) != len(labels_per_clip):
            raise MetricInputError(
                f"{len(scores_per_clip)} clips of scores but {len(labels_per_clip)} clips of labels"
            )
        items = [(f"clip {i}", s, y) for i, (s, y) in enumerate(zip(scores_per_clip, labels_per_clip))]
    if not items:
        raise MetricInputError("no clips given")
    return [(where, *_check_pair(s, y, where)) for where, s, y in items]


def _need_both_classes(y: np.ndarray, where: str) -> None:
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        kind = "normal (label 0)" if n_pos == 0 else "anomalous (label 1)"
        raise MetricInputError(f"{where}: all {y.size} samples are {kind}; the metric needs both classes")


# ---------------------------------------------------------------- curves (scikit-learn)
def _auroc(s: np.ndarray, y: np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score`` on checked inputs (both classes present)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def roc_auc(scores: Any, labels: Any) -> float:
    """AUROC of one set of scores against 0/1 labels (``sklearn.metrics.roc_auc_score``).

    scores (n,) float, labels (n,) in {0, 1}; both classes must be present. Tied scores count
    one half.
    """
    s, y = _check_pair(scores, labels, "roc_auc")
    _need_both_classes(y, "roc_auc")
    return _auroc(s, y)


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, starting from (0, 0) with threshold +inf.

    ``sklearn.metrics.roc_curve`` with ``drop_intermediate=False`` (no collinear point dropped).
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    s, y = _check_pair(scores, labels, "roc_curve")
    _need_both_classes(y, "roc_curve")
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    thr = np.asarray(thr, dtype=np.float64).copy()
    thr[0] = np.inf  # scikit-learn < 1.3 puts max(score) + 1 here
    return fpr, tpr, thr


def eer(scores: Any, labels: Any) -> float:
    """Equal error rate: the rate where the false positive rate equals the false negative rate.

    Walks the ROC polyline (fpr, tpr) from (0, 0) to (1, 1); ``fpr - fnr = fpr + tpr - 1`` rises
    from -1 to +1 along it, and the EER is the fpr where it crosses zero, linearly interpolated
    between the two ROC points around the crossing (exact when a ROC point has fpr = fnr).
    A perfectly separating score gives 0, a perfectly inverted one 1.
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    d = fpr + tpr - 1.0
    i = int(np.argmax(d >= 0.0))  # first point at or past the crossing (d[-1] = 1 so one exists)
    if d[i] == 0.0:
        return float(fpr[i])
    lam = -d[i - 1] / (d[i] - d[i - 1])
    return float(fpr[i - 1] + lam * (fpr[i] - fpr[i - 1]))


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds, highest first.

    ``sklearn.metrics.average_precision_score`` (no interpolation of precision).
    """
    from sklearn.metrics import average_precision_score

    s, y = _check_pair(scores, labels, "average_precision")
    _need_both_classes(y, "average_precision")
    return float(average_precision_score(y, s))


# ---------------------------------------------------------------- frame level, per clip
def micro_auroc(scores_per_clip: Any, labels_per_clip: Any) -> float:
    """Frame-level AUROC over all frames of all clips concatenated (the usual "frame AUROC").

    scores_per_clip / labels_per_clip: lists of (n_i,) arrays (or two dicts name -> array with the
    same names). Every clip is checked (length, finite scores, 0/1 labels); both classes must
    occur somewhere.
    """
    pairs = _clip_pairs(scores_per_clip, labels_per_clip)
    s = np.concatenate([p[1] for p in pairs])
    y = np.concatenate([p[2] for p in pairs])
    _need_both_classes(y, "micro_auroc over all clips")
    return _auroc(s, y)


def macro_auroc(scores_per_clip: Any, labels_per_clip: Any) -> MacroResult:
    """Mean of per-clip frame AUROCs.

    A clip whose frames are all normal (or all anomalous) has no AUROC; it is SKIPPED, i.e. left
    out of the mean, and counted in ``n_skipped`` (its ``per_clip`` entry is None). This is the
    usual choice (e.g. Ped2 test clips are all mixed, but several Avenue/ShanghaiTech clips are
    not) and is reported alongside the value. Raises when no clip has both classes.
    """
    pairs = _clip_pairs(scores_per_clip, labels_per_clip)
    per_clip: list[float | None] = []
    for _, s, y in pairs:
        n_pos = int(np.count_nonzero(y))
        if n_pos == 0 or n_pos == y.size:
            per_clip.append(None)
            continue
        per_clip.append(_auroc(s, y))
    used = [v for v in per_clip if v is not None]
    if not used:
        raise MetricInputError(
            f"macro_auroc: none of the {len(pairs)} clips has both normal and anomalous frames"
        )
    return MacroResult(
        value=float(np.mean(used)),
        n_used=len(used),
        n_skipped=len(per_clip) - len(used),
        per_clip=tuple(per_clip),
    )


def evaluate_frames(scores_per_clip: Any, labels_per_clip: Any) -> dict[str, Any]:
    """All frame-level metrics at once.

    Returns a dict: ``micro`` (AUROC, frames of all clips concatenated), ``macro`` (mean per-clip
    AUROC, one-class clips skipped), ``macro_n_used``, ``macro_n_skipped``, ``eer`` and ``ap``
    (both over the concatenated frames), ``n_frames``, ``n_anomalous``.
    """
    pairs = _clip_pairs(scores_per_clip, labels_per_clip)
    s = np.concatenate([p[1] for p in pairs])
    y = np.concatenate([p[2] for p in pairs])
    _need_both_classes(y, "evaluate_frames over all clips")
    macro = macro_auroc([p[1] for p in pairs], [p[2] for p in pairs])
    return {
        "micro": roc_auc(s, y),
        "macro": macro.value,
        "macro_n_used": macro.n_used,
        "macro_n_skipped": macro.n_skipped,
        "eer": eer(s, y),
        "ap": average_precision(s, y),
        "n_frames": int(y.size),
        "n_anomalous": int(np.count_nonzero(y)),
    }


# ---------------------------------------------------------------- pixel level
_CHUNK = 1 << 22  # elements handled at once by the histogram pass


def _pixel_pairs(score_maps: Any, masks: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(score_maps, np.ndarray) or isinstance(masks, np.ndarray):
        # a single (T, H, W) stack each: treat each frame as an item
        sm, mk = np.asarray(score_maps), np.asarray(masks)
        if sm.shape != mk.shape:
            raise MetricInputError(f"pixel_auroc: score maps {sm.shape} but masks {mk.shape}")
        return [("pixel_auroc", sm, mk)]
    if len(score_maps) != len(masks):
        raise MetricInputError(f"pixel_auroc: {len(score_maps)} score maps but {len(masks)} masks")
    if len(score_maps) == 0:
        raise MetricInputError("pixel_auroc: no score maps given")
    out = []
    for i, (sm, mk) in enumerate(zip(score_maps, masks)):
        sm_shape, mk_shape = np.shape(sm), np.shape(mk)
        if sm_shape != mk_shape:
            raise MetricInputError(f"pixel_auroc item {i}: score map shape {sm_shape} but mask shape {mk_shape}")
        out.append((f"pixel_auroc item {i}", sm, mk))
    return out


def _mask_bool(m: np.ndarray, where: str) -> np.ndarray:
    m = np.asarray(m)
    if m.dtype == bool:
        return m.reshape(-1)
    if m.dtype == object or not np.issubdtype(m.dtype, np.number):
        raise MetricInputError(f"{where}: mask must be numeric or boolean, got dtype {m.dtype}")
    m = m.reshape(-1)
    if np.issubdtype(m.dtype, np.floating) and not np.all(np.isfinite(m)):
        raise MetricInputError(f"{where}: mask has NaN/inf values")
    if m.size and m.min() < 0:
        raise MetricInputError(f"{where}: mask has negative values")
    return m > 0


def _iter_chunks(pairs: list[tuple[str, Any, Any]]) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    for where, sm, mk in pairs:
        flat_s = np.asarray(sm).reshape(-1)
        flat_m = np.asarray(mk).reshape(-1)
        for a in range(0, flat_s.size, _CHUNK):
            yield (
                where,
                _as_scores(flat_s[a : a + _CHUNK], where),
                _mask_bool(flat_m[a : a + _CHUNK], where),
            )


def pixel_auroc_binned(score_maps: Any, masks: Any, bins: int = PIXEL_BINS) -> tuple[float, float]:
    """Memory-bounded pixel AUROC from a histogram of scores; returns (auroc, max_error).

    Two passes over the inputs (min/max, then per-class counts in ``bins`` equal-width bins), a few
    million pixels at a time, so memory is O(bins) whatever the number of pixels. Scores in the
    same bin count as ties (one half), so the result differs from the exact AUROC by at most
    ``max_error = 0.5 * sum_b pos_b * neg_b / (P * N)``; it is exact when no bin holds two
    distinct scores (e.g. 8-bit score maps).
    """
    if bins < 1:
        raise MetricInputError(f"pixel_auroc_binned: bins must be >= 1, got {bins}")
    pairs = _pixel_pairs(score_maps, masks)
    lo, hi, n_pos, n_all = np.inf, -np.inf, 0, 0
    for _, s, m in _iter_chunks(pairs):
        if s.size:
            lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        n_pos += int(np.count_nonzero(m))
        n_all += m.size
    if n_pos == 0 or n_pos == n_all:
        kind = "normal" if n_pos == 0 else "anomalous"
        raise MetricInputError(f"pixel_auroc: all {n_all} pixels are {kind}; the metric needs both classes")
    if hi == lo:
        return 0.5, 0.5  # every pixel ties
    pos = np.zeros(bins, dtype=np.int64)
    neg = np.zeros(bins, dtype=np.int64)
    scale = bins / (hi - lo)
    for _, s, m in _iter_chunks(pairs):
        idx = np.minimum(((s - lo) * scale).astype(np.int64), bins - 1)
        pos += np.bincount(idx[m], minlength=bins)
        neg += np.bincount(idx[~m], minlength=bins)
    from sklearn.metrics import auc

    # ROC through (0, 0) and the cumulative counts, highest bin first (an empty bin repeats a ROC
    # point, which adds a zero-width trapezoid); sklearn.metrics.auc is the trapezoid area
    n_neg = n_all - n_pos
    fpr = np.r_[0, np.cumsum(neg[::-1])] / n_neg
    tpr = np.r_[0, np.cumsum(pos[::-1])] / n_pos
    area = auc(fpr, tpr)
    max_err = 0.5 * float(np.sum(pos.astype(np.float64) * neg)) / (float(n_pos) * float(n_neg))
    return float(area), max_err


def pixel_auroc(score_maps: Any, masks: Any, max_exact: int = PIXEL_EXACT_MAX, bins: int = PIXEL_BINS) -> float:
    """Pixel-level AUROC over all pixels of all frames.

    score_maps: a list of arrays (a (H, W) map per frame or a (T, H, W) stack per clip; higher =
    more anomalous), masks: a list of arrays of the same shapes, a pixel is anomalous where its
    mask is non-zero (UCSD masks are 0/255 images). A single pair of arrays is also accepted.

    Exact (equal to ``roc_auc_score`` on the flattened pixels) when there are at most
    ``max_exact`` pixels. Above that it uses :func:`pixel_auroc_binned` with ``bins`` bins, whose
    memory does not grow with the number of pixels and whose error is bounded as documented there
    (for 2**20 bins and continuous scores, typically < 1e-5).
    """
    pairs = _pixel_pairs(score_maps, masks)
    total = sum(int(np.prod(np.shape(sm))) for _, sm, _ in pairs)
    if total > max_exact:
        return pixel_auroc_binned(score_maps, masks, bins=bins)[0]
    s_parts, y_parts = [], []
    for _where, s, m in _iter_chunks(pairs):
        s_parts.append(s)
        y_parts.append(m)
    s = np.concatenate(s_parts) if s_parts else np.zeros(0)
    y = np.concatenate(y_parts) if y_parts else np.zeros(0, dtype=bool)
    _need_both_classes(y, "pixel_auroc over all pixels")
    return _auroc(s, y)
