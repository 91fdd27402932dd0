"""Optional object-detector plug-in for box method "det": a local ONNX file, nothing downloaded.

The paper takes boxes from a pretrained detector; this project needs none (motion boxes are the
default), but a user who has a detector exported to ONNX can add its boxes: ``--set
boxes.method=det+bg --set boxes.detector_onnx=yolo.onnx`` (the union de-duplicated by cover ratio,
see :mod:`amsrc.prepare.boxes`) or ``det`` alone.

The model's contract, that of detectors exported end to end with their NMS inside (as YOLOv10 and
"end2end" exports give):

    input   (1, 3, S, S) float32, RGB in [0, 1]: the frame resized to S x S (``detector_size``; no
            letterbox). The box detector sees grey frames, repeated on the 3 channels.
    output  (1, N, 6) or (N, 6) float32: x0, y0, x1, y1 in input pixels, score, class id.

Boxes with ``score >= detector_score`` (and a class in ``detector_classes``, when given) are kept
and mapped back to the frame's pixels. ONNX Runtime runs the file where it is installed, OpenCV's
DNN module otherwise (``detector_engine``). A missing file, a missing runtime or a model of
another shape is a ConfigError naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from amsrc.config import BoxConfig
from amsrc.errors import ConfigError

ENGINES = ("auto", "onnxruntime", "opencv")


def parse_classes(text: str) -> frozenset[int] | None:
    """"0,2" -> {0, 2}; "" -> None (every class)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return frozenset(int(c) for c in text.split(","))
    except ValueError:
        raise ConfigError(f"detector_classes must be comma-separated class ids such as '0,1', got {text!r}") from None


def file_digest(path: str | Path) -> str:
    """sha1 of the model file (a store prepared with one file is rebuilt for another)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


class OnnxDetector:
    """``detector(grey (H, W) uint8) -> (K, 4) int64`` boxes x0, y0, x1, y1 in the frame's pixels."""

    def __init__(self, cfg: BoxConfig):
        path = cfg.detector_onnx
        if not path:
            raise ConfigError("box method 'det' needs boxes.detector_onnx: the path of a local ONNX detector "
                              "(input (1, 3, S, S) RGB in [0, 1], output (N, 6): x0, y0, x1, y1, score, class)")
        if not Path(path).is_file():
            raise ConfigError(f"{path}: the ONNX detector file (boxes.detector_onnx) does not exist; nothing is "
                              "downloaded, give the path of a local file")
        if cfg.detector_engine not in ENGINES:
            raise ConfigError(f"detector_engine must be one of {', '.join(ENGINES)}, got {cfg.detector_engine!r}")
        if cfg.detector_size < 8 or not 0.0 <= cfg.detector_score <= 1.0:
            raise ConfigError(f"detector_size must be >= 8 and detector_score in [0, 1], got {cfg.detector_size}, "
                              f"{cfg.detector_score}")
        self.path = str(path)
        self.size = int(cfg.detector_size)
        self.score = float(cfg.detector_score)
        self.classes = parse_classes(cfg.detector_classes)
        self._run = self._engine(cfg.detector_engine)

    def _engine(self, engine: str):
        if engine in ("auto", "onnxruntime"):
            try:
                import onnxruntime as ort
            except ImportError:
                if engine == "onnxruntime":
                    raise ConfigError("detector_engine 'onnxruntime' needs the package onnxruntime, which is not "
                                      "installed: pip install onnxruntime (or detector_engine 'opencv')") from None
            else:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
                try:
                    sess = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
                except Exception as exc:
                    raise ConfigError(f"{self.path}: ONNX Runtime cannot load this detector ({exc})") from None
                name = sess.get_inputs()[0].name
                return lambda blob: sess.run(None, {name: blob})[0]
        try:
            net = cv2.dnn.readNetFromONNX(self.path)
        except cv2.error as exc:
            raise ConfigError(f"{self.path}: OpenCV's DNN module cannot load this detector ({exc})") from None

        def run(blob):
            net.setInput(blob)
            return net.forward()

        return run

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        h, w = grey.shape
        s = self.size
        rgb = cv2.cvtColor(cv2.resize(grey, (s, s), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
        blob = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0  # (1, 3, S, S)
        try:
            out = np.asarray(self._run(blob), np.float32)
        except Exception as exc:
            raise ConfigError(f"{self.path}: the detector failed on a (1, 3, {s}, {s}) input ({exc}); its input "
                              "must be (1, 3, S, S) float32 with S = boxes.detector_size") from None
        if out.ndim == 3 and out.shape[0] == 1:
            out = out[0]
        if out.ndim != 2 or out.shape[1] != 6:
            raise ConfigError(f"{self.path}: the detector's output is {out.shape}; expected (N, 6) or (1, N, 6): "
                              "x0, y0, x1, y1, score, class")
        keep = out[:, 4] >= self.score
        if self.classes is not None:
            keep &= np.isin(out[:, 5].round().astype(np.int64), list(self.classes))
        b = out[keep, :4] * np.array([w / s, h / s, w / s, h / s], np.float32)
        b = np.round(b).astype(np.int64)
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
        return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
