"""Batches of a distorted-MNIST epoch for ``IterableDataset`` pipelines, sharded across processes and workers."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from stn.data.datasets import DistortedMNIST, block_seed

__all__ = ["EpochBatches"]


class EpochBatches(IterableDataset):
    """Batches of a :class:`DistortedMNIST` epoch for an ``IterableDataset`` pipeline, sharded across processes
    (``rank`` of ``world_size``) and across the DataLoader's workers.

    Each item is a whole batch ``(images (B, C, H, W), labels (B,))``: use ``DataLoader(batches,
    batch_size=None, num_workers=k)``. The order is a permutation seeded by ``(seed, epoch)``, identical in
    every process; :meth:`set_epoch` sets the epoch of both the order and the distortions.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from stn.data import MNIST, DistortedMNIST, EpochBatches
        >>> digits = MNIST(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10), "mnist", None, "train")
        >>> batches = EpochBatches(DistortedMNIST("rts", mnist=digits), batch_size=4, rank=0, world_size=2)
        >>> [tuple(images.shape) for images, labels in DataLoader(batches, batch_size=None)]  # this rank's half
        [(4, 1, 42, 42), (1, 1, 42, 42)]
    """

    def __init__(
        self,
        dataset: DistortedMNIST,
        batch_size: int,
        *,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def _batches(self) -> list[Tensor]:
        n = len(self.dataset)
        if self.shuffle:
            seed = block_seed("order", self.dataset.seed, self.dataset.epoch)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(n)
        mine = order[self.rank :: self.world_size]
        batches = list(mine.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        worker = get_worker_info()
        batches = self._batches()
        if worker is not None:
            batches = batches[worker.id :: worker.num_workers]
        if not batches:
            return
        images, labels = self.dataset.epoch_tensors()
        for batch in batches:
            yield images[batch], labels[batch]
