"""Non-learned scorers, reported beside the network in every results table.

They read the same cube store and go through the same frame rule and smoothing as the network
(:func:`amsrc.scoring.frame_scores`, :func:`amsrc.scoring.smooth`); only the object score differs:

- ``velocity``: the mean L1 flow magnitude ``|dx| + |dy|`` (image pixels per frame) of the cube's
  last flow (t-1 -> t) over its S x S pixels: how fast the object moves on screen.
- ``velocity-gmm``: the same feature scored by its negative log-likelihood under a Gaussian
  mixture of :data:`GMM_COMPONENTS` components (fixed, not tuned) fitted on the training objects
  (scikit-learn's ``GaussianMixture``), as AI-VAD scores its velocity feature: an object moving
  unusually SLOWLY for the scene also scores high.
- ``copy-last``: the prediction error of a predictor that learned nothing, frame t-1 copied into
  frame t inside the box: ``sum(((I_t-1 - I_t) / 255)^2)`` over C x S x S, the units of S_p.

Each is z-normalised with the mean and std of its object scores over the training cubes (so the
scores read in standard deviations of normal objects, like the network's); a frame with no
object scores as the lowest-scoring training object. ``fit`` takes about a second on Ped2.

A scorer is a registered function (``@register_baseline``), like the network variants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from amsrc.config import ScoreConfig
from amsrc.errors import ConfigError
from amsrc.prepare.features import CHUNK, mean_l1_speeds
from amsrc.scoring import clip_scores, zscore

FeatureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (appearance, flow) -> (N,) or (N, D) float


@dataclass(frozen=True)
class Baseline:
    name: str
    feature: FeatureFn  # per-cube feature
    density: bool  # True: score = NLL of a Gaussian mixture over the feature; False: the (N,) feature is the score
    doc: str  # one line for tables and --help


_BASELINES: dict[str, Baseline] = {}
GMM_COMPONENTS = 8  # components of the velocity-gmm mixture


def register_baseline(name: str, doc: str, density: bool = False):
    """Decorator: register a feature function ``(appearance, flow) -> (N,) or (N, D)`` as a scorer."""
    def deco(fn: FeatureFn) -> FeatureFn:
        if name in _BASELINES:  # pragma: no cover - a programming error
            raise ValueError(f"baseline {name!r} registered twice")
        _BASELINES[name] = Baseline(name, fn, density, doc)
        return fn
    return deco


def baseline_names() -> list[str]:
    return list(_BASELINES)


def get_baseline(name: str) -> Baseline:
    try:
        return _BASELINES[name]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(_BASELINES)}") from None


@register_baseline("velocity", "mean |dx|+|dy| of the last flow in the box (pixels/frame), no learning")
def velocity_feature(appearance: np.ndarray, flow: np.ndarray) -> np.ndarray:  # noqa: ARG001
    """(N, 4, S, S, 2) flow -> (N,) float32 mean L1 magnitude of the last flow (:func:`mean_l1_speeds`)."""
    return mean_l1_speeds(flow)


register_baseline("velocity-gmm", "the velocity feature scored by the negative log-likelihood of a Gaussian "
                  "mixture fitted on the training objects (AI-VAD's velocity density)", density=True)(velocity_feature)


@register_baseline("copy-last", "squared error of copying frame t-1 into frame t inside the box, no learning")
def copy_last_error(appearance: np.ndarray, flow: np.ndarray) -> np.ndarray:  # noqa: ARG001
    """(N, 5, S, S, C) uint8 -> (N,) float32 sum over C x S x S of ((I_t-1 - I_t) / 255)^2."""
    a = np.asarray(appearance)
    if len(a) == 0:
        return np.zeros(0, np.float32)
    d = (a[:, 4].astype(np.float32) - a[:, 3].astype(np.float32)) / 255.0
    return (d * d).reshape(len(a), -1).sum(1).astype(np.float32)


def _features(fn: FeatureFn, appearance, flow) -> np.ndarray:
    n = len(flow)
    parts = [fn(appearance[i:i + CHUNK], flow[i:i + CHUNK]) for i in range(0, n, CHUNK)]
    return np.concatenate(parts) if parts else fn(appearance[:0], flow[:0])


class BaselineScorer:
    """A non-learned scorer with the estimator contract (``fit`` returns self, learned parts end in _).

    name: a registered baseline (:func:`baseline_names`).
    score: smoothing settings (:class:`~amsrc.config.ScoreConfig`); weights are not used.
    seed: random state of the Gaussian mixture (``velocity-gmm``).
    """

    def __init__(self, name: str, score: ScoreConfig | None = None, seed: int = 0):
        self.name = name
        self.score = score
        self.seed = seed

    # ------------------------------------------------------------ fit
    def fit_features(self, features: np.ndarray) -> BaselineScorer:
        """Fit on the features of the training cubes ((N,) or (N, D), from :meth:`features`)."""
        b = get_baseline(self.name)
        f = np.asarray(features, dtype=np.float64)
        if f.shape[0] < 2:
            raise ConfigError(f"baseline {self.name}: needs at least 2 training cubes, got {f.shape[0]}")
        self.gmm_ = None
        if b.density:
            from sklearn.mixture import GaussianMixture

            k = min(GMM_COMPONENTS, f.shape[0])
            self.gmm_ = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-4,
                                        random_state=self.seed).fit(f.reshape(len(f), -1))
        raw = self._raw(f)
        self.mean_, self.std_ = float(raw.mean()), float(raw.std())
        self.empty_score_ = float(self._z(raw).min())
        self.n_train_ = int(f.shape[0])
        return self

    def fit(self, store, split: str | None = None) -> BaselineScorer:
        """Fit on the training cubes of a :class:`~amsrc.prepare.store.CubeStore` (its "training"
        split, else "all")."""
        split = split or store.training_split()
        feats = [self.features(c.appearance, c.flow)
                 for c in (store.load(split, n, verify=False) for n in store.clips(split)) if c.n_cubes]
        if sum(len(f) for f in feats) < 2:
            raise ConfigError(f"{store.root}: fewer than 2 training cubes in split {split!r} for baseline {self.name}")
        return self.fit_features(np.concatenate(feats))

    # ------------------------------------------------------------ score
    def features(self, appearance, flow) -> np.ndarray:
        return _features(get_baseline(self.name).feature, appearance, flow)

    def _raw(self, f: np.ndarray) -> np.ndarray:
        if self.gmm_ is not None:
            return -self.gmm_.score_samples(np.asarray(f, np.float64).reshape(len(f), -1))
        return np.asarray(f, np.float64).reshape(len(f))

    def _z(self, raw: np.ndarray) -> np.ndarray:
        return zscore(raw, self.mean_, self.std_)

    def score_cubes(self, appearance, flow) -> np.ndarray:
        """(N,) float64 object scores in training standard deviations (higher = more anomalous)."""
        if not hasattr(self, "mean_"):
            raise ConfigError(f"baseline {self.name} is not fitted: call fit(store) first")
        f = self.features(appearance, flow)
        return self._z(self._raw(f)) if len(f) else np.zeros(0, np.float64)

    def score_clip(self, clip):
        """:class:`~amsrc.scoring.ClipScores` of one stored clip (s_f and s_p are NaN: not computed)."""
        obj = self.score_cubes(clip.appearance, clip.flow)
        nan = np.full(obj.size, np.nan, np.float32)
        return clip_scores(clip, obj, nan, nan, self.empty_score_, self.score or ScoreConfig())

    def score_store(self, store, split: str = "testing") -> list:
        """Scores of every clip of a split (sizes checked when the store was opened; no CRC pass, which
        the network's scoring of the same store already makes)."""
        return [self.score_clip(store.load(split, name, verify=False)) for name in store.clips(split)]
