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
from amsrc.scoring import FRAME_BASE, SCORE_MEANING, SCORE_NAME, SCORE_UNIT
from amsrc.utils import atomic_path

# ---------------------------------------------------------------- self-contained HTML report
# Colours shared by the SVG curves and the browser test (tests/test_html_report.py).
CURVE_COLOUR = "#1f77b4"  # score curve
GT_COLOUR = "#d62728"  # ground-truth anomalous frames (shaded)
EVENT_COLOUR = "#ff7f0e"  # detected events (band along the top + span)
END_COLOUR = "#7f7f7f"  # the end threshold (dotted)

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
details{margin:10px 0}summary{cursor:pointer;font-weight:600}
tr:target,figure:target{outline:3px solid #ff7f0e}
.legend span{display:inline-block;margin-right:16px;font-size:12px}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
"""



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
                    events: Sequence[tuple[int, int]] = (), width: int = 960, height: int = 230,
                    max_points: int = 4000, threshold_low: float | None = None, fps: float | None = None,
                    event_ids: Sequence[int] | None = None, ylabel: str = f"{SCORE_NAME} ({SCORE_UNIT})") -> str:
    """One clip's score curve as inline SVG text (a matplotlib figure, ``width`` x ``height`` CSS px).

    scores (n,) float, drawn in ``CURVE_COLOUR``; labels (n,) 0/1 or None: each run of anomalous
    frames [a, b) is shaded in ``GT_COLOUR`` over x = a - 0.5 .. b - 0.5; threshold: a dashed black
    line labelled "threshold <value>"; threshold_low: the end threshold, a dotted grey line labelled
    "end <value>" (not drawn when equal to the threshold); events: (first, last) frame pairs,
    inclusive, each a span in ``EVENT_COLOUR`` plus a band along the top, numbered with
    ``event_ids`` (default 1, 2, ...) and linked to ``#event-<id>`` of the page. The x axis is the
    frame (0-based); with ``fps`` a second axis on top gives the time in seconds. Long curves are
    drawn with at most ``max_points`` points (bucket min and max). The SVG is deterministic (fixed
    id salt, no date) and has no XML prolog, namespace URL or metadata, so it can be inlined into
    HTML as is.
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
    low = float(threshold_low) if thr is not None and threshold_low is not None and math.isfinite(threshold_low) \
        and threshold_low < thr else None
    ids = list(event_ids) if event_ids is not None else list(range(1, len(events) + 1))
    if len(ids) != len(events):
        raise ValueError(f"score_curve_svg: {len(events)} events but {len(ids)} event ids")
    with matplotlib.rc_context({"svg.hashsalt": "amsrc", "svg.fonttype": "none", "font.sans-serif": ["DejaVu Sans"]}):
        fig = _new_figure(width / 96, height / 96, 96)  # SVG sizes are in pt: 96 px = 72 pt = 1 in
        ax = fig.add_subplot(1, 1, 1)
        for a, b in labels_to_intervals(y) if y is not None else ():
            ax.axvspan(a - 0.5, b - 0.5, facecolor=GT_COLOUR, alpha=0.22, edgecolor="none")
        for (a, b), eid in zip(events, ids):
            a, b = int(a), int(b)
            ax.axvspan(a - 0.5, b + 0.5, facecolor=EVENT_COLOUR, alpha=0.12, edgecolor="none").set_url(f"#event-{eid}")
            ax.axvspan(a - 0.5, b + 0.5, ymin=0.95, facecolor=EVENT_COLOUR, edgecolor=EVENT_COLOUR,
                       linewidth=0.75).set_url(f"#event-{eid}")
            ax.text((a + b) / 2, 0.93, str(eid), transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=8, color="#7a3b00").set_url(f"#event-{eid}")
        xs, ys = _decimate(s, max_points)
        ys = np.where(np.isfinite(ys), ys, np.nan)  # +-inf breaks the line too
        ax.plot(xs, ys, color=CURVE_COLOUR, linewidth=1.2)
        ok = np.isfinite(ys)  # a finite point between two gaps draws no line: mark it
        alone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]
        if alone.any():
            ax.plot(xs[alone], ys[alone], linestyle="none", marker="o", markersize=2.5, color=CURVE_COLOUR)
        finite = s[np.isfinite(s)]
        vals = list(finite) + ([thr] if thr is not None else []) + ([low] if low is not None else [])
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
        if low is not None:
            ax.axhline(low, color=END_COLOUR, linestyle=":", linewidth=0.9)
            ax.text(0.005, low, f"end {low:.4g}", transform=ax.get_yaxis_transform(), ha="left", va="top",
                    fontsize=8, color=END_COLOUR)
        ax.set_xlim(-0.5, max(n - 0.5, 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(labelsize=8)
        ax.set_xlabel("frame (0-based)", fontsize=9, labelpad=1)
        ax.set_ylabel(ylabel, fontsize=9, labelpad=2)
        if fps:
            top = ax.secondary_xaxis("top", functions=(lambda f: f / fps, lambda t: t * fps))
            top.tick_params(labelsize=8)
            top.set_xlabel("time (s)", fontsize=9, labelpad=1)
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


def _when(e: Mapping[str, Any], which: str, fps: float | None) -> str:
    """ "frame 26 · 2.60 s" of an event's start / end / peak."""
    f = e.get(f"{which}_frame")
    if f is None:
        return "-"
    t = e.get(f"{which}_time")
    if t is None and fps:
        t = int(f) / fps
    return f"frame {int(f)}" + ("" if t is None else f" · {float(t):.2f} s")


def _events_table(events: Sequence[Mapping[str, Any]], fps: float | None, with_clip: bool,
                  thumbs: set[int]) -> str:
    """One row per event (id ``event-N``): number (linked to its picture), clip, start, end, length,
    peak, why in words, the responsible object's box."""
    if not events:
        return "<p>no events</p>"
    head = ["#"] + (["clip"] if with_clip else []) + ["start", "end", "length", f"peak {SCORE_NAME}", "why",
                                                       "top object: box (x0, y0, x1, y1), its own score"]
    out = ['<table class="events"><thead><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for k, e in enumerate(events):
        n = int(e.get("event", k + 1))
        num = f'<a href="#thumb-{n}">{n}</a>' if n in thumbs else str(n)
        cells = [f'<td class="num">{num}</td>']
        if with_clip:
            cells.append(f"<td>{_esc(e.get('clip', '-'))}</td>")
        cells += [f"<td>{_esc(_when(e, 'start', fps))}</td>", f"<td>{_esc(_when(e, 'end', fps))}</td>"]
        a, b = e.get("start_frame"), e.get("end_frame", e.get("start_frame"))
        if a is None:
            length = "-"
        else:
            nf = int(b) - int(a) + 1
            length = f"{nf} frame{'s' if nf != 1 else ''}" + (f" · {nf / fps:.2f} s" if fps else "")
        cells.append(f"<td>{_esc(length)}</td>")
        peak = e.get("peak_score")
        peak_txt = f"{float(peak):.2f}" if _is_num(peak) else _fmt(peak)
        cells.append(f'<td class="num">{_esc(peak_txt)}'
                     + (f" at {_esc(_when(e, 'peak', fps))}" if e.get("peak_frame") is not None else "") + "</td>")
        ex = e.get("explanation") if isinstance(e.get("explanation"), Mapping) else {}
        cells.append(f"<td>{_esc(e.get('why') or ex.get('words') or ex.get('why') or '-')}</td>")
        boxes = e.get("boxes") or ([{"box": e["box"], "score": peak}] if e.get("box") is not None else [])
        top = boxes[0] if boxes and isinstance(boxes[0], Mapping) else None
        cells.append("<td>-</td>" if top is None else
                     f"<td>[{_esc(', '.join(str(int(c)) for c in top['box']))}] {_esc(_fmt(top.get('score')))}</td>")
        out.append(f'<tr class="event-row" id="event-{n}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def write_html_report(path: str | Path, *, title: str,
                      curves: Mapping[str, tuple[Any, Any]],
                      threshold: float | None,
                      events: Sequence[Mapping[str, Any]],
                      thumbnails: Sequence[tuple],
                      settings: Mapping[str, Any],
                      timings: Mapping[str, Any],
                      threshold_low: float | None = None,
                      fps: float | None = None,
                      rate_text: str | None = None,
                      intro: str | None = None,
                      events_heading: str = "Events") -> Path:
    """Write ONE self-contained HTML page (no external resource: inline CSS, inline SVG curves, images
    as base64 data URIs), atomically, and return its path.

    curves: clip/stream name -> (scores (n,) float, labels (n,) 0/1 or None); ground truth is shaded
        (and named in the legend) only where labels are given.
    threshold / threshold_low: the decision and end thresholds (dashed / dotted lines), or None.
    events: dicts as :class:`amsrc.live.events.EventDetector` writes them: "event" (number),
        "start_frame" and "end_frame" (inclusive, 0-based) mark the event on its curve (linked to its
        row), "clip" names the curve (default: the first one); "start_time"/"end_time"/"peak_time",
        "peak_score"/"peak_frame", "why" (the cue in words) and "boxes" (the peak frame's, highest
        first) or "box" fill the row.
    thumbnails: (event number or None, caption, PNG or JPEG bytes); a numbered one is linked to and
        from its event's row. A (caption, bytes) pair is a thumbnail of no event.
    settings: (nested) dict, e.g. ``preset.to_dict()``, shown flattened (dotted keys) in a folded block.
    timings: name -> value (seconds, frames/s, ...). fps: frame rate of the times (a time axis on each
    curve); rate_text: where it comes from, in words. intro: a paragraph under the title. All text is
    HTML-escaped.
    """
    import base64
    import datetime

    if not isinstance(curves, Mapping):
        raise ValueError("write_html_report: curves must be a dict name -> (scores, labels or None)")
    names = list(curves)
    spans: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    ids: dict[str, list[int]] = {n: [] for n in names}
    for k, e in enumerate(events):
        if not isinstance(e, Mapping):
            raise ValueError(f"write_html_report: events must be dicts, got {type(e).__name__}")
        clip = e.get("clip", names[0] if names else None)
        if clip in spans and e.get("start_frame") is not None:
            a = int(e["start_frame"])
            b = int(e["end_frame"]) if e.get("end_frame") is not None else a
            spans[clip].append((a, max(a, b)))
            ids[clip].append(int(e.get("event", k + 1)))
    thumbs = [t if len(t) == 3 else (None, *t) for t in thumbnails]
    body = [f"<h1>{_esc(title)}</h1>"]
    n_frames = sum(int(np.asarray(curves[n][0]).size) for n in names)
    thr = "none" if threshold is None else f"{float(threshold):.4g}"
    low = "" if threshold_low is None or threshold is None or not threshold_low < threshold else \
        f", end threshold {float(threshold_low):.4g}"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rate = f"; times at {rate_text}" if rate_text else (f"; times at {fps:g} fps" if fps else "")
    body.append(f'<p class="summary">{len(names)} curve(s), {n_frames} frames ({_esc(FRAME_BASE)}{_esc(rate)}); '
                f'threshold {_esc(thr)}{_esc(low)}; {len(events)} {_esc(events_heading.lower())}; '
                f'written {_esc(stamp)}.</p>')
    body.append(f'<p class="summary">{_esc(intro or "The " + SCORE_MEANING + ".")}</p>')
    has_gt = any(curves[n][1] is not None for n in names if isinstance(curves[n], (tuple, list)) and len(curves[n]) == 2)
    legend = [f'<span><i class="sw" style="background:{CURVE_COLOUR}"></i>{_esc(SCORE_NAME)}</span>']
    if threshold is not None:
        legend.append('<span><i class="sw" style="background:repeating-linear-gradient(90deg,#000 0 6px,#fff 6px 10px)">'
                      '</i>threshold (an event starts above it)</span>')
    if low:
        legend.append(f'<span><i class="sw" style="background:repeating-linear-gradient(90deg,{END_COLOUR} 0 2px,'
                      '#fff 2px 5px)"></i>end threshold (an event ends below it)</span>')
    legend.append(f'<span><i class="sw" style="background:{EVENT_COLOUR}"></i>{_esc(events_heading.lower())} '
                  '(click: its row)</span>')
    if has_gt:
        legend.append(f'<span><i class="sw" style="background:{GT_COLOUR};opacity:.35"></i>ground truth</span>')
    body.append('<p class="legend">' + "".join(legend) + "</p>")
    body.append("<h2>Score curves</h2>")
    if not names:
        body.append("<p>no frames scored</p>")
    for n in names:
        pair = curves[n]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"write_html_report: curves[{n!r}] must be (scores, labels or None)")
        sc, lab = pair
        svg = score_curve_svg(sc, lab, threshold, spans[n], threshold_low=threshold_low, fps=fps, event_ids=ids[n])
        body.append(f'<div class="curve"><h3>{_esc(n)}</h3>{svg}</div>')
    body.append(f"<h2>{_esc(events_heading)}</h2>")
    body.append(_events_table(events, fps, len(names) > 1, {t[0] for t in thumbs if t[0] is not None}))
    body.append("<h2>Pictures</h2>")
    if thumbs:
        body.append('<div class="thumbs">')
        for eid, cap, data in thumbs:
            data = bytes(data)
            uri = f"data:{_image_mime(data)};base64," + base64.b64encode(data).decode("ascii")
            fid = f' id="thumb-{int(eid)}"' if eid is not None else ""
            back = f' <a href="#event-{int(eid)}">(row)</a>' if eid is not None else ""
            body.append(f'<figure{fid}><img alt="{_esc(cap)}" src="{uri}"><figcaption>{_esc(cap)}{back}'
                        "</figcaption></figure>")
        body.append("</div>")
    else:
        body.append("<p>none</p>")
    body.append("<h2>Timings</h2>")
    body.append(_table(list(timings.items()), ("step", "value")))
    flat = _flatten(settings)
    body.append(f"<details><summary>Settings ({len(flat)})</summary>")
    body.append(_table(flat, ("setting", "value")))
    body.append("</details>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
