"""The estimator a user holds: ``AMSRC(...).fit(store)``, ``.score_store(store)``, ``.save``/``.load``.

scikit-learn contract: ``__init__`` stores its arguments only; ``fit`` returns ``self``; what is
learned from data ends in ``_`` (``model_``, ``preset_``, ``train_stats_``, and from footage
fitting ``threshold_`` and ``footage_``). Scores come from :mod:`amsrc.scoring`, the one scoring
path. Fitting on footage (prepare + train + threshold) is :func:`amsrc.live.fit.fit_footage`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np

from amsrc.config import PrepareConfig, Preset, apply_overrides, describe_diff, get_preset, preset_names
from amsrc.errors import ConfigError, DataError
from amsrc.model.inputs import network_inputs
from amsrc.scoring import ClipScores, ObjectScores, clip_scores, combine, empty_frame_score, object_scores
from amsrc.training.checkpoint import Checkpoint
from amsrc.training.loop import train_model
from amsrc.utils import check_device


class CubeScores(NamedTuple):
    combined: np.ndarray  # (N,) float64 object anomaly scores w_f z(S_f) + w_p z(S_p) + w_m z(S_m)
    s_f: np.ndarray  # (N,) float32 raw S_f
    s_p: np.ndarray  # (N,) float32 raw S_p; NaN when not computed
    s_m: np.ndarray  # (N,) float32 raw S_m; NaN without a memory


class AMSRC:
    """AMSRC anomaly detector.

    Parameters
    ----------
    preset: a preset name or a :class:`~amsrc.config.Preset` (all settings of a run); None (the
        default): the preset the store was prepared with, its prepare settings taken from the store.
    variant: overrides ``preset.model.variant`` ("amsrc", "nogate", "baseline").
    epochs: overrides ``preset.train.epochs``.
    overrides: ``SECTION.KEY=VALUE`` settings of the model, train and score sections applied last
        (``--set``), e.g. ``["model.skips=1", "train.lr=2e-4"]``.
    device: "cpu" or "cuda".
    progress: show progress bars.
    engine: what runs the network when scoring: "torch" (PyTorch), "onnxruntime" (ONNX Runtime on
        the CPU, the model converted in memory when first used; needs ``pip install 'amsrc[export]'``),
        or "auto" (the default): onnxruntime on the CPU where it is installed (1.4x the file scoring
        rate of torch on Ped2 here, the same AUROC: ``benchmarks/speed.py``), else torch; torch also
        when the score does not use S_p (w_p = 0), as torch then runs the encoders alone. Scores agree
        within float rounding (``ENGINE_TOLERANCE`` in z-units). "onnxruntime-int8" (opt-in, never
        "auto"): the ONNX Runtime graph quantised to int8 when first used, calibrated on the training
        cubes model.pt keeps (``train.calib_size``); a faster network whose scores are not the same:
        ``benchmarks/int8.py`` measures its AUROC cost. Training is always torch.
    """

    ENGINES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
    ENGINE_TOLERANCE = 1e-4  # largest difference of an object's anomaly score (z) between engines, tested

    def __init__(self, preset: str | Preset | None = None, variant: str | None = None,
                 epochs: int | None = None, device: str = "cpu", progress: bool = True,
                 overrides: list[str] | tuple[str, ...] = (), engine: str = "auto"):
        self.preset = preset
        self.variant = variant
        self.epochs = epochs
        self.overrides = tuple(overrides)
        self.device = device
        self.progress = progress
        self.engine = engine

    # ------------------------------------------------------------ settings
    def resolved_preset(self, store=None) -> Preset:
        """The settings of a fit: ``preset`` with ``variant`` and ``epochs`` applied; with ``preset`` None,
        the store's preset (by name; "default" when the name is unknown) and the store's prepare settings."""
        if self.preset is None:
            name = getattr(store, "preset", "") or "default"
            if name not in preset_names():
                name = "default"
            p = get_preset(name)
            if store is not None:
                p.prepare = PrepareConfig.from_dict(store.settings)
        else:
            p = get_preset(self.preset) if isinstance(self.preset, str) else Preset.from_dict(self.preset.to_dict())
        if self.variant is not None:
            p.model.variant = self.variant
        if self.epochs is not None:
            p.train.epochs = int(self.epochs)
        apply_overrides(p, self.overrides)
        if p.model.variant == "baseline":
            # The appearance-only baseline has no motion stream: it is scored by prediction error only.
            p.score.w_f, p.score.w_p, p.score.w_m = 0.0, 1.0, 0.0
        return p

    # ------------------------------------------------------------ fit
    def fit(self, store, out_dir: str | Path, resume: bool = False) -> AMSRC:
        """Train on the normal cubes of ``store`` (its "training" split, else "all").

        ``out_dir`` receives the per-epoch log and checkpoints; the final model is the last epoch.
        """
        self.device = check_device(self.device)
        preset = self.resolved_preset(store)
        _check_store_matches(store, preset, given=self.preset is not None)
        split = store.training_split()
        data = []
        for name in store.clips(split):
            c = store.load(split, name)
            if len(c.frames):
                data.append((c.appearance, c.flow))
        if not data:
            raise ConfigError(f"{store.root}: no training cubes in split {split!r}; nothing to learn from")
        ckpt = train_model(data, preset, Path(out_dir), resume=resume, device=self.device, progress=self.progress,
                           background=store.background, store_key=store.key)
        self._restore(Checkpoint.load(ckpt), ckpt)
        return self

    def _restore(self, ck: Checkpoint, path: Path) -> None:
        self.engine_ = None
        self.model_ = ck.build_model(self.device, source=path)
        self.preset_ = ck.preset
        self.train_stats_ = ck.train_stats
        self.threshold_ = ck.threshold
        self.footage_ = ck.footage
        self.extras_ = dict(ck.extras)
        self.epoch_ = ck.epoch
        self.background_ = ck.background
        self.checkpoint_ = Path(path)
        self.store_key_ = ck.store_key
        self.motion_bank_ = ck.motion_bank
        self.calibration_ = ck.calibration

    # ------------------------------------------------------------ score
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigError("this AMSRC is not fitted: call fit(...) or AMSRC.load(path) first")

    def score_cubes(self, appearance, flow, need_pred: bool = True, inputs=None,
                    need_m: bool | None = None) -> CubeScores:
        """Combined, S_f, S_p and S_m scores of cubes: appearance (N,5,S,S,C) uint8, flow (N,4,S,S,2) float16.

        ``need_pred=False`` skips the decoder (allowed only when the preset's w_p is 0, so the combined
        score does not use S_p): the combined score, S_f and S_m are the same, S_p is NaN (not computed).
        S_m is NaN for a model without a memory of its training objects, and, unless ``need_m``, when the
        score does not weigh it (w_m = 0: live scoring does not pay for a cue it does not use; evaluation
        asks for it, to report it). ``need_m`` None: only when w_m != 0.
        ``inputs``: the cubes' network inputs made ahead by :meth:`network_inputs` (same scores).
        """
        self._check_fitted()
        p = self.preset_
        if inputs is None:
            _check_cube_shapes(appearance, flow, p)
        if not need_pred and p.score.w_p != 0:
            raise ConfigError(f"need_pred=False needs score weight w_p = 0 (the preset has w_p = {p.score.w_p})")
        os_ = object_scores(self.model_, appearance, flow, p.model.flow_scale, device=self.device,
                            need_pred=need_pred, inputs=inputs, engine=self._engine(),
                            bank=getattr(self, "motion_bank_", None) if need_m or p.score.w_m != 0 else None,
                            bank_k=p.train.bank_k, speed_key=self.train_stats_.speed_key)
        # with w_p = 0 combine() leaves S_p out; zeros stand in for the NaN of an uncomputed S_p
        s_p = os_.s_p if need_pred else np.zeros_like(os_.s_p)
        comb = combine(os_.s_f, s_p, self.train_stats_, p.score.w_f, p.score.w_p, os_.s_m, p.score.w_m)
        return CubeScores(np.asarray(comb, dtype=np.float64), os_.s_f, os_.s_p, os_.s_m)

    # scikit-learn-style names on cubes. The convention is that of anomaly-detection libraries (PyOD,
    # anomalib): higher = more anomalous. (scikit-learn's own outlier detectors use the opposite sign.)
    def score_samples(self, appearance, flow) -> np.ndarray:
        """The anomaly score of each cube, (N,) float64 in standard deviations of normal training objects
        (z; higher = more anomalous): the object score the frame score is the max of."""
        self._check_fitted()
        return self.score_cubes(appearance, flow, need_pred=self.preset_.score.w_p != 0)[0]

    def decision_function(self, appearance, flow) -> np.ndarray:
        """``score_samples - threshold_``, (N,) float64: each object's own (raw) score against the decision
        threshold, >= 0 at or above it. (The threshold itself is applied to a frame's smoothed score.)
        Needs a threshold (``amsrc fit`` / :func:`~amsrc.live.fit.fit_footage`)."""
        return self.score_samples(appearance, flow) - self._threshold_value()

    def predict(self, appearance, flow) -> np.ndarray:
        """(N,) int: 1 = anomalous (``decision_function >= 0``), 0 = normal."""
        return (self.decision_function(appearance, flow) >= 0).astype(np.int64)

    def _threshold_value(self) -> float:
        self._check_fitted()
        thr = getattr(self, "threshold_", None)
        if thr is None:
            raise ConfigError("this model has no decision threshold (trained with `amsrc train`, not fitted with "
                              "`amsrc fit`): use score_samples, or fit it on footage with amsrc.live.fit.fit_footage")
        return float(thr.value)

    def score_video(self, source, fps: float | None = None, on_corrupt: str = "error"):
        """Score a video file, frame folder, camera or URL frame by frame, as ``amsrc score`` does, and
        return a :class:`~amsrc.live.run.VideoScores`: per-frame ``frame``/``time``/``raw``/``score``/
        ``anomalous`` arrays and the ``events``."""
        self._check_fitted()
        from amsrc.live.run import score_video

        return score_video(self, source, fps=fps, on_corrupt=on_corrupt)

    def predict_cubes(self, appearance, flow) -> ObjectScores:
        """S_f, S_p and the predicted and true frame t of cubes (for error maps), through the same
        forward pass as :meth:`score_cubes`."""
        self._check_fitted()
        return object_scores(self.model_, appearance, flow, self.preset_.model.flow_scale, device=self.device,
                             keep_pred=True, engine=self._engine(), bank=getattr(self, "motion_bank_", None),
                             bank_k=self.preset_.train.bank_k, speed_key=self.train_stats_.speed_key)

    @property
    def engine_name_(self) -> str:
        """The engine that runs the network: ``engine`` with "auto" resolved."""
        engine = _check_engine(getattr(self, "engine", "auto"))
        if engine == "auto":
            import importlib.util

            cpu = str(getattr(self, "device", "cpu")) == "cpu"
            # the ONNX graph always runs the decoder: a score without S_p (w_p = 0) runs torch's encoders alone
            needs_decoder = not hasattr(self, "preset_") or self.preset_.score.w_p != 0
            installed = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
            return "onnxruntime" if cpu and needs_decoder and installed else "torch"
        return engine

    def _engine(self):
        """The runner of ``engine`` (None: the torch model itself), made when first needed."""
        if self.engine_name_ == "torch":
            return None
        if getattr(self, "engine_", None) is None:
            name = self.engine_name_
            if str(self.device) != "cpu":
                raise ConfigError(f"engine {name!r} runs on the CPU; device is {self.device!r} (use engine 'torch')")
            calibration = None
            if name == "onnxruntime-int8":
                calibration = getattr(self, "calibration_", None)
                if calibration is None:
                    raise DataError(getattr(self, "checkpoint_", None),
                                    "the model holds no calibration cubes for engine 'onnxruntime-int8' (written "
                                    "before they were kept, or with train.calib_size 0): train it again, or use "
                                    "engine 'onnxruntime'")
            from amsrc.export import OnnxRuntimeNet

            self.engine_ = OnnxRuntimeNet.from_model(self.model_, self.preset_, self.train_stats_.to_dict(),
                                                     calibration=calibration)
        return self.engine_

    def network_inputs(self, appearance, flow):
        """The network inputs (app_in, target, flow_in) float32 CPU tensors of cubes, for ``score_cubes(inputs=...)``:
        lets another thread do the conversion (:func:`amsrc.model.inputs.network_inputs`)."""
        self._check_fitted()
        return network_inputs(self.model_, appearance, flow, self.preset_.model.flow_scale)

    @property
    def empty_score_(self) -> float:
        """Score of a frame with no object (:func:`amsrc.scoring.empty_frame_score`)."""
        self._check_fitted()
        sc = self.preset_.score
        return empty_frame_score(self.train_stats_, sc.w_f, sc.w_p, sc.w_m)

    def score_clip(self, clip) -> ClipScores:
        """Scores of one :class:`~amsrc.prepare.store.ClipCubes`."""
        self._check_fitted()
        sc = self.score_cubes(clip.appearance, clip.flow, need_m=True)
        return clip_scores(clip, sc.combined, sc.s_f, sc.s_p, self.empty_score_, self.preset_.score, sc.s_m)

    def score_store(self, store, split: str = "testing") -> list[ClipScores]:
        """Scores of every clip of a split of a cube store, in dataset order."""
        self._check_fitted()
        _check_store_matches(store, self.preset_)
        return [self.score_clip(store.load(split, name)) for name in store.clips(split)]

    def __getstate__(self) -> dict:
        """Copy and pickle without the engine's session (it is made again when first needed)."""
        state = dict(self.__dict__)
        state["engine_"] = None
        return state

    # ------------------------------------------------------------ persistence
    def checkpoint(self) -> Checkpoint:
        """What :meth:`save` writes: weights, preset, training statistics, threshold, footage facts."""
        self._check_fitted()
        return Checkpoint.of(self.model_, self.preset_, self.train_stats_, epoch=getattr(self, "epoch_", None),
                             threshold=getattr(self, "threshold_", None), footage=getattr(self, "footage_", None),
                             extras=dict(getattr(self, "extras_", {})), background=getattr(self, "background_", None),
                             store_key=getattr(self, "store_key_", None),
                             motion_bank=getattr(self, "motion_bank_", None),
                             calibration=getattr(self, "calibration_", None))

    def save(self, path: str | Path) -> Path:
        """Write the fitted model as one :class:`~amsrc.training.checkpoint.Checkpoint` file."""
        return self.checkpoint().save(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", engine: str = "auto") -> AMSRC:
        """Load a checkpoint written by ``fit``, ``fit_footage`` or ``save`` (``torch.load(weights_only=True)``);
        the threshold and footage facts that ``amsrc fit`` learned come back as ``threshold_`` and ``footage_``.
        ``engine``: what runs the network when scoring (see the class)."""
        device, engine = check_device(device), _check_engine(engine)
        ck = Checkpoint.load(path)
        det = cls(preset=ck.preset, device=device, engine=engine)
        det._restore(ck, Path(path))
        return det


def _check_engine(engine: str) -> str:
    if engine not in AMSRC.ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(AMSRC.ENGINES)}, got {engine!r}")
    return engine


def _check_store_matches(store, preset: Preset, given: bool = False) -> None:
    """Cubes are only comparable when prepared with the same settings: refuse a store whose prepare
    settings (thread counts aside) differ from the preset's, listing every differing key. ``given``:
    the preset was chosen by the caller (training), not read from a model (scoring)."""
    store_s = {k: v for k, v in store.settings.items() if k != "background"}
    diffs = describe_diff(store_s, dataclasses.asdict(preset.prepare), "store", f"preset {preset.name!r}",
                          ignore=("threads",))
    if not diffs:
        return
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    made = f"prepared with preset {store.preset!r}" if getattr(store, "preset", "") else "prepared"
    if given:
        raise ConfigError(f"{store.root}: the store was {made}, which disagrees with preset {preset.name!r} on "
                          f"{len(diffs)} setting(s): {shown}; leave the preset out to train with the store's settings, "
                          f"or prepare again with --preset {preset.name}")
    raise ConfigError(f"{store.root}: this model was trained on cubes prepared with other settings than this store "
                      f"({made}); {len(diffs)} differ: {shown}; prepare the store with the model's preset "
                      f"{preset.name!r}")


def _check_cube_shapes(appearance, flow, preset: Preset) -> None:
    """Cubes of the shape the network was built for: (N, 5, S, S, C) and (N, 4, S, S, 2)."""
    s, c = preset.prepare.cube_size, preset.prepare.channels
    a_shape, f_shape = tuple(np.shape(appearance)), tuple(np.shape(flow))
    if len(a_shape) != 5 or a_shape[1:] != (5, s, s, c) or len(f_shape) != 5 or f_shape[1:] != (4, s, s, 2) \
            or a_shape[0] != f_shape[0]:
        raise ConfigError(f"cubes of shape appearance {a_shape}, flow {f_shape}; this model takes appearance "
                          f"(N, 5, {s}, {s}, {c}) and flow (N, 4, {s}, {s}, 2) (cube_size {s}, channels {c} of "
                          f"preset {preset.name!r})")
