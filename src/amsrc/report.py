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
            ax.set_ylabel("score", fontsize=8)
        if i // ncols == nrows - 1:
            ax.set_xlabel("frame", fontsize=8)
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
        ax.set_title("squared error", fontsize=8)
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


# ---------------------------------------------------------------- self-contained HTML report
# Colours shared by the SVG curves and the browser test (tests/test_html_report.py).
CURVE_COLOUR = "#1f77b4"  # score curve
GT_COLOUR = "#d62728"  # ground-truth anomalous frames (shaded)
EVENT_COLOUR = "#ff7f0e"  # detected events (band along the top + span)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#222;
background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.summary{color:#444;margin:0 0 12px}
.curve{margin:8px 0 14px}.curve h3{font-size:14px;margin:4px 0}
svg{background:#fff;border:1px solid #ccc;max-width:100%;height:auto}
svg text{font-size:11px;fill:#333}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.thumbs{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;border:1px solid #ccc;padding:6px;background:#fafafa;max-width:100%}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:12px;margin-top:4px;color:#333}
.legend span{display:inline-block;margin-right:16px;font-size:12px}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
"""

_EVENT_ORDER = ("event", "clip", "start_frame", "end_frame", "n_frames", "start_time", "end_time",
                "peak_score", "peak_frame", "peak_time", "alert_frame", "delay_frames", "explanation", "boxes")


def _esc(x: Any) -> str:
    import html

    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    """A table cell: numbers compact, dicts as "k: v; ...", box lists summarised."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return "nan" if not math.isfinite(f) else f"{f:.4g}"
    if v is None:
        return "-"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple, np.ndarray)):
        items = list(v)
        if items and all(isinstance(b, Mapping) and "box" in b for b in items):
            top = items[0]
            more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
            return f"[{', '.join(str(int(c)) for c in top['box'])}] score {_fmt(top.get('score'))}{more}"
        text = "[" + ", ".join(_fmt(x) for x in items) + "]"
        return text if len(text) <= 160 else text[:157] + "..."
    return str(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            rows += _flatten(v, key + ".")
        else:
            rows.append((key, v))
    return rows


def _decimate(s: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a curve with at most ~max_points points, keeping each bucket's min and max."""
    n = s.size
    if n <= max_points:
        return np.arange(n, dtype=np.float64), s
    per = int(math.ceil(n / (max_points / 2)))
    xs, ys = [], []
    for a in range(0, n, per):
        seg = s[a:a + per]
        finite = np.isfinite(seg)
        if not finite.all():  # keep the gap: one non-finite point breaks the line
            k = int(np.flatnonzero(~finite)[0])
            xs.append(a + k)
            ys.append(np.nan)
        if finite.any():
            v = np.where(finite, seg, np.nan)
            for k in sorted({int(np.nanargmin(v)), int(np.nanargmax(v))}):
                xs.append(a + k)
                ys.append(seg[k])
    return np.asarray(xs, np.float64), np.asarray(ys, np.float64)


def _nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values in [lo, hi] (steps 1, 2, 2.5, 5 x 10^k; integer steps if ``integer``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [float(lo)]
    raw = (hi - lo) / max(n, 1)
    if integer:
        raw = max(raw, 1.0)
    mag = 10.0 ** math.floor(math.log10(raw))
    mults = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = min((m * mag for m in mults if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def score_curve_svg(scores: Any, labels: Any = None, threshold: float | None = None,
                    events: Sequence[tuple[int, int]] = (), width: int = 960, height: int = 200,
                    max_points: int = 4000) -> str:
    """One clip's score curve as an inline SVG string.

    scores (n,) float; labels (n,) 0/1 or None: each run of anomalous frames [a, b) is a shaded
    ``<rect class="gt">`` over x = a - 0.5 .. b - 0.5; threshold: a dashed ``<line class="threshold">``;
    events: (first, last) frame pairs, inclusive, each a ``<rect class="event">`` span plus a band
    along the top. Long curves are drawn with at most ``max_points`` points (bucket min and max).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.size
    if n == 0:
        raise ValueError("score_curve_svg: no scores")
    ml, mr, mt, mb = 52, 12, 10, 32
    pw, ph = width - ml - mr, height - mt - mb
    finite = s[np.isfinite(s)]
    vals = list(finite) + ([float(threshold)] if threshold is not None and math.isfinite(threshold) else [])
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = -0.5, max(n - 0.5, 0.5)

    def X(f: float) -> float:
        return ml + (f - x_lo) / (x_hi - x_lo) * pw

    def Y(v: float) -> float:
        return mt + (hi - v) / (hi - lo) * ph

    parts = [f'<svg width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">']
    parts.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>')
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.size != n:
            raise ValueError(f"score_curve_svg: {n} scores but {y.size} labels")
        for a, b in labels_to_intervals(y):
            parts.append(f'<rect class="gt" x="{X(a - 0.5):.2f}" y="{mt}" width="{X(b - 0.5) - X(a - 0.5):.2f}" '
                         f'height="{ph}" fill="{GT_COLOUR}" fill-opacity="0.22"/>')
    for a, b in events:
        a, b = int(a), int(b)
        x0, x1 = X(a - 0.5), X(b + 0.5)
        parts.append(f'<rect class="event" x="{x0:.2f}" y="{mt}" width="{x1 - x0:.2f}" height="{ph}" '
                     f'fill="{EVENT_COLOUR}" fill-opacity="0.12"/>')
        parts.append(f'<rect class="event-band" x="{x0:.2f}" y="{mt}" width="{max(x1 - x0, 2.0):.2f}" height="6" '
                     f'fill="{EVENT_COLOUR}"/>')
    for v in _nice_ticks(lo, hi, 4):
        parts.append(f'<line x1="{ml - 4}" x2="{ml}" y1="{Y(v):.2f}" y2="{Y(v):.2f}" stroke="#666"/>'
                     f'<text x="{ml - 6}" y="{Y(v) + 4:.2f}" text-anchor="end">{_esc(f"{v:.3g}")}</text>')
    for f in _nice_ticks(0, n - 1, 8, integer=True):
        parts.append(f'<line x1="{X(f):.2f}" x2="{X(f):.2f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#666"/>'
                     f'<text x="{X(f):.2f}" y="{mt + ph + 16}" text-anchor="middle">{int(round(f))}</text>')
    xs, ys = _decimate(s, max_points)
    # a non-finite score breaks the line
    seg: list[str] = []
    lines = []
    for xv, yv in zip(xs, ys):
        if math.isfinite(yv):
            seg.append(f"{X(xv):.2f},{Y(yv):.2f}")
        elif seg:
            lines.append(seg)
            seg = []
    if seg:
        lines.append(seg)
    for seg in lines:
        if len(seg) == 1:
            cx, cy = seg[0].split(",")
            parts.append(f'<circle class="score" cx="{cx}" cy="{cy}" r="2" fill="{CURVE_COLOUR}"/>')
        else:
            parts.append(f'<polyline class="score" fill="none" stroke="{CURVE_COLOUR}" stroke-width="1.6" '
                         f'points="{" ".join(seg)}"/>')
    if threshold is not None and math.isfinite(threshold):
        ty = Y(float(threshold))
        parts.append(f'<line class="threshold" x1="{ml}" x2="{ml + pw}" y1="{ty:.2f}" y2="{ty:.2f}" stroke="#000" '
                     f'stroke-dasharray="6 4" stroke-width="1.2"/>'
                     f'<text x="{ml + pw - 4}" y="{ty - 4:.2f}" text-anchor="end">threshold {_esc(f"{threshold:.4g}")}</text>')
    parts.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 2}" text-anchor="middle">frame</text>')
    parts.append("</svg>")
    return "".join(parts)


def _image_mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    raise ValueError("thumbnail images must be PNG or JPEG bytes")


def _table(rows: Sequence[tuple[str, Any]], head: tuple[str, str]) -> str:
    if not rows:
        return "<p>none</p>"
    out = [f"<table><thead><tr><th>{_esc(head[0])}</th><th>{_esc(head[1])}</th></tr></thead><tbody>"]
    for k, v in rows:
        cls = ' class="num"' if _is_num(v) else ""
        out.append(f"<tr><td>{_esc(k)}</td><td{cls}>{_esc(_fmt(v))}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _events_table(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "<p>no events</p>"
    keys: list[str] = []
    for e in events:
        for k in e:
            if k != "type" and k not in keys:
                keys.append(k)
    seen = {k: i for i, k in enumerate(keys)}
    keys.sort(key=lambda k: (_EVENT_ORDER.index(k) if k in _EVENT_ORDER else len(_EVENT_ORDER), seen[k]))
    out = ['<table class="events"><thead><tr>' + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr></thead><tbody>"]
    for e in events:
        cells = []
        for k in keys:
            v = e.get(k)
            if k == "explanation" and isinstance(v, Mapping) and "cue" in v:
                v = {"cue": v["cue"], **{kk: vv for kk, vv in v.items() if kk not in ("cue", "why")}}
            cls = ' class="num"' if _is_num(v) else ""
            cells.append(f"<td{cls}>{_esc(_fmt(v))}</td>")
        out.append('<tr class="event-row">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def write_html_report(path: str | Path, *, title: str,
                      curves: Mapping[str, tuple[Any, Any]],
                      threshold: float | None,
                      events: Sequence[Mapping[str, Any]],
                      thumbnails: Sequence[tuple[str, bytes]],
                      settings: Mapping[str, Any],
                      timings: Mapping[str, Any]) -> Path:
    """Write ONE self-contained HTML page (no external resource: inline CSS, inline SVG curves, images
    as base64 data URIs), atomically, and return its path.

    curves: clip/stream name -> (scores (n,) float, labels (n,) 0/1 or None); ground truth is shaded
        where labels are given. threshold: the decision threshold (dashed line), or None.
    events: dicts as :class:`amsrc.alerts.EventDetector` writes them: "start_frame" and "end_frame"
        (inclusive) mark the event on its curve, "clip" names the curve (default: the first one);
        every other key ("peak_score", "peak_frame", "explanation", "boxes", ...) is a table column.
    thumbnails: (caption, PNG or JPEG bytes), e.g. the top events' crops and error maps.
    settings: (nested) dict, e.g. ``preset.to_dict()``, shown flattened (dotted keys).
    timings: name -> value (seconds, frames/s, ...). All text is HTML-escaped.
    """
    import base64
    import datetime

    if not isinstance(curves, Mapping):
        raise ValueError("write_html_report: curves must be a dict name -> (scores, labels or None)")
    names = list(curves)
    spans: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    for e in events:
        if not isinstance(e, Mapping):
            raise ValueError(f"write_html_report: events must be dicts, got {type(e).__name__}")
        clip = e.get("clip", names[0] if names else None)
        if clip in spans and e.get("start_frame") is not None:
            a = int(e["start_frame"])
            b = int(e["end_frame"]) if e.get("end_frame") is not None else a
            spans[clip].append((a, max(a, b)))
    body = [f"<h1>{_esc(title)}</h1>"]
    n_frames = 0
    for n in names:
        n_frames += int(np.asarray(curves[n][0]).size)
    thr = "none" if threshold is None else f"{float(threshold):.4g}"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f'<p class="summary">{len(names)} curve(s), {n_frames} frames; threshold {_esc(thr)}; '
                f'{len(events)} event(s); written {_esc(stamp)}.</p>')
    body.append('<p class="legend">'
                f'<span><i class="sw" style="background:{CURVE_COLOUR}"></i>score</span>'
                '<span><i class="sw" style="background:repeating-linear-gradient(90deg,#000 0 6px,#fff 6px 10px)">'
                '</i>threshold</span>'
                f'<span><i class="sw" style="background:{EVENT_COLOUR}"></i>event</span>'
                f'<span><i class="sw" style="background:{GT_COLOUR};opacity:.35"></i>ground truth</span></p>')
    body.append("<h2>Score curves</h2>")
    for n in names:
        pair = curves[n]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"write_html_report: curves[{n!r}] must be (scores, labels or None)")
        sc, lab = pair
        svg = score_curve_svg(sc, lab, threshold, spans[n])
        body.append(f'<div class="curve"><h3>{_esc(n)}</h3>{svg}</div>')
    body.append("<h2>Events</h2>")
    body.append(_events_table(events))
    body.append("<h2>Top events</h2>")
    if thumbnails:
        body.append('<div class="thumbs">')
        for cap, data in thumbnails:
            data = bytes(data)
            uri = f"data:{_image_mime(data)};base64," + base64.b64encode(data).decode("ascii")
            body.append(f'<figure><img alt="{_esc(cap)}" src="{uri}"><figcaption>{_esc(cap)}</figcaption></figure>')
        body.append("</div>")
    else:
        body.append("<p>none</p>")
    body.append("<h2>Settings</h2>")
    body.append(_table(_flatten(settings), ("setting", "value")))
    body.append("<h2>Timings</h2>")
    body.append(_table(list(timings.items()), ("step", "value")))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def png_bytes(img: Any) -> bytes:
    """(H, W) or (H, W, 3) uint8 RGB image -> PNG bytes (for :func:`write_html_report` thumbnails)."""
    import io

    from PIL import Image

    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"png_bytes: expected (H, W) or (H, W, 3) uint8, got {a.shape} {a.dtype}")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def event_thumbnail(frame_rgb: Any, box: Any, error: Any = None, margin: float = 0.5, height: int = 128) -> bytes:
    """PNG bytes of an event's thumbnail for :func:`write_html_report`: the frame crop around ``box``
    (x0, y0, x1, y1, x1/y1 exclusive; ``margin`` x the box size added on each side) with the box drawn
    in red, and, when ``error`` (an (h, w) prediction-error map of the box's cube) is given, that map
    in the jet colour map beside it. Both panels are ``height`` pixels tall.
    """
    import cv2

    img = np.asarray(frame_rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"event_thumbnail: frame must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    H, W = img.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in np.asarray(box).reshape(4))
    x0, x1 = max(0, min(x0, W - 1)), max(1, min(x1, W))
    y0, y1 = max(0, min(y0, H - 1)), max(1, min(y1, H))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"event_thumbnail: empty box {tuple(np.asarray(box).reshape(4))} in a {W}x{H} frame")
    mx, my = int(round(margin * (x1 - x0))), int(round(margin * (y1 - y0)))
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(W, x1 + mx), min(H, y1 + my)
    crop = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
    k = height / crop.shape[0]
    crop = cv2.resize(crop, (max(1, int(round(crop.shape[1] * k))), height), interpolation=cv2.INTER_NEAREST)
    th = max(1, height // 64)
    cv2.rectangle(crop, (int((x0 - cx0) * k), int((y0 - cy0) * k)),
                  (int((x1 - cx0) * k) - 1, int((y1 - cy0) * k) - 1), (255, 0, 0), th)
    panels = [crop]
    if error is not None:
        e = np.nan_to_num(np.asarray(error, dtype=np.float32))
        if e.ndim != 2:
            raise ValueError(f"event_thumbnail: error map must be (h, w), got {e.shape}")
        u = np.clip(e / max(float(e.max()), 1e-12), 0.0, 1.0)
        heat = cv2.applyColorMap((u * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
        heat = cv2.resize(heat, (max(1, int(round(e.shape[1] * height / e.shape[0]))), height),
                          interpolation=cv2.INTER_NEAREST)
        panels += [np.full((height, 4, 3), 255, np.uint8), heat]
    return png_bytes(np.concatenate(panels, axis=1))
