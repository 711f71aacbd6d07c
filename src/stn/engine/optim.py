"""The optimiser and the learning-rate schedule of a run: :func:`make_optimizer` builds SGD or Adam over
:func:`stn.param_groups` (the localisation nets at their own rate), :func:`learning_rate` is the schedule as a
function of the step alone, and :func:`apply_lr_schedule` sets it on every group, so that a resumed run gets the
same rates as one trained without a break.

Example:
    >>> [round(learning_rate(s, 9, 0.01, (1 / 3, 2 / 3), 0.1), 6) for s in (0, 3, 6)]
    [0.01, 0.001, 0.0001]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stn.engine.config import TrainConfig
from stn.modules import param_groups

__all__ = ["apply_lr_schedule", "learning_rate", "make_optimizer", "schedule_change", "scheduled_lr"]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimiser (SGD with momentum, or Adam) over :func:`stn.param_groups`: localisation nets at
    ``lr * localization_lr_scale``, the rest at ``lr``."""
    c = config
    groups = param_groups(model, c.lr, c.localization_lr_scale)
    if c.optimizer == "adam":
        return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov)


def learning_rate(
    step: int,
    total_steps: int,
    base_lr: float,
    milestones: tuple[float, ...],
    gamma: float,
    *,
    schedule: str = "step",
    warmup: float = 0.0,
) -> float:
    """The learning rate at ``step`` (counted from 0) of ``total_steps``.

    ``schedule="step"`` (the paper's): ``base_lr * gamma ** k`` after ``k`` of the ``milestones`` (fractions of
    ``total_steps``). ``schedule="cosine"``: ``base_lr * (1 + cos(pi * step / total_steps)) / 2``. Either is
    multiplied by a linear warm-up ``min(1, (step + 1) / W)`` over the first ``W = round(warmup * total_steps)``
    steps.

    Example:
        >>> [round(learning_rate(s, 150_000, 0.01, (1 / 3, 2 / 3), 0.1), 6) for s in (0, 50_000, 100_000)]
        [0.01, 0.001, 0.0001]
        >>> [round(learning_rate(s, 100, 0.1, (), 0.1, schedule="cosine", warmup=0.1), 4) for s in (0, 9, 50, 99)]
        [0.01, 0.098, 0.05, 0.0]
    """
    if schedule == "cosine":
        rate = base_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    elif schedule == "step":
        rate = base_lr * gamma ** sum(step >= round(m * total_steps) for m in milestones)
    else:
        raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
    warm = round(warmup * total_steps)
    return rate * min(1.0, (step + 1) / warm) if warm > 0 else rate


def apply_lr_schedule(
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    milestones: tuple[float, ...],
    *,
    gamma: float = 0.1,
    schedule: str = "step",
    warmup: float = 0.0,
) -> float:
    """Set every param group's lr to its ``initial_lr`` times the :func:`learning_rate` factor at ``step``.

    ``initial_lr`` (the key ``torch.optim.lr_scheduler`` uses) is stored on the first call, so groups built at
    different rates (:func:`make_optimizer`'s localisation group) keep their ratio to the base rate. The lrs depend on
    ``step`` alone, not on earlier calls, so a resumed run gets the same rates. Returns the factor.

    Example:
        >>> from stn.models import create_model
        >>> model = create_model("st-cnn-aff", in_shape=(1, 28, 28), target_params=20_000)
        >>> opt = make_optimizer(model, TrainConfig(lr=0.01, localization_lr_scale=0.1))
        >>> apply_lr_schedule(opt, 5_000, 10_000, (0.5, 0.75))
        0.1
        >>> [round(g["lr"], 6) for g in opt.param_groups]
        [0.001, 0.0001]
    """
    factor = learning_rate(step, total_steps, 1.0, milestones, gamma, schedule=schedule, warmup=warmup)
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
    return factor


def scheduled_lr(config: TrainConfig, step: int, total_steps: int) -> float:
    """The base learning rate the ``config``'s schedule gives at ``step`` of ``total_steps``.

    Example:
        >>> [round(scheduled_lr(TrainConfig(lr=0.02), s, 400), 6) for s in (0, 200, 399)]
        [0.02, 0.002, 0.0002]
    """
    c = config
    return c.lr * learning_rate(
        step, total_steps, 1.0, c.lr_milestones, c.lr_gamma, schedule=c.schedule, warmup=c.warmup
    )


def schedule_change(config: TrainConfig, step: int, was: int, now: int) -> str:
    """What a run resumed at ``step`` with another length (``now`` steps in all, ``was`` before) does with its
    learning rate: it follows the schedule of its new length from the step it reached (docs/training.md, "Resume,
    refuse, already done"), so the rate may go back up.

    Example:
        >>> schedule_change(TrainConfig(lr=0.02), 400, 400, 800)  # 4 epochs of 100 steps, extended to 8
        'resuming at step 400 of 800 (the checkpoint ran 400): the schedule now spans 800 steps, lr 0.0002 -> 0.002'
    """
    before, after = scheduled_lr(config, max(step - 1, 0), was), scheduled_lr(config, step, now)
    return (
        f"resuming at step {step} of {now} (the checkpoint ran {was}): the schedule now spans {now} steps, "
        f"lr {before:.3g} -> {after:.3g}"
    )
