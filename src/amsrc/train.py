"""The training loop: Adam, StepLR, seeded, resumable, data-parallel with torchrun.

    train_model(data, preset, out_dir) -> out_dir/model.pt

``data`` is a list of per-clip cube arrays ``(appearance (N, 5, S, S, C) uint8, flow (N, 4, S, S, 2)
float16)``, typically memory-mapped from the cube store; batches are gathered across clips by a
global index, so no more than one batch is ever read into memory.

Files in ``out_dir`` (written by rank 0, each atomically):
    last.pt         training state after the latest epoch (model, optimizer, scheduler, RNG, config, epoch)
    train_log.csv   one row per epoch: lr, loss terms, samples/s, seconds
    model.pt        the final model (last epoch, never chosen by a test score) with the training
                    score statistics: {"model", "config", "train_stats", "version", "epoch", ...}
All checkpoints load with ``torch.load(weights_only=True)``.

Determinism: initial weights come from ``torch.manual_seed(seed)``, the data order of epoch e from
``numpy.random.default_rng([seed, e])``; nothing else is random. So a run that is interrupted and
resumed (``resume=True``) ends with exactly the weights of an uninterrupted run on the same machine,
thread count and number of processes.

Data parallel: under ``torchrun --nproc_per_node K`` (WORLD_SIZE > 1) each process takes every K-th
cube of the epoch's permutation (padded like DistributedSampler) in batches of batch_size // K, the
gradients are averaged by DDP (gloo on CPU, nccl on CUDA; BatchNorm stays per-process).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from amsrc import __version__
from amsrc.config import Preset
from amsrc.errors import ConfigError, DataError
from amsrc.inference import check_cubes, object_scores, to_tensors
from amsrc.model.losses import amsrc_loss, decay_weights
from amsrc.model.network import build_model
from amsrc.utils import atomic_path

MODEL_FORMAT = "amsrc-model"  # "format" of model.pt
STATE_FORMAT = "amsrc-train-state"  # "format" of last.pt
LOG_FIELDS = ["epoch", "lr", "loss", "intensity", "gradient", "consistency", "weight_decay", "samples_per_s", "seconds"]
STAT_KEYS = ("s_f_mean", "s_f_std", "s_p_mean", "s_p_std")


# ---------------------------------------------------------------- data
class CubeSet:
    """Several clips' cube arrays seen as one indexable set (nothing is copied)."""

    def __init__(self, data, channels: int, cube_size: int):
        self.clips = []
        counts = []
        for appearance, flow in data:
            counts.append(check_cubes(appearance, flow, channels=channels, cube_size=cube_size))
            self.clips.append((appearance, flow))
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)  # (n_clips + 1,)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def gather(self, idx: np.ndarray):
        """Cubes at sorted global indices ``idx`` -> (appearance (B, 5, S, S, C) uint8, flow (B, 4, S, S, 2))."""
        clip_of = np.searchsorted(self.starts, idx, side="right") - 1
        apps, flows = [], []
        for k in np.unique(clip_of):
            local = idx[clip_of == k] - self.starts[k]
            appearance, flow = self.clips[k]
            apps.append(np.asarray(appearance[local]))
            flows.append(np.asarray(flow[local]))
        if len(apps) == 1:
            return apps[0], flows[0]
        return np.concatenate(apps), np.concatenate(flows)

    def ranges(self, lo: int, hi: int):
        """Yield (appearance, flow) slices covering global indices [lo, hi), clip by clip."""
        for k, (appearance, flow) in enumerate(self.clips):
            a, b = max(lo, int(self.starts[k])), min(hi, int(self.starts[k + 1]))
            if a < b:
                a0, b0 = a - int(self.starts[k]), b - int(self.starts[k])
                yield appearance[a0:b0], flow[a0:b0]


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Channels-last weights, in place. 1x1 kernels keep standard strides (for them both layouts are
    the same memory, and DDP's gradient buckets expect the strides autograd gives their gradients)."""
    model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        if p.dim() == 4 and p.shape[-2:] == (1, 1):
            p.data = p.data.clone(memory_format=torch.contiguous_format)
    return model


# ---------------------------------------------------------------- processes
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when train_model initialised the process group

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def _all_sum(values: list[float], d: _Dist, dev: torch.device) -> np.ndarray:
    """Sum a few float64 numbers over all processes."""
    t = torch.tensor(values, dtype=torch.float64)
    if d.world > 1:
        import torch.distributed as dist

        t = t.to(dev)
        dist.all_reduce(t)
    return t.cpu().numpy()


# ---------------------------------------------------------------- checkpoints
def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif (list(va) if isinstance(va, (list, tuple)) else va) != (list(vb) if isinstance(vb, (list, tuple)) else vb):
            out.append(f"{prefix}{k}")
    return out


_RESUME_MAY_CHANGE = {"name", "train.epochs", "train.threads"}


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not usable
        raise DataError(path, f"cannot read the training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DataError(path, "not an amsrc training state (expected last.pt written by amsrc train)")
    return state


def _write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _read_log(path: Path, upto_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if int(row["epoch"]) <= upto_epoch]


# ---------------------------------------------------------------- training
def train_model(data, preset: Preset, out_dir: Path, resume: bool = False, device: str = "cpu",
                progress: bool = True) -> Path:
    """Train ``preset.model`` on ``data`` for ``preset.train.epochs`` epochs; return out_dir/model.pt.

    ``resume``: continue from out_dir/last.pt when it exists (same settings and data required; the
    epoch count may be raised to train further); otherwise start afresh.
    """
    from torch.optim.lr_scheduler import StepLR

    tc, mc = preset.train, preset.model
    out_dir = Path(out_dir)
    cubes = CubeSet(data, channels=preset.prepare.channels, cube_size=preset.prepare.cube_size)
    n = len(cubes)
    if n == 0:
        raise DataError(None, "no training cubes: the training clips produced no objects")
    if tc.epochs < 1 or tc.batch_size < 1:
        raise ConfigError(f"train.epochs and train.batch_size must be >= 1, got {tc.epochs}, {tc.batch_size}")
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)

    d = _init_dist(device)
    if device.startswith("cuda") and d.world > 1:
        torch.cuda.set_device(d.local_rank)
        device = f"cuda:{d.local_rank}"
    dev = torch.device(device)

    torch.manual_seed(tc.seed)
    model = build_model(mc, preset.prepare.channels, preset.prepare.cube_size)
    if mc.channels_last:
        to_channels_last(model)
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    scheduler = StepLR(optimizer, step_size=tc.lr_step, gamma=tc.lr_decay)

    last_path, log_path, model_path = out_dir / "last.pt", out_dir / "train_log.csv", out_dir / "model.pt"
    start = 0
    if resume and last_path.exists():
        state = _load_state(last_path)
        changed = [k for k in _config_diff(state["config"], preset.to_dict()) if k not in _RESUME_MAY_CHANGE]
        if changed:
            raise ConfigError(f"{last_path}: cannot resume, settings differ from the interrupted run: {', '.join(changed)}")
        if state["n_cubes"] != n:
            raise DataError(last_path, f"the interrupted run trained on {state['n_cubes']} cubes, the data now has {n}")
        if state["epoch"] > tc.epochs:
            raise ConfigError(f"{last_path}: already trained {state['epoch']} epochs, more than train.epochs={tc.epochs}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        start = int(state["epoch"])
    rows = _read_log(log_path, start) if start > 0 else []

    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if dev.type == "cuda" else None,
                                      gradient_as_bucket_view=True)
    weights = decay_weights(model)
    per_rank_batch = max(1, tc.batch_size // d.world)
    per_rank = math.ceil(n / d.world)

    for epoch in range(start, tc.epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng([tc.seed, epoch]).permutation(n)
        mine = np.resize(order, per_rank * d.world)[d.rank :: d.world]  # padded like DistributedSampler
        steps = math.ceil(len(mine) / per_rank_batch)
        lr = optimizer.param_groups[0]["lr"]
        sums = np.zeros(6)  # total, intensity, gradient, consistency, weight_decay, cubes
        model.train()
        bar = _bar(steps, f"epoch {epoch + 1}/{tc.epochs}", progress and d.main)
        for s in range(steps):
            idx = np.sort(mine[s * per_rank_batch : (s + 1) * per_rank_batch])
            app_in, target, flow_in = to_tensors(*cubes.gather(idx), mc.flow_scale, channels_last=mc.channels_last)
            app_in, target, flow_in = (t.to(dev, non_blocking=True) for t in (app_in, target, flow_in))
            terms = amsrc_loss(net(app_in, flow_in), target, tc, weights)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            sums += np.append(torch.stack(terms).detach().double().cpu().numpy() * len(idx), len(idx))
            if bar is not None:
                m = sums[:5] / sums[5]
                bar.set_postfix({"loss": f"{m[0]:.4f}", "int": f"{m[1]:.4f}", "grad": f"{m[2]:.4f}",
                                 "cons": f"{m[3]:.4f}", "wd": f"{m[4]:.1f}"}, refresh=False)
                bar.update()
        if bar is not None:
            bar.close()
        scheduler.step()
        sums = _all_sum(list(sums), d, dev)
        seconds = time.perf_counter() - t0
        means = sums[:5] / sums[5]
        rows.append({"epoch": epoch + 1, "lr": lr, **dict(zip(LOG_FIELDS[2:7], map(float, means))),
                     "samples_per_s": round(sums[5] / seconds, 2), "seconds": round(seconds, 3)})
        if d.main:
            _save({"format": STATE_FORMAT, "model": _cpu_state(model), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()},
                   "config": preset.to_dict(), "epoch": epoch + 1, "n_cubes": n, "world_size": d.world,
                   "version": __version__}, last_path)
            _write_log(log_path, rows)
            if progress:
                r = rows[-1]
                print(f"epoch {r['epoch']}/{tc.epochs}  loss {r['loss']:.5f}  intensity {r['intensity']:.5f}  "
                      f"gradient {r['gradient']:.5f}  consistency {r['consistency']:.5f}  "
                      f"{r['samples_per_s']:.0f} cubes/s  {r['seconds']:.1f} s", flush=True)

    if d.world > 1:  # BatchNorm running statistics are per process: every process takes rank 0's (the saved model)
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)
    stats = training_stats(model, cubes, mc.flow_scale, d, dev, batch_size=max(512, per_rank_batch))
    if d.main:
        save_checkpoint(model_path, model, preset, stats, epoch=tc.epochs, n_cubes=n)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        if d.owns_group:
            dist.destroy_process_group()
    return model_path


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def training_stats(model: torch.nn.Module, cubes: CubeSet, flow_scale: float, d: _Dist | None = None,
                   dev: torch.device | str = "cpu", batch_size: int = 512) -> dict[str, float]:
    """Mean and (population) std of S_f and S_p over ALL cubes under ``model`` in eval mode;
    with several processes each scores a contiguous share and the sums are all-reduced."""
    d = d or _Dist()
    n = len(cubes)
    lo, hi = d.rank * n // d.world, (d.rank + 1) * n // d.world
    acc = np.zeros(5)  # sum s_f, sum s_f^2, sum s_p, sum s_p^2, count
    for appearance, flow in cubes.ranges(lo, hi):
        sc = object_scores(model, appearance, flow, flow_scale, batch_size=batch_size, device=str(dev))
        f, p = sc.s_f.astype(np.float64), sc.s_p.astype(np.float64)
        acc += [f.sum(), (f * f).sum(), p.sum(), (p * p).sum(), len(f)]
    acc = _all_sum(list(acc), d, torch.device(dev))
    cnt = acc[4]
    f_mean, p_mean = acc[0] / cnt, acc[2] / cnt
    f_std = math.sqrt(max(acc[1] / cnt - f_mean**2, 0.0))
    p_std = math.sqrt(max(acc[3] / cnt - p_mean**2, 0.0))
    return {"s_f_mean": float(f_mean), "s_f_std": float(f_std), "s_p_mean": float(p_mean), "s_p_std": float(p_std)}


# ---------------------------------------------------------------- final checkpoints
def save_checkpoint(path: str | Path, model: torch.nn.Module, preset: Preset, train_stats: dict[str, float],
                    epoch: int | None = None, **extra) -> Path:
    """Write a final model checkpoint atomically: {"format", "model" (CPU state dict), "config",
    "train_stats" (s_f_mean, s_f_std, s_p_mean, s_p_std), "version", "epoch", **extra} (plain types and
    tensors only, so ``torch.load(weights_only=True)`` reads it)."""
    stats = {k: float(train_stats[k]) for k in STAT_KEYS}
    obj = {"format": MODEL_FORMAT, "model": _cpu_state(model), "config": preset.to_dict(), "train_stats": stats,
           "version": __version__, "epoch": epoch, **extra}
    _save(obj, Path(path))
    return Path(path)


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """Load a final checkpoint (model.pt, or any dict with model, config, train_stats, version) ->
    (model in eval mode on ``device``, Preset, train_stats dict with keys s_f_mean, s_f_std, s_p_mean,
    s_p_std). DataError for anything else (a training state last.pt, a foreign file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, f"not an amsrc checkpoint: torch.load(weights_only=True) failed "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
        raise DataError(path, "this is a training state (last.pt), not a final model; finish training "
                              "with --resume to get model.pt")
    needed = {"model", "config", "train_stats", "version"}
    if not isinstance(state, dict) or state.get("format", MODEL_FORMAT) != MODEL_FORMAT or not needed <= set(state):
        raise DataError(path, "not an amsrc model checkpoint (expected a file written by amsrc train: "
                              "a dict with model, config, train_stats, version)")
    from amsrc.config import Preset as _Preset

    try:
        preset = _Preset.from_dict(state["config"])
    except (KeyError, TypeError) as exc:
        raise DataError(path, f"the checkpoint's config does not match this amsrc version {__version__} "
                              f"(written by {state['version']}): {exc}") from None
    model = build_model(preset.model, preset.prepare.channels, preset.prepare.cube_size)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise DataError(path, f"the weights do not fit the network its config describes: {exc}") from None
    if preset.model.channels_last:
        to_channels_last(model)
    model.to(device).eval()
    stats = {k: float(state["train_stats"][k]) for k in STAT_KEYS}
    return model, preset, stats
