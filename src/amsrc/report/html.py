"""The self-contained HTML report of an evaluation or a scoring run: score curves (inline SVG),
events, thumbnails and settings in one file that opens offline in any browser."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amsrc.eval.plots import _new_figure, labels_to_intervals
from amsrc.utils import atomic_path

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


def score_curve_svg(scores: Any, labels: Any = None, threshold: float | None = None,
                    events: Sequence[tuple[int, int]] = (), width: int = 960, height: int = 200,
                    max_points: int = 4000) -> str:
    """One clip's score curve as inline SVG text (a matplotlib figure, ``width`` x ``height`` CSS px).

    scores (n,) float, drawn in ``CURVE_COLOUR``; labels (n,) 0/1 or None: each run of anomalous
    frames [a, b) is shaded in ``GT_COLOUR`` over x = a - 0.5 .. b - 0.5; threshold: a dashed black
    line labelled "threshold <value>"; events: (first, last) frame pairs, inclusive, each a span in
    ``EVENT_COLOUR`` plus a band along the top. Long curves are drawn with at most ``max_points``
    points (bucket min and max). The SVG is deterministic (fixed id salt, no date) and has no XML
    prolog, namespace URL or metadata, so it can be inlined into HTML as is.
    """
    import io

    import matplotlib
    from matplotlib.ticker import MaxNLocator

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.size
    if n == 0:
        raise ValueError("score_curve_svg: no scores")
    y = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.size != n:
            raise ValueError(f"score_curve_svg: {n} scores but {y.size} labels")
    thr = float(threshold) if threshold is not None and math.isfinite(threshold) else None
    with matplotlib.rc_context({"svg.hashsalt": "amsrc", "svg.fonttype": "none", "font.sans-serif": ["DejaVu Sans"]}):
        fig = _new_figure(width / 96, height / 96, 96)  # SVG sizes are in pt: 96 px = 72 pt = 1 in
        ax = fig.add_subplot(1, 1, 1)
        for a, b in labels_to_intervals(y) if y is not None else ():
            ax.axvspan(a - 0.5, b - 0.5, facecolor=GT_COLOUR, alpha=0.22, edgecolor="none")
        for a, b in events:
            a, b = int(a), int(b)
            ax.axvspan(a - 0.5, b + 0.5, facecolor=EVENT_COLOUR, alpha=0.12, edgecolor="none")
            ax.axvspan(a - 0.5, b + 0.5, ymin=0.95, facecolor=EVENT_COLOUR, edgecolor=EVENT_COLOUR, linewidth=0.75)
        xs, ys = _decimate(s, max_points)
        ys = np.where(np.isfinite(ys), ys, np.nan)  # +-inf breaks the line too
        ax.plot(xs, ys, color=CURVE_COLOUR, linewidth=1.2)
        ok = np.isfinite(ys)  # a finite point between two gaps draws no line: mark it
        alone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]
        if alone.any():
            ax.plot(xs[alone], ys[alone], linestyle="none", marker="o", markersize=2.5, color=CURVE_COLOUR)
        finite = s[np.isfinite(s)]
        vals = list(finite) + ([thr] if thr is not None else [])
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        if thr is not None:
            ax.axhline(thr, color="#000000", linestyle="--", linewidth=0.9)
            above = thr < lo + 0.8 * (hi - lo)  # the label above the line, below it near the top
            ax.text(0.995, thr, f"threshold {thr:.4g}", transform=ax.get_yaxis_transform(), ha="right",
                    va="bottom" if above else "top", fontsize=8)
        ax.set_xlim(-0.5, max(n - 0.5, 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(labelsize=8)
        ax.set_xlabel("frame", fontsize=9, labelpad=1)
        ax.set_ylabel("score", fontsize=9, labelpad=2)
        fig.tight_layout(pad=0.3)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE (a DTD URL)
    # the HTML parser puts <svg> in the SVG namespace and knows xlink:href: the namespace URLs can go
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg, count=2)
    # path data with 2 decimals (1/100 pt) on one line: about half the size of matplotlib's 6
    return re.sub(r'(?<=\sd=")[^"]*', _compact_path_data, svg).strip()


def _num2(m: re.Match) -> str:
    s = f"{float(m.group()):.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _compact_path_data(m: re.Match) -> str:
    return " ".join(re.sub(r"-?\d+\.\d+", _num2, m.group()).split())


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
    events: dicts as :class:`amsrc.live.events.EventDetector` writes them: "start_frame" and "end_frame"
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
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path

