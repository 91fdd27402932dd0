"""Plots: intervals exact, shading drawn where the labels say, PNGs decode and are not blank."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from amsrc.eval.plots import (
    error_map,
    error_maps_figure,
    labels_to_intervals,
    plot_error_maps,
    plot_score_curves,
    score_curves_figure,
)


def test_labels_to_intervals_exact():
    assert labels_to_intervals([0, 1, 1, 0, 1]) == [(1, 3), (4, 5)]
    assert labels_to_intervals([1, 1, 0, 0]) == [(0, 2)]
    assert labels_to_intervals(np.zeros(7, np.uint8)) == []
    assert labels_to_intervals(np.ones(3, bool)) == [(0, 3)]
    assert labels_to_intervals([]) == []
    y = np.zeros(180, np.uint8)
    y[60:120] = 1
    y[150:152] = 1
    y[179] = 1
    assert labels_to_intervals(y) == [(60, 120), (150, 152), (179, 180)]


def _gt_spans(ax) -> list[tuple[float, float]]:
    return sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if p.get_gid() == "gt")


def test_score_curve_shading_follows_labels():
    y_a = np.zeros(100, np.uint8)
    y_a[20:45] = 1
    y_a[90:] = 1
    scores = {"Test001": np.linspace(0, 1, 100), "Test002": np.sin(np.arange(60) / 5.0), "Test003": np.ones(30)}
    labels = {"Test001": y_a, "Test002": np.zeros(60, np.uint8)}  # Test003 without labels
    fig = score_curves_figure(scores, labels, threshold=0.5, ncols=2)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["Test001", "Test002", "Test003"]
    assert _gt_spans(axes[0]) == [(19.5, 44.5), (89.5, 99.5)]
    assert _gt_spans(axes[1]) == []
    assert _gt_spans(axes[2]) == []
    line = axes[0].lines[0]
    np.testing.assert_array_equal(line.get_ydata(), scores["Test001"])
    assert any(ln.get_linestyle() == "--" and ln.get_ydata()[0] == 0.5 for ln in axes[0].lines)


def test_plot_score_curves_png(tmp_path):
    rng = np.random.default_rng(0)
    scores, labels = {}, {}
    for i in range(5):
        n = 120 + 10 * i
        y = np.zeros(n, np.uint8)
        y[n // 2 :] = 1
        scores[f"clip{i:02d}"] = rng.normal(size=n) + 2 * y
        labels[f"clip{i:02d}"] = y
    out = plot_score_curves(scores, labels, tmp_path / "sub" / "curves.png", threshold=1.0)
    assert out == tmp_path / "sub" / "curves.png"
    img = cv2.imread(str(out))
    assert img is not None
    # 4 columns x 2 rows at 100 dpi: 3.2 in per column, 2 in per row + 0.3
    assert img.shape == (430, 1280, 3)
    assert img.std() > 20
    assert sorted(p.name for p in out.parent.iterdir()) == ["curves.png"]  # no temp file left
    # shaded pixels present: the red shading (BGR) is where ground truth is
    b, g, r = img[..., 0].astype(int), img[..., 1].astype(int), img[..., 2].astype(int)
    assert np.count_nonzero((r - b > 30) & (r - g > 30)) > 1000


def test_score_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_score_curves({}, None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="'a' has 3 scores but 2 labels"):
        plot_score_curves({"a": np.zeros(3)}, {"a": np.zeros(2)}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_error_map_values():
    t = np.zeros((4, 4, 3), np.uint8)
    t[0, 0] = 255
    p = np.full((4, 4, 3), 0.5, np.float32)
    e = error_map(t, p)
    assert e.shape == (4, 4) and e.dtype == np.float32
    assert e[0, 0] == pytest.approx(0.75) and e[1, 1] == pytest.approx(0.75)
    t1 = np.zeros((4, 4, 1), np.float32)
    assert error_map(t1, np.ones((4, 4, 1)))[2, 3] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target"):
        error_map(np.zeros((4, 4, 3)), np.zeros((4, 4, 1)))


def test_plot_error_maps_png(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for i, c in enumerate((1, 3, 1)):
        target = rng.integers(0, 256, (32, 32, c)).astype(np.uint8)
        pred = np.clip(target / 255.0 + rng.normal(scale=0.1, size=(32, 32, c)), 0, 1).astype(np.float32)
        items.append((f"clip {i} frame {10 * i}", target, pred, error_map(target, pred)))
    fig = error_maps_figure(items)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["clip 0 frame 0\ntarget", "prediction", "squared error per pixel\n(intensities 0-1; its sum is S_p)"]
    out = plot_error_maps(items, tmp_path / "errors.png")
    img = cv2.imread(str(out))
    assert img is not None
    assert img.shape == (650, 660, 3)  # 6.6 in wide, 2.1 in per row + 0.2, at 100 dpi
    assert img.std() > 20
    with pytest.raises(ValueError, match="item 0"):
        plot_error_maps([("x", np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), np.zeros((4, 4)))], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_no_pyplot_at_import_or_use(tmp_path):
    code = (
        "import sys, numpy as np, amsrc.eval.plots as p, amsrc.report.html as r\n"
        "assert 'matplotlib' not in sys.modules\n"
        f"p.plot_score_curves({{'a': np.arange(5.0)}}, None, {str(tmp_path / 'a.png')!r})\n"
        "assert r.score_curve_svg(np.arange(5.0), None, 2.0).startswith('<svg')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
