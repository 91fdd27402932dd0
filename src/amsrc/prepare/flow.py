"""Dense optical flow between consecutive frames behind one callable interface.

``make_flow(cfg)(prev_gray, cur_gray)`` returns the flow from frame t-1 to frame t at native
resolution: an (H, W, 2) float32 array of (dx, dy) in image pixels, anchored on the pixel grid of
frame t-1 (``prev(y, x)`` moves to ``cur(y + dy, x + dx)``).

Methods:
  * ``dis``       OpenCV DIS (default). OpenCV's presets "ultrafast", "fast", "medium", and "fine"
                  (ours: ultrafast's settings one pyramid level finer; the default). The
                  quality/speed table that chose it: ``benchmarks/box_quality.py --flow-table``.
  * ``farneback`` OpenCV Farneback.
  * ``tvl1``      Dual TV-L1 from opencv-contrib (``cv2.optflow``); slow, for comparison.
  * ``raft``      torchvision's RAFT with weights from a local file the user gives. Nothing is
                  downloaded; a missing package or file is a ConfigError that says which.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from amsrc.config import FlowConfig
from amsrc.errors import ConfigError, DataError

FLOW_METHODS = ("dis", "farneback", "tvl1", "raft")
DIS_PRESETS = ("ultrafast", "fast", "medium", "fine")


def check_gray_pair(prev_gray: np.ndarray, cur_gray: np.ndarray, who: str = "flow") -> None:
    """Frames t-1 and t must be (H, W) uint8 grey of one size; ``who`` names the caller in the error."""
    for name, img in (("prev_gray", prev_gray), ("cur_gray", cur_gray)):
        if not isinstance(img, np.ndarray) or img.ndim != 2 or img.dtype != np.uint8:
            got = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise DataError(None, f"{who}: {name} must be an (H, W) uint8 grey frame, got {got}")
    if prev_gray.shape != cur_gray.shape:
        raise DataError(None, f"{who}: frames differ in size {prev_gray.shape} vs {cur_gray.shape}")


def set_cv2_threads(threads: int) -> None:
    """Set OpenCV's thread count for this process (0 leaves OpenCV's own default)."""
    if threads > 0:
        cv2.setNumThreads(int(threads))


class FlowEstimator:
    """Callable: ``(prev_gray (H, W) uint8, cur_gray (H, W) uint8) -> (H, W, 2) float32`` flow t-1 -> t.

    ``scale`` != 1: the flow is computed on both frames resized by ``scale`` and brought back to the
    frame's size, its vectors divided by ``scale`` so they stay in the frame's pixels.
    """

    method: str = ""
    scale: float = 1.0

    def __call__(self, prev_gray: np.ndarray, cur_gray: np.ndarray) -> np.ndarray:
        check_gray_pair(prev_gray, cur_gray)
        s = self.scale
        if s == 1.0:
            flow = self._compute(np.ascontiguousarray(prev_gray), np.ascontiguousarray(cur_gray))
            return np.ascontiguousarray(flow, dtype=np.float32)
        h, w = prev_gray.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
        small = self._compute(cv2.resize(prev_gray, size, interpolation=interp), cv2.resize(cur_gray, size, interpolation=interp))
        back = cv2.resize(np.asarray(small, np.float32), (w, h), interpolation=cv2.INTER_LINEAR if s < 1.0 else cv2.INTER_AREA)
        back[..., 0] *= w / size[0]
        back[..., 1] *= h / size[1]
        return np.ascontiguousarray(back, dtype=np.float32)

    def _compute(self, prev_gray: np.ndarray, cur_gray: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class DISFlow(FlowEstimator):
    method = "dis"

    def __init__(self, preset: str, refine: int = 0):
        code = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
            "fine": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        }[preset]
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(code)
        if preset == "fine":
            # OpenCV's ultrafast (8 px patches, stride 4, 12 descent iterations, no variational
            # refinement) one pyramid level finer: finest scale 1 (half resolution) instead of 2
            # (a quarter), so small objects (15x30 px walkers) keep their own motion. Chosen by
            # benchmarks/box_quality.py --flow-table (endpoint error on moving patches, warp error
            # on Ped2 pairs, ms per pair).
            self._dis.setFinestScale(1)
        if refine > 0:
            # Variational refinement (OpenCV's defaults: alpha 20, delta 5, gamma 10) after the patch
            # search at every level: on Ped2 pairs it halves the flow the patch search smears onto the
            # still ground around a walker (see the flow table), at ~2 ms per 240x360 pair.
            self._dis.setVariationalRefinementIterations(int(refine))

    def _compute(self, prev_gray, cur_gray):
        return self._dis.calc(prev_gray, cur_gray, None)


class FarnebackFlow(FlowEstimator):
    method = "farneback"

    def _compute(self, prev_gray, cur_gray):
        # OpenCV's commonly used settings: 3-level pyramid (scale 0.5), 15 px window, 3 iterations,
        # polynomial neighbourhood 5 with sigma 1.2.
        return cv2.calcOpticalFlowFarneback(prev_gray, cur_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)


class TVL1Flow(FlowEstimator):
    method = "tvl1"

    def __init__(self):
        create = getattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create", None)
        if create is None:
            raise ConfigError(
                "flow method 'tvl1' needs cv2.optflow.DualTVL1OpticalFlow_create from "
                f"opencv-contrib-python; this OpenCV ({cv2.__version__}) does not have it. "
                "Use method 'dis' or 'farneback', or install opencv-contrib-python-headless."
            )
        self._tvl1 = create()

    def _compute(self, prev_gray, cur_gray):
        return self._tvl1.calc(prev_gray, cur_gray, None)


class RAFTFlow(FlowEstimator):
    """torchvision RAFT (large or small, told apart by the weights) from a local state-dict file."""

    method = "raft"

    def __init__(self, model, device: str):
        self._model = model
        self._device = device

    def _compute(self, prev_gray, cur_gray):
        import torch
        import torch.nn.functional as F

        h, w = prev_gray.shape
        ph, pw = (-h) % 8, (-w) % 8  # RAFT needs sides divisible by 8

        def prep(img: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(img).float().div_(127.5).sub_(1.0)  # [-1, 1] as RAFT was trained
            t = t[None, None].expand(1, 3, h, w)
            return F.pad(t, (0, pw, 0, ph), mode="replicate").to(self._device)

        with torch.inference_mode():
            flows = self._model(prep(prev_gray), prep(cur_gray))
        flow = flows[-1][0, :, :h, :w].permute(1, 2, 0).cpu().numpy()
        return flow


def _make_raft(cfg: FlowConfig) -> RAFTFlow:
    missing = []
    weights = cfg.raft_weights
    if not weights:
        missing.append("a local weights file (set FlowConfig.raft_weights to a RAFT .pth state dict)")
    elif not Path(weights).is_file():
        missing.append(f"the weights file {weights} (not found)")
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        missing.append(
            "the package torchvision with torchvision.models.optical_flow "
            f"(import failed: {exc.__class__.__name__}: {exc}); install a torchvision matching this torch"
        )
    if missing:
        raise ConfigError("flow method 'raft' is unavailable; missing: " + "; ".join(missing)
                          + ". Nothing is downloaded at run time; use method 'dis' otherwise.")
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"RAFT weights {weights}: cannot be read as a state dict ({exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model = None
    for build in (raft_large, raft_small):
        candidate = build(weights=None)
        try:
            candidate.load_state_dict(state, strict=True)
        except Exception:
            continue
        model = candidate
        break
    if model is None:
        raise ConfigError(f"RAFT weights {weights}: match neither torchvision raft_large nor raft_small")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return RAFTFlow(model.eval().to(device), device)


def make_flow(cfg: FlowConfig) -> FlowEstimator:
    """The flow estimator ``cfg`` names. Sets OpenCV's thread count to ``cfg.threads`` (if > 0)."""
    if cfg.method not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method {cfg.method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if cfg.threads < 0:
        raise ConfigError(f"flow threads must be >= 0 (0 = OpenCV's default), got {cfg.threads}")
    if not (math.isfinite(cfg.scale) and 0.0 < cfg.scale <= 4.0):
        raise ConfigError(f"flow scale must be in (0, 4], got {cfg.scale}")
    set_cv2_threads(cfg.threads)
    est = _make(cfg)
    est.scale = float(cfg.scale)
    return est


def _make(cfg: FlowConfig) -> FlowEstimator:
    if cfg.method == "dis":
        if cfg.dis_preset not in DIS_PRESETS:
            raise ConfigError(f"unknown DIS preset {cfg.dis_preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        if cfg.dis_refine < 0:
            raise ConfigError(f"dis_refine (variational refinement iterations) must be >= 0, got {cfg.dis_refine}")
        return DISFlow(cfg.dis_preset, cfg.dis_refine)
    if cfg.method == "farneback":
        return FarnebackFlow()
    if cfg.method == "tvl1":
        return TVL1Flow()
    return _make_raft(cfg)
