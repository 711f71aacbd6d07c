"""``stn demo`` (a few steps only: the full demo is minutes long)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn.cli import main


def test_demo_trains_both_models_and_draws_the_transformer(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "demo",
                "--iterations",
                "2",
                "--batch-size",
                "16",
                "--data-dir",
                str(tiny_mnist),
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "cnn" in out and "st-cnn-aff" in out and "paper" in out
    assert (tmp_path / "demo.png").is_file()
    assert (tmp_path / "cnn" / "summary.json").is_file() and (tmp_path / "st-cnn-aff" / "summary.json").is_file()
