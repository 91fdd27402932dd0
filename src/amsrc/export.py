"""Export the network of a fitted model to ONNX, and check ONNX Runtime reproduces PyTorch.

The ONNX graph has the network's interface (see :mod:`amsrc.model.network`):

    inputs   app_in  (B, 4*C, S, S) float32 in [0, 1]   frames t-4 .. t-1
             flow_in (B, 8, S, S)   float32              flows / flow_scale
    outputs  pred    (B, C, S, S)   float32              predicted frame t
             x       (B, D)         float32              appearance bottleneck, flattened
             y       (B, D)         float32              motion bottleneck (absent for the baseline)
             m       (B, w3)        float32              motion bottleneck pooled over positions (absent
                                                         for the baseline): S_m's input
             s_m     (B,)           float32              S_m, the motion rarity (only in a file written
                                                         by :func:`export_onnx` from a model with a memory:
                                                         the memory, and the speed coordinate's constants
                                                         where it has one, are constants of the graph)

B is a dynamic axis. The appearance-only baseline keeps ``flow_in`` as an (unused) input so a
caller feeds every variant the same way; its graph has no ``y`` or ``m`` output (S_f is 0, as in
:func:`amsrc.scoring.object_scores`). The model's settings a caller needs to build inputs and
scores (flow_scale, cube_size, channels, train_stats, score weights, variant) are stored as
metadata properties ``amsrc.*`` of the ONNX file.

``onnx`` and ``onnxruntime`` are optional: ``pip install 'amsrc[export]'`` (or
``pip install onnx onnxruntime``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amsrc import __version__
from amsrc.errors import ConfigError, DataError
from amsrc.model.inputs import FLOW_CHANNELS, check_cubes, to_tensors
from amsrc.prepare.cubes import T_APPEARANCE
from amsrc.scoring import TrainStats, cue_scores, memory_key, nearest_mean_distance, object_scores
from amsrc.training.checkpoint import Checkpoint
from amsrc.utils import atomic_path

INPUT_NAMES = ("app_in", "flow_in")
OPSET = 17
_PIP_HINT = "pip install 'amsrc[export]'  (or: pip install onnx onnxruntime)"


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX export needs the Python package {module!r}, which is not installed: {_PIP_HINT}") from None


@dataclass
class ExportCheck:
    """ONNX Runtime vs PyTorch on the same cubes, per batch size."""

    onnx_path: str
    batch_sizes: tuple[int, ...]  # batch sizes run through ONNX Runtime (dynamic batch axis)
    n_cubes: int  # cubes compared per batch size
    atol: float  # tolerance on the scores s_f and s_p: |d| <= atol + rtol * |torch score|
    rtol: float  # (the relative part covers float32 rounding of large S_p sums)
    max_abs: dict[str, float] = field(default_factory=dict)  # output/score name -> max |onnx - torch|
    max_rel_s_p: float = 0.0  # max |d s_p| / max(|s_p|, 1)
    ok: bool = False  # every score within the tolerance

    def format(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs.items())
        verdict = "OK" if self.ok else "MISMATCH"
        return (f"ONNX Runtime check {verdict}: batch sizes {', '.join(map(str, self.batch_sizes))}, "
                f"{self.n_cubes} cubes; max |onnx - torch|: {diffs} (tolerance on s_f, s_p: "
                f"{self.atol:g} + {self.rtol:g} x |score|)")

    def to_dict(self) -> dict[str, Any]:
        return {"onnx": self.onnx_path, "batch_sizes": list(self.batch_sizes), "n_cubes": self.n_cubes,
                "atol": self.atol, "rtol": self.rtol, "max_abs": dict(self.max_abs),
                "max_rel_s_p": self.max_rel_s_p, "ok": self.ok}


def _plain_outputs(model, bank: np.ndarray | None = None, k: int = 5, speed_key: tuple[float, float] | None = None):
    """``model`` wrapped so forward returns a tuple (pred, x, y, m), or (pred, x) for the baseline (y None);
    with ``bank`` (S_m's memory, (K, w3), or (K, w3 + 1) with ``speed_key``), S_m too: (pred, x, y, m, s_m),
    by the functions :func:`amsrc.scoring.object_scores` uses (:func:`~amsrc.scoring.memory_key`,
    :func:`~amsrc.scoring.nearest_mean_distance`)."""

    class PlainOutputs(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.k = int(k)
            self.speed_key = speed_key
            self.register_buffer("bank", None if bank is None else torch.as_tensor(np.asarray(bank, np.float32)))

        def forward(self, app_in, flow_in):
            out = self.net(app_in, flow_in)
            if out.y is None:
                return out.pred, out.x
            if self.bank is None:
                return out.pred, out.x, out.y, out.m
            key = memory_key(out.m, flow_in, self.speed_key)
            return out.pred, out.x, out.y, out.m, nearest_mean_distance(key, self.bank, self.k)

    return PlainOutputs(model)


def onnx_model(model, preset, stats: dict, opset: int = OPSET, bank: np.ndarray | None = None):
    """The network ``model`` (eval mode, CPU) as an ``onnx.ModelProto`` with the interface above and
    the ``amsrc.*`` metadata. TorchScript-based exporter (``dynamo=False``: works offline without
    onnxscript), dynamic batch, batch norm with its running statistics."""
    import copy
    import io

    onnx = _require("onnx")
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()  # the caller's stays as it is
    c, s = preset.prepare.channels, preset.prepare.cube_size
    has_y = getattr(model, "motion", None) is not None
    with_s_m = has_y and bank is not None
    output_names = (["pred", "x", "y", "m"] + (["s_m"] if with_s_m else [])) if has_y else ["pred", "x"]
    dynamic = {name: {0: "batch"} for name in (*INPUT_NAMES, *output_names)}
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(2, (T_APPEARANCE - 1) * c, s, s, generator=gen),
               torch.randn(2, FLOW_CHANNELS, s, s, generator=gen))
    speed_key = TrainStats.from_dict(stats).speed_key
    wrapped = _plain_outputs(model, bank if with_s_m else None, preset.train.bank_k, speed_key).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice and unused-input notes
        with torch.no_grad():
            torch.onnx.export(wrapped, example, buf, dynamo=False, input_names=list(INPUT_NAMES),
                              output_names=output_names, dynamic_axes=dynamic, opset_version=int(opset),
                              do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    graph_inputs = [i.name for i in proto.graph.input]
    if "flow_in" not in graph_inputs:  # the baseline never reads flow_in: keep it in the interface
        proto.graph.input.append(
            onnx.helper.make_tensor_value_info("flow_in", onnx.TensorProto.FLOAT, ["batch", FLOW_CHANNELS, s, s]))
    meta = {
        "amsrc.version": __version__,
        "amsrc.variant": preset.model.variant,
        "amsrc.flow_scale": repr(float(preset.model.flow_scale)),
        "amsrc.cube_size": str(s),
        "amsrc.channels": str(c),
        "amsrc.train_stats": json.dumps(stats),
        "amsrc.score_weights": json.dumps({"w_f": preset.score.w_f, "w_p": preset.score.w_p, "w_m": preset.score.w_m}),
        "amsrc.consistency": preset.model.consistency,
        "amsrc.scores": ("s_f = 1 - cos(x, y)" if preset.model.consistency == "cosine" else
                         "s_f = mean over the D features of (x - y)^2") + " (0 without y); s_p = sum((pred - frame t)^2) over C x S x S; "
                        "s_m = mean distance of m to its amsrc.bank_k nearest training objects' (output s_m)"
                        + ("" if speed_key is None else ", m with one more column (speed - speed_mean) * speed_scale "
                           "(amsrc.train_stats), speed = mean over S x S of |dx| + |dy| of flow_in channels 6-7")
                        + "; "
                        "object score = sum of w * (s - mean) / std over the cues (amsrc.train_stats, amsrc.score_weights)",
        "amsrc.bank_k": str(preset.train.bank_k),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model_path: str | Path, out_path: str | Path, opset: int = OPSET) -> Path:
    """Write the network of checkpoint ``model_path`` (``amsrc train``/``fit``) as ONNX to ``out_path``
    (:func:`onnx_model`), atomically. Returns ``out_path``."""
    ck = Checkpoint.load(model_path)  # a bad model is named before a missing package
    _require("onnx")
    proto = onnx_model(ck.build_model("cpu", source=model_path), ck.preset, ck.train_stats.to_dict(), opset,
                       bank=ck.motion_bank)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return out_path


class OnnxRuntimeNet:
    """The network run by ONNX Runtime (CPU) instead of PyTorch: the ``engine="onnxruntime"`` of
    :class:`~amsrc.detector.AMSRC` (:meth:`from_model`, built in memory, nothing written) and the
    export check (an ONNX file). ``graph``: a path or the serialised model; ``threads``: ORT's intra-op
    threads (default: torch's current count). ``run`` takes the torch inputs of
    :func:`amsrc.model.inputs.network_inputs` and returns (x, y or None, pred, m or None) as torch tensors, for
    :func:`amsrc.scoring.cue_scores` to score with the same formulas."""

    def __init__(self, graph: str | bytes, threads: int | None = None):
        ort = _require("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    @classmethod
    def from_model(cls, model, preset, stats: dict, threads: int | None = None,
                   calibration: tuple[np.ndarray, np.ndarray] | None = None) -> OnnxRuntimeNet:
        """The torch ``model`` converted in memory (:func:`onnx_model`; the model itself is left as it is).
        ``calibration`` (appearance, flow cubes): the graph quantised to int8 on them (:func:`quantize_int8`)."""
        _require("onnxruntime")  # a missing runtime is named before the conversion is paid for
        graph = onnx_model(model, preset, stats).SerializeToString()
        if calibration is not None:
            app_in, _, flow_in = to_tensors(*calibration, preset.model.flow_scale)
            graph = quantize_int8(graph, app_in.numpy(), flow_in.numpy())
        return cls(graph, threads)

    def outputs_of(self, app_in: torch.Tensor, flow_in: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of the graph for one batch, by name, as torch tensors (one ONNX Runtime call)."""
        feed = {"app_in": np.ascontiguousarray(app_in.cpu().numpy()),
                "flow_in": np.ascontiguousarray(flow_in.cpu().numpy())}
        return {k: torch.from_numpy(v) for k, v in zip(self.outputs, self.session.run(self.outputs, feed))}

    def run(self, app_in: torch.Tensor, flow_in: torch.Tensor):
        got = self.outputs_of(app_in, flow_in)
        return got["x"], got.get("y"), got["pred"], got.get("m")


def quantize_int8(graph: bytes, app_in: np.ndarray, flow_in: np.ndarray, batch: int = 32) -> bytes:
    """The serialised fp32 ``graph`` quantised statically with ONNX Runtime's tools: QDQ, int8 weights per
    output channel, uint8 activations whose ranges are calibrated on the network inputs ``app_in``,
    ``flow_in`` (:func:`amsrc.model.inputs.to_tensors` of training cubes). The engine "onnxruntime-int8";
    ``benchmarks/int8.py`` measures what it costs in AUROC. Files go through a temporary folder only."""
    _require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(app_in):
                return None
            feed = {"app_in": app_in[self.i:self.i + batch], "flow_in": flow_in[self.i:self.i + batch]}
            self.i += batch
            return feed

    with tempfile.TemporaryDirectory(prefix="amsrc-int8-") as tmp:
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(graph)
        root = logging.getLogger()  # the quantiser warns on the root logger about constants it leaves in fp32
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(fp32), str(pre))
            quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return int8.read_bytes()


def random_cubes(n: int, cube_size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Test cubes: appearance (n, 5, S, S, C) uint8 (smooth blobs + noise), flow (n, 4, S, S, 2) float16
    (a few pixels)."""
    rng = np.random.default_rng(seed)
    s = cube_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    app = np.empty((n, 5, s, s, channels), np.uint8)
    for i in range(n):
        for t in range(5):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) + 40
            img = blob[:, :, None] + rng.normal(0, 8, (s, s, channels))
            app[i, t] = np.clip(img, 0, 255).astype(np.uint8)
    flow = rng.normal(0, 2.0, (n, 4, s, s, 2)).astype(np.float16)
    return app, flow


def check_onnx(onnx_path: str | Path, model_path: str | Path, appearance=None, flow=None,
               batch_sizes: tuple[int, ...] = (1, 7), atol: float = 1e-4, rtol: float = 1e-5,
               seed: int = 0) -> ExportCheck:
    """Run ``onnx_path`` in ONNX Runtime (CPU) and the checkpoint in PyTorch on the same cubes.

    appearance (N, 5, S, S, C) uint8 / flow (N, 4, S, S, 2) float16 cubes, or None for
    ``max(batch_sizes)`` generated ones (:func:`random_cubes`). For each batch size b the first b
    cubes are fed as one batch. PyTorch scores come from :func:`amsrc.scoring.object_scores`;
    ONNX scores come from the same formulas (:func:`amsrc.scoring.cue_scores`) on the ONNX outputs.
    ``ok`` when every score differs by at
    most ``atol + rtol * |torch score|`` (the rtol covers float32 rounding of large S_p sums).
    ``max_abs`` also reports pred, x, y, m (and S_m, where the checkpoint holds a memory).
    """
    _require("onnxruntime")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise DataError(onnx_path, "no such ONNX file")
    ck = Checkpoint.load(model_path)
    model, preset = ck.build_model("cpu", source=model_path), ck.preset
    c, s, fs = preset.prepare.channels, preset.prepare.cube_size, preset.model.flow_scale
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch sizes must be positive, got {batch_sizes}")
    need = max(batch_sizes)
    if appearance is None or flow is None:
        appearance, flow = random_cubes(need, s, c, seed=seed)
    n = check_cubes(appearance, flow, channels=c, cube_size=s)
    if n < need:
        raise DataError(None, f"the check needs at least {need} cubes (largest batch size), got {n}")
    try:
        net = OnnxRuntimeNet(str(onnx_path), threads=max(1, min(2, torch.get_num_threads())))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise DataError(onnx_path, f"ONNX Runtime cannot load it: {exc}") from None
    if not {"pred", "x"} <= set(net.outputs) or set(net.inputs) != set(INPUT_NAMES):
        raise DataError(onnx_path, f"not an amsrc export: inputs {sorted(net.inputs)}, outputs {net.outputs}")
    diffs: dict[str, float] = {}
    rel = 0.0
    ok = True
    for b in batch_sizes:
        app_b, flow_b = np.asarray(appearance[:b]), np.asarray(flow[:b])
        ref = object_scores(model, app_b, flow_b, fs, batch_size=b, bank=ck.motion_bank, bank_k=preset.train.bank_k,
                            speed_key=ck.train_stats.speed_key)
        app_in, target, flow_in = to_tensors(app_b, flow_b, fs)
        with torch.inference_mode():
            ref_out = model(app_in, flow_in)
        got = net.outputs_of(app_in, flow_in)
        x, y, pred, m = got["x"], got.get("y"), got["pred"], got.get("m")
        if (ref_out.y is None) != (y is None):
            raise DataError(onnx_path, f"the ONNX graph's outputs {net.outputs} do not match the model variant "
                                       f"{preset.model.variant!r}")
        # S_m: the graph's own where it has one (its memory is a constant of the file), else from its m
        bank = None if ck.motion_bank is None or "s_m" in got else torch.from_numpy(ck.motion_bank)
        key = None if bank is None or m is None else memory_key(m, flow_in, ck.train_stats.speed_key)
        f, p, mr = cue_scores(pred, target, x, y, key, bank, preset.train.bank_k, preset.model.consistency)
        mr = got.get("s_m", mr)
        s_f, s_p = f.numpy(), p.numpy()
        pairs = {"pred": (pred, ref_out.pred), "x": (x, ref_out.x)}
        if ref_out.y is not None:
            pairs["y"] = (y, ref_out.y)
            pairs["m"] = (m, ref_out.m)
        for k, (a, r) in pairs.items():
            diffs[k] = max(diffs.get(k, 0.0), float(np.abs(a.numpy() - r.float().numpy()).max()))
        d_f = float(np.abs(s_f - ref.s_f).max())
        d_p = float(np.abs(s_p - ref.s_p).max())
        cues = [(s_f, ref.s_f), (s_p, ref.s_p)]
        if mr is not None:
            cues.append((mr.numpy(), ref.s_m))
            diffs["s_m"] = max(diffs.get("s_m", 0.0), float(np.abs(mr.numpy() - ref.s_m).max()))
        for got_s, ref_s in cues:
            ok = ok and bool(np.all(np.abs(got_s - ref_s) <= atol + rtol * np.abs(ref_s)))
        diffs["s_f"] = max(diffs.get("s_f", 0.0), d_f)
        diffs["s_p"] = max(diffs.get("s_p", 0.0), d_p)
        rel = max(rel, float((np.abs(s_p - ref.s_p) / np.maximum(np.abs(ref.s_p), 1.0)).max()))
    return ExportCheck(str(onnx_path), batch_sizes, need, float(atol), float(rtol), diffs, rel, ok)
