"""A finished small training run for the command-line tests (built on the ``tiny_mnist`` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished ``stn train`` run of a small ST-FCN (affine) on R."""
    from stn.cli import main

    out = tmp_path_factory.mktemp("cli-run") / "run"
    code = main(
        [
            "train",
            "--data",
            "r",
            "--model",
            "st-fcn-aff",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--num-train",
            "48",
            "--num-test",
            "32",
            "--target-params",
            "40000",
            "--data-dir",
            str(tiny_mnist),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
            "--no-figures",
        ]
    )
    assert code == 0
    return out
