"""The self-contained HTML report: its structure (no external resource, escaped text, one row per
event, ground truth where the labels say) and a real render in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from amsrc.report import CURVE_COLOUR, labels_to_intervals, png_bytes, write_html_report


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
        events=events,
        thumbnails=[("event 1: crop & error map", png_bytes(crop))],
        settings={"name": "synthetic", "model": {"widths": [8, 16, 32, 64], "flow_scale": 4.0}},
        timings={"scoring (s)": 1.25, "frames/s": 456.5},
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
    # the threshold: a dashed line per curve and its value in the text
    assert sum(1 for t, a in p.tags if a.get("class") == "threshold") == 2
    assert "threshold 1.625" in "".join(p.text)
    # one table row per event, in order, with the explanation's cue
    rows = [a for t, a in p.tags if t == "tr" and a.get("class") == "event-row"]
    assert len(rows) == len(events)
    text = "".join(p.text)
    assert "cue: appearance" in text and "cam <2>" in text and "3.91" in text
    # event spans: one per event, on its own curve
    assert sum(1 for t, a in p.tags if a.get("class") == "event") == 2
    # ground truth: one shaded rect per labelled run, only on the labelled curve
    gt = [a for t, a in p.tags if a.get("class") == "gt"]
    assert len(gt) == len(labels_to_intervals(y)) == 2
    # settings flattened, timings present
    assert "model.widths" in text and "frames/s" in text and "456.5" in text
    assert text.count("event 1: crop & error map") == 1


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def test_html_renders_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    from PIL import Image

    path, _, _ = _report(tmp_path)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,900", path.resolve().as_uri()]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert img.shape == (900, 1200, 3)
    assert img.std() > 20  # not blank
    want = np.array([int(CURVE_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    curve_px = (np.abs(img - want).sum(axis=2) <= 30).sum()
    assert curve_px > 300, curve_px  # the score curve is drawn
    # ground-truth shading (red at 22% on white) is visible
    pink = (img[:, :, 0] > 230) & (img[:, :, 1] > 180) & (img[:, :, 1] < 225) & (np.abs(img[:, :, 1] - img[:, :, 2]) < 12)
    assert pink.sum() > 2000, pink.sum()


def test_long_curve_is_decimated_keeping_extremes():
    from amsrc.report import score_curve_svg

    s = np.sin(np.arange(20000) / 40.0)
    s[12345] = 9.0  # a one-frame spike must survive the decimation
    svg = score_curve_svg(s, None, threshold=0.5, max_points=2000)
    pts = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(pts) <= 2000
    ys = np.array([float(p.split(",")[1]) for p in pts])
    xs = np.array([float(p.split(",")[0]) for p in pts])
    top = int(np.argmin(ys))  # highest score = smallest SVG y
    # the spike's x: frame 12345 mapped onto the 896-px plot starting at x = 52
    assert xs[top] == pytest.approx(52 + (12345 + 0.5) / 20000 * 896, abs=0.05)


def test_event_thumbnail_crop_box_and_error_map():
    import io

    from PIL import Image

    from amsrc.report import event_thumbnail

    frame = np.full((120, 160, 3), 90, np.uint8)
    err = np.zeros((32, 32), np.float32)
    err[:, 16:] = 1.0
    png = event_thumbnail(frame, (40, 30, 80, 70), err, margin=0.5, height=64)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    # crop 80 x 80 px (box 40 x 40 plus 20 px each side) -> 64 x 64, a 4 px gap, the 64 x 64 error map
    assert img.shape == (64, 64 + 4 + 64, 3)
    assert img[32, 16].tolist() == [255, 0, 0]  # the box's left edge (x = 20 * 0.8 = 16)
    assert img[32, 8].tolist() == [90, 90, 90]  # outside the box: the frame
    assert img[32, 68 + 8].tolist() == [0, 0, 128] and img[32, 68 + 56].tolist() == [128, 0, 0]  # jet low / high
