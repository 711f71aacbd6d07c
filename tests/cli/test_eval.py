"""``stn eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stn.cli import main


def test_eval_reproduces_the_runs_test_error(
    trained_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["eval", str(trained_run / "checkpoint.pt"), "--num-test", "32", "--data-dir", str(tiny_mnist), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert result["test_error"] == pytest.approx(summary["test_error"])
    assert result["data"] == "r" and result["test_samples"] == 32


def test_eval_on_a_variant_of_another_size_is_refused(
    trained_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--data", "rts", "--data-dir", str(tiny_mnist)]) == 1
    assert "(1, 28, 28)" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    assert main(["eval", str(tmp_path / "bad.pt")]) == 1
    assert "corrupt" in capsys.readouterr().err
