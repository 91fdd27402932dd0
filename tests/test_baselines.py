"""Non-learned scorers (velocity, velocity-gmm, copy-last) and the evaluation protocols around them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter
from sklearn.metrics import roc_auc_score

from amsrc.config import ScoreConfig
from amsrc.errors import ConfigError
from amsrc.eval.baselines import BaselineScorer, baseline_names, copy_last_error, get_baseline, velocity_feature


def _cubes(n, speeds, rng):
    """n cubes whose last flow is (speed, -speed/2) everywhere and whose frame t = frame t-1 + 10*k grey levels."""
    app = rng.integers(0, 200, (n, 5, 32, 32, 1)).astype(np.uint8)
    flow = np.zeros((n, 4, 32, 32, 2), np.float16)
    for i, v in enumerate(speeds):
        flow[i, -1, ..., 0] = v
        flow[i, -1, ..., 1] = -v / 2
        flow[i, :-1] = 99  # earlier flows are never read
    return app, flow


def test_registry_lists_the_three_scorers_and_refuses_others():
    assert baseline_names() == ["velocity", "velocity-gmm", "copy-last"]
    assert get_baseline("velocity-gmm").density and not get_baseline("velocity").density
    with pytest.raises(ConfigError, match="unknown baseline 'speed'.*velocity"):
        get_baseline("speed")


def test_features_on_known_cubes():
    rng = np.random.default_rng(0)
    app, flow = _cubes(3, [0.0, 2.0, 4.0], rng)
    # mean |dx| + |dy| of the LAST flow only: 0, 2 + 1, 4 + 2
    np.testing.assert_allclose(velocity_feature(app, flow), [0.0, 3.0, 6.0], rtol=1e-3)
    a = np.zeros((2, 5, 32, 32, 1), np.uint8)
    a[0, 3], a[0, 4] = 100, 151  # every pixel differs by 51 = 0.2 of the range
    a[1, 4] = a[1, 3] = 7  # frame t repeats frame t-1
    np.testing.assert_allclose(copy_last_error(a, flow[:2]), [32 * 32 * 0.2 ** 2, 0.0], rtol=1e-5)


def test_scores_are_in_training_standard_deviations_and_empty_frames_score_as_the_most_normal_object():
    rng = np.random.default_rng(1)
    train = rng.uniform(0.5, 1.5, 500)
    b = BaselineScorer("velocity").fit_features(train)
    z = b._z(b._raw(train))
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9
    assert b.empty_score_ == pytest.approx(z.min())
    app, flow = _cubes(2, [0.5, 4.0], rng)  # features 0.75 and 6.0 (exact in float16)
    s = b.score_cubes(app, flow)
    np.testing.assert_allclose(s, (np.array([0.75, 6.0]) - train.mean()) / train.std(), rtol=1e-9)
    with pytest.raises(ConfigError, match="not fitted"):
        BaselineScorer("copy-last").score_cubes(app, flow)


def test_velocity_gmm_flags_unusually_slow_and_fast_objects():
    rng = np.random.default_rng(2)
    b = BaselineScorer("velocity-gmm").fit_features(rng.normal(3.0, 0.3, 2000))
    app, flow = _cubes(3, [0.0, 2.0, 6.0], rng)  # features 0, 3 (typical), 9
    s = b.score_cubes(app, flow)
    assert s[1] < s[0] and s[1] < s[2]  # the typical speed is the most normal, standing and racing are not
    assert b.gmm_.n_components == 8


class _Clip:
    def __init__(self, name, app, flow, offsets, labels):
        self.name, self.appearance, self.flow, self.offsets, self.labels = name, app, flow, np.asarray(offsets), labels
        self.object_labels = None


def test_score_clip_takes_the_frame_max_and_the_empty_rule():
    rng = np.random.default_rng(3)
    app, flow = _cubes(4, [1.0, 2.0, 0.5, 0.2], rng)
    b = BaselineScorer("velocity", ScoreConfig(smoothing="none")).fit_features(rng.uniform(0, 3, 100))
    clip = _Clip("c", app, flow, [0, 0, 2, 2, 4], np.array([0, 1, 0, 1], np.uint8))  # frames: none, 2 objects, none, 2
    cs = b.score_clip(clip)
    obj = b.score_cubes(app, flow)
    np.testing.assert_allclose(cs.frame_raw, [b.empty_score_, obj[:2].max(), b.empty_score_, obj[2:].max()])
    np.testing.assert_array_equal(cs.frame, cs.frame_raw)
    assert np.all(np.isnan(cs.s_f)) and np.all(np.isnan(cs.s_p)) and cs.offsets.tolist() == [0, 0, 2, 2, 4]


def test_paper_protocol_equals_its_definition():
    from amsrc.eval.evaluate import PAPER_DROP, PAPER_MEDIAN_K, paper_protocol

    rng = np.random.default_rng(4)
    raw = {n: rng.normal(size=k) for n, k in (("a", 60), ("b", 45), ("c", 30))}
    labels = {n: (np.arange(v.size) > v.size // 2).astype(np.uint8) for n, v in raw.items()}
    got = paper_protocol(raw, labels)
    s = np.concatenate([median_filter(raw[n][PAPER_DROP:], size=PAPER_MEDIAN_K, mode="nearest") for n in raw])
    y = np.concatenate([labels[n][PAPER_DROP:] for n in raw])
    assert got["micro"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["n_frames"] == sum(v.size for v in raw.values()) - 3 * PAPER_DROP


@pytest.mark.parametrize("name", ["velocity", "velocity-gmm", "copy-last"])
def test_a_clip_without_cubes_scores_every_frame_as_empty(name):
    rng = np.random.default_rng(5)
    b = BaselineScorer(name).fit_features(rng.uniform(0, 3, 200))
    app, flow = np.zeros((0, 5, 32, 32, 1), np.uint8), np.zeros((0, 4, 32, 32, 2), np.float16)
    cs = b.score_clip(_Clip("still", app, flow, [0, 0, 0, 0], np.zeros(3, np.uint8)))
    assert cs.objects.shape == (0,) and cs.frame_raw.tolist() == [b.empty_score_] * 3
