"""The recipe beyond the paper's (cosine schedule, warm-up, Nesterov): off by default, so the paper's is unchanged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from stn.engine.config import TrainConfig
from stn.engine.optim import learning_rate, make_optimizer
from stn.engine.options import add_training_options
from stn.experiments._common import make_trainer
from stn.io import read_jsonl


def test_the_paper_recipe_is_the_default_and_unchanged() -> None:
    config = TrainConfig()
    assert (config.schedule, config.warmup, config.nesterov) == ("step", 0.0, False)
    assert (config.lr, config.lr_milestones, config.lr_gamma, config.momentum) == (0.01, (1 / 3, 2 / 3), 0.1, 0.9)
    by_hand = [0.01 * 0.1 ** ((s >= 50_000) + (s >= 100_000)) for s in range(0, 150_000, 997)]
    assert [learning_rate(s, 150_000, 0.01, (1 / 3, 2 / 3), 0.1) for s in range(0, 150_000, 997)] == by_hand
    optimizer = make_optimizer(nn.Linear(2, 2), config)
    assert optimizer.param_groups[0]["nesterov"] is False


def test_cosine_schedule_with_warmup_by_hand() -> None:
    total, warm = 200, 0.1  # 20 warm-up steps
    for step in (0, 5, 19, 20, 100, 150, 199):
        cosine = 0.5 * (1 + math.cos(math.pi * step / total))
        expected = 0.1 * cosine * min(1.0, (step + 1) / 20)
        assert learning_rate(step, total, 0.1, (0.5,), 0.1, schedule="cosine", warmup=warm) == pytest.approx(expected)
    # warm-up on the step schedule too; the milestones are ignored by the cosine schedule
    assert learning_rate(0, 100, 0.1, (0.5,), 0.1, warmup=0.5) == pytest.approx(0.1 / 50)
    assert learning_rate(60, 100, 0.1, (0.5,), 0.1, warmup=0.5) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule must be"):
        learning_rate(0, 10, 0.1, (), 0.1, schedule="linear")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"schedule": "linear"}, "schedule must be one of step, cosine"),
        ({"warmup": 1.0}, "warmup must be a fraction of training in"),
        ({"warmup": float("nan")}, "warmup must be"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov needs SGD with momentum > 0"),
        ({"nesterov": True, "optimizer": "adam"}, "nesterov needs SGD"),
        ({"nesterov": "yes"}, "nesterov must be True or False"),
    ],
)
def test_bad_recipes_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**overrides)


def test_command_line_recipe_options_are_validated() -> None:
    import argparse

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_training_options(parser, {"quick": TrainConfig()})
    args = parser.parse_args(["--schedule", "cosine", "--warmup", "0.05", "--nesterov"])
    assert (args.schedule, args.warmup, args.nesterov) == ("cosine", 0.05, True)
    assert parser.parse_args([]).nesterov is None  # not given: the preset decides
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--warmup", "nan"])


def test_a_cosine_run_logs_the_schedule_and_uses_nesterov(tiny_mnist: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        epochs=3, batch_size=16, device="cpu", theta_samples=0, lr=0.05, schedule="cosine", warmup=0.2, nesterov=True
    )
    trainer = make_trainer(
        "r", "st-fcn-aff", config, tmp_path / "run", model_options={"target_params": 40_000}, num_train=48,
        num_test=32, data_dir=str(tiny_mnist), progress=False, figures=False,
    )  # fmt: skip
    assert all(g["nesterov"] for g in trainer.optimizer.param_groups)
    assert trainer.fit().finished
    # the lr logged at each epoch's end is that of its last step (steps 2, 5, 8 of 9)
    logged = [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    expected = [learning_rate(s, 9, 0.05, (), 0.1, schedule="cosine", warmup=0.2) for s in (2, 5, 8)]
    assert logged == pytest.approx(expected)
    assert torch.isfinite(torch.tensor(logged)).all()
