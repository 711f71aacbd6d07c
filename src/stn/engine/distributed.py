"""Where a run computes: the device (:func:`resolve_device`), and the data-parallel helpers for ``torchrun``: one
process per device, gradients averaged by :class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on
CUDA).

``torchrun --nproc_per_node 2 -m stn train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them. Without them everything runs in one
process and these helpers do nothing. When a process of the job dies, the others fail in their next collective
with a raw transport error; :func:`peer_lost` turns it into :class:`PeerLostError`, one line naming the dead rank.

Example:
    >>> ctx = init_distributed(torch.device("cpu"))
    >>> ctx.world_size, ctx.is_main
    (1, True)
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: unknown device 'tpu': choose auto (CUDA when available), cpu, cuda or cuda:<index>
"""

from __future__ import annotations

import atexit
import os
import socket
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stn.io import _pid_alive

__all__ = [
    "DistContext",
    "PeerLostError",
    "all_reduce_sum",
    "any_process",
    "any_processes",
    "init_distributed",
    "peer_lost",
    "resolve_device",
]

_DEVICES = "auto (CUDA when available), cpu, cuda or cuda:<index>"
# what gloo (and NCCL) say when the other end of a collective is gone
_PEER_GONE = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Connection refused",
    "remote process exited",
)
_peers: list[tuple[int, int]] = []  # (host id, pid) of every rank, exchanged when the group is joined


class PeerLostError(ConnectionError):
    """Another process of a data-parallel job died; this one stops too (its checkpoint is kept)."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``, checked to train here.

    Raises:
        ValueError: a name torch does not know (``"tpu"``, ``""``), a device that cannot train (``"meta"``), CUDA
            asked for where there is none, or a CUDA index past the devices; the message lists the valid choices.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {name!r}: choose {_DEVICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps" and torch.backends.mps.is_available():
        return device
    raise ValueError(f"device {name!r} cannot train a model here: choose {_DEVICES}")


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
        _exchange_ids(torch.device("cuda", local) if device.type == "cuda" else device, world)
    return DistContext(rank, world, local)


def _exchange_ids(device: torch.device, world: int) -> None:
    """Learn every rank's host and pid, so that a survivor can tell which one died (:func:`peer_lost`)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL gathers on this process's own GPU
    mine = torch.tensor([zlib.crc32(socket.gethostname().encode()), os.getpid()], dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    _peers[:] = [(int(host), int(pid)) for host, pid in (t.tolist() for t in every)]


def peer_lost(err: BaseException, ctx: DistContext) -> PeerLostError | None:
    """The one-line error for ``err`` when it says that another process of the job is gone, else None.

    The dead rank is named when it can be known: the other one of two, or those on this host whose process is gone.
    """
    if not ctx.distributed or not any(words in str(err) for words in _PEER_GONE):
        return None
    others = [r for r in range(ctx.world_size) if r != ctx.rank]
    here = zlib.crc32(socket.gethostname().encode())
    dead = [r for r in others if r < len(_peers) and _peers[r][0] == here and not _pid_alive(_peers[r][1])]
    if len(others) == 1:
        dead = others
    who = f"rank {', '.join(map(str, dead))}" if dead else "another rank (on another host)"
    return PeerLostError(
        f"rank {ctx.rank}: {who} of the {ctx.world_size} processes died, so this one stops too; the checkpoint keeps "
        "the last finished epoch: run the same command again with --resume to continue"
    )


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
    return any_processes([flag], ctx, device)[0]


def any_processes(flags: Sequence[bool | torch.Tensor], ctx: DistContext, device: torch.device) -> list[bool]:
    """For each of ``flags`` (bools, or 0-dim tensors on ``device``), whether it is true in any process: one
    all-reduce for them all (none, and no synchronisation for bools, outside a data-parallel run)."""
    if not ctx.distributed:
        return [bool(f) for f in flags]
    values = torch.stack([torch.as_tensor(f, dtype=torch.float32, device=device).reshape(()) for f in flags])
    return [v > 0 for v in all_reduce_sum(values, ctx).tolist()]
