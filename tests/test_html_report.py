"""The self-contained HTML report: its structure (no external resource, escaped text, one row per
event, ground truth where the labels say), its matplotlib SVG curves and a real render in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from amsrc.report.html import (
    CURVE_COLOUR,
    END_COLOUR,
    EVENT_COLOUR,
    GT_COLOUR,
    labels_to_intervals,
    score_curve_svg,
    write_html_report,
)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _style(attrs: dict) -> dict[str, str]:
    """An SVG element's style="k: v; ..." (matplotlib writes colours there) as a dict."""
    items = (kv.split(":", 1) for kv in attrs.get("style", "").split(";") if ":" in kv)
    return {k.strip(): v.strip() for k, v in items}


def _paths(svg: str) -> list[tuple[np.ndarray, dict[str, str]]]:
    """Every <path> of an SVG: its points ((k, 2) array, path commands dropped) and its style."""
    p = _Tags()
    p.feed(svg)
    out = []
    for tag, attrs in p.tags:
        if tag == "path":
            nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", attrs.get("d", ""))]
            out.append((np.asarray(nums, np.float64).reshape(-1, 2), _style(attrs)))
    return out


def _filled(svg: str, colour: str) -> list[np.ndarray]:
    return [pts for pts, st in _paths(svg) if st.get("fill") == colour]


def _stroked(svg: str, colour: str) -> list[np.ndarray]:
    return [pts for pts, st in _paths(svg) if st.get("stroke") == colour and st.get("fill") == "none"]


def _plot_box(svg: str) -> tuple[float, float, float, float]:
    """(x0, x1, y_top, y_bottom) of the plot area: the smaller of the two white rectangles
    (figure and axes backgrounds; the flat one of a secondary time axis left out)."""
    boxes = [(p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()) for p in _filled(svg, "#ffffff")]
    boxes = [b for b in boxes if b[3] - b[2] > 1.0]
    assert len(boxes) == 2, boxes
    return min(boxes, key=lambda b: b[1] - b[0])


def _to_frame(x: np.ndarray | float, svg: str, n: int) -> np.ndarray | float:
    """An SVG x back to a frame index (the x axis spans frames -0.5 .. n - 0.5)."""
    x0, x1, _, _ = _plot_box(svg)
    return -0.5 + (np.asarray(x) - x0) / (x1 - x0) * n


def _report(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.normal(0, 0.3, 300)
    s[120:160] += 3.0
    y = np.zeros(300, np.uint8)
    y[118:165] = 1
    y[290:] = 1
    crop = np.zeros((48, 64, 3), np.uint8)
    crop[:, :32] = (255, 0, 0)
    events = [
        {"type": "event_end", "event": 1, "clip": "Test001", "start_frame": 121, "end_frame": 158,
         "peak_score": 3.91, "peak_frame": 140, "boxes": [{"box": [10, 20, 42, 60], "score": 3.91}],
         "explanation": {"z_s_f": 1.2, "z_s_p": 3.3, "cue": "appearance", "why": "looks odd"}},
        {"type": "event_end", "event": 2, "clip": "cam <2>", "start_frame": 5, "end_frame": 9, "peak_score": 2.5},
    ]
    path = write_html_report(
        tmp_path / "report.html",
        title="Report <script>alert(1)</script> & co",
        curves={"Test001": (s, y), "cam <2>": (-s[:100], None)},
        threshold=1.625,
        threshold_low=1.25,
        events=events,
        thumbnails=[(1, "event 1: crop & error map", cv2.imencode(".png", crop[:, :, ::-1])[1].tobytes())],
        settings={"name": "synthetic", "model": {"widths": [8, 16, 32, 64], "flow_scale": 4.0}},
        timings={"scoring (s)": 1.25, "frames/s": 456.5},
        fps=10.0,
        rate_text="10 fps (from --fps)",
    )
    return path, events, y


def test_html_is_self_contained_escaped_and_complete(tmp_path):
    path, events, y = _report(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # written atomically, no temporary left
    page = path.read_text(encoding="utf-8")
    # no external resource of any kind: every src is a data URI, no URL anywhere
    assert "http://" not in page and "https://" not in page
    p = _Tags()
    p.feed(page)
    srcs = [a["src"] for t, a in p.tags if "src" in a]
    hrefs = [a["href"] for t, a in p.tags if "href" in a]
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    assert not any(re.match(r"^\s*(https?:)?//", v) for v in srcs + hrefs)
    assert not [t for t, a in p.tags if t in ("script", "link", "iframe")]
    # text is escaped: the title's <script> is text, not a tag
    assert "<script>" not in page and "&lt;script&gt;" in page
    # one inline SVG per curve, in order, without XML prolog, namespace URL or metadata
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 2
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "<metadata" not in page
    for svg in svgs:
        assert len(_stroked(svg, CURVE_COLOUR)) == 1  # the score curve
        dashed = sorted((st["stroke"], st["stroke-dasharray"]) for _, st in _paths(svg) if "stroke-dasharray" in st)
        assert [c for c, _ in dashed] == ["#000000", END_COLOUR]  # the threshold, the end threshold
    text = "".join(p.text)
    assert "threshold 1.625" in text and "end 1.25" in text and "end threshold 1.25" in text
    # one table row per event, in order, each with its id, start and end as frame and time, the cue in words
    rows = [a for t, a in p.tags if t == "tr" and a.get("class") == "event-row"]
    assert [r["id"] for r in rows] == ["event-1", "event-2"]
    assert "frame 121 · 12.10 s" in text and "frame 158 · 15.80 s" in text and "38 frames · 3.80 s" in text
    assert "looks odd" in text and "cam <2>" in text and "3.91 at frame 140 · 14.00 s" in text
    # axis labels: frame (0-based) below, time on top (fps given), the score's name and unit
    assert len(re.findall(r">frame \(0-based\)</text>", page)) == 2
    assert len(re.findall(r">time \(s\)</text>", page)) == 2
    assert len(re.findall(r">anomaly score \(z\)</text>", page)) == 2
    assert "frames are numbered from 0" in text and "10 fps (from --fps)" in text
    # an event's spans and number link to its row; its number in the table links to its picture and back
    assert page.count('xlink:href="#event-1"') == 3 and page.count('xlink:href="#event-2"') == 3
    assert ("a", {"href": "#thumb-1"}) in p.tags and ("a", {"href": "#event-1"}) in p.tags
    assert ("figure", {"id": "thumb-1"}) in p.tags and ("a", {"href": "#thumb-2"}) not in p.tags
    # settings folded away, the legend names ground truth (the first curve has labels)
    assert re.search(r"<details><summary>Settings \(3\)</summary>\s*<table>.*model\.widths.*</table>\s*</details>", page)
    assert "ground truth" in text
    # event spans: each event on its own curve (a light span and a band along the top), over its frames
    for svg, e, n in ((svgs[0], events[0], 300), (svgs[1], events[1], 100)):
        spans = _filled(svg, EVENT_COLOUR)
        assert len(spans) == 2
        for pts in spans:
            lo, hi = _to_frame(pts[:, 0].min(), svg, n), _to_frame(pts[:, 0].max(), svg, n)
            assert lo == pytest.approx(e["start_frame"] - 0.5, abs=0.05)
            assert hi == pytest.approx(e["end_frame"] + 0.5, abs=0.05)
    # ground truth: one shaded span per labelled run, only on the labelled curve, over its frames
    gt = _filled(svgs[0], GT_COLOUR)
    runs = labels_to_intervals(y)
    assert len(gt) == len(runs) == 2 and _filled(svgs[1], GT_COLOUR) == []
    got = sorted((_to_frame(g[:, 0].min(), svgs[0], 300), _to_frame(g[:, 0].max(), svgs[0], 300)) for g in gt)
    for (lo, hi), (a, b) in zip(got, runs):
        assert lo == pytest.approx(a - 0.5, abs=0.05) and hi == pytest.approx(b - 0.5, abs=0.05)
    # settings flattened, timings present
    assert "model.widths" in text and "frames/s" in text and "456.5" in text
    assert text.count("event 1: crop & error map") == 1


def test_ground_truth_only_where_labels_exist(tmp_path):
    path = write_html_report(tmp_path / "r.html", title="cam", curves={"cam": (np.zeros(20), None)}, threshold=None,
                             events=[], thumbnails=[], settings={}, timings={})
    page = path.read_text()
    assert "ground truth" not in page and "threshold (" not in page and "no events" in page
    # stopped before its first frame: a page that says so
    page = write_html_report(tmp_path / "e.html", title="cam", curves={}, threshold=2.0, events=[], thumbnails=[],
                             settings={}, timings={}).read_text()
    assert "no frames scored" in page and "<svg" not in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def _chromium_run(exe: str, tmp_path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *extra, url]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)


def test_html_renders_in_headless_chromium(tmp_path):
    """The page as Chromium builds and draws it: the DOM it parsed holds the event rows with their
    times, both thresholds and the linked thumbnail; the screenshot shows the curve, the ground
    truth and the thumbnail's pixels."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    from PIL import Image

    path, events, _ = _report(tmp_path)
    dom = _chromium_run(exe, tmp_path, path.resolve().as_uri(), "--dump-dom")
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    p = _Tags()
    p.feed(dom.stdout)
    rows = [a["id"] for t, a in p.tags if t == "tr" and a.get("class") == "event-row"]
    assert rows == [f"event-{e['event']}" for e in events]
    text = "".join(p.text)
    assert "frame 121 · 12.10 s" in text and "frame 158 · 15.80 s" in text  # start and end: frame and time
    assert "threshold 1.625" in text and "end threshold 1.25" in text
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    assert ("figure", {"id": "thumb-1"}) in p.tags and ("a", {"href": "#thumb-1"}) in p.tags

    shot = tmp_path / "shot.png"
    proc = _chromium_run(exe, tmp_path, path.resolve().as_uri(), f"--screenshot={shot}", "--window-size=1200,2000")
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert img.shape == (2000, 1200, 3)
    assert img.std() > 20  # not blank
    want = np.array([int(CURVE_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    curve_px = (np.abs(img - want).sum(axis=2) <= 30).sum()
    assert curve_px > 300, curve_px  # the score curve is drawn
    # ground-truth shading (red at 22% on white) is visible
    r, g, b = img[:, :, 0], img[:, :, 1], img[:, :, 2]
    pink = (r > 230) & (g > 180) & (g < 225) & (np.abs(g - b) < 12)
    assert pink.sum() > 2000, pink.sum()
    # the thumbnail (48x64, its left half pure red) was decoded and drawn: 32 x 48 red pixels
    red = (r > 240) & (g < 15) & (b < 15)
    assert red.sum() >= 0.9 * 32 * 48, red.sum()


def test_long_curve_is_decimated_keeping_extremes():
    s = np.sin(np.arange(20000) / 40.0)
    s[12345] = 9.0  # a one-frame spike must survive the decimation
    svg = score_curve_svg(s, None, threshold=0.5, max_points=2000)
    (pts,) = _stroked(svg, CURVE_COLOUR)
    assert 200 < len(pts) <= 2000  # (matplotlib's path simplification may drop more)
    top = int(np.argmin(pts[:, 1]))  # highest score = smallest SVG y
    assert _to_frame(pts[top, 0], svg, 20000) == pytest.approx(12345, abs=1.0)
    x0, x1, y_top, y_bottom = _plot_box(svg)
    # y axis: scores -1 .. 9 padded by 5 %: the spike lies 5 % below the top
    assert pts[top, 1] == pytest.approx(y_top + (y_bottom - y_top) * 0.05 / 1.1, abs=0.05)
    assert pts[:, 0].min() >= x0 and pts[:, 0].max() <= x1


def test_score_curve_svg_is_deterministic_and_complete():
    s = np.linspace(0.0, 1.0, 50)
    s[20] = np.nan  # a gap: the line breaks there
    s[22] = np.inf
    y = np.zeros(50, np.uint8)
    y[30:40] = 1
    svg = score_curve_svg(s, y, threshold=0.25, events=[(31, 35)])
    assert svg == score_curve_svg(s, y, threshold=0.25, events=[(31, 35)])  # same ids, no date
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "http" not in svg and "<metadata" not in svg
    p = _Tags()
    p.feed(svg)
    text = "".join(p.text)
    assert "frame" in text and "score" in text and "threshold 0.25" in text
    # the curve breaks at the non-finite scores: frames 0-19, frame 21 alone, frames 23-49
    (d,) = [a["d"] for tag, a in p.tags if tag == "path" and _style(a).get("stroke") == CURVE_COLOUR
            and _style(a).get("fill") == "none"]
    pieces = [np.asarray(re.findall(r"-?\d+(?:\.\d+)?", seg), float).reshape(-1, 2) for seg in d.split("M")[1:]]
    firsts_lasts = [(round(float(_to_frame(q[0, 0], svg, 50))), round(float(_to_frame(q[-1, 0], svg, 50))))
                    for q in pieces]
    assert firsts_lasts == [(0, 19), (21, 21), (23, 49)]
    # frame 21, alone between two gaps, draws no line: it is marked with a dot in the curve colour
    dots = [a for tag, a in p.tags if tag == "use" and _style(a).get("fill") == CURVE_COLOUR]
    assert len(dots) == 1 and round(float(_to_frame(float(dots[0]["x"]), svg, 50))) == 21
    assert len(_filled(svg, GT_COLOUR)) == 1 and len(_filled(svg, EVENT_COLOUR)) == 2
    assert len(_filled(score_curve_svg(s, None), GT_COLOUR)) == 0
    with pytest.raises(ValueError, match="50 scores but 3 labels"):
        score_curve_svg(s, [0, 1, 0])
    with pytest.raises(ValueError, match="no scores"):
        score_curve_svg([])
