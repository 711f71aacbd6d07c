"""Shared fixtures. The real datasets live in ``../shared/data`` beside the repository (or ``$STN_SHARED_DATA``);
tests that need them skip with a visible reason where they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("STN_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``shared/data`` with the real MNIST, SVHN sample and CUB subset; skips when this machine lacks it."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (set STN_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
