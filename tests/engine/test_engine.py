"""The engine on a user's own data and model, its refusals of bad configurations, and the run-folder rules
(lock, stale temporary files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from stn.engine import ClassificationTask, TrainConfig, Trainer
from stn.engine.checkpoint import load_model
from stn.engine.distributed import DistContext
from stn.engine.evaluation import evaluate
from stn.engine.rundir import run_status
from stn.io import RunLockedError, read_jsonl
from stn.models import create_model


def own_data(n: int = 64, seed: int = 0) -> TensorDataset:
    """A synthetic 3-class problem: the class is which third of the image is bright."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.rand(n, 1, 24, 24, generator=g) * 0.2
    for i, label in enumerate(labels.tolist()):
        images[i, :, :, 8 * label : 8 * label + 8] += 0.8
    return TensorDataset(images, labels)


def trainer(run_dir: Path, resume: bool = False, model: nn.Module | None = None, **config) -> Trainer:
    """The engine on :func:`own_data` (default model: a small ST-CNN Aff, seed 0)."""
    if model is None:
        model = create_model("st-cnn-aff", seed=0, in_shape=(1, 24, 24), num_classes=3, target_params=20_000)
    config = TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 0.05, "device": "cpu", "theta_samples": 4, **config})
    return Trainer(model, own_data(), own_data(32, seed=1), ClassificationTask(3), config, run_dir=run_dir,
                   resume=resume, progress=False)  # fmt: skip


def test_a_users_tensor_dataset_trains_resumes_evaluates_and_rebuilds(tmp_path: Path, monkeypatch) -> None:
    straight = trainer(tmp_path / "straight", epochs=4).fit()
    assert straight.finished and straight.step == 16
    original = Trainer.train_step

    def interrupt_after_half(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = original(self, x, y)
        if self.step == 7:  # the 8th step ends epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupt_after_half)
    half = trainer(tmp_path / "resumed", epochs=4).fit()
    assert half.status == "interrupted" and half.step == 8
    monkeypatch.undo()
    resumed = trainer(tmp_path / "resumed", resume=True, epochs=4).fit()
    a, b = (load_model(tmp_path / name)[0].state_dict() for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["test_error"] == straight.summary["test_error"] < 2 / 3  # it learnt something
    model, checkpoint = load_model(tmp_path / "straight")
    assert checkpoint["data"] == {} and checkpoint["input_shape"] == (1, 24, 24)
    scores = evaluate(model, own_data(32, seed=1), ClassificationTask(3), batch_size=7)
    assert scores["error"] == straight.summary["test_error"]
    for name in ("curves.png", "transformations.png", "summary.md", "metrics.csv"):
        assert (tmp_path / "straight" / name).is_file()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")] == [1, 2, 3, 4]


class FolderOfImages(Dataset):
    """A map-style dataset that is not a TensorDataset (like an image folder): items built one by one."""

    def __init__(self) -> None:
        self.data = own_data(48)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, label = self.data[index]
        return image.clone(), int(label)


def test_a_map_style_dataset_is_told_the_epoch(tmp_path: Path) -> None:
    data = FolderOfImages()
    model = create_model("cnn", in_shape=(1, 24, 24), num_classes=3, target_params=5_000)
    config = TrainConfig(epochs=3, batch_size=16, device="cpu")
    result = Trainer(model, data, own_data(16), ClassificationTask(3), config, run_dir=tmp_path, progress=False).fit()
    assert result.step == 9 and data.epochs == [0, 1, 2]


def test_a_model_of_the_wrong_output_shape_is_refused(tmp_path: Path) -> None:
    model = create_model("fcn", in_shape=(1, 24, 24), num_classes=5, target_params=5_000)
    with pytest.raises(ValueError, match=r"fcn.*\(B, 3\).*\(2, 5\)"):
        trainer(tmp_path, model=model)
    assert not (tmp_path / ".lock").exists()  # the folder is released


def test_a_model_not_built_by_create_model_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(576, 3))
    with pytest.raises(ValueError, match="create_model"):
        trainer(tmp_path, model=model)


def test_a_batch_that_does_not_divide_over_the_processes_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("stn.engine.trainer.init_distributed", lambda device: DistContext(0, 3, 0))
    with pytest.raises(ValueError, match="batch_size 16 must divide evenly over the 3 processes"):
        trainer(tmp_path)


def test_resume_with_another_recipe_is_refused_and_the_rule_says_what_is_done(tmp_path: Path) -> None:
    from stn.engine.checkpoint import CheckpointError

    trainer(tmp_path, epochs=1).fit()
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu", theta_samples=4)
    assert run_status(tmp_path, config) == "done"
    assert run_status(tmp_path, config.replace(epochs=2)) == "resume"
    assert run_status(tmp_path / "elsewhere", config) == "new"
    in_shape = json.loads((tmp_path / "config.json").read_text())["model"]["kwargs"]["in_shape"]
    assert run_status(tmp_path, config, model_options={"in_shape": in_shape}) == "done"
    assert run_status(tmp_path, config, model_options={"in_shape": [1, 9, 9]}) == "resume"  # another model
    assert run_status(tmp_path, config, model_options={"depth": 3}) == "resume"  # not recorded: not that model
    with pytest.raises(CheckpointError, match=r"momentum: checkpoint 0\.9, now 0\.5"):
        trainer(tmp_path, resume=True, epochs=1, momentum=0.5)
    with pytest.raises(FileExistsError, match="already holds a run"):
        trainer(tmp_path, epochs=1)


def test_a_finished_run_without_its_checkpoint_is_done_and_never_overwritten(tmp_path: Path) -> None:
    trainer(tmp_path, epochs=1).fit()
    (tmp_path / "checkpoint.pt").unlink()  # as in a results folder from git
    summary = (tmp_path / "summary.json").read_text()
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu", theta_samples=4)
    assert run_status(tmp_path, config) == "done"
    assert run_status(tmp_path, config.replace(epochs=2)) == "resume"  # longer: needs the checkpoint...
    for resume in (True, False):
        with pytest.raises(FileExistsError, match=r"finished run whose checkpoint\.pt is gone"):
            trainer(tmp_path, resume=resume, epochs=2)  # ...which is gone: refused, not retrained from step 0
    assert (tmp_path / "summary.json").read_text() == summary


def test_stale_temporary_files_are_removed_when_a_run_starts(tmp_path: Path) -> None:
    stale = tmp_path / ".checkpoint.pt.999999999.tmp"
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"half a checkpoint")
    trainer(tmp_path, epochs=1).fit()
    assert not stale.exists()


_HOLD = """
import sys, time, torch
from torch.utils.data import TensorDataset
from stn.engine import ClassificationTask, TrainConfig, Trainer
from stn.models import create_model

data = TensorDataset(torch.rand(32, 1, 24, 24), torch.randint(0, 3, (32,)))
model = create_model("fcn", in_shape=(1, 24, 24), num_classes=3, target_params=5_000)
trainer = Trainer(model, data, data, ClassificationTask(3), TrainConfig(epochs=1, batch_size=16, device="cpu"),
                  run_dir=sys.argv[1], progress=False)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_on_the_same_run_folder_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(_HOLD)
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        with pytest.raises(RunLockedError, match=f"process {first.pid}"):
            trainer(run)
        assert time.perf_counter() - started < 30
    finally:
        first.kill()
        first.wait()
    trainer(run, epochs=1).fit()  # the lock of a process that died is taken over


def test_the_checkpoint_records_everything_to_rebuild_the_run(tmp_path: Path) -> None:
    trainer(tmp_path, epochs=1).fit()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["name"] == "st-cnn-aff" and config["model"]["kwargs"]["num_classes"] == 3
    assert config["task"] == {"name": "classification", "num_classes": 3} and config["data"] == {}
    _, checkpoint = load_model(tmp_path)
    for key in ("optimizer", "scaler", "rng", "step", "config", "theta_history", "version", "history"):
        assert key in checkpoint, key
    assert checkpoint["version"] == 2 and checkpoint["model_kwargs"]["target_params"] == 20_000


def test_validation_error_is_recorded_every_epoch_and_its_best_in_the_summary(tmp_path: Path) -> None:
    model = create_model("st-cnn-aff", seed=0, in_shape=(1, 24, 24), num_classes=3, target_params=20_000)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu", theta_samples=4)
    run = Trainer(model, own_data(), own_data(32, seed=1), ClassificationTask(3), config, run_dir=tmp_path,
                  progress=False, val_data=own_data(24, seed=2))  # fmt: skip
    summary = run.fit().summary
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all({"val_loss", "val_error"} <= r.keys() for r in records)
    best = min(records, key=lambda r: r["val_error"])
    assert summary["best_val_error"] == best["val_error"] and summary["best_val_epoch"] == best["epoch"]
    assert summary["val_error"] == records[-1]["val_error"] and summary["val_samples"] == 24
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_loss", "val_error"} <= set(header) and "val_error" in (tmp_path / "summary.md").read_text()
    model, _ = load_model(tmp_path)
    assert evaluate(model, own_data(24, seed=2), ClassificationTask(3))["error"] == records[-1]["val_error"]
    model = create_model("st-cnn-aff", seed=0, in_shape=(1, 24, 24), num_classes=3, target_params=20_000)
    longer = Trainer(model, own_data(), own_data(32, seed=1), ClassificationTask(3), config.replace(epochs=4),
                     run_dir=tmp_path, resume=True, progress=False, val_data=own_data(24, seed=2))  # fmt: skip
    summary = longer.fit().summary  # the checkpoint's history carries the validation scores of epochs 1-3
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and all("val_error" in r for r in records)
    assert summary["best_val_error"] == min(r["val_error"] for r in records)
