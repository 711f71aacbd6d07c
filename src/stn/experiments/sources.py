"""The experiments' data sources, each rebuilt from a JSON-able *data spec* that runs record in their checkpoint
(``{"kind": ..., options}``), so that ``stn eval`` / ``stn visualize`` can score or show any run's model on its
test data again.

* ``"distorted-mnist"`` (Table 1, MNIST addition): :class:`stn.data.DistortedMNIST` of ``variant``; training
  samples seeded by ``seed``, the test set by :data:`stn.engine.config.TEST_SEED`.
* ``"svhn"`` (Table 2): :class:`stn.data.svhn.SVHNSequences`; training images get a random crop seeded by
  ``(seed, epoch, index)`` (:class:`SVHNCrops`), test images their central crop.
* ``"cub"`` (Table 3): CUB-200-2011 photos at ``image_size``, training ones flipped by ``(seed, epoch,
  index)`` (:func:`stn.experiments.table3.cub_data`).
* ``"posed-volumes"`` (the 3-D experiment): MNIST digits extruded into volumes in random 3-D poses
  (:func:`stn.experiments.volume3d.volume_data`).

Other experiments add their kind to :data:`SOURCES`. A run on data only its caller knows (a user's own dataset)
records ``{}``: :func:`build` then says that it cannot rebuild it.

Example:
    >>> spec = distorted_mnist_spec("rts", seed=0, num_train=1000)
    >>> spec["kind"], spec["variant"], spec["num_train"]
    ('distorted-mnist', 'rts', 1000)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from stn.data.datasets import block_seed

__all__ = ["SOURCES", "SVHNCrops", "build", "distorted_mnist_spec", "svhn_spec"]


def distorted_mnist_spec(
    variant: str,
    *,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
    root: str | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """The spec of a distorted-MNIST run (see the module docstring)."""
    return {
        "kind": "distorted-mnist",
        "variant": variant,
        "seed": seed,
        "num_train": num_train,
        "num_test": num_test,
        "root": None if root is None else str(root),
        "download": download,
    }


def _distorted_mnist(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.data import DistortedMNIST
    from stn.engine.config import TEST_SEED

    train = split == "train"
    return DistortedMNIST(
        spec["variant"],
        split,
        root=spec.get("root"),
        seed=spec["seed"] if train else TEST_SEED,
        num_samples=spec.get("num_train" if train else "num_test"),
        download=spec.get("download", False),
    )


def svhn_spec(
    root: str | Path, *, crop: int = 64, splits: tuple[str, ...] = ("train",), seed: int = 0, cache_dir: Any = None
) -> dict[str, Any]:
    """The spec of an SVHN run: training on ``splits``, testing on ``test``, images stored at ``crop`` px."""
    return {
        "kind": "svhn",
        "root": str(root),
        "crop": crop,
        "splits": list(splits),
        "seed": seed,
        "cache_dir": None if cache_dir is None else str(cache_dir),
    }


class SVHNCrops(Dataset):
    """SVHN sequences as model inputs: float ``(3, S, S)`` crops in [0, 1] (S = 54 of 64 px, 108 of 128 px) and
    labels ``(5,)``. Training crops are random, drawn from ``(seed, epoch, index)`` alone (:meth:`set_epoch`), so
    a resumed or data-parallel run sees the same crops; otherwise the central crop."""

    def __init__(self, sequences: Any, *, train: bool, seed: int = 0) -> None:
        from stn.data.svhn import INPUT_SIZE

        self.sequences, self.train, self.seed, self.epoch = sequences, train, seed, 0
        self.size = INPUT_SIZE[sequences.crop]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, labels = self.sequences[index]
        margin = image.shape[-1] - self.size
        if self.train:
            g = torch.Generator().manual_seed(block_seed("svhn-crop", self.seed, self.epoch, index))
            top, left = torch.randint(0, margin + 1, (2,), generator=g).tolist()
        else:
            top = left = margin // 2
        return image[:, top : top + self.size, left : left + self.size], labels


def _svhn(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.data.svhn import SVHNSequences

    def sequences(name: str) -> Any:
        return SVHNSequences(spec["root"], name, crop=spec["crop"], cache_dir=spec.get("cache_dir"), progress=False)

    if split == "test":
        return SVHNCrops(sequences("test"), train=False)
    parts = [SVHNCrops(sequences(name), train=True, seed=spec["seed"]) for name in spec["splits"]]
    return parts[0] if len(parts) == 1 else _EpochConcat(parts)


class _EpochConcat(ConcatDataset):
    """A concatenation that passes :meth:`set_epoch` on to its parts."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)


def _cub(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.experiments.table3 import cub_data

    return cub_data(spec, split)


def _posed_volumes(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.experiments.volume3d import volume_data

    return volume_data(spec, split)


# kind -> builder(spec, split) of the "train" or "test" dataset
SOURCES: dict[str, Callable[[Mapping[str, Any], str], Dataset]] = {
    "distorted-mnist": _distorted_mnist,
    "svhn": _svhn,
    "cub": _cub,
    "posed-volumes": _posed_volumes,
}


def build(spec: Mapping[str, Any], split: str) -> Dataset:
    """The ``"train"`` or ``"test"`` dataset of a data spec.

    Raises:
        ValueError: a spec of no known kind (e.g. a run on the user's own data, whose spec is ``{}``).
    """
    kind = spec.get("kind")
    if kind not in SOURCES:
        what = "data only its training script knows (no data spec recorded)" if not spec else f"data of kind {kind!r}"
        raise ValueError(
            f"this run was trained on {what}; stn cannot rebuild it. Score the model with stn.engine.evaluate on "
            f"that data instead (known kinds: {', '.join(SOURCES)})"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return SOURCES[kind](spec, split)
