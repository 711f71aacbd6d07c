"""The guards of a run's numbers (stn.engine.guards): a non-finite loss stops the run (or skips the step, or raises)
and never reaches a checkpoint; a diverging loss warns once."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from stn.engine import ClassificationTask, TrainConfig, Trainer
from stn.engine.checkpoint import Progress, load_checkpoint
from stn.engine.guards import MAX_SKIPS, NonFiniteError, NonFiniteGuard, divergence_warning
from stn.engine.rundir import SUMMARY_FILE
from stn.io import read_jsonl
from stn.models import create_model


class PoisonedTask(ClassificationTask):
    """Classification whose training steps ``poisoned`` (counted from 0) get a non-finite output, or whose
    reported training loss is multiplied by ``inflate`` from step ``inflate_from`` on (the gradients stay sane)."""

    def __init__(self, poisoned=(), inflate: float = 1.0, inflate_from: int = 0) -> None:
        super().__init__(3)
        self.poisoned, self.inflate, self.inflate_from = set(poisoned), inflate, inflate_from
        self.step = 0

    def evaluate(self, output: torch.Tensor, target: torch.Tensor):
        training = output.requires_grad
        if training and self.step in self.poisoned:
            output = output * float("nan")
        loss, sums = super().evaluate(output, target)
        if training:
            if self.step >= self.inflate_from:
                sums = sums * torch.tensor([self.inflate, 1.0], dtype=sums.dtype)
            self.step += 1
        return loss, sums


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 12, 12, generator=g), torch.randint(0, 3, (n,), generator=g))


def trainer(run_dir: Path, task: ClassificationTask, **config) -> Trainer:
    """An FCN on 48 random 12x12 images (3 steps of 16 per epoch)."""
    model = create_model("fcn", seed=0, in_shape=(1, 12, 12), num_classes=3, target_params=3_000)
    config = TrainConfig(**{"epochs": 4, "batch_size": 16, "lr": 0.05, "device": "cpu", **config})
    return Trainer(model, data(48, 0), data(16, 1), task, config, run_dir=run_dir, progress=False)


def finite_weights(run_dir: Path) -> bool:
    return all(torch.isfinite(v).all() for v in load_checkpoint(run_dir)["model"].values() if v.is_floating_point())


def test_nan_mid_run_stops_naming_the_step_and_keeps_the_last_finite_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match=r"at step 6: the learning rate \(lr 0\.05\) is likely too high"):
        trainer(tmp_path, PoisonedTask(poisoned=range(6, 100))).fit()  # epoch 3 of 4 turns NaN
    progress = Progress.of(load_checkpoint(tmp_path))
    assert progress.step == 6 and not progress.finished and finite_weights(tmp_path)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert not (tmp_path / SUMMARY_FILE).exists() and not (tmp_path / ".lock").exists()


def test_raise_raises_at_once_with_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match="at step 4") as caught:
        trainer(tmp_path, PoisonedTask(poisoned=[4]), on_nonfinite="raise").fit()
    assert type(caught.value) is FloatingPointError  # not the one-line NonFiniteError of stop
    assert Progress.of(load_checkpoint(tmp_path)).step == 3


def test_skip_skips_the_poisoned_steps_counts_them_and_warns_once_per_epoch(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"epoch 2: skipped 2 steps") as caught:
        result = trainer(tmp_path, PoisonedTask(poisoned=[3, 5]), on_nonfinite="skip").fit()
    assert result.finished and finite_weights(tmp_path)
    assert [str(w.message).split(":")[0] for w in caught if "skipped" in str(w.message)] == ["epoch 2"]
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["skipped_steps"] for r in records] == [0, 2, 0, 0]
    assert all(math.isfinite(r["train_loss"]) for r in records)  # the skipped batches are left out


def test_skip_gives_up_after_too_many_in_a_row(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match=f"{MAX_SKIPS} steps in a row"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer(tmp_path, PoisonedTask(poisoned=range(2, 100)), on_nonfinite="skip", epochs=9).fit()
    assert Progress.of(load_checkpoint(tmp_path)).step < 2 + MAX_SKIPS and finite_weights(tmp_path)


def test_a_diverging_loss_warns_once_naming_the_lr(tmp_path: Path) -> None:
    said = r"epoch 2: the training loss .* over 10x its start .*\(lr 0\.05\)"
    with pytest.warns(RuntimeWarning, match=said) as caught:
        result = trainer(tmp_path, PoisonedTask(inflate=1e3, inflate_from=3)).fit()
    assert result.finished  # a warning, not a stop: the loss is finite
    assert len([w for w in caught if "diverges" in str(w.message)]) == 1


def test_a_healthy_run_gives_no_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trainer(tmp_path, PoisonedTask()).fit().finished


def test_the_divergence_rule_compares_with_the_lower_of_chance_and_the_first_epoch() -> None:
    first = {"epoch": 1, "train_loss": 0.2}
    assert divergence_warning([first, {"epoch": 2, "train_loss": 1.5}], 2.3, 0.1) is None  # 7.5x
    assert "its start (0.2)" in divergence_warning([first, {"epoch": 2, "train_loss": 2.5}], 2.3, 0.1)
    assert "its start (2.3)" in divergence_warning([{"epoch": 1, "train_loss": 30.0}], 2.3, 0.1)  # chance only
    assert divergence_warning([{"epoch": 1, "train_loss": 30.0}], None, 0.1) is None  # nothing to compare with


def test_a_gpu_guard_looks_when_asked_not_at_every_step() -> None:
    guard = NonFiniteGuard("stop", torch.device("cpu"), lr=0.1, eager=False)  # how it runs on a GPU
    assert guard.check(3, torch.tensor(float("inf"))) and guard.check(4, torch.tensor(float("nan")))
    assert guard.flag().item() == 1.0
    with pytest.raises(NonFiniteError, match="at step 3"):
        guard.look()


def test_a_lazy_guard_as_on_a_gpu_still_stops_before_the_next_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lazy(policy: str, device: torch.device, lr: float, eager: bool | None = None) -> NonFiniteGuard:
        return NonFiniteGuard(policy, device, lr, eager=False)  # reads the loss every few steps only

    monkeypatch.setattr("stn.engine.trainer.NonFiniteGuard", lazy)
    with pytest.raises(NonFiniteError, match="at step 7"):
        trainer(tmp_path, PoisonedTask(poisoned=range(7, 100))).fit()
    assert Progress.of(load_checkpoint(tmp_path)).step == 6 and finite_weights(tmp_path)
