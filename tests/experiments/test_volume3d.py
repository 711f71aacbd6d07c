"""The 3-D experiment: extruded, posed volumes, an end-to-end quick run on a tiny MNIST through the training
engine, resume equivalence and ``stn eval`` on its checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import stn
from stn.cli import main
from stn.data import load_mnist
from stn.engine.checkpoint import load_checkpoint
from stn.engine.metrics import read_jsonl
from stn.engine.trainer import Trainer
from stn.experiments import volume3d
from stn.experiments.volume3d import (
    PosedVolumes,
    extrude,
    pose_volumes,
    posed_volumes,
    random_poses,
    rotation_matrix,
)


def test_extrude_puts_the_digit_in_a_centred_slab() -> None:
    digits = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    volume = extrude(digits, size=60, depth=8)
    assert volume.shape == (2, 1, 60, 60, 60)
    canvas = torch.zeros(2, 60, 60)
    canvas[:, 16:44, 16:44] = digits.float() / 255
    torch.testing.assert_close(volume[:, 0, 26:34], canvas.unsqueeze(1).expand(2, 8, 60, 60))
    assert volume[:, :, :26].abs().sum() == 0 and volume[:, :, 34:].abs().sum() == 0
    with pytest.raises(ValueError, match="extrude"):
        extrude(digits, size=20)


def test_rotation_matrices_are_rotations_composed_z_y_x() -> None:
    angles = torch.tensor([[10.0, -20.0, 30.0], [0.0, 0.0, 90.0]], dtype=torch.float64)
    r = rotation_matrix(angles)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(2, dtype=torch.float64))
    x, y = torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64)
    torch.testing.assert_close(r[1] @ x, y)  # 90° about z takes x to y
    rx, ry, rz = rotation_matrix(torch.tensor([[10.0, 0, 0], [0, -20.0, 0], [0, 0, 30.0]], dtype=torch.float64))
    torch.testing.assert_close(r[0], rz @ ry @ rx)


def test_random_poses_respect_their_ranges_and_the_seed() -> None:
    params = random_poses(500, torch.Generator().manual_seed(1), max_angle=30.0, max_translation=0.1)
    assert params["angle"].abs().max() <= 30 and params["angle"].abs().max() > 25
    assert params["translation"].abs().max() <= 0.1
    theta = params["theta"].view(-1, 3, 4)
    torch.testing.assert_close(theta[:, :, :3], rotation_matrix(params["angle"].double()).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(theta[:, :, 3], params["translation"])
    again = random_poses(500, torch.Generator().manual_seed(1), max_angle=30.0, max_translation=0.1)
    torch.testing.assert_close(again["theta"], params["theta"])
    with pytest.raises(ValueError, match="max_angle"):
        random_poses(2, torch.Generator(), max_angle=-1.0)


def test_posed_volumes_are_the_extruded_digits_warped_by_the_truth() -> None:
    digits = torch.rand(3, 1, 7, 7).repeat_interleave(4, 2).repeat_interleave(4, 3)[:, 0]  # smooth 4x4 blocks
    volumes, params = posed_volumes(digits, torch.Generator().manual_seed(0), max_angle=40.0)
    torch.testing.assert_close(volumes, stn.warp(extrude(digits), params["theta"], "affine3d"))
    # undoing the pose with the inverse transform gives back the upright slab (up to interpolation blur)
    back = stn.warp(volumes, stn.transforms.get("affine3d").inverse(params["theta"]), "affine3d")
    upright = extrude(digits)
    error = (back - upright)[:, :, 20:40, 15:45, 15:45].abs().mean()
    assert error < 0.2 * upright[:, :, 20:40, 15:45, 15:45].mean()
    still, _ = posed_volumes(digits, torch.Generator(), max_angle=0.0, max_translation=0.0)
    torch.testing.assert_close(still, upright, atol=1e-5, rtol=0)


def test_posed_volume_sets_draw_fresh_training_poses_and_fixed_test_poses(tiny_mnist: Path) -> None:
    train = PosedVolumes(load_mnist(tiny_mnist, "train"), seed=3, num_samples=10)
    test = PosedVolumes(load_mnist(tiny_mnist, "test"), seed=3, num_samples=10)
    assert len(train) == 10
    assert not torch.equal(train.poses(0), train.poses(1))
    torch.testing.assert_close(
        train.poses(1), PosedVolumes(load_mnist(tiny_mnist, "train"), seed=3, num_samples=10).poses(1)
    )
    torch.testing.assert_close(test.poses(0), test.poses(5))
    volumes, labels = test.epoch_tensors(2)
    assert volumes.shape == (10, 1, 60, 60, 60) and len(volumes) == 10 and torch.equal(labels, test.labels)
    # each batch is posed by its own digits' θ, whatever the batch
    expected = pose_volumes(test.images, test.poses(0))
    torch.testing.assert_close(volumes[torch.tensor([7, 2])], expected[[7, 2]])
    torch.testing.assert_close(volumes[3:6], expected[3:6])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    volume3d.add_arguments(parser)
    return parser.parse_args(argv)


def tiny_args(data: Path, tmp_path: Path, name: str, *extra: str) -> list[str]:
    """4 steps of 4 volumes on the first 8 digits (2 steps an epoch), 6 test volumes."""
    return ["--data-dir", str(data), "--out", str(tmp_path / name), "--runs-dir", str(tmp_path / f"runs-{name}"),
            "--iterations", "4", "--batch-size", "4", "--num-train", "8", "--num-test", "6", "--device", "cpu",
            "--quiet", *extra]  # fmt: skip


def test_quick_run_end_to_end_writes_table_results_and_figure(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "3d"))) == 0
    out = tmp_path / "3d"
    record = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in record["results"]] == ["volume-cnn", "volume-st"]
    assert all(0 <= r["test_error"] <= 100 and r["train_seconds"] > 0 for r in record["results"])
    assert record["iterations"] == 4 and record["test_digits"] == 6 and record["train_digits"] == 8
    for r in record["results"]:
        summary = json.loads((tmp_path / "runs-3d" / r["name"] / "summary.json").read_text())
        assert r["test_error"] == 100 * summary["test_error"] and summary["steps"] == 4
    assert "transformer.0.scale_mean" in read_jsonl(tmp_path / "runs-3d" / "volume-st" / "metrics.jsonl")[-1]
    table = (out / "3d.md").read_text()
    assert "volume-st" in table and "projections.png" in table
    assert (out / "projections.png").stat().st_size > 1000

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(volume3d, "make_trainer", fail)
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "3d"))) == 0
    assert json.loads((out / "results.json").read_text())["results"] == record["results"]


def test_interrupted_run_resumes_to_the_same_weights_and_eval_reproduces_it(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """volume-st: 4 steps straight == 3 steps, SIGTERM, resume, 1 step (in its second epoch); then ``stn eval``."""
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "straight"))) == 0
    original = Trainer.train_step

    def step_then_signal(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = original(self, x, y)
        if self.model_spec["name"] == "volume-st" and self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "resumed"))) == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "runs-resumed" / "volume-st")["step"] == 3
    monkeypatch.undo()
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "resumed"))) == 0

    for name in volume3d.MODELS.values():
        a, b = (load_checkpoint(tmp_path / runs / name) for runs in ("runs-straight", "runs-resumed"))
        assert a["step"] == b["step"] == 4
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
        records = [read_jsonl(tmp_path / runs / name / "metrics.jsonl") for runs in ("runs-straight", "runs-resumed")]
        keys = ("epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error")
        assert [[r[k] for k in keys] for r in records[0]] == [[r[k] for k in keys] for r in records[1]]
    results = [json.loads((tmp_path / d / "results.json").read_text())["results"] for d in ("straight", "resumed")]
    assert [r["test_error"] for r in results[0]] == [r["test_error"] for r in results[1]]

    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs-resumed" / "volume-st"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "runs-resumed" / "volume-st" / "summary.json").read_text())
    assert scored["model"] == "volume-st" and scored["test_samples"] == 6
    assert scored["test_error"] == summary["test_error"] and scored["test_loss"] == summary["test_loss"]


def test_the_spec_keeps_the_mnist_folder_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # stn eval may run from another folder than the training
    assert volume3d.volume_spec(root="mnist")["root"] == str(tmp_path.resolve() / "mnist")
    assert volume3d.volume_spec()["root"] is None  # the default search
