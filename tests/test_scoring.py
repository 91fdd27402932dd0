"""Scoring: z-normalisation and weighting by hand, max per frame with empty frames, smoothing
equal to scipy, causal variants blind to the future, no leakage across clips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d, median_filter

from amsrc.config import ScoreConfig
from amsrc.errors import ConfigError, DataError
from amsrc.scoring import (
    STD_FLOOR,
    CausalSmoother,
    TrainStats,
    clip_scores,
    combine,
    empty_frame_score,
    frame_scores,
    motion_rarity,
    smooth,
    zscore,
)

STATS = TrainStats(s_f_mean=0.1, s_f_std=0.05, s_p_mean=20.0, s_p_std=4.0)


def cfg(**kw) -> ScoreConfig:
    return dataclasses.replace(ScoreConfig(), **kw)


def test_train_stats_roundtrip_and_validation():
    d = STATS.to_dict()
    assert d == {"s_f_mean": 0.1, "s_f_std": 0.05, "s_p_mean": 20.0, "s_p_std": 4.0}
    assert TrainStats.from_dict(d) == STATS
    with pytest.raises(DataError, match=r"ckpt.pt: train_stats lacks s_p_std"):
        TrainStats.from_dict({k: v for k, v in d.items() if k != "s_p_std"}, source="ckpt.pt")
    with pytest.raises(DataError, match="s_f_std"):
        TrainStats.from_dict({**d, "s_f_std": -1.0})
    with pytest.raises(DataError, match="s_f_mean"):
        TrainStats.from_dict({**d, "s_f_mean": float("nan")})


def test_zscore_and_combine_by_hand():
    np.testing.assert_allclose(zscore([0.2, 0.0], 0.1, 0.05), [2.0, -2.0])
    # a zero std is floored: constant training scores map a constant to 0, not NaN
    np.testing.assert_array_equal(zscore([0.0, 0.0], 0.0, 0.0), [0.0, 0.0])
    assert zscore([1e-6], 0.0, 0.0)[0] == pytest.approx(1e-6 / STD_FLOOR)
    s_f = np.array([0.2, 0.1, 0.0], np.float32)
    s_p = np.array([28.0, 16.0, 20.0], np.float32)
    # z(S_f) = [2, 0, -2], z(S_p) = [2, -1, 0]
    np.testing.assert_allclose(combine(s_f, s_p, STATS, 1.0, 0.0), [2.0, 0.0, -2.0], atol=1e-6)
    np.testing.assert_allclose(combine(s_f, s_p, STATS, 0.2, 0.8), [2.0, -0.8, -0.4], atol=1e-6)
    np.testing.assert_allclose(combine(s_f, s_p, STATS, 1.0, 0.01), [2.02, -0.01, -2.0], atol=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        combine([np.nan], [1.0], STATS, 1.0, 0.0)
    with pytest.raises(ValueError, match="2 S_f values but 1 S_p"):
        combine([0.0, 0.1], [1.0], STATS, 1.0, 0.0)


def test_empty_frame_score_is_perfect_object():
    # S_f = 0, S_p = 0: z = (0 - 0.1)/0.05 = -2 and (0 - 20)/4 = -5
    assert empty_frame_score(STATS, 1.0, 0.0) == pytest.approx(-2.0)
    assert empty_frame_score(STATS, 0.4, 0.6) == pytest.approx(0.4 * -2 + 0.6 * -5)


def test_frame_scores_max_per_frame_with_empty_frames():
    obj = np.array([0.5, 3.0, -1.0, 2.0, 7.0, -4.0])
    # frames: 0 empty, 1 -> [0.5, 3.0, -1.0], 2 empty, 3 empty, 4 -> [2.0], 5 -> [7.0, -4.0], 6 empty
    offsets = np.array([0, 0, 3, 3, 3, 4, 6, 6], np.int64)
    out = frame_scores(obj, offsets, empty_score=-9.0)
    np.testing.assert_array_equal(out, [-9.0, 3.0, -9.0, -9.0, 2.0, 7.0, -9.0])
    assert out.dtype == np.float64
    # an object may score below the empty score: the frame keeps its object's score
    np.testing.assert_array_equal(frame_scores([-4.0], [0, 1], empty_score=-2.0), [-4.0])
    # no objects at all
    np.testing.assert_array_equal(frame_scores(np.zeros(0), np.zeros(4, np.int64), -1.5), [-1.5] * 3)
    # no frames
    assert frame_scores(np.zeros(0), np.zeros(1, np.int64), 0.0).shape == (0,)
    # equals a plain loop on a random layout
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, 200)
    offs = np.r_[0, np.cumsum(counts)]
    sc = rng.normal(size=offs[-1])
    ref = [sc[offs[t]:offs[t + 1]].max() if counts[t] else -5.0 for t in range(200)]
    np.testing.assert_array_equal(frame_scores(sc, offs, -5.0), ref)


def test_frame_scores_top_k_mean():
    obj = np.array([0.5, 3.0, -1.0, 2.0, 7.0, -4.0])
    offsets = np.array([0, 0, 3, 3, 3, 4, 6, 6], np.int64)  # as above
    np.testing.assert_array_equal(frame_scores(obj, offsets, -9.0, topk=2),
                                  [-9.0, 1.75, -9.0, -9.0, 2.0, 1.5, -9.0])  # a frame with fewer: their mean
    np.testing.assert_array_equal(frame_scores(obj, offsets, -9.0, topk=1), frame_scores(obj, offsets, -9.0))
    with pytest.raises(ConfigError, match="frame_topk must be >= 1"):
        frame_scores(obj, offsets, -9.0, topk=0)


def test_frame_scores_bad_offsets():
    with pytest.raises(ValueError, match="end at the number of objects"):
        frame_scores([1.0, 2.0], [0, 1], 0.0)
    with pytest.raises(ValueError, match="never decrease"):
        frame_scores([1.0, 2.0], [0, 2, 1, 2], 0.0)
    with pytest.raises(ValueError, match="integer"):
        frame_scores([1.0], np.array([0.0, 1.0]), 0.0)


def test_offline_smoothing_equals_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=301)
    np.testing.assert_array_equal(smooth(x, cfg(smoothing="none")), x)
    for k in (1, 3, 9, 31):
        np.testing.assert_array_equal(smooth(x, cfg(smoothing="median", median_k=k)),
                                      median_filter(x, size=k, mode="nearest"))
    # shorter than the window: still the "nearest"-extended median
    np.testing.assert_array_equal(smooth(x[:4], cfg(smoothing="median", median_k=9)),
                                  median_filter(x[:4], size=9, mode="nearest"))
    for sigma in (0.7, 3.0, 10.0):
        got = smooth(x, cfg(smoothing="gaussian", gaussian_sigma=sigma))
        np.testing.assert_allclose(got, gaussian_filter1d(x, sigma, mode="nearest"), rtol=0, atol=1e-12)
        # and to an explicit convolution with an edge-padded clip (independent of scipy)
        r = int(4 * sigma + 0.5)
        w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        ref = np.convolve(np.pad(x, r, mode="edge"), w / w.sum(), mode="valid")
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_causal_median_by_hand():
    x = np.array([5.0, 1.0, 3.0, 9.0, 2.0, 8.0])
    # k = 3: medians of [5], [5,1], [5,1,3], [1,3,9], [3,9,2], [9,2,8]
    np.testing.assert_array_equal(smooth(x, cfg(smoothing="median", median_k=3, causal=True)),
                                  [5.0, 3.0, 3.0, 3.0, 3.0, 8.0])


def test_causal_gaussian_by_hand():
    x = np.array([1.0, 3.0, 2.0, 0.0, 4.0])
    sigma = 0.5  # R = int(2.5) = 2; lag weights 1, e^-2, e^-8
    w = np.exp(-0.5 * (np.arange(3) / sigma) ** 2)
    ref = [
        x[0],
        (w[0] * x[1] + w[1] * x[0]) / (w[0] + w[1]),
        (w[0] * x[2] + w[1] * x[1] + w[2] * x[0]) / w.sum(),
        (w[0] * x[3] + w[1] * x[2] + w[2] * x[1]) / w.sum(),
        (w[0] * x[4] + w[1] * x[3] + w[2] * x[2]) / w.sum(),
    ]
    np.testing.assert_allclose(smooth(x, cfg(smoothing="gaussian", gaussian_sigma=sigma, causal=True)),
                               ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("c", [
    cfg(smoothing="median", median_k=9, causal=True),
    cfg(smoothing="gaussian", gaussian_sigma=3.0, causal=True),
])
def test_causal_never_uses_future_and_live_equals_offline(c):
    rng = np.random.default_rng(2)
    x = rng.normal(size=120)
    base = smooth(x, c)
    for t in (0, 5, 40, 119):
        y = x.copy()
        y[t:] += rng.normal(size=120 - t) * 10  # change the present-and-future from frame t
        out = smooth(y, c)
        np.testing.assert_array_equal(out[:t], base[:t])  # the past is untouched
        assert out[t] != base[t]
    live = CausalSmoother(c)
    got = [live.push(v) for v in x]
    np.testing.assert_allclose(got, base, rtol=0, atol=1e-12)
    live.reset()
    np.testing.assert_allclose([live.push(v) for v in x[:10]], base[:10], rtol=0, atol=1e-12)


def test_offline_filters_do_use_the_future():
    # sanity of the test above: the non-causal filters DO change past outputs
    x = np.random.default_rng(4).normal(size=50)
    y = x.copy()
    y[30:] += 100.0
    for c in (cfg(smoothing="gaussian"), cfg(smoothing="median", median_k=9)):
        assert smooth(y, c)[29] != smooth(x, c)[29]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["median", "gaussian"])
def test_per_clip_no_leakage(kind, causal):
    """clip_scores smooths each clip on its own: one clip's scores never move another's."""
    from types import SimpleNamespace

    c = cfg(smoothing=kind, median_k=7, gaussian_sigma=2.0, causal=causal)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=40), rng.normal(size=30)

    def clip(name, x):  # one object per frame: the frame max is the object score
        stored = SimpleNamespace(name=name, offsets=np.arange(x.size + 1), labels=None, object_labels=None)
        return clip_scores(stored, x, x, x, 0.0, c)

    out = [clip("a", a), clip("b", b)]
    np.testing.assert_array_equal(out[0].frame_raw, a)
    np.testing.assert_array_equal(out[0].frame, smooth(a, c))
    np.testing.assert_array_equal(out[1].frame, smooth(b, c))
    # changing clip a does not change clip b's smoothed scores
    assert np.array_equal(clip("b", b).frame, out[1].frame) and not np.array_equal(clip("a", a + 100.0).frame, out[0].frame)
    # whereas smoothing the concatenation would leak across the boundary
    joined = smooth(np.concatenate([a + 100.0, b]), c)
    assert not np.array_equal(joined[40:], out[1].frame)


def test_bad_smoothing_config():
    x = np.zeros(5)
    with pytest.raises(ConfigError, match="odd"):
        smooth(x, cfg(smoothing="median", median_k=4))
    with pytest.raises(ConfigError, match="gaussian_sigma"):
        smooth(x, cfg(smoothing="gaussian", gaussian_sigma=0.0))
    with pytest.raises(ConfigError, match="'none', 'median' or 'gaussian'"):
        smooth(x, cfg(smoothing="mean"))
    with pytest.raises(ValueError, match="non-finite"):
        smooth([0.0, np.nan], cfg(smoothing="none"))


# ---------------------------------------------------------------- S_m, the motion rarity
def test_motion_rarity_equals_sklearn_nearest_neighbours():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    m = rng.normal(size=(70, 16)).astype(np.float32) * 1.5
    for k in (1, 5):
        ref = NearestNeighbors(n_neighbors=k).fit(bank).kneighbors(m)[0].mean(1)
        got = motion_rarity(m, bank, k, chunk=16).numpy()  # several chunks
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # groups: a row never uses the bank rows of its own group
    groups, bank_groups = rng.integers(0, 3, 70), rng.integers(0, 3, 300)
    got = motion_rarity(m, bank, 5, groups, bank_groups).numpy()
    for g in range(3):
        rows = groups == g
        ref = NearestNeighbors(n_neighbors=5).fit(bank[bank_groups != g]).kneighbors(m[rows])[0].mean(1)
        np.testing.assert_allclose(got[rows], ref, rtol=1e-4, atol=1e-5)
    # a training object's own copy in the memory is found at distance 0 unless its group is left out
    assert motion_rarity(bank[:3], bank, 1).numpy() == pytest.approx([0, 0, 0], abs=1e-6)
    # small distances between rows of large norm keep their precision (the product form alone cancels
    # |m|^2 ~ 1.6e5 against |b|^2 and leaves a square root of float32 rounding, ~0.1 here)
    far = (bank + 100).astype(np.float32)
    near = (far[:20] + rng.normal(size=(20, 16)) * 1e-2).astype(np.float32)
    ref = NearestNeighbors(n_neighbors=1).fit(far.astype(np.float64)).kneighbors(near.astype(np.float64))[0].mean(1)
    assert ref.max() < 0.1
    np.testing.assert_allclose(motion_rarity(near, far, 1).numpy(), ref, rtol=1e-4)
    with pytest.raises(ConfigError, match="bank_k"):
        motion_rarity(m, bank[:4], 5)
    with pytest.raises(ValueError, match="share D"):
        motion_rarity(m[:, :8], bank, 5)
    with pytest.raises(ValueError, match="fewer than k"):
        motion_rarity(m, bank, 5, np.zeros(70, int), np.r_[np.zeros(297, int), np.ones(3, int)])


def test_combine_with_motion_rarity():
    st = dataclasses.replace(STATS, s_m_mean=2.0, s_m_std=0.5)
    s_f, s_p, s_m = [0.2, 0.1], [20.0, 28.0], [3.0, 2.0]
    np.testing.assert_allclose(combine(s_f, s_p, st, 0.0, 0.5, s_m, 0.5), [0.5 * 0 + 0.5 * 2, 0.5 * 2 + 0], atol=1e-9)
    np.testing.assert_allclose(combine(s_f, s_p, st, 1.0, 0.0, s_m, 1.0), [2 + 2, 0 + 0], atol=1e-9)
    assert empty_frame_score(st, 0.0, 0.5, 0.5) == pytest.approx(0.5 * -5 + 0.5 * -4)
    # w_m = 0 never needs S_m; w_m != 0 without it is a clear error
    np.testing.assert_allclose(combine(s_f, s_p, STATS, 1.0, 0.0), combine(s_f, s_p, STATS, 1.0, 0.0, None, 0.0))
    with pytest.raises(ConfigError, match="w_m"):
        combine(s_f, s_p, STATS, 0.0, 0.5, s_m, 0.5)
    with pytest.raises(ValueError, match="s_m"):
        combine(s_f, s_p, st, 0.0, 0.5, [np.nan, 1.0], 0.5)


def test_train_stats_with_and_without_s_m():
    st = dataclasses.replace(STATS, s_m_mean=2.0, s_m_std=0.5)
    assert TrainStats.from_dict(st.to_dict()) == st
    assert set(STATS.to_dict()) == set(TrainStats.KEYS)  # old checkpoints' stats round-trip unchanged
    with pytest.raises(DataError, match="both s_m_mean and s_m_std"):
        TrainStats.from_dict({**STATS.to_dict(), "s_m_mean": 1.0}, source="m.pt")
    with pytest.raises(DataError, match="s_m_std"):
        TrainStats.from_dict({**STATS.to_dict(), "s_m_mean": 1.0, "s_m_std": -1.0}, source="m.pt")


def test_counted_objects_leave_border_slivers_out_of_the_frame_max():
    from amsrc.scoring import counted_objects, frame_scores

    boxes = np.array([
        [0, 10, 10, 50],    # left border, 10 px wide: a sliver
        [0, 10, 30, 50],    # left border, 30 px wide: counts
        [90, 20, 100, 60],  # right border (W = 100), 10 px: a sliver
        [40, 0, 60, 8],     # top border, 8 px high: a sliver
        [40, 72, 60, 80],   # bottom border (H = 80), 8 px: a sliver
        [40, 30, 44, 34],   # inside, tiny: counts (the rule is about the border only)
    ])
    assert counted_objects(boxes, (80, 100), 16).tolist() == [False, True, False, False, False, True]
    assert counted_objects(boxes, (80, 100), 0) is None
    with pytest.raises(ConfigError, match="frame size"):
        counted_objects(boxes, None, 16)
    s = np.array([9.0, 1.0, 8.0, 7.0, 6.0, 2.0])
    off = np.array([0, 2, 3, 6, 6])  # frames: {sliver, wide}, {sliver}, {3 objects}, {}
    counted = counted_objects(boxes, (80, 100), 16)
    np.testing.assert_array_equal(frame_scores(s, off, -1.0, counted=counted), [1.0, -1.0, 2.0, -1.0])
    np.testing.assert_array_equal(frame_scores(s, off, -1.0, counted=None), [9.0, 8.0, 7.0, -1.0])
    np.testing.assert_array_equal(frame_scores(s, off, -1.0, topk=2, counted=counted), [1.0, -1.0, 2.0, -1.0])
    with pytest.raises(ValueError, match="counted"):
        frame_scores(s, off, -1.0, counted=counted[:3])
