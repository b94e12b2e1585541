"""Multi-process training on PyTorch's own engine: torchrun sets the environment, DDP does the rest.

    torchrun --nproc_per_node=2 -m resnets train --model resnet20 --dataset cifar10 ...

Each rank trains on its slice of every global batch (gloo on the CPU, NCCL on CUDA); only
rank 0 writes files. Without torchrun's variables this is a single process and costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..errors import ResnetsError


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Whether this context joined the process group (and so leaves it): a sweep joins once for
    # all its members, since leaving and joining again between runs can hang on the rendezvous.
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device: torch.device) -> Context:
    """Join the process group when launched by torchrun; pick this rank's GPU."""
    if not launched_by_torchrun():
        return Context(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank=rank, world=world, device=device, owns_group=owns)


def all_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum a tensor over all ranks, in place on its device (itself for one process)."""
    if ctx.distributed:
        dist.all_reduce(values)
    return values


def barrier(ctx: Context) -> None:
    """Wait for every rank."""
    if ctx.distributed:
        dist.barrier()


def teardown(ctx: Context) -> None:
    """Leave the process group."""
    if ctx.distributed and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def sync_batchnorm(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """BatchNorm statistics over the global batch instead of each rank's slice."""
    if ctx.device.type != "cuda":
        raise ResnetsError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """DistributedDataParallel around the model when there are several processes."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
