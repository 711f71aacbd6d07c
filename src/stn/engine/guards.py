"""Guards of a run's numbers: a non-finite loss never reaches a checkpoint, and a diverging loss is said.

:class:`NonFiniteGuard` watches the training loss of every step (and, skipping, the gradients) and applies
``TrainConfig.on_nonfinite``:

* ``"stop"`` (the default): the run stops at the first non-finite loss with :class:`NonFiniteError`, one line
  naming the step and the likely cause; the checkpoint on disk stays the last finite one (a checkpoint is written
  only from finite weights, whatever the policy);
* ``"skip"``: the optimiser step of such a batch is skipped (its loss leaves the epoch's average out), the skips are
  counted in the epoch's record (``skipped_steps``) and announced once per epoch; :data:`MAX_SKIPS` skips in a row
  stop the run as ``"stop"`` does;
* ``"raise"``: ``FloatingPointError`` at once, for a debugger or a traceback.

Reading the loss costs a device synchronisation: on the CPU (free) the guard looks at every step, before the
optimiser step; on a GPU it keeps the first bad step on the device and looks every few steps and before every
checkpoint (never after writing NaN weights, which it would have refused); in a data-parallel run the look rides on
the loop's per-step all-reduce, so that every process stops at the same step.

:func:`divergence_warning` is the other guard: a training loss far above its start (:data:`DIVERGENCE` times the
chance level of the task, or the first epoch's loss) says once that the run diverges.

Example:
    >>> guard = NonFiniteGuard("stop", torch.device("cpu"), lr=0.1)
    >>> guard.check(0, torch.tensor(2.3))
    True
    >>> guard.check(1, torch.tensor(float("nan")))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stn.engine.guards.NonFiniteError: the training loss became non-finite (nan or inf) at step 1: ...
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from stn.engine.config import NONFINITE_POLICIES

__all__ = [
    "DIVERGENCE",
    "MAX_SKIPS",
    "NONFINITE_POLICIES",
    "NonFiniteError",
    "NonFiniteGuard",
    "divergence_warning",
    "finite",
]

MAX_SKIPS = 20  # non-finite steps in a row after which skipping stops the run
DIVERGENCE = 10.0  # a training loss this many times its start says the run diverges


class NonFiniteError(FloatingPointError):
    """The run met a non-finite loss or weights and stopped; its checkpoint is the last finite one."""


def finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every element of ``tensors`` is finite (one synchronisation)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return not flags or bool(torch.stack(flags).all())


class NonFiniteGuard:
    """Applies a ``TrainConfig.on_nonfinite`` policy (see the module docstring) to the steps of one run.

    Args:
        policy: ``"stop"``, ``"skip"`` or ``"raise"``.
        device: where the loss lives (the CPU is looked at every step, a GPU only at :meth:`look`).
        lr: the base learning rate, named in the message.
        eager: look at every step (default: on the CPU only); a data-parallel run passes False and looks through
            :meth:`flag` in its all-reduce.
    """

    def __init__(self, policy: str, device: torch.device, lr: float, *, eager: bool | None = None) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {policy!r}")
        self.policy, self.lr = policy, lr
        self.eager = device.type == "cpu" if eager is None else eager
        self.first_bad = torch.tensor(-1, device=device)  # the first step with a non-finite loss, not yet looked at
        self.skipped = 0  # skipped steps of this epoch
        self.in_a_row = 0

    def check(self, step: int, loss: Tensor, grads: Sequence[Tensor] = ()) -> bool:
        """Whether step ``step`` (its mean ``loss``, and with ``"skip"`` its ``grads``) may update the weights.

        Raises:
            NonFiniteError: ``"stop"`` (looking at once), or ``"skip"`` after :data:`MAX_SKIPS` in a row.
            FloatingPointError: ``"raise"``.
        """
        loss = loss.detach()
        if self.policy == "skip":
            if finite([loss, *grads]):
                self.in_a_row = 0
                return True
            self.skipped, self.in_a_row = self.skipped + 1, self.in_a_row + 1
            if self.in_a_row >= MAX_SKIPS:
                self.fail(step, f"loss or gradients ({MAX_SKIPS} steps in a row skipped)")
            return False
        if self.eager:
            if not torch.isfinite(loss):
                self.fail(step)
            return True
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        return True

    def flag(self) -> Tensor:
        """1.0 when a non-finite loss was seen and not yet looked at, else 0.0 (on the device, no sync)."""
        return (self.first_bad >= 0).float()

    def look(self, step: int | None = None) -> None:
        """Raise for a non-finite loss seen so far (``step``: where another process found one)."""
        first = int(self.first_bad)
        if first >= 0 or step is not None:
            self.fail(first if first >= 0 else step)

    def fail(self, step: int, what: str = "loss") -> None:
        """Raise the policy's error for a non-finite ``what`` at ``step``."""
        message = (
            f"the training {what} became non-finite (nan or inf) at step {step}: the learning rate (lr {self.lr:g}) "
            "is likely too high, try a smaller --lr (or --clip-grad-norm); the run stopped and its checkpoint is "
            "the last one with finite weights"
        )
        raise (FloatingPointError if self.policy == "raise" else NonFiniteError)(message)

    def check_weights(self, step: int, tensors: Iterable[Tensor]) -> None:
        """Raise the policy's error when a floating-point tensor of ``tensors`` (a state dict's values) is not finite:
        checked before every checkpoint, so that none is written from NaN weights."""
        if not finite(t for t in tensors if t.is_floating_point()):
            self.fail(step, "weights")

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's ``{"skipped_steps": n}`` with ``"skip"`` (announced when n > 0), else ``{}``."""
        if self.policy != "skip":
            return {}
        skipped, self.skipped = self.skipped, 0
        if skipped:
            warnings.warn(
                f"epoch {epoch}: skipped {skipped} steps whose loss or gradients were not finite (lr {self.lr:g} "
                "may be too high)",
                RuntimeWarning,
                stacklevel=2,
            )
        return {"skipped_steps": skipped}


def divergence_warning(history: Sequence[dict[str, Any]], chance_loss: float | None, lr: float) -> str | None:
    """The warning for the last epoch of ``history`` when its training loss is over :data:`DIVERGENCE` times its
    start (the task's ``chance_loss`` or the first epoch's loss, whichever is lower), else None.

    Example:
        >>> divergence_warning([{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}], 2.3, 0.01)
        >>> print(divergence_warning([{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 5e5}], 2.3, 1e6))
        epoch 2: the training loss 5e+05 is over 10x its start (2): the run diverges; the learning rate (lr 1e+06) ...
    """
    loss = history[-1].get("train_loss")
    starts = [s for s in (chance_loss, history[0].get("train_loss") if len(history) > 1 else None) if s is not None]
    starts = [s for s in starts if math.isfinite(s) and s > 0]
    if loss is None or not starts or not loss > DIVERGENCE * min(starts):
        return None
    return (
        f"epoch {history[-1]['epoch']}: the training loss {loss:.3g} is over {DIVERGENCE:g}x its start "
        f"({min(starts):.3g}): the run diverges; the learning rate (lr {lr:g}) is likely too high"
    )
