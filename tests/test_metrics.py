"""Metrics equal scikit-learn where they overlap; macro/EER/pixel cases by hand; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from amsrc.errors import AmsrcError
from amsrc.eval.metrics import (
    MetricInputError,
    average_precision,
    eer,
    evaluate_frames,
    macro_auroc,
    micro_auroc,
    pixel_auroc,
    pixel_auroc_binned,
    roc_auc,
    roc_curve,
)


def _random_case(rng, n, decimals=None, p=0.3):
    y = (rng.random(n) < p).astype(np.uint8)
    s = rng.normal(size=n) + 1.2 * y
    if decimals is not None:
        s = np.round(s, decimals)  # many ties, also between classes
    return s, y


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_roc_auc_and_ap_equal_sklearn(decimals):
    rng = np.random.default_rng(decimals or 7)
    for n in (2, 3, 10, 257, 5000):
        for _ in range(5):
            s, y = _random_case(rng, n, decimals)
            if y.min() == y.max():
                y[0] = 1 - y[0]
            assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ties_count_one_half():
    # one positive and one negative with the same score: AUROC exactly 0.5
    assert roc_auc([1.0, 1.0], [0, 1]) == 0.5
    # pos {3, 2}, neg {2, 1}: pairs (3>2, 3>1, 2=2 -> .5, 2>1) = 3.5 / 4
    assert roc_auc([3, 2, 2, 1], [1, 1, 0, 0]) == 0.875
    assert roc_auc([3, 2, 2, 1], [1, 1, 0, 0]) == roc_auc_score([1, 1, 0, 0], [3, 2, 2, 1])


def test_never_flips():
    s = np.arange(10.0)
    y = (s < 5).astype(int)  # anomalies have LOW scores
    assert roc_auc(s, y) == 0.0
    assert eer(s, y) == 1.0


def test_roc_curve_same_polyline_as_sklearn():
    rng = np.random.default_rng(3)
    s, y = _random_case(rng, 400, decimals=1)
    fpr, tpr, thr = roc_curve(s, y)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-15)
    assert thr[0] == np.inf and np.all(np.diff(thr) < 0)


def test_micro_is_concatenation():
    rng = np.random.default_rng(1)
    clips = [_random_case(rng, n, decimals=1) for n in (50, 80, 13)]
    s = [c[0] for c in clips]
    y = [c[1] for c in clips]
    ref = roc_auc_score(np.concatenate(y), np.concatenate(s))
    assert micro_auroc(s, y) == pytest.approx(ref, abs=1e-12)
    # dicts name -> array give the same
    assert micro_auroc(dict(zip("abc", s)), dict(zip("abc", y))) == micro_auroc(s, y)


def test_macro_skips_one_class_clips_exact():
    s = [
        np.array([0.1, 0.9, 0.2, 0.8]),  # AUC 1.0
        np.array([0.5, 0.6, 0.7]),  # all normal: skipped
        np.array([0.9, 0.1, 0.5, 0.5]),  # pos {0.1, 0.5}, neg {0.9, 0.5}: (0 + 0 + 0 + .5)/4 = 0.125
        np.array([1.0, 2.0]),  # all anomalous: skipped
    ]
    y = [np.array([0, 1, 0, 1]), np.zeros(3, int), np.array([0, 1, 1, 0]), np.ones(2, int)]
    r = macro_auroc(s, y)
    assert r.value == pytest.approx((1.0 + 0.125) / 2, abs=1e-15)
    assert (r.n_used, r.n_skipped) == (2, 2)
    assert r.per_clip == (1.0, None, 0.125, None)
    assert roc_auc_score(y[2], s[2]) == 0.125
    with pytest.raises(MetricInputError, match="none of the 2 clips"):
        macro_auroc([s[1], s[3]], [y[1], y[3]])


def test_eer_hand_built():
    # perfectly separable -> 0
    assert eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): the point (.5,.5) has fpr = fnr = .5
    assert eer([4, 3, 2, 1], [1, 0, 1, 0]) == 0.5
    # pos {10, 5}, neg {5, 5}: ROC (0,0) (0,.5) (1,1); on the last segment fpr = 1 - tpr at fpr = 1/3
    assert eer([10, 5, 5, 5], [1, 1, 0, 0]) == pytest.approx(1 / 3, abs=1e-15)


def test_eer_matches_interpolated_sklearn_curve():
    rng = np.random.default_rng(5)
    s, y = _random_case(rng, 3000, decimals=2)
    fpr, tpr, _ = sk_roc_curve(y, s)
    fnr = 1 - tpr
    # dense linear interpolation along the polyline, take where |fpr - fnr| is smallest
    t = np.linspace(0, 1, 2001)[:, None]
    fi = (fpr[:-1] + t * np.diff(fpr)).ravel()
    ni = (fnr[:-1] + t * np.diff(fnr)).ravel()
    ref = fi[np.argmin(np.abs(fi - ni))]
    assert eer(s, y) == pytest.approx(ref, abs=1e-3)
    assert 0.0 < eer(s, y) < 0.5


def test_evaluate_frames_dict():
    rng = np.random.default_rng(9)
    clips = [_random_case(rng, n, decimals=1) for n in (60, 70)]
    s = [c[0] for c in clips]
    y = [c[1] for c in clips]
    out = evaluate_frames(s, y)
    ys, ss = np.concatenate(y), np.concatenate(s)
    assert out["micro"] == pytest.approx(roc_auc_score(ys, ss), abs=1e-12)
    assert out["ap"] == pytest.approx(average_precision_score(ys, ss), abs=1e-12)
    assert out["macro"] == pytest.approx(np.mean([roc_auc_score(b, a) for a, b in clips]), abs=1e-12)
    assert out["eer"] == eer(ss, ys)
    assert (out["macro_n_used"], out["macro_n_skipped"]) == (2, 0)
    assert (out["n_frames"], out["n_anomalous"]) == (130, int(ys.sum()))


def test_pixel_auroc_exact_equals_sklearn():
    rng = np.random.default_rng(2)
    maps, masks = [], []
    for _ in range(6):
        m = np.zeros((12, 16), np.uint8)
        m[3:7, 4:9] = 255  # UCSD-style 0/255 masks
        maps.append(np.round(rng.random((12, 16)) + 0.5 * (m > 0), 1).astype(np.float32))
        masks.append(m)
    masks[2][:] = 0  # a frame without anomaly still contributes negatives
    ref = roc_auc_score(np.concatenate([m.ravel() > 0 for m in masks]), np.concatenate([s.ravel() for s in maps]))
    assert pixel_auroc(maps, masks) == pytest.approx(ref, abs=1e-12)
    # a (T, H, W) stack per clip gives the same
    assert pixel_auroc([np.stack(maps[:3]), np.stack(maps[3:])], [np.stack(masks[:3]), np.stack(masks[3:])]) == \
        pytest.approx(ref, abs=1e-12)


def test_pixel_auroc_binned_bounded_and_exact_on_quantised():
    rng = np.random.default_rng(4)
    masks = [rng.random((40, 40)) < 0.2 for _ in range(5)]
    maps = [rng.normal(size=(40, 40)) + m for m in masks]
    ref = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([s.ravel() for s in maps]))
    auc, bound = pixel_auroc_binned(maps, masks, bins=256)
    assert abs(auc - ref) <= bound + 1e-12
    assert bound < 0.01
    # forcing the histogram path through pixel_auroc (max_exact=0) with many bins: very close
    assert pixel_auroc(maps, masks, max_exact=0) == pytest.approx(ref, abs=1e-4)
    # 8-bit scores: one distinct value per bin -> exact
    maps8 = [rng.integers(0, 256, (40, 40)).astype(np.uint8) for _ in masks]
    ref8 = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([s.ravel() for s in maps8]))
    auc8, _ = pixel_auroc_binned(maps8, masks, bins=256)
    assert auc8 == pytest.approx(ref8, abs=1e-12)


def test_errors_name_the_clip():
    good_s, good_y = np.array([0.1, 0.9]), np.array([0, 1])
    with pytest.raises(MetricInputError, match=r"clip 1: 3 scores but 2 labels"):
        micro_auroc([good_s, np.zeros(3)], [good_y, good_y])
    with pytest.raises(MetricInputError, match=r"clip 1: 1 non-finite score.*index 1"):
        micro_auroc([good_s, np.array([0.2, np.nan])], [good_y, good_y])
    with pytest.raises(MetricInputError, match=r"clip 0: labels must be 0 \(normal\) or 1.*found 2"):
        macro_auroc([good_s], [np.array([0, 2])])
    with pytest.raises(MetricInputError, match=r"all 4 samples are normal"):
        micro_auroc([good_s, good_s], [np.zeros(2), np.zeros(2)])
    with pytest.raises(MetricInputError, match=r"clip 'b'"):
        micro_auroc({"a": good_s, "b": good_s[:1]}, {"a": good_y, "b": good_y})
    with pytest.raises(MetricInputError, match="2 clips of scores but 1 clips of labels"):
        micro_auroc([good_s, good_s], [good_y])
    with pytest.raises(MetricInputError, match="wrap a single clip"):
        micro_auroc(good_s, good_y)
    with pytest.raises(MetricInputError, match="all 3 samples are anomalous"):
        roc_auc([1, 2, 3], [1, 1, 1])
    with pytest.raises(MetricInputError, match="non-finite"):
        eer([1, np.inf], [0, 1])
    with pytest.raises(MetricInputError, match="item 1: score map shape"):
        pixel_auroc([np.zeros((2, 2)), np.zeros((2, 3))], [np.zeros((2, 2)), np.zeros((3, 2))])
    with pytest.raises(MetricInputError, match="all pixels: all 4 samples are normal"):
        pixel_auroc([np.zeros((2, 2))], [np.zeros((2, 2))])
    # a metric error is both a ValueError and an AmsrcError (the CLI prints it as "error: ...")
    assert issubclass(MetricInputError, ValueError) and issubclass(MetricInputError, AmsrcError)


def test_metrics_module_imports_numpy_only():
    import subprocess
    import sys

    code = "import sys, amsrc.eval.metrics; print(any(m in sys.modules for m in ('sklearn', 'scipy', 'torch', 'cv2')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
