"""The estimator a user holds: ``AMSRC(...).fit(store)``, ``.score_store(store)``, ``.save``/``.load``.

scikit-learn contract: ``__init__`` stores its arguments only; ``fit`` returns ``self``; what is
learned from data ends in ``_`` (``model_``, ``preset_``, ``train_stats_``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amsrc.config import Preset, get_preset
from amsrc.errors import ConfigError


@dataclass
class ClipScores:
    """Scores of one clip, frame by frame and object by object."""

    name: str  # clip name
    frame_raw: np.ndarray  # (n_frames,) float64 frame scores before smoothing (max over objects)
    frame: np.ndarray  # (n_frames,) float64 frame scores after the preset's smoothing
    objects: np.ndarray  # (N,) float64 combined object scores
    s_f: np.ndarray  # (N,) float32 raw 1 - cos(x, y)
    s_p: np.ndarray  # (N,) float32 raw squared prediction error
    labels: np.ndarray | None  # (n_frames,) uint8 frame labels where known
    offsets: np.ndarray | None = None  # (n_frames + 1,) int64: objects of frame t are [offsets[t], offsets[t+1])
    object_labels: np.ndarray | None = None  # (N,) uint8 per-object labels from pixel masks, where the store has them


class AMSRC:
    """AMSRC anomaly detector.

    Parameters
    ----------
    preset: a preset name or a :class:`~amsrc.config.Preset` (all settings of a run).
    variant: overrides ``preset.model.variant`` ("amsrc", "nogate", "baseline").
    epochs: overrides ``preset.train.epochs``.
    device: "cpu" or "cuda".
    progress: show progress bars.
    """

    def __init__(self, preset: str | Preset = "default", variant: str | None = None,
                 epochs: int | None = None, device: str = "cpu", progress: bool = True):
        self.preset = preset
        self.variant = variant
        self.epochs = epochs
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------ settings
    def _resolved_preset(self) -> Preset:
        p = get_preset(self.preset) if isinstance(self.preset, str) else Preset.from_dict(self.preset.to_dict())
        if self.variant is not None:
            p.model.variant = self.variant
        if self.epochs is not None:
            p.train.epochs = int(self.epochs)
        if p.model.variant == "baseline":
            # The appearance-only baseline has no motion stream: it is scored by prediction error only.
            p.score.w_f, p.score.w_p = 0.0, 1.0
        return p

    # ------------------------------------------------------------ fit
    def fit(self, store, out_dir: str | Path, resume: bool = False) -> "AMSRC":
        """Train on the normal cubes of ``store`` (its "training" split, else "all").

        ``out_dir`` receives the per-epoch log and checkpoints; the final model is the last epoch.
        """
        from amsrc.scoring import TrainStats
        from amsrc.train import load_checkpoint, train_model

        preset = self._resolved_preset()
        _check_store_matches(store, preset)
        split = _training_split(store)
        data = []
        for name in store.clips(split):
            c = store.load(split, name)
            if len(c.frames):
                data.append((c.appearance, c.flow))
        if not data:
            raise ConfigError(f"{store.root}: no training cubes in split {split!r}; nothing to learn from")
        ckpt = train_model(data, preset, Path(out_dir), resume=resume, device=self.device, progress=self.progress)
        self.model_, self.preset_, stats = load_checkpoint(ckpt, device=self.device)
        self.train_stats_ = TrainStats.from_dict(stats)
        self.checkpoint_ = Path(ckpt)
        return self

    # ------------------------------------------------------------ score
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigError("this AMSRC is not fitted: call fit(...) or AMSRC.load(path) first")

    def score_cubes(self, appearance, flow, need_pred: bool = True,
                    inputs=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Combined, S_f and S_p scores of cubes: appearance (N,5,S,S,C) uint8, flow (N,4,S,S,2) float16.

        ``need_pred=False`` skips the decoder (allowed only when the preset's w_p is 0, so the combined
        score does not use S_p): the combined score and S_f are the same, S_p is NaN (not computed).
        ``inputs``: the cubes' network inputs made ahead by :meth:`network_inputs` (same scores).
        """
        from amsrc.inference import object_scores
        from amsrc.scoring import combine

        self._check_fitted()
        p = self.preset_
        if not need_pred and p.score.w_p != 0:
            raise ConfigError(f"need_pred=False needs score weight w_p = 0 (the preset has w_p = {p.score.w_p})")
        os_ = object_scores(self.model_, appearance, flow, p.model.flow_scale, device=self.device,
                            need_pred=need_pred, inputs=inputs)
        # with w_p = 0 combine() leaves S_p out; zeros stand in for the NaN of an uncomputed S_p
        s_p = os_.s_p if need_pred else np.zeros_like(os_.s_p)
        comb = combine(os_.s_f, s_p, self.train_stats_, p.score.w_f, p.score.w_p)
        return np.asarray(comb, dtype=np.float64), os_.s_f, os_.s_p

    def network_inputs(self, appearance, flow):
        """The network inputs (app_in, target, flow_in) float32 CPU tensors of cubes, for ``score_cubes(inputs=...)``:
        lets another thread do the conversion (:func:`amsrc.inference.network_inputs`)."""
        from amsrc.inference import network_inputs

        self._check_fitted()
        return network_inputs(self.model_, appearance, flow, self.preset_.model.flow_scale)

    def score_clip(self, clip) -> ClipScores:
        """Scores of one :class:`~amsrc.prepare.store.ClipCubes`."""
        from amsrc.scoring import empty_frame_score, frame_scores, smooth

        self._check_fitted()
        p = self.preset_
        comb, s_f, s_p = self.score_cubes(clip.appearance, clip.flow)
        empty = empty_frame_score(self.train_stats_, p.score.w_f, p.score.w_p)
        raw = np.asarray(frame_scores(comb, clip.offsets, empty), dtype=np.float64)
        return ClipScores(clip.name, raw, np.asarray(smooth(raw, p.score), dtype=np.float64),
                          comb, s_f, s_p, clip.labels, np.asarray(clip.offsets), clip.object_labels)

    def score_store(self, store, split: str = "testing") -> list[ClipScores]:
        """Scores of every clip of a split of a cube store, in dataset order."""
        self._check_fitted()
        _check_store_matches(store, self.preset_)
        return [self.score_clip(store.load(split, name)) for name in store.clips(split)]

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted model as a checkpoint (state dict + config + train stats + version)."""
        from amsrc.train import save_checkpoint

        self._check_fitted()
        save_checkpoint(path, self.model_, self.preset_, self.train_stats_.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "AMSRC":
        """Load a checkpoint written by ``fit`` or ``save`` (``torch.load(weights_only=True)``)."""
        from amsrc.scoring import TrainStats
        from amsrc.train import load_checkpoint

        model, preset, stats = load_checkpoint(Path(path), device=device)
        det = cls(preset=preset, device=device)
        det.model_, det.preset_ = model, preset
        det.train_stats_ = TrainStats.from_dict(stats)
        det.checkpoint_ = Path(path)
        return det


def _training_split(store) -> str:
    splits = store.splits()
    for s in ("training", "all"):
        if s in splits:
            return s
    raise ConfigError(f"{store.root}: the cube store has no 'training' (or 'all') split; it has {splits}")


def _check_store_matches(store, preset: Preset) -> None:
    """The network's input shape comes from the cubes: refuse a store built with other cube settings."""
    s = store.settings
    want = dataclasses.asdict(preset.prepare)
    for key in ("cube_size", "channels"):
        if key in s and s[key] != want[key]:
            raise ConfigError(
                f"{store.root}: cubes were prepared with {key}={s[key]} but the preset "
                f"{preset.name!r} expects {key}={want[key]}; prepare again with --preset {preset.name}"
            )
