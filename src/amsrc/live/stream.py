"""Streaming scorer: one RGB frame in, its anomaly score out (``amsrc score`` and Python use).

``StreamScorer(detector).push(frame)`` runs the same chain as offline scoring: the frame goes
through :class:`~amsrc.prepare.cubes.CubeExtractor` (the one cube code path ``amsrc prepare``
uses), the cubes of its boxes through the network (:meth:`AMSRC.score_cubes`), the frame score is
the max over its objects (:func:`~amsrc.scoring.empty_frame_score` when it has none), and the
smoothing is causal (:class:`~amsrc.scoring.CausalSmoother`, equal to ``smooth(causal=True)``).
So the raw scores of a clip pushed frame by frame equal ``AMSRC.score_clip`` on its prepared cubes
(up to float rounding of the network run in other batch sizes).

Two ways to run the same chain, with the same results bit for bit:

- one frame at a time (:meth:`StreamScorer.push`): a frame is prepared (resize, flow, boxes, crops,
  conversion to network inputs) and scored (network, frame score, smoothing) before the next one is
  looked at, on one core;
- pipelined (:meth:`StreamScorer.score_frames`, and ``score_source`` on every source): a background
  thread reads and prepares the next frames while the network scores the current one (OpenCV and
  torch release the GIL, so the two overlap on two cores; on Ped2 with 2 cores, torch and OpenCV on
  one thread each, ~1.7x the rate of ``push``). Up to ``depth`` prepared frames wait in the queue when
  the network is the slower stage: ``score_source`` keeps 4 for a file and 1 for a live source, whose
  frame is then scored within its own prepare and network time plus the rest of the network time of
  the frame before it (while the scorer keeps up with the source). By default each frame's objects
  go through the network as one batch of their own, so the scores equal live scoring bit for bit;
  ``score_frames(batch=N)`` (``amsrc score --batch N``, the default on a CUDA device) puts N
  frames' objects in one pass (:meth:`StreamScorer.finish_many`): the kernels round differently
  for other batch sizes (measured: a batch of 1 vs 2, and 10-15 vs 16+ in the decoder), so those
  scores agree within :data:`BATCH_TOLERANCE`, tested.

When the preset's score does not use the prediction (w_p = 0) the decoder is skipped
(``need_pred``): S_f and the frame scores are unchanged, ``FrameResult.s_p`` is NaN.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from amsrc.errors import ConfigError
from amsrc.prepare.cubes import CubeExtractor, FrameObjects
from amsrc.prepare.features import object_speeds
from amsrc.scoring import CausalSmoother, counted_objects, frame_scores
from amsrc.utils import prefetch


@dataclass
class FrameResult:
    """Scores of one pushed frame."""

    t: int  # index of the frame in this stream (0-based, frames pushed so far)
    raw: float  # frame score before smoothing: max over objects (empty-frame score when K = 0)
    score: float  # causally smoothed frame score (what the threshold is compared with)
    anomalous: bool | None  # score >= threshold; None when the scorer has no threshold
    boxes: np.ndarray  # (K, 4) int32 x0, y0, x1, y1 in the pixels of the frame as pushed
    object_scores: np.ndarray  # (K,) float64 combined object scores w_f z(S_f) + w_p z(S_p) + w_m z(S_m)
    s_f: np.ndarray  # (K,) float32 raw S_f (1 - cos(x, y) by default)
    s_p: np.ndarray  # (K,) float32 raw squared prediction error; NaN when not computed (w_p = 0: no decoder run)
    speed: np.ndarray  # (K,) float32 object_speeds: median flow magnitude, pixels/frame at the fitted size
    seconds: float  # processing time of this frame (flow, boxes, cubes, network, score), waits excluded
    cubes: FrameObjects | None = field(default=None, repr=False)  # the objects' cubes at the fitted size (error maps)
    s_m: np.ndarray | None = None  # (K,) float32 raw motion rarity; NaN without a memory or when w_m = 0 (not computed)
    # (K,) bool objects that count in the frame score (ScoreConfig.edge_min_side: partly visible objects at
    # the border do not); None: all
    counted: np.ndarray | None = None

    @property
    def top(self) -> int | None:
        """Index of the highest-scoring object that counts in the frame score, None when there is none."""
        s = self.object_scores
        if self.counted is not None:
            s = np.where(self.counted, s, -np.inf)
        return int(np.argmax(s)) if s.size and np.isfinite(s).any() else None


# Largest difference of a frame or object score (z) between frames scored one network batch each and
# several frames' objects in one batch (StreamScorer.finish_many): float rounding of other batch
# sizes, tested.
BATCH_TOLERANCE = 1e-4


def finish_batched(scorer: StreamScorer, preps: Iterable, batch: int) -> Iterator:
    """The results of ``preps`` (PreparedFrame, or (item, PreparedFrame) pairs, whose item is handed
    back beside the result) in order, ``batch`` frames a network pass; the last group may be shorter."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1 frame, got {batch}")
    group: list = []
    for p in preps:
        group.append(p)
        if len(group) == batch:
            yield from _finish_group(scorer, group)
            group = []
    if group:
        yield from _finish_group(scorer, group)


def _finish_group(scorer: StreamScorer, group: list) -> Iterator:
    paired = isinstance(group[0], tuple)
    results = scorer.finish_many([g[1] for g in group] if paired else group)
    for g, r in zip(group, results):
        yield (g[0], r) if paired else r


@dataclass
class PreparedFrame:
    """A frame after the CPU stages (resize to the fitted size, flow, boxes, crops), ready for the
    network: what :meth:`StreamScorer.prepare` hands to :meth:`StreamScorer.finish`."""

    objects: FrameObjects  # the objects of the frame at the fitted size
    inputs: tuple | None  # network inputs of its K cubes (AMSRC.network_inputs); None when K = 0
    speed: np.ndarray  # (K,) float32 object_speeds of its cubes
    scale: tuple[float, float]  # (sx, sy): pushed-frame pixels per fitted-frame pixel
    size: tuple[int, int]  # (H, W) of the frame as pushed
    seconds: float  # time spent in prepare


class StreamScorer:
    """Score a stream frame by frame with a fitted :class:`~amsrc.detector.AMSRC`.

    threshold: decision threshold on the smoothed score (``FrameResult.anomalous``); None = no decision.
    frame_size: (H, W) the model was fitted on; frames of another size are resized to it (boxes
      are mapped back to the pushed frame's pixels). None: the first frame's size is kept.
    need_pred: run the decoder (S_p). None: only when the preset's score uses it (w_p != 0);
      False with w_p != 0 is a ConfigError.

    A frame is scored in two steps, :meth:`prepare` (CPU: flow, boxes, crops; keeps the frame and
    flow history) then :meth:`finish` (network, frame score, smoothing; keeps the smoothing
    state). ``push`` does both; :meth:`score_frames` overlaps them in two threads. ``finish`` must
    get the prepared frames in the order they were prepared.
    """

    def __init__(self, detector, threshold: float | None = None, frame_size: tuple[int, int] | None = None,
                 need_pred: bool | None = None):
        self.detector = detector
        p = detector.preset_
        self.threshold = None if threshold is None else float(threshold)
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        if need_pred is None:
            need_pred = p.score.w_p != 0
        elif not need_pred and p.score.w_p != 0:
            raise ConfigError(f"need_pred=False needs score weight w_p = 0 (the preset has w_p = {p.score.w_p})")
        self.need_pred = bool(need_pred)
        self.extractor = CubeExtractor(p.prepare, background=getattr(detector, "background_", None))
        if hasattr(detector, "_engine"):
            detector._engine()  # an engine other than torch is made now, not at the first frame (a live start)
        self.smoother = CausalSmoother(p.score)
        self.empty_score = detector.empty_score_
        self.seconds = {"inputs": 0.0, "network": 0.0}  # time spent per stage since creation (with extractor.seconds)
        self.t = 0

    def reset(self) -> None:
        """Start a new stream: frames, flows, box detector state and smoothing are forgotten."""
        self.extractor.reset()
        self.smoother.reset()
        self.t = 0

    def restart(self) -> None:
        """A gap in the stream (reconnect): forget frames and flows (no flow across the gap) but keep
        the smoothing and the frame count."""
        self.extractor.reset()

    def _fit_size(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        h, w = frame.shape[:2]
        if self.frame_size is None:
            self.frame_size = (h, w)
        fh, fw = self.frame_size
        if (h, w) == (fh, fw):
            return frame, 1.0, 1.0
        interp = cv2.INTER_AREA if h * w > fh * fw else cv2.INTER_LINEAR
        return cv2.resize(frame, (fw, fh), interpolation=interp), w / fw, h / fh

    def prepare(self, frame_rgb: np.ndarray) -> PreparedFrame:
        """CPU stages of the next frame (H, W, 3) uint8 RGB: resize, flow, boxes, cubes, and the cubes'
        conversion to network inputs and their speeds."""
        t0 = time.perf_counter()
        frame, sx, sy = self._fit_size(frame_rgb)
        obj = self.extractor.push(frame)
        t1 = time.perf_counter()
        inputs = self.detector.network_inputs(obj.appearance, obj.flow) if len(obj) else None
        self.seconds["inputs"] += time.perf_counter() - t1
        return PreparedFrame(obj, inputs, object_speeds(obj.flow), (sx, sy), tuple(frame_rgb.shape[:2]),
                             time.perf_counter() - t0)

    def finish(self, prep: PreparedFrame) -> FrameResult:
        """Network, frame score and smoothing of a prepared frame -> its :class:`FrameResult`."""
        return self.finish_many([prep])[0]

    def finish_many(self, preps: list[PreparedFrame]) -> list[FrameResult]:
        """:meth:`finish` of several prepared frames, in order, with all their objects in ONE network
        pass (a GPU wants large batches; on the CPU it saves per-call overhead). The scores equal
        frame-by-frame :meth:`finish` within :data:`BATCH_TOLERANCE` (the kernels round differently
        for other batch sizes)."""
        t0 = time.perf_counter()
        sizes = [len(p.objects) for p in preps]
        full = [p for p in preps if len(p.objects)]
        if full:
            app = np.concatenate([p.objects.appearance for p in full]) if len(full) > 1 else full[0].objects.appearance
            flow = np.concatenate([p.objects.flow for p in full]) if len(full) > 1 else full[0].objects.flow
            inputs = (tuple(torch.cat([p.inputs[k] for p in full]) for k in range(len(full[0].inputs)))
                      if len(full) > 1 else full[0].inputs)
            cues = self.detector.score_cubes(app, flow, need_pred=self.need_pred, inputs=inputs)
        else:
            cues = (np.zeros(0, np.float64),) + (np.zeros(0, np.float32),) * 3
        net_s = time.perf_counter() - t0
        self.seconds["network"] += net_s
        ends = np.cumsum(sizes)
        out = []
        for prep, b, e in zip(preps, ends - np.asarray(sizes), ends):
            comb, s_f, s_p, s_m = (np.asarray(c[b:e]) for c in cues)
            out.append(self._result(prep, comb, s_f, s_p, s_m, net_s / len(preps)))
        return out

    def _result(self, prep: PreparedFrame, comb, s_f, s_p, s_m, net_s: float) -> FrameResult:
        """Frame score, smoothing and outputs of a prepared frame from its objects' scores."""
        t0 = time.perf_counter()
        obj = prep.objects
        sc = self.detector.preset_.score
        counted = counted_objects(obj.boxes, self.frame_size, sc.edge_min_side)  # boxes at the fitted size
        raw = float(frame_scores(comb, [0, len(comb)], self.empty_score, sc.frame_topk, counted)[0])  # the frame rule of offline scoring
        speed = prep.speed
        score = self.smoother.push(raw)
        boxes = obj.boxes
        sx, sy = prep.scale
        if (sx, sy) != (1.0, 1.0) and len(boxes):
            b = boxes.astype(np.float64)
            b[:, 0::2] *= sx
            b[:, 1::2] *= sy
            h, w = prep.size
            boxes = np.stack([np.floor(b[:, 0]), np.floor(b[:, 1]), np.ceil(b[:, 2]), np.ceil(b[:, 3])], 1)
            boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.int32)
        res = FrameResult(
            t=self.t, raw=raw, score=score,
            anomalous=None if self.threshold is None else bool(score >= self.threshold),
            boxes=boxes, object_scores=np.asarray(comb, np.float64), s_f=np.asarray(s_f, np.float32),
            s_p=np.asarray(s_p, np.float32), speed=speed,
            seconds=prep.seconds + net_s + time.perf_counter() - t0,
            cubes=obj, s_m=np.asarray(s_m, np.float32), counted=counted,
        )
        self.t += 1
        return res

    def push(self, frame_rgb: np.ndarray) -> FrameResult:
        """Frame (H, W, 3) uint8 RGB -> its :class:`FrameResult` (frames 0..3 of a stream have no objects).
        The frame is fully scored before this returns (one core at a time)."""
        return self.finish(self.prepare(frame_rgb))

    def score_frames(self, frames: Iterable[np.ndarray], depth: int = 4, batch: int = 1) -> Iterator[FrameResult]:
        """Throughput mode: the :class:`FrameResult` of each frame of ``frames``, in order, equal to
        ``push`` frame by frame. Reading ``frames`` and :meth:`prepare` run in a background thread up
        to ``depth`` frames ahead of the network (latency: up to ``depth`` frames more than ``push``).
        ``batch`` > 1: the objects of ``batch`` consecutive frames go through the network together
        (:meth:`finish_many`; scores within :data:`BATCH_TOLERANCE` of ``push``, latency up to
        ``depth + batch`` frames)."""
        yield from finish_batched(self, prefetch((self.prepare(f) for f in frames), max(depth, batch)), batch)
