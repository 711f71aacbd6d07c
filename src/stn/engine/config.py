"""The training recipe: one dataclass, saved with every checkpoint and run, and the presets (budgets) built on it.

The defaults are the paper's recipe for distorted MNIST plus momentum 0.9 (our choice); the recipe beyond the
paper's is off by default (docs/training.md). An experiment's budgets are :class:`Preset` s: named overrides of
these defaults plus the options of its data.

Example:
    >>> config = TrainConfig(iterations=1000)
    >>> config.lr, config.batch_size
    (0.01, 256)
    >>> QUICK = Preset("1,000 steps at lr 0.03", {"iterations": 1000, "lr": 0.03})
    >>> QUICK.config(batch_size=64).lr
    0.03
    >>> QUICK.config(epochs=3).iterations is None  # a length asked for replaces the budget's
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from stn.engine.options import NONFINITE_POLICIES, RULES, check

__all__ = ["NONFINITE_POLICIES", "RESUMABLE_FIELDS", "SCHEDULES", "Preset", "TrainConfig"]

# Fields a resumed run may change; every other field must match the checkpoint's.
RESUMABLE_FIELDS = frozenset(
    {"epochs", "iterations", "device", "tensorboard", "eval_batch_size", "channels_last", "num_workers", "on_nonfinite"}
)
_OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine")
_OPTIONAL = ("iterations", "clip_grad_norm")  # None means "not set"


@dataclass
class TrainConfig:
    """Everything that defines how a run trains.

    Attributes:
        epochs: passes over the training set (ignored when ``iterations`` is set).
        iterations: total optimiser steps; overrides ``epochs`` (the last epoch may then be partial).
        batch_size: global batch size (split evenly across data-parallel processes).
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        lr: base learning rate. momentum, weight_decay: of the optimiser.
        schedule: ``"step"`` (the paper's: times ``lr_gamma`` at each of ``lr_milestones``) or ``"cosine"``
            (from ``lr`` down to 0 along half a cosine; the milestones are then unused).
        lr_milestones: fractions of training at which the learning rate is multiplied by ``lr_gamma``.
        warmup: fraction of training in [0, 1) over which the learning rate rises linearly to its schedule.
        nesterov: Nesterov momentum (SGD with ``momentum > 0`` only).
        localization_lr_scale: the localisation nets' learning rate is ``lr * localization_lr_scale``.
        clip_grad_norm: clip the gradients' global norm to this (None: no clipping).
        seed: model initialisation (when the experiment builds it under the seed), data order, augmentation.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: float16 mixed precision (CUDA only).
        channels_last: keep the weights of 2-D models channels-last (NHWC); oneDNN's convolutions are about 20%
            faster so on CPU. Speed only: a run may be resumed with the other setting.
        theta_samples: evaluation samples whose θ are kept every epoch (for the training animation).
        tensorboard: also log to TensorBoard (needs the ``tensorboard`` package).
        eval_batch_size: batch size of evaluation.
        num_workers: data-loading processes for map-style datasets (0: in the training process).
        on_nonfinite: what a non-finite loss does (:mod:`stn.engine.guards`): ``"stop"`` the run with one line
            (its checkpoint stays the last finite one), ``"skip"`` the batch's step, or ``"raise"`` at once.
    """

    epochs: int = 10
    iterations: int | None = None
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    lr_milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    lr_gamma: float = 0.1
    warmup: float = 0.0
    nesterov: bool = False
    localization_lr_scale: float = 1.0
    clip_grad_norm: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = True
    theta_samples: int = 16
    tensorboard: bool = False
    eval_batch_size: int = 1000
    num_workers: int = 0
    on_nonfinite: str = "stop"

    def __post_init__(self) -> None:
        if not isinstance(self.lr_milestones, (list, tuple)):
            raise ValueError(f"lr_milestones must be a sequence of fractions, got {self.lr_milestones!r}")
        try:
            self.lr_milestones = tuple(check("lr_milestone", m) for m in self.lr_milestones)
        except ValueError:
            raise ValueError(
                f"lr_milestones must be fractions of training in (0, 1), got {self.lr_milestones}"
            ) from None
        for name in RULES.keys() & {f.name for f in dataclasses.fields(self)}:
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL:
                setattr(self, name, check(name, value))
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {self.on_nonfinite!r}")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs SGD with momentum > 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``KeyError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (``None`` values are ignored: "not given on the command line")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def differences(self, other: TrainConfig, ignore: frozenset[str] = RESUMABLE_FIELDS) -> dict[str, tuple]:
        """``{field: (self's value, other's value)}`` for fields that differ, except ``ignore``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}


@dataclass(frozen=True)
class Preset:
    """A named budget of an experiment: overrides of :class:`TrainConfig` plus options of the experiment's data.

    Attributes:
        description: one line for ``--help``.
        train: :class:`TrainConfig` fields that differ from the defaults.
        data: the experiment's data options (sample counts, splits...).
    """

    description: str
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> TrainConfig:
        """The preset's :class:`TrainConfig` with ``overrides`` (``None`` values ignored).

        A length given as ``epochs`` (without ``iterations``) replaces the preset's length, however the preset
        spells it: ``--epochs 90`` on a budget of 14,063 iterations trains 90 epochs, rather than the preset's
        iterations silently overriding what was asked for.
        """
        train = dict(self.train)
        if overrides.get("epochs") is not None and overrides.get("iterations") is None:
            train.pop("iterations", None)
        return TrainConfig(**train).replace(**overrides)

    def __getattr__(self, name: str) -> Any:
        """A setting of the preset: ``preset.lr`` is ``preset.config().lr``, ``preset.num_test`` is
        ``preset.data["num_test"]``."""
        if name.startswith("_") or name in ("description", "train", "data"):
            raise AttributeError(name)
        if name in self.data:
            return self.data[name]
        return getattr(self.config(), name)
