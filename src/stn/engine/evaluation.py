"""Evaluation: every metric of a task on a dataset, averaged over samples, as the training loop scores its test
(and validation) data every epoch, shared out over the processes of a data-parallel run.

Example:
    >>> from torch.utils.data import TensorDataset
    >>> from stn.engine.tasks import ClassificationTask
    >>> data = TensorDataset(torch.eye(3), torch.tensor([0, 1, 1]))
    >>> round(evaluate(nn.Identity(), data, ClassificationTask(3))["error"], 4)
    0.3333
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from stn.engine.batches import first_samples, has_epoch_tensors, to_device
from stn.engine.distributed import DistContext, all_reduce_sum
from stn.engine.tasks import Task

__all__ = ["check_output", "evaluate"]


def _eval_batches(
    data: Dataset, batch_size: int, device: torch.device, ctx: DistContext, num_workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """This process's share (every ``world_size``-th sample) of ``data`` in batches, on ``device``."""
    if has_epoch_tensors(data):
        inputs, targets = data.epoch_tensors(0, device)
        mine = torch.arange(ctx.rank, len(inputs), ctx.world_size, device=inputs.device)
        for idx in mine.split(batch_size):
            yield inputs[idx], targets[idx]
        return
    share = Subset(data, range(ctx.rank, len(data), ctx.world_size))
    loader = DataLoader(
        share,
        batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),  # not the global RNG: evaluating must not change training
    )
    for x, y in loader:
        yield to_device(x, device), to_device(y, device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    task: Task,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    ctx: DistContext | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Every metric of ``task`` (``{"loss": ..., "error": ...}``) of ``model`` on ``data``, averaged over samples.

    ``data`` is any map-style dataset of ``(input, target)`` (or one with ``epoch_tensors``). With a distributed
    ``ctx`` each process scores its share and the sums are combined.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from stn.engine.tasks import ClassificationTask
        >>> data = TensorDataset(torch.eye(4), torch.tensor([0, 1, 2, 0]))
        >>> evaluate(nn.Identity(), data, ClassificationTask(4))["error"]
        0.25
    """
    ctx = ctx or DistContext()
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(task.metrics) + 1, dtype=torch.float64, device=device)
    for x, y in _eval_batches(data, batch_size, device, ctx, num_workers):
        _, batch = task.evaluate(model(x), y)
        sums += torch.cat([batch, batch.new_tensor([len(y)])])
    model.train(was_training)
    *totals, count = all_reduce_sum(sums, ctx).tolist()
    return {name: total / max(count, 1) for name, total in zip(task.metrics, totals)}


def check_output(model: nn.Module, task: Task, data: Dataset, device: torch.device, name: str) -> tuple[int, ...]:
    """Run ``model`` (named ``name`` in errors) in eval mode on the first two samples of ``data`` and let ``task``
    check its output; returns one input's shape, e.g. ``(1, 42, 42)``. The model is left in training mode.

    Raises:
        ValueError: the model returns something other than one tensor, or a tensor the task cannot score.
    """
    x, y = first_samples(data, 2, device)
    with torch.no_grad():
        out = model.eval()(x)
    model.train()
    if not isinstance(out, Tensor):
        raise ValueError(f"model {name!r} must return one tensor, got {type(out).__name__}")
    try:
        task.check_output(out, y)
    except ValueError as err:
        raise ValueError(f"model {name!r} does not fit the data: {err}") from None
    return tuple(x.shape[1:])
