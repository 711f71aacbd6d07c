"""``stn export``."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn.cli import main


def test_export_torchscript_beside_the_checkpoint(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(trained_run), "--format", "torchscript"]) == 0  # a run folder: its checkpoint
    out = capsys.readouterr().out
    assert (trained_run / "model.torchscript.pt").is_file()
    assert "largest difference" in out


def test_export_needs_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "none.pt")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
