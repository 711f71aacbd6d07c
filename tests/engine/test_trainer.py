"""The training loop: files it writes, the learning-rate schedule, resume equivalence, signals, errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

import stn
from stn.engine.checkpoint import CheckpointError, load_checkpoint
from stn.engine.config import TrainConfig
from stn.engine.optim import apply_lr_schedule, learning_rate, make_optimizer
from stn.engine.trainer import Trainer
from stn.experiments._common import make_trainer
from stn.io import read_jsonl


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "device": "cpu", "theta_samples": 4, **overrides})


def train(
    config: TrainConfig,
    run_dir: Path,
    data_dir: Path,
    *,
    model: str = "st-fcn-aff",
    variant: str = "r",
    resume: bool = False,
    figures: bool = False,
    **options,
):
    """A small distorted-MNIST run (48 training, 32 test digits) of ``model``."""
    return make_trainer(
        variant, model, config, run_dir, model_options={"target_params": 40_000, **options}, num_train=48,
        num_test=32, data_dir=str(data_dir), resume=resume, progress=False, figures=figures,
    )  # fmt: skip


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


def test_learning_rate_steps_down_at_the_milestones() -> None:
    lrs = [learning_rate(s, 9, 0.01, (1 / 3, 2 / 3), 0.1) for s in range(9)]
    assert lrs == pytest.approx([0.01] * 3 + [0.001] * 3 + [0.0001] * 3)


def test_the_schedule_keeps_each_groups_ratio_to_the_base_rate() -> None:
    model = nn.Sequential(stn.SpatialTransformer(stn.FCLocalization((1, 6, 6), hidden=(4,))), nn.Conv2d(1, 2, 3))
    optimizer = make_optimizer(model, TrainConfig(lr=0.01, localization_lr_scale=0.1))
    assert [g["name"] for g in optimizer.param_groups] == ["base", "localization"]
    # out of order: the rates are a function of the step (a resumed run must get them back), not of the calls
    for step, decays in [(0, 0), (3, 1), (8, 2), (2, 0), (6, 2), (5, 1)]:
        factor = apply_lr_schedule(optimizer, step, 9, (1 / 3, 2 / 3))
        assert factor == pytest.approx(0.1**decays)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01 * 0.1**decays, 0.001 * 0.1**decays])
        assert [g["initial_lr"] for g in optimizer.param_groups] == [0.01, 0.001]
    apply_lr_schedule(optimizer, 1, 2, (0.5,), gamma=0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.005, 0.0005])


def test_a_run_writes_checkpoint_metrics_summary_and_figures(tiny_mnist: Path, tmp_path: Path) -> None:
    result = train(tiny_config(), tmp_path / "run", tiny_mnist, figures=True).fit()
    assert result.finished and result.step == result.total_steps == 6
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    for key in (
        "train_loss",
        "test_error",
        "lr",
        "images_per_s",
        "transformer.scale_mean",
        "transformer.outside_frac",
        "transformer.fold_frac",
    ):
        assert key in records[-1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_error"] == records[-1]["test_error"] == result.summary["test_error"]
    assert summary["train_samples"] == 48 and summary["test_samples"] == 32
    assert summary["numerics"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # where it repeats
    for name in ("checkpoint.pt", "config.json", "metrics.csv", "summary.md", "curves.png", "transformations.png"):
        assert (tmp_path / "run" / name).is_file(), name
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["finished"] and checkpoint["theta_history"]["epochs"] == [0, 1, 2]
    assert checkpoint["theta_history"]["theta"]["transformer"].shape == (3, 4, 1, 6)
    images = checkpoint["theta_history"]["images"]
    assert images.untyped_storage().nbytes() == images.numel() * 4  # the kept digits, not the whole test set
    assert not list((tmp_path / "run").glob(".*tmp"))  # atomic writes leave no temporary files


def test_iterations_override_epochs_and_may_end_mid_epoch(tiny_mnist: Path, tmp_path: Path) -> None:
    result = train(tiny_config(iterations=5, epochs=50), tmp_path / "run", tiny_mnist, model="fcn").fit()
    assert result.step == 5
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [3, 5]


@pytest.fixture(scope="module")
def straight_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """A 3-epoch run (9 steps) trained without interruption."""
    config = tiny_config(epochs=3)
    out = tmp_path_factory.mktemp("straight") / "run"
    train(config, out, tiny_mnist).fit()
    return config, out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_reaches_the_same_weights(
    straight_run: tuple[TrainConfig, Path],
    tiny_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
) -> None:
    config, straight = straight_run
    original = Trainer.train_step

    def step_then_signal(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = original(self, x, y)
        if self.step == 3:  # the 4th step, the first of the second epoch
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIG_IGN under nohup
    stopped = train(config, tmp_path / "resumed", tiny_mnist).fit()
    assert stopped.status == "interrupted" and stopped.signal == signum and stopped.step == 4
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 4
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # handlers restored
    monkeypatch.undo()

    finished = train(config, tmp_path / "resumed", tiny_mnist, resume=True).fit()
    assert finished.finished and finished.step == 9
    expected, resumed = weights(straight), weights(tmp_path / "resumed")
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    a = read_jsonl(straight / "metrics.jsonl")
    b = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [(r["epoch"], r["train_loss"], r["test_error"]) for r in a] == [
        (r["epoch"], r["train_loss"], r["test_error"]) for r in b
    ]


def test_seed_decides_the_weights(tiny_mnist: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(tiny_config(epochs=1, seed=seed), tmp_path / name, tiny_mnist, model="fcn").fit()
    a, b, c = (weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_channels_last_changes_the_layout_not_the_training(tiny_mnist: Path, tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    trainer = train(config, tmp_path / "nhwc", tiny_mnist, model="st-cnn-aff")
    conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    trainer.fit()
    train(config.replace(channels_last=False), tmp_path / "nchw", tiny_mnist, model="st-cnn-aff").fit()
    nhwc, nchw = weights(tmp_path / "nhwc"), weights(tmp_path / "nchw")
    for key in nchw:
        torch.testing.assert_close(nhwc[key], nchw[key], rtol=1e-4, atol=1e-5, msg=key)


def test_an_existing_run_is_not_overwritten_and_resume_checks_the_config(tiny_mnist: Path, tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    run = tmp_path / "run"
    train(config, run, tiny_mnist, model="fcn").fit()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, run, tiny_mnist, model="fcn")
    with pytest.raises(CheckpointError, match="batch_size"):
        train(config.replace(batch_size=8), run, tiny_mnist, model="fcn", resume=True)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.01, now 0\.02"):
        train(config.replace(lr=0.02), run, tiny_mnist, model="fcn", resume=True)
    with pytest.raises(CheckpointError, match="model"):
        train(config, run, tiny_mnist, model="cnn", resume=True)
    with pytest.raises(CheckpointError, match="model"):  # the same name with other arguments
        train(config, run, tiny_mnist, model="fcn", resume=True, target_params=30_000)
    with pytest.raises(CheckpointError, match=r"data\.variant"):
        train(config, run, tiny_mnist, model="fcn", variant="rts", resume=True)
    longer = train(config.replace(epochs=2), run, tiny_mnist, model="fcn", resume=True).fit()
    assert longer.step == 6  # a finished run may be extended


def test_resume_from_a_corrupt_checkpoint_fails_clearly(tiny_mnist: Path, tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    train(config, tmp_path / "run", tiny_mnist, model="fcn").fit()
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        train(config, tmp_path / "run", tiny_mnist, model="fcn", resume=True)


@pytest.mark.parametrize(
    ("overrides", "options", "error", "match"),
    [
        ({"batch_size": 128}, {}, ValueError, "exceeds"),
        ({"amp": True}, {}, ValueError, "CUDA"),
        ({}, {"variant": "mnist"}, KeyError, "rts"),
        ({}, {"model": "resnet"}, KeyError, "st-cnn-aff"),
    ],
)
def test_bad_settings_fail_before_training(
    tiny_mnist: Path, tmp_path: Path, overrides: dict, options: dict, error: type, match: str
) -> None:
    model = options.pop("model", "fcn")
    variant = options.pop("variant", "r")
    with pytest.raises(error, match=match):
        train(tiny_config(**overrides), tmp_path / "run", tiny_mnist, model=model, variant=variant, **options)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_longer_resume_follows_the_schedule_of_the_new_length_and_says_so(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(epochs=2, lr=0.01)  # 3 steps an epoch: 6 steps, decays at steps 2 and 4
    train(config, tmp_path / "run", tiny_mnist, model="fcn").fit()
    capsys.readouterr()
    train(config.replace(epochs=4), tmp_path / "run", tiny_mnist, model="fcn", resume=True).fit()  # 12 steps
    # the rate the 6-step run ended at, then the 12-step schedule's from step 6 (one decay, at step 4): back up
    assert "resuming at step 6 of 12 (the checkpoint ran 6): the schedule now spans 12 steps, lr 0.0001 -> 0.001" in (
        capsys.readouterr().out
    )
    train(config.replace(epochs=4), tmp_path / "straight", tiny_mnist, model="fcn").fit()
    extended, straight = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("run", "straight"))
    assert [r["lr"] for r in extended] == pytest.approx([0.001, 0.0001, 0.0001, 0.0001])
    assert [r["lr"] for r in extended[2:]] == [r["lr"] for r in straight[2:]]  # the new length's schedule
