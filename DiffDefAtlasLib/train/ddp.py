"""Several processes, one model: ``torchrun`` + DistributedDataParallel (NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node=N -m DiffDefAtlasLib.cli.main train ...`` sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and the rendezvous address; :func:`init_distributed` reads them. With ``WORLD_SIZE`` unset or 1 the
training runs in one process and nothing is initialised.

Example:
    >>> context = init_distributed("cpu")
    >>> context.world_size, context.is_main
    (1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
from ..device import select_device


@dataclass
class DistributedContext:
    """Where this process stands: rank, number of processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """Initialise the process group from the environment when ``WORLD_SIZE > 1``; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    chosen = select_device(str(device))
    if world_size <= 1:
        return DistributedContext(0, 1, chosen)
    import torch.distributed as dist

    if chosen.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, chosen)


def wrap_model(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` in a distributed run, else ``model`` itself."""
    if not context.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return cast(torch.nn.Module, model.module) if hasattr(model, "module") else model


def shard_indices(indices: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """This rank's share of a batch of indices (every rank draws the same batch from the same seed)."""
    return indices[context.rank :: context.world_size] if context.distributed else indices


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if context.distributed:
        import torch.distributed as dist

        dist.barrier()


def cleanup(context: DistributedContext) -> None:
    """Destroy the process group at the end of a distributed run."""
    if context.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
