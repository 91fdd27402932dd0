"""The training loop: Adam, StepLR, seeded, resumable, data-parallel with torchrun.

    train_model(data, preset, out_dir) -> out_dir/model.pt

``data`` is a list of per-clip cube arrays ``(appearance (N, 5, S, S, C) uint8, flow (N, 4, S, S, 2)
float16)``, typically memory-mapped from the cube store; batches are gathered across clips by a
global index, so no more than one batch is ever read into memory.

Files in ``out_dir`` (written by rank 0, each atomically):
    last.pt         training state after the latest epoch (model, optimizer, scheduler, RNG, config, epoch)
    train_log.csv   one row per epoch: lr, loss terms, samples/s, seconds
    model.pt        the final model (last epoch, never chosen by a test score) with the training
                    score statistics: a :class:`~amsrc.training.checkpoint.Checkpoint`
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
import dataclasses
import io
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import StepLR
from tqdm import tqdm

from amsrc.config import Preset, config_diff
from amsrc.errors import ConfigError, DataError
from amsrc.model.inputs import check_cubes, mirror_cubes, to_channels_last, to_tensors
from amsrc.model.losses import amsrc_loss, decay_weights
from amsrc.model.network import build_model
from amsrc.prepare.features import mean_l1_speeds
from amsrc.scoring import TrainStats, motion_rarity, object_scores
from amsrc.training import distributed
from amsrc.training.checkpoint import Checkpoint, cpu_state, load_state, save_state
from amsrc.training.distributed import Dist, all_sum
from amsrc.utils import atomic_path, log, show_bars

LOG_FIELDS = ["epoch", "lr", "loss", "intensity", "gradient", "consistency", "weight_decay", "samples_per_s", "seconds"]


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


# ---------------------------------------------------------------- resume
# settings a resumed run may change (the memory is built after the last epoch, so its settings too; the
# score settings never reach training: a finished run re-scored with other weights or frame rules keeps its weights)
_RESUME_MAY_CHANGE = {"name", "train.epochs", "train.threads", "train.bank_size", "train.bank_k", "train.bank_speed",
                      "train.calib_size"}
_RESUME_MAY_CHANGE_SECTIONS = ("score.",)


# ---------------------------------------------------------------- log
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
                progress: bool = True, background: np.ndarray | None = None, store_key: str | None = None) -> Path:
    """Train ``preset.model`` on ``data`` for ``preset.train.epochs`` epochs; return out_dir/model.pt.

    ``background``: the training background of box method "bg", kept in model.pt for scoring;
    ``store_key``: the key of the cube store the data came from, recorded in model.pt.

    ``resume``: continue from out_dir/last.pt when it exists (same settings and data required; the
    epoch count may be raised to train further); otherwise start afresh.
    """
    tc, mc = preset.train, preset.model
    out_dir = Path(out_dir)
    cubes = CubeSet(data, channels=preset.prepare.channels, cube_size=preset.prepare.cube_size)
    n = len(cubes)
    if n == 0:
        raise DataError(None, "no training cubes: the training clips produced no objects")
    if tc.epochs < 1 or tc.batch_size < 1:
        raise ConfigError(f"train.epochs and train.batch_size must be >= 1, got {tc.epochs}, {tc.batch_size}")
    if tc.bank_size < 0 or tc.bank_k < 1:
        raise ConfigError(f"train.bank_size must be >= 0 and train.bank_k >= 1, got {tc.bank_size}, {tc.bank_k}")
    if not (math.isfinite(tc.bank_speed) and tc.bank_speed >= 0):
        raise ConfigError(f"train.bank_speed must be a finite number >= 0, got {tc.bank_speed}")
    if preset.score.w_m != 0 and (tc.bank_size == 0 or mc.variant == "baseline"):
        raise ConfigError(f"score.w_m = {preset.score.w_m} needs S_m: a motion stream (variant {mc.variant!r}) "
                          f"and a memory of training objects (train.bank_size = {tc.bank_size})")
    if preset.score.w_m != 0 and n < memory_min_cubes(tc.bank_k):
        raise DataError(None, f"{n} training cubes are too few for S_m (score.w_m != 0) with train.bank_k = "
                              f"{tc.bank_k}: at least {memory_min_cubes(tc.bank_k)} are needed")
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)

    d = distributed.init_dist(device)
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
    start = _resume(last_path, preset, n, model, optimizer, scheduler) if resume and last_path.exists() else 0
    rows = _read_log(log_path, start) if start > 0 else []

    net = model
    if d.world > 1:
        net = DistributedDataParallel(model, device_ids=[d.local_rank] if dev.type == "cuda" else None,
                                      gradient_as_bucket_view=True)
    weights = decay_weights(model)
    per_rank_batch = max(1, tc.batch_size // d.world)
    per_rank = math.ceil(n / d.world)

    if d.main and start < tc.epochs:
        log.info(f"training on {n} cubes for {tc.epochs - start} epoch(s); loss = intensity (mean squared error of "
                 "the predicted frame t) + gradient (its image-gradient error) + consistency ("
                 f"{'1 - cos' if preset.model.consistency == 'cosine' else 'mean squared difference'} of the appearance "
                 "and motion bottlenecks) + lambda x the sum of squared weights (shown as 'weight decay': the sum, before lambda)")
    for epoch in range(start, tc.epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng([tc.seed, epoch]).permutation(n)
        mine = np.resize(order, per_rank * d.world)[d.rank :: d.world]  # padded like DistributedSampler
        lr = optimizer.param_groups[0]["lr"]
        bar = _bar(math.ceil(len(mine) / per_rank_batch), f"epoch {epoch + 1}/{tc.epochs}", show_bars(progress) and d.main)
        sums = _epoch(net, model, optimizer, cubes, mine, per_rank_batch, preset, weights, dev, bar)
        scheduler.step()
        sums = all_sum(list(sums), d, dev)
        seconds = time.perf_counter() - t0
        means = sums[:5] / sums[5]
        rows.append({"epoch": epoch + 1, "lr": lr, **dict(zip(LOG_FIELDS[2:7], map(float, means))),
                     "samples_per_s": round(sums[5] / seconds, 2), "seconds": round(seconds, 3)})
        if d.main:
            save_state({"model": cpu_state(model), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()},
                        "config": preset.to_dict(), "epoch": epoch + 1, "n_cubes": n, "world_size": d.world}, last_path)
            _write_log(log_path, rows)
            r = rows[-1]
            log.info(f"epoch {r['epoch']}/{tc.epochs}  loss {r['loss']:.5f}  intensity {r['intensity']:.5f}  "
                     f"gradient {r['gradient']:.5f}  consistency {r['consistency']:.5f}  "
                     f"weight decay {r['weight_decay']:.1f}  lr {r['lr']:.2e}  {r['samples_per_s']:.0f} cubes/s  "
                     f"{r['seconds']:.1f} s")

    distributed.broadcast_buffers(model, d)
    stats = training_stats(model, cubes, mc.flow_scale, d, dev, batch_size=max(512, per_rank_batch))
    # every process builds the same memory (all cubes, encoders only); the main one saves it
    memory = motion_memory(model, cubes, mc.flow_scale, tc.bank_size, tc.bank_k, tc.seed, dev,
                           batch_size=max(512, per_rank_batch), required=preset.score.w_m != 0,
                           speed=tc.bank_speed)
    bank = None
    if memory is not None:
        bank, m_mean, m_std, speed_key = memory
        stats = dataclasses.replace(stats, s_m_mean=m_mean, s_m_std=m_std,
                                    **({} if speed_key is None else {"speed_mean": speed_key[0],
                                                                    "speed_scale": speed_key[1]}))
    if memory is not None and d.main:
        log.info(f"S_m memory: {len(bank)} of {n} training objects; S_m over the training objects "
                 f"(against the other clips') mean {m_mean:.4f}, std {m_std:.4f}")
    if d.main:
        Checkpoint.of(model, preset, stats, epoch=tc.epochs, n_cubes=n, background=background,
                      store_key=store_key, motion_bank=bank,
                      calibration=calibration_cubes(cubes, tc.calib_size, tc.seed)).save(model_path)
    distributed.finish(d)
    return model_path


def _resume(last_path: Path, preset: Preset, n: int, model, optimizer, scheduler) -> int:
    """Load the interrupted run's state from ``last_path`` into model, optimizer, scheduler and torch's
    RNG after checking it is the same run; return the number of epochs it had finished."""
    state = load_state(last_path)
    # read through Preset.from_dict: settings added since the run was written take the value that
    # reproduces it (e.g. prepare.scale 1.0), so they do not count as changed
    try:
        before = Preset.from_dict(state["config"]).to_dict()
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{last_path}: cannot resume, its settings are not readable by this version ({exc}); "
                          "train again without resume") from None
    changed = [k for k in config_diff(before, preset.to_dict())
               if k not in _RESUME_MAY_CHANGE and not k.startswith(_RESUME_MAY_CHANGE_SECTIONS)]
    if changed:
        raise ConfigError(f"{last_path}: cannot resume, settings differ from the interrupted run: {', '.join(changed)}")
    if state["n_cubes"] != n:
        raise DataError(last_path, f"the interrupted run trained on {state['n_cubes']} cubes, the data now has {n}")
    if state["epoch"] > preset.train.epochs:
        raise ConfigError(f"{last_path}: already trained {state['epoch']} epochs, more than "
                          f"train.epochs={preset.train.epochs}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["epoch"])


def _epoch(net, model, optimizer, cubes: CubeSet, mine: np.ndarray, batch: int, preset: Preset, weights,
           dev: torch.device, bar) -> np.ndarray:
    """One pass over this process's cube indices ``mine`` in batches of ``batch`` (sorted within a
    batch, for memory-mapped reads). Returns the sums (6,): loss terms (total, intensity, gradient,
    consistency, weight_decay) weighted by batch size, and the number of cubes."""
    tc, mc = preset.train, preset.model
    sums = np.zeros(6)
    model.train()
    for s in range(math.ceil(len(mine) / batch)):
        idx = np.sort(mine[s * batch : (s + 1) * batch])
        app_in, target, flow_in = to_tensors(*cubes.gather(idx), mc.flow_scale, channels_last=mc.channels_last)
        if tc.flip:  # torch's RNG: saved in last.pt, so a resumed run mirrors the same cubes
            app_in, target, flow_in = mirror_cubes(app_in, target, flow_in, torch.rand(len(idx)) < 0.5)
        app_in, target, flow_in = (t.to(dev, non_blocking=True) for t in (app_in, target, flow_in))
        terms = amsrc_loss(net(app_in, flow_in), target, tc, weights, mc.consistency)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        sums += np.append(torch.stack(terms).detach().double().cpu().numpy() * len(idx), len(idx))
        if bar is not None:
            m = sums[:5] / sums[5]
            bar.set_postfix({"loss": f"{m[0]:.4f}", "int": f"{m[1]:.4f}", "grad": f"{m[2]:.4f}",
                             "cons": f"{m[3]:.4f}", "sum W^2": f"{m[4]:.1f}"}, refresh=False)
            bar.update()
    if bar is not None:
        bar.close()
    return sums


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def training_stats(model: torch.nn.Module, cubes: CubeSet, flow_scale: float, d: Dist | None = None,
                   dev: torch.device | str = "cpu", batch_size: int = 512) -> TrainStats:
    """Mean and (population) std of S_f and S_p over ALL cubes under ``model`` in eval mode;
    with several processes each scores a contiguous share and the sums are all-reduced."""
    d = d or Dist()
    n = len(cubes)
    lo, hi = d.rank * n // d.world, (d.rank + 1) * n // d.world
    acc = np.zeros(5)  # sum s_f, sum s_f^2, sum s_p, sum s_p^2, count
    for appearance, flow in cubes.ranges(lo, hi):
        sc = object_scores(model, appearance, flow, flow_scale, batch_size=batch_size, device=str(dev))
        f, p = sc.s_f.astype(np.float64), sc.s_p.astype(np.float64)
        acc += [f.sum(), (f * f).sum(), p.sum(), (p * p).sum(), len(f)]
    acc = all_sum(list(acc), d, torch.device(dev))
    cnt = acc[4]
    f_mean, p_mean = acc[0] / cnt, acc[2] / cnt
    f_std = math.sqrt(max(acc[1] / cnt - f_mean**2, 0.0))
    p_std = math.sqrt(max(acc[3] / cnt - p_mean**2, 0.0))
    return TrainStats(float(f_mean), float(f_std), float(p_mean), float(p_std))


def memory_groups(cubes: CubeSet, parts: int = 4) -> np.ndarray:
    """(N,) group of each training cube for S_m's statistics: its clip, or, with a single clip, which of
    ``parts`` consecutive parts of it (objects of one track are near-copies of each other, so a training
    object is measured against the memory of the other clips, as a new object would be)."""
    n = len(cubes)
    if len(cubes.clips) > 1:
        return (np.searchsorted(cubes.starts, np.arange(n), side="right") - 1).astype(np.int64)
    return (np.arange(n) * parts // max(n, 1)).astype(np.int64)


def memory_min_cubes(k: int, parts: int = 4) -> int:
    """Fewest training cubes with which every group keeps ``k`` memory entries outside itself (one clip cut
    in ``parts``; with several clips the clips' sizes decide, checked when the memory is built)."""
    return math.ceil((k + 1) * parts / (parts - 1))


def _draw(n: int, size: int, seed: int, stream: int) -> np.ndarray:
    """Sorted indices of up to ``size`` of ``n`` training cubes, drawn without replacement with ``seed``;
    ``stream`` keeps the draws of different uses apart (all ``n`` when there are no more)."""
    return np.arange(n) if n <= size else np.sort(np.random.default_rng([seed, stream]).choice(n, size, replace=False))


def memory_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Which of ``n`` training cubes S_m's memory keeps (up to ``size``, drawn with ``seed``), in the memory's
    row order."""
    return _draw(n, size, seed, 7)


def calibration_cubes(cubes: CubeSet, size: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to ``size`` training cubes drawn with ``seed`` (appearance uint8, flow float16), kept in model.pt for
    the "onnxruntime-int8" engine to calibrate on; None when ``size`` is 0."""
    if size <= 0 or len(cubes) == 0:
        return None
    a, f = cubes.gather(_draw(len(cubes), size, seed, 11))
    return np.ascontiguousarray(a, dtype=np.uint8), np.ascontiguousarray(f, dtype=np.float16)


def network_speeds(flow: np.ndarray, flow_scale: float) -> np.ndarray:
    """(N,) float64 :func:`amsrc.scoring.object_speed` of stored cubes' flows (N, 4, S, S, 2), without building
    the network input: the mean |dx| + |dy| of the last flow, / ``flow_scale``."""
    return mean_l1_speeds(flow).astype(np.float64) / flow_scale


def with_speed(m: np.ndarray, speeds: np.ndarray, speed_key: tuple[float, float]) -> np.ndarray:
    """Pooled motion bottlenecks (N, w3) and :func:`network_speeds` (N,) -> the memory keys (N, w3 + 1) float32:
    the numpy twin of :func:`amsrc.scoring.memory_key` for objects read from a store."""
    mean, scale = speed_key
    return np.concatenate([m, ((speeds - mean) * scale)[:, None]], 1, dtype=np.float32)


def motion_memory(model: torch.nn.Module, cubes: CubeSet, flow_scale: float, size: int, k: int, seed: int,
                  dev: torch.device | str = "cpu", batch_size: int = 512, required: bool = False,
                  speed: float = 0.0):
    """S_m's memory and statistics: the memory keys (:func:`amsrc.scoring.memory_key`) of up to ``size``
    training cubes (drawn with ``seed``), and the mean and std of S_m over ALL training cubes, each measured
    against the memory entries of the other groups (:func:`memory_groups`). Returns (bank (K, D) float32,
    mean, std, speed_key), or None when the model has no motion stream or ``size`` is 0, or when too few
    objects lie outside the largest group to measure S_m (a DataError instead when ``required``: the score
    uses S_m). Only the encoders run.

    ``speed`` (train.bank_speed) > 0 adds the object's speed as a column (D = w3 + 1), standardised over the
    training cubes and weighed so that its spread is ``speed`` times that of the pooled bottleneck (the root
    of the summed variances of its w3 columns): speed_key = (mean speed, speed * that root / speed std).
    Otherwise D = w3 and speed_key is None."""
    if size <= 0 or getattr(model, "motion", None) is None:
        return None
    feats, speeds = [], []
    for a, f in cubes.ranges(0, len(cubes)):
        feats.append(object_scores(model, a, f, flow_scale, batch_size=batch_size, device=str(dev), need_pred=False,
                                   keep_m=True).m)
        speeds.append(network_speeds(f, flow_scale))
    m = np.concatenate(feats).astype(np.float32)
    speed_key = None
    if speed > 0:
        v = np.concatenate(speeds)
        spread, v_std = float(np.sqrt(m.astype(np.float64).var(0).sum())), float(v.std())
        # a scene where every object moves alike (std 0) gets a zero column: the speed then tells nothing
        speed_key = (float(v.mean()), speed * spread / v_std if v_std > 0 else 0.0)
        m = with_speed(m, v, speed_key)
    groups = memory_groups(cubes)
    n = len(m)
    pick = memory_indices(n, size, seed)
    free = len(pick) - np.bincount(groups[pick]).max()
    if free < k and not required:
        log.info(f"no S_m memory: {free} training objects outside the largest clip, fewer than train.bank_k = {k}")
        return None
    if free < k:
        raise DataError(None, f"S_m's memory holds only {free} training objects outside the largest clip, fewer "
                              f"than train.bank_k = {k}: train on more footage, lower bank_k, or set bank_size 0")
    s_m = motion_rarity(torch.from_numpy(m).to(dev), torch.from_numpy(m[pick]).to(dev), k, groups,
                        groups[pick]).double().cpu().numpy()
    return m[pick], float(s_m.mean()), float(s_m.std()), speed_key
