"""Data: MNIST (with an offline 5,000-digit fallback) and the paper's distorted variants.

Example:
    >>> import torch
    >>> from stn.data import MNIST, DistortedMNIST, variant_info
    >>> variant_info("RTS").image_size
    (42, 42)
    >>> # load_mnist() finds the real digits; 20 blank ones stand in for them here
    >>> digits = MNIST(torch.zeros(20, 28, 28, dtype=torch.uint8), torch.arange(20) % 10, "mnist", None, "train")
    >>> train = DistortedMNIST("tc", split="train", seed=0, mnist=digits)
    >>> images, labels = train.epoch_tensors()
    >>> images.shape, labels.shape
    (torch.Size([20, 1, 60, 60]), torch.Size([20]))
"""

from stn.data.datasets import BLOCK_SIZE, VALIDATION_SIZE, DistortedMNIST
from stn.data.distortions import GENERATORS, VARIANTS, VariantInfo, variant_info
from stn.data.epoch_batches import EpochBatches
from stn.data.idx import IDXError, read_idx, write_idx
from stn.data.mnist import (
    MNIST,
    SampleDataWarning,
    download_mnist,
    find_mnist,
    load_mnist,
    load_mnist_sample,
)
from stn.data.preview import preview_sheet

__all__ = [
    "BLOCK_SIZE",
    "GENERATORS",
    "MNIST",
    "VALIDATION_SIZE",
    "VARIANTS",
    "DistortedMNIST",
    "EpochBatches",
    "IDXError",
    "SampleDataWarning",
    "VariantInfo",
    "download_mnist",
    "find_mnist",
    "load_mnist",
    "load_mnist_sample",
    "preview_sheet",
    "read_idx",
    "variant_info",
    "write_idx",
]
