"""Fixtures for the data tests: tiny synthetic digits, fake MNIST folders, and an environment where no real
MNIST can be found by accident."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stn.data import MNIST, write_idx


def synthetic_digits(n: int, seed: int = 0, value: int = 255) -> torch.Tensor:
    """``(n, 28, 28)`` uint8 "digits": a Γ-shaped stroke of random size inside the central 20x20 box, with
    ink value ``value`` (so a test can tell digits of different sets apart by their pixel values)."""
    g = torch.Generator().manual_seed(seed)
    x0, y0 = torch.randint(4, 10, (2, n, 1, 1), generator=g)
    width, height = torch.randint(8, 15, (2, n, 1, 1), generator=g)
    ys, xs = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    inside = (xs >= x0) & (xs < x0 + width) & (ys >= y0) & (ys < y0 + height)
    stroke = inside & ((xs < x0 + 3) | (ys < y0 + 3))  # the vertical bar and the top bar of a Γ
    return stroke.to(torch.uint8) * value


def synthetic_mnist(split: str = "train", n: int = 300, value: int = 255, seed: int = 0) -> MNIST:
    """An in-memory :class:`MNIST` split of ``n`` synthetic digits with labels ``0, 1, ..., 9, 0, ...``."""
    labels = torch.arange(n) % 10
    return MNIST(synthetic_digits(n, seed, value), labels, "mnist", None, split)


@pytest.fixture
def make_digits() -> Callable[..., torch.Tensor]:
    """:func:`synthetic_digits`."""
    return synthetic_digits


@pytest.fixture
def make_split() -> Callable[..., MNIST]:
    """:func:`synthetic_mnist`."""
    return synthetic_mnist


@pytest.fixture
def no_mnist_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Unset STN_DATA and point the user cache at an empty folder (returned)."""
    monkeypatch.delenv("STN_DATA", raising=False)
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "stn"


@pytest.fixture
def make_mnist_dir(tmp_path: Path) -> Callable[..., Path]:
    """``make(folder, n_train=6, n_test=4, gz=True, layout=".")`` writes the four IDX files of a tiny fake MNIST
    whose labels are all ``label`` (to tell folders apart) and returns the folder holding them."""

    def make(
        folder: Path | str = "mnist-root",
        *,
        n_train: int = 6,
        n_test: int = 4,
        gz: bool = True,
        layout: str = ".",
        label: int = 3,
    ) -> Path:
        where = tmp_path / folder / layout
        where.mkdir(parents=True, exist_ok=True)
        suffix = ".gz" if gz else ""
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            write_idx(where / f"{prefix}-images-idx3-ubyte{suffix}", synthetic_digits(n, seed=n))
            write_idx(where / f"{prefix}-labels-idx1-ubyte{suffix}", torch.full((n,), label, dtype=torch.uint8))
        return where

    return make
