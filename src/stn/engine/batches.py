"""How data reaches the device: the batches of a training epoch (this process's slice of each global batch, in an
order drawn from the seed and the epoch alone, so that a resumed run sees the same batches) and the first samples
of a set (for the output check, θ statistics and figures); evaluation's batches: :mod:`stn.engine.evaluation`.

A dataset is map-style (``(input, target)`` samples, loaded by a ``DataLoader``) or gives a whole epoch at once
(``epoch_tensors(epoch, device)``: distorted MNIST, the fast path).

Example:
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    >>> [len(y) for _, y in train_batches(data, 4, 0, 0, 0, 2, DistContext(), torch.device("cpu"))]
    [4, 4]
    >>> first_samples(data, 3, torch.device("cpu"))[1].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from stn.data.datasets import block_seed
from stn.engine.distributed import DistContext

__all__ = ["first_samples", "has_epoch_tensors", "to_device", "train_batches"]


def has_epoch_tensors(data: Any) -> bool:
    """Whether ``data`` gives a whole epoch at once (``epoch_tensors(epoch, device)``, the fast path)."""
    return callable(getattr(data, "epoch_tensors", None))


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` on ``device`` when it is a tensor (targets may be other objects)."""
    return batch.to(device, non_blocking=True) if isinstance(batch, Tensor) else batch


def train_batches(
    data: Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    first: int,
    last: int,
    ctx: DistContext,
    device: torch.device,
    num_workers: int = 0,
    *,
    prefetch: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches ``first`` to ``last - 1`` of ``epoch`` (global batches of ``batch_size`` in the permutation drawn
    from ``(seed, epoch)``): this process's slice of each, on ``device``. A map-style ``data`` with ``set_epoch``
    is told the epoch first (its augmentation draws from it). ``prefetch``: a whole-epoch ``data`` with a
    ``prefetch(epoch, device)`` method (distorted MNIST) starts generating epoch ``epoch + 1`` in the background
    while this one trains (the same data either way; a fast model then need not wait for its next epoch)."""
    per_rank = batch_size // ctx.world_size
    lo, hi = ctx.rank * per_rank, (ctx.rank + 1) * per_rank
    generator = torch.Generator().manual_seed(block_seed("order", seed, epoch))
    order = torch.randperm(len(data), generator=generator)
    if has_epoch_tensors(data):
        inputs, targets = data.epoch_tensors(epoch, device)
        if prefetch and callable(getattr(data, "prefetch", None)):
            data.prefetch(epoch + 1, device)
        order = order.to(device)
        for i in range(first, last):
            idx = order[i * batch_size : (i + 1) * batch_size][lo:hi]
            yield inputs[idx], targets[idx]
        return
    set_epoch = getattr(data, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
    batches = [order[i * batch_size : (i + 1) * batch_size][lo:hi].tolist() for i in range(first, last)]
    loader = DataLoader(
        data,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=generator,  # the workers' seeds; the global RNG (dropout...) stays the model's alone
    )
    for x, y in loader:
        yield to_device(x, device), to_device(y, device)


def first_samples(data: Dataset, count: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first ``count`` inputs and targets of ``data`` (all of them when it has fewer), stacked on ``device``."""
    n = min(count, len(data))
    if has_epoch_tensors(data):
        inputs, targets = data.epoch_tensors(0, device)
        return inputs[:n], targets[:n]
    inputs, targets = zip(*(data[i] for i in range(n)))
    return torch.stack(inputs).to(device), torch.stack([torch.as_tensor(t) for t in targets]).to(device)
