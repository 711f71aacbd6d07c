"""Data-parallel helpers for ``torchrun``: one process per device, gradients averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on CUDA).

``torchrun --nproc_per_node 2 -m stn train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them. Without them everything runs in one
process and these helpers do nothing.

Example:
    >>> ctx = init_distributed(torch.device("cpu"))
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_reduce_sum", "any_process", "init_distributed"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables (no-op without them).

    The group is joined once per process and left when the process exits, not after each run: destroying and
    re-creating it between two runs of one job (an experiment's rows) could leave the ranks waiting on each other
    in the next run's DistributedDataParallel set-up.

    Raises:
        ValueError: malformed ``RANK`` / ``WORLD_SIZE``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world)
        atexit.register(_leave)
    return DistContext(rank, world, local)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes (``values`` itself when not distributed)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_process(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Whether ``flag`` is true in any process (so that all stop at the same step when one is interrupted)."""
    if not ctx.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device), ctx).item() > 0)
