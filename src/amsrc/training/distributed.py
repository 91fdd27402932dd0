"""Data parallel training under ``torchrun``: which process this is, and sums over processes.

Under ``torchrun --nproc_per_node K`` (WORLD_SIZE > 1) each process takes every K-th cube of the
epoch's permutation; the gradients are averaged by DDP (gloo on CPU, nccl on CUDA). Outside
torchrun everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when init_dist initialised the process group

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device: str) -> Dist:
    """The process group of a torchrun launch (initialised here if needed), or one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()

    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def all_sum(values: list[float], d: Dist, dev: torch.device) -> np.ndarray:
    """Sum a few float64 numbers over all processes."""
    t = torch.tensor(values, dtype=torch.float64)
    if d.world > 1:
        t = t.to(dev)
        dist.all_reduce(t)
    return t.cpu().numpy()


def broadcast_buffers(model: torch.nn.Module, d: Dist) -> None:
    """BatchNorm running statistics are per process: every process takes rank 0's (the saved model)."""
    if d.world > 1:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def finish(d: Dist) -> None:
    """Wait for every process; tear the group down if :func:`init_dist` made it."""
    if d.world > 1:
        dist.barrier()
        if d.owns_group:
            dist.destroy_process_group()
