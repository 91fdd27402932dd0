"""Evaluation of a fitted detector on the labelled split of a cube store.

Writes ``results.json`` (metrics raw and smoothed, per-clip AUROC and per-frame scores),
``score_curves.png`` (paper Fig. 5), ``error_maps.png`` (paper Fig. 6) and ``report.html`` (one
self-contained page: curves with the ground truth shaded, top objects, settings). No choice is made
from the labels: they are only compared with the scores.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from amsrc.config import ScoreConfig
from amsrc.errors import ConfigError
from amsrc.eval.baselines import BaselineScorer, baseline_names
from amsrc.eval.metrics import evaluate_frames, roc_auc
from amsrc.eval.plots import error_map, plot_error_maps, plot_score_curves
from amsrc.prepare.cubes import T_APPEARANCE
from amsrc.report.html import write_html_report
from amsrc.scoring import (
    FRAME_BASE,
    SCORE_MEANING,
    SCORE_UNIT,
    ClipScores,
    clip_scores,
    combine,
    empty_frame_score,
    smooth,
)
from amsrc.utils import write_json_atomic

PAPER_DROP = T_APPEARANCE - 1  # the official evaluation leaves out the first 4 frames of each clip (they have no cube)
PAPER_MEDIAN_K = 17  # ... and median-filters each clip's frame scores over 17 frames


def _metrics(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    names = list(scores)
    return evaluate_frames([scores[n] for n in names], [labels[n] for n in names])


def paper_protocol(raw: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """The paper's own evaluation: per clip, the first :data:`PAPER_DROP` frames are left out and the
    rest median-filtered over :data:`PAPER_MEDIAN_K` frames (centred, ends extended); then micro /
    macro AUROC as :func:`_metrics` (no per-clip normalisation)."""
    cfg = ScoreConfig(smoothing="median", median_k=PAPER_MEDIAN_K)
    kept = {n: v[PAPER_DROP:] for n, v in raw.items() if v.size > PAPER_DROP}
    scores = {n: smooth(v, cfg) for n, v in kept.items()}
    return _metrics(scores, {n: labels[n][PAPER_DROP:] for n in kept})


def object_auroc(clips: list) -> float | None:
    """AUROC of the clips' object scores against their stored per-cube labels (pixel masks); None
    without labels or without both classes."""
    labelled = [c for c in clips if c.object_labels is not None]
    if not labelled:
        return None
    s = np.concatenate([c.objects for c in labelled])
    y = np.concatenate([c.object_labels for c in labelled])
    return roc_auc(s, y) if 0 < int(y.sum()) < y.size else None


def score_metrics(clips: list, smooth_cfg: ScoreConfig) -> dict[str, Any]:
    """Every protocol for one scorer's :class:`~amsrc.detector.ClipScores`: ``raw`` (every frame, no
    smoothing), ``smoothed`` (``smooth_cfg``), ``paper`` (:func:`paper_protocol`) and ``object``
    (object-level AUROC where pixel masks gave object labels)."""
    raw = {c.name: c.frame_raw for c in clips}
    labels = {c.name: np.asarray(c.labels, dtype=np.uint8) for c in clips}
    return {
        "raw": _metrics(raw, labels),
        "smoothed": _metrics({n: smooth(v, smooth_cfg) for n, v in raw.items()}, labels),
        "paper": paper_protocol(raw, labels),
        "object": object_auroc(clips),
    }


def cue_clips(detector, clips: list[ClipScores]) -> dict[str, list[ClipScores]]:
    """The network's cues scored alone, z(S_f), z(S_p) and z(S_m) (weight 1, the others 0), through the
    same frame rule (:func:`amsrc.scoring.combine`, :func:`amsrc.scoring.clip_scores`); a cue that was
    not computed (S_f of the baseline variant, S_p when the decoder was skipped, S_m without a memory)
    is left out."""
    st = detector.train_stats_
    out: dict[str, list] = {}
    for cue, (w_f, w_p, w_m) in {"S_f": (1.0, 0.0, 0.0), "S_p": (0.0, 1.0, 0.0), "S_m": (0.0, 0.0, 1.0)}.items():
        values = [getattr(c, cue.lower()) for c in clips]
        if cue == "S_f" and detector.preset_.model.variant == "baseline":
            continue
        if any(v is None or not np.all(np.isfinite(v)) for v in values) or any(c.offsets is None for c in clips):
            continue
        empty = empty_frame_score(st, w_f, w_p, w_m)
        no_smoothing = dataclasses.replace(detector.preset_.score, smoothing="none")  # the frame rule, unsmoothed
        out[cue] = [clip_scores(c, combine(c.s_f, np.nan_to_num(c.s_p), st, w_f, w_p, c.s_m, w_m), c.s_f, c.s_p,
                                empty, no_smoothing, c.s_m) for c in clips]
    return out


def evaluate_baselines(store, split: str, smooth_cfg: ScoreConfig, names: list[str] | None = None) -> dict[str, Any]:
    """Every registered non-learned scorer (:mod:`amsrc.eval.baselines`), fitted on the store's training
    cubes and scored on ``split``, with :func:`score_metrics`."""
    out = {}
    for name in names or baseline_names():
        t0 = time.perf_counter()
        b = BaselineScorer(name, smooth_cfg).fit(store)
        out[name] = {**score_metrics(b.score_store(store, split), smooth_cfg),
                     "seconds": round(time.perf_counter() - t0, 2)}
    return out


def evaluate(detector, store, out_dir: str | Path, split: str = "testing", top_k: int = 8,
             plots: bool = True, baselines: bool = True) -> dict[str, Any]:
    """Score ``split`` of ``store`` with ``detector`` and compare with its frame labels.

    "raw" is the max over a frame's objects with no smoothing; "smoothed" applies the preset's
    smoothing (``ScoreConfig``), or, when the preset smooths nothing, a Gaussian with the
    ScoreConfig default sigma, so both columns always exist; "paper" is the paper's own protocol
    (:func:`paper_protocol`); "object" the object-level AUROC where the store has object labels.
    "cues" repeats this for z(S_f) and z(S_p) alone, and "baselines" for every non-learned
    scorer (``baselines=True``) on the same cubes. No choice is made from the labels.
    """
    out_dir = Path(out_dir)
    t_score = time.perf_counter()
    clips = detector.score_store(store, split)
    t_score = time.perf_counter() - t_score
    unlabelled = [c.name for c in clips if c.labels is None]
    if not clips:
        raise ConfigError(f"{store.root}: split {split!r} has no clips to evaluate")
    if unlabelled:
        raise ConfigError(f"{store.root}: clips without frame labels cannot be evaluated: {', '.join(unlabelled)}")
    cfg = detector.preset_.score
    smooth_cfg = cfg if cfg.smoothing != "none" else dataclasses.replace(cfg, smoothing="gaussian")
    raw = {c.name: c.frame_raw for c in clips}
    smoothed = {c.name: smooth(c.frame_raw, smooth_cfg) for c in clips}
    labels = {c.name: np.asarray(c.labels, dtype=np.uint8) for c in clips}
    metrics = score_metrics(clips, smooth_cfg)

    per_clip = {}
    for c in clips:
        two = 0 < int(labels[c.name].sum()) < labels[c.name].size
        per_clip[c.name] = {
            "frames": int(labels[c.name].size),
            "anomalous": int(labels[c.name].sum()),
            "objects": int(c.objects.size),
            "auroc_raw": roc_auc(raw[c.name], labels[c.name]) if two else None,
            "auroc_smoothed": roc_auc(smoothed[c.name], labels[c.name]) if two else None,
            "scores_raw": [round(float(v), 5) for v in raw[c.name]],
            "scores_smoothed": [round(float(v), 5) for v in smoothed[c.name]],
            "labels": labels[c.name].tolist(),
        }
    result = {
        "store": str(store.root),
        "checkpoint": str(getattr(detector, "checkpoint_", "")),
        "preset": detector.preset_.name,
        "variant": detector.preset_.model.variant,
        "widths": list(detector.preset_.model.widths),
        "epochs": detector.preset_.train.epochs,
        "weights": {"w_f": cfg.w_f, "w_p": cfg.w_p, "w_m": cfg.w_m},
        "checkpoint_rule": "last epoch (no test label used for any choice)",
        "empty_frame_rule": "a frame with no object scores as a perfect object (S_f = S_p = 0)",
        **metrics,
        "smoothing": _smoothing_name(smooth_cfg),
        "paper_protocol": f"first {PAPER_DROP} frames of each clip left out, median filter k={PAPER_MEDIAN_K} per clip",
        "cues": {k: score_metrics(v, smooth_cfg) for k, v in cue_clips(detector, clips).items()},
        "clips": per_clip,
    }
    if baselines:
        result["baselines"] = evaluate_baselines(store, split, smooth_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        plot_score_curves(smoothed, labels, out_dir / "score_curves.png")
        top = _plot_top_objects(detector, store, split, clips, out_dir / "error_maps.png", top_k)
        result["plots"] = ["score_curves.png", "error_maps.png", "report.html"]
        _write_report(detector, out_dir, split, smoothed, labels, result, top, t_score)
    write_json_atomic(out_dir / "results.json", result)
    return result


def _smoothing_name(cfg: ScoreConfig) -> str:
    causal = " causal" if cfg.causal else ""
    if cfg.smoothing == "median":
        return f"median k={cfg.median_k}{causal}"
    if cfg.smoothing == "gaussian":
        return f"gaussian sigma={cfg.gaussian_sigma}{causal}"
    return "none"


def _write_report(detector, out_dir: Path, split: str, smoothed, labels, result, top, t_score: float) -> None:
    """report.html: smoothed curves with the ground truth shaded, the top-scoring objects as events,
    error_maps.png as the thumbnail, the preset as settings, the scoring time."""
    n_frames = sum(int(v.size) for v in smoothed.values())
    threshold = None if getattr(detector, "threshold_", None) is None else detector.threshold_.value
    thumbs = []
    if (out_dir / "error_maps.png").is_file():
        thumbs.append((f"the {len(top)} highest-scoring objects, numbered as in the table: frame t, its prediction, "
                       f"the squared error per pixel ({FRAME_BASE})", (out_dir / "error_maps.png").read_bytes()))
    timings = {"scoring (s)": round(t_score, 3), "frames": n_frames,
               "frames/s": round(n_frames / t_score, 1) if t_score > 0 else None}
    def auc(m) -> str:
        v = m.get("micro") if isinstance(m, dict) else None
        return "n/a" if v is None else f"{float(v):.4f}"

    title = (f"amsrc evaluate: {result['preset']} / {result['variant']} on {split} - micro AUROC "
             f"{auc(result['raw'])} raw, {auc(result['smoothed'])} smoothed ({result['smoothing']})")
    thr = getattr(detector, "threshold_", None)
    write_html_report(out_dir / "report.html", title=title,
                      curves={n: (smoothed[n], labels[n]) for n in smoothed},
                      threshold=None if threshold is None else float(threshold),
                      threshold_low=None if thr is None else thr.low,
                      events=top, thumbnails=thumbs, settings=detector.preset_.to_dict(), timings=timings,
                      intro=f"The curves are the {SCORE_MEANING}, smoothed ({result['smoothing']}); ground truth "
                            "shaded. The table lists the highest-scoring objects of the split.",
                      events_heading="Highest-scoring objects")


def _nth(k: int) -> str:
    return "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")


def _plot_top_objects(detector, store, split, clips, out_png: Path, top_k: int) -> list[dict]:
    """Error maps of the ``top_k`` highest-scoring objects of the split (paper Fig. 6), from the same
    forward pass as their scores (:meth:`AMSRC.predict_cubes`). Returns them as event rows for the
    HTML report (clip, frame, object score, box)."""
    cand = [(float(s), c.name, i) for c in clips for i, s in enumerate(c.objects)]
    cand.sort(reverse=True)
    items = []
    rows: list[dict] = []
    loaded = {}  # each clip's shards are opened (and CRC-checked) once
    for s, name, i in cand[:top_k]:
        if name not in loaded:
            loaded[name] = store.load(split, name)
        cubes = loaded[name]
        out = detector.predict_cubes(cubes.appearance[i:i + 1], cubes.flow[i:i + 1])
        if out.pred is None:  # the decoder did not run: nothing to draw
            continue
        pred, tgt = out.pred[0].transpose(1, 2, 0), out.target[0].transpose(1, 2, 0)
        t = int(cubes.frames[i])
        items.append((f"{len(rows) + 1}: clip {name}, frame {t}, score {s:.2f} {SCORE_UNIT}", tgt, pred,
                      error_map(tgt, pred)))
        rows.append({"event": len(rows) + 1, "clip": name, "start_frame": t, "end_frame": t, "peak_frame": t,
                     "peak_score": round(s, 4), "box": [int(v) for v in cubes.boxes[i]],
                     "why": f"the {len(rows) + 1}{_nth(len(rows) + 1)} highest object score of the split"})
    if items:
        plot_error_maps(items, out_png)
    return rows
