"""The training configuration: one dataclass, saved with every checkpoint and run.

The defaults are the paper's recipe for distorted MNIST (section 4.1): SGD, batch 256, base learning rate 0.01
divided by 10 at fixed fractions of training (the paper: every 50k of 150k iterations, i.e. at 1/3 and 2/3),
cross-entropy, no weight decay, and the localisation net at the same learning rate as the rest. Momentum 0.9 is
not stated in the paper; it is our choice (the usual SGD setting of the paper's Torch code base, and it makes the
short CPU budgets converge); ``momentum=0`` gives plain SGD.

Example:
    >>> config = TrainConfig(data="rts", model="st-cnn-aff", iterations=1000)
    >>> config.lr, config.batch_size
    (0.01, 256)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RESUMABLE_FIELDS", "TEST_SEED", "TrainConfig"]

# The distortions of the test set never change: every run, model and seed is scored on the same digits.
TEST_SEED = 0
# Fields a resumed run may change; every other field must match the checkpoint's.
RESUMABLE_FIELDS = frozenset(
    {"epochs", "iterations", "device", "data_dir", "download", "tensorboard", "eval_batch_size", "channels_last"}
)


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        data: distorted-MNIST variant (see ``stn.data.VARIANTS``).
        model: registered model name (see ``stn.models.list_models()``).
        model_options: extra keyword arguments of the model factory (e.g. ``target_params``).
        epochs: passes over the training set, each with fresh distortions (ignored when ``iterations`` is set).
        iterations: total SGD steps; overrides ``epochs`` (the last epoch may then be partial).
        batch_size: global batch size (split evenly across data-parallel processes).
        lr: base learning rate. momentum, weight_decay: of SGD.
        lr_milestones: fractions of training at which the learning rate is multiplied by ``lr_gamma``.
        localization_lr_scale: the localisation nets' learning rate is ``lr * localization_lr_scale``.
        seed: model initialisation, training distortions and batch order.
        num_train, num_test: use a fixed subset of N digits of each split (None: all).
        data_dir: where MNIST is looked for (None: the data layer's default search). download: fetch if missing.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: float16 mixed precision (CUDA only).
        channels_last: keep the weights of 2-D models channels-last (NHWC); oneDNN's convolutions are about 20%
            faster so on CPU. Speed only: a run may be resumed with the other setting.
        theta_samples: test digits whose θ are kept every epoch (for the training animation).
        tensorboard: also log to TensorBoard (needs the ``tensorboard`` package).
        eval_batch_size: batch size of evaluation.
    """

    data: str = "rts"
    model: str = "st-cnn-aff"
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    iterations: int | None = None
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    lr_gamma: float = 0.1
    localization_lr_scale: float = 1.0
    seed: int = 0
    num_train: int | None = None
    num_test: int | None = None
    data_dir: str | None = None
    download: bool = False
    device: str = "auto"
    amp: bool = False
    channels_last: bool = True
    theta_samples: int = 16
    tensorboard: bool = False
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size}
        positive |= {
            k: v
            for k, v in (("iterations", self.iterations), ("num_train", self.num_train), ("num_test", self.num_test))
            if v is not None
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones must be fractions of training in (0, 1), got {self.lr_milestones}")
        if self.theta_samples < 0:
            raise ValueError(f"theta_samples must be >= 0, got {self.theta_samples}")

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

    def differences(self, other: TrainConfig, ignore: frozenset[str] = RESUMABLE_FIELDS) -> dict[str, tuple]:
        """``{field: (self's value, other's value)}`` for fields that differ, except ``ignore``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
