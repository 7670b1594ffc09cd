"""Distributed helpers: one process, or one of N started by ``torchrun`` (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from derain.device import launch


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1), if any."""
    where = launch()
    world = where.world
    if world <= 1:
        return Context(0, 1, 0, device)
    rank, local_rank = where.rank, where.local_rank
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, local_rank, device)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def mean(ctx: Context, value: float) -> float:
    """The mean of a scalar over every process."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t) / ctx.world


def any_true(ctx: Context, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_difference(ctx: Context, model: nn.Module) -> float:
    """The largest absolute difference between this process's parameters and rank 0's, over every process."""
    if not ctx.distributed:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
