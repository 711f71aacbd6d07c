"""``stn demo`` (a few steps only: the full demo is minutes long)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    assert f"the runs are in {tmp_path / 'cnn'} and {tmp_path / 'st-cnn-aff'}" in out  # where to point stn eval
    assert (tmp_path / "demo.png").is_file()
    assert (tmp_path / "cnn" / "summary.json").is_file() and (tmp_path / "st-cnn-aff" / "summary.json").is_file()


def test_demo_fixes_the_thread_count_and_reuses_finished_runs(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--iterations", "1", "--batch-size", "8", "--data-dir", str(tiny_mnist), "--out", str(tmp_path)]
    threads = torch.get_num_threads()
    assert main([*args, "--quiet", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # restored for whoever called main()
    first = capsys.readouterr().out
    assert first.count("(1 steps, 1 CPU threads)") == 2
    assert main([*args, "--quiet"]) == 0
    second = capsys.readouterr().out
    assert second.count("finished before, reused") == 2 and "training" not in second
    errors = [line.split("%")[0].split()[-1] for line in first.splitlines() if "paper, 150,000" in line]
    assert errors == [line.split("%")[0].split()[-1] for line in second.splitlines() if "paper, 150,000" in line]


def test_demo_over_a_finished_run_without_its_checkpoint_says_so_in_one_line(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--iterations", "1", "--batch-size", "8", "--data-dir", str(tiny_mnist), "--out", str(tmp_path)]
    assert main([*args, "--quiet"]) == 0
    (tmp_path / "st-cnn-aff" / "checkpoint.pt").unlink()  # as in a results folder kept in git
    capsys.readouterr()
    assert main([*args, "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keeps no checkpoint.pt" in err[0] and "Traceback" not in err[0]
