"""``stn train`` never loses or poisons a run: a non-finite loss, someone else's folder, an unusable device or a
full disk each end in one line and a non-zero exit, with the files that were there left as they were."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stn.cli import main
from stn.engine.checkpoint import Progress, load_checkpoint
from stn.engine.tasks import ClassificationTask


def args(data_dir: Path, out: Path, *extra: str, device: str = "cpu") -> list[str]:
    """A tiny FCN run on R: 48 training digits in batches of 16, 3 steps an epoch."""
    return ["train", "--data", "r", "--model", "fcn", "--target-params", "5000", "--batch-size", "16",
            "--num-train", "48", "--num-test", "16", "--data-dir", str(data_dir), "--out", str(out), "--device",
            device, "--quiet", "--no-figures", *extra]  # fmt: skip


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_nan_mid_run_keeps_the_last_finite_checkpoint_and_exits_with_one_line(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate, steps = ClassificationTask.evaluate, []

    def nan_from_epoch_3(self, output, target):
        if output.requires_grad:  # a training step
            steps.append(len(steps))
            if len(steps) > 6:
                output = output * float("nan")
        return evaluate(self, output, target)

    monkeypatch.setattr(ClassificationTask, "evaluate", nan_from_epoch_3)
    assert main(args(tiny_mnist, tmp_path / "run", "--epochs", "4")) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("stn train: error: the training loss became non-finite (nan or inf) at step 6")
    assert "learning rate (lr 0.01) is likely too high" in line
    checkpoint = load_checkpoint(tmp_path / "run")
    assert Progress.of(checkpoint).step == 6 and not Progress.of(checkpoint).finished  # the end of epoch 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / "run" / "summary.json").exists()


def test_lr_1e6_stops_with_one_line(tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(tiny_mnist, tmp_path / "run", "--epochs", "3", "--lr", "1e6")) == 1
    *warned, line = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("stn train: error: the training loss became non-finite")
    assert "(lr 1e+06) is likely too high" in line and "try a smaller --lr" in line
    # before it, the first epoch's loss (finite, 1e26) may have been said to diverge: one line too
    assert all(w.startswith("stn train: warning: fcn on r: epoch 1: the training loss") for w in warned)
    assert len(warned) <= 1


def test_a_foreign_folder_is_refused_and_left_byte_identical(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in (("config.json", '{"mine": 1}'), ("summary.md", "# notes"), ("metrics.csv", "a\n1\n")):
        (folder / name).write_text(text)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(args(tiny_mnist, folder, "--iterations", "2")) == 1
    line = one_line(capsys.readouterr().err)
    assert f"{folder} is not an stn run folder" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert main(args(tiny_mnist, folder, "--iterations", "2", "--force")) == 0  # the user said so
    assert (folder / "checkpoint.pt").is_file()


@pytest.mark.parametrize(("device", "expected"), [("tpu", "unknown device 'tpu'"), ("", "unknown device ''"),
                                                  ("meta", "device 'meta' cannot train")])  # fmt: skip
def test_a_device_stn_cannot_train_on_is_one_line_listing_the_choices(
    device: str, expected: str, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(tiny_mnist, tmp_path / "run", "--iterations", "2", device=device)) == 1
    line = one_line(capsys.readouterr().err)
    assert expected in line and "choose auto (CUDA when available), cpu, cuda or cuda:<index>" in line


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tiny_mnist: Path, tmp_path: Path) -> None:
    resource = pytest.importorskip("resource", reason="ulimit -f (RLIMIT_FSIZE) needs a POSIX system")
    run = tmp_path / "run"
    assert main(args(tiny_mnist, run, "--iterations", "3")) == 0
    before = (run / "checkpoint.pt").read_bytes()
    limit = len(before) // 2  # the next checkpoint cannot be written; config.json and metrics.jsonl can

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "stn", *args(tiny_mnist, run, "--iterations", "6", "--resume")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert done.returncode == 1, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(f"stn train: error: {run / 'checkpoint.pt'}: cannot write the checkpoint: the disk is full")
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp"))  # the half-written file is gone
