"""Shared fixtures. The real datasets live in ``../shared/data`` beside the repository (or ``$STN_SHARED_DATA``);
tests that need them skip with a visible reason where they are absent."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stn.data import write_idx

SHARED_DATA = Path(os.environ.get("STN_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``shared/data`` with the real MNIST, SVHN sample and CUB subset; skips when this machine lacks it."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (set STN_SHARED_DATA to its folder)")
    return SHARED_DATA


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per xdist worker: the workers already fill the cores, and oversubscribed tiny ops
    # run many times slower.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def write_tiny_mnist(folder: Path, n_train: int = 96, n_test: int = 32) -> Path:
    """IDX files of 28x28 "digits": label k is a bright bar whose row and length depend on k."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = torch.zeros(n, 28, 28, dtype=torch.uint8)
        for i, k in enumerate(labels.tolist()):
            images[i, 6 + 2 * k : 8 + 2 * k, 4 : 10 + k] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.to(torch.uint8))
    return folder


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the four MNIST files of a tiny synthetic MNIST (96 train / 32 test digits)."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny-mnist"))


# How far a shipped model's numbers on the fixed 500-digit subset move between CPUs: scripts/cpu_spread.py measured
# the loss within 2.9e-6 (relative) of the recording, and no digit flipped, over ATEN_CPU_CAPABILITY default / avx2 /
# avx512 and 1-2 threads; one digit may flip on a CPU whose rounding lands on a margin that small.
SUBSET_TOLERANCE = {"loss": {"rel": 1e-5}, "error": {"abs": 1 / 500}}


@pytest.fixture
def assert_recorded_subset() -> Callable[[dict, dict], None]:
    """``check(metrics, entry)``: a pretrained entry's subset numbers, bit for bit where its ``evaluated_with``
    fingerprint matches this machine (:func:`stn.numerics.same_numerics`), within :data:`SUBSET_TOLERANCE`
    elsewhere."""
    from stn.numerics import same_numerics

    def check(metrics: dict, entry: dict) -> None:
        recorded = {"loss": entry["subset"]["test_loss"], "error": entry["subset"]["test_error"]}
        if same_numerics(entry["evaluated_with"]):
            assert metrics == recorded
        for key, value in recorded.items():
            assert metrics[key] == pytest.approx(value, **SUBSET_TOLERANCE[key]), (
                key,
                metrics,
                entry["evaluated_with"],
            )

    return check
