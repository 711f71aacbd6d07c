"""What a model is trained to do: its loss, its metrics and the output it must produce.

A :class:`Task` turns a batch's model output and target into the loss to minimise (a mean over the batch) and the
*sums* of its metrics over the batch (so that batches, processes and epochs combine exactly by adding). Every
metric is reported as its sum divided by the number of samples; ``metrics[0]`` is always ``"loss"``, and
``primary`` names the one tables report. The tasks and their shapes: the classes below, and docs/training.md.

Example:
    >>> import torch
    >>> task = ClassificationTask(3)
    >>> loss, sums = task.evaluate(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 2]))
    >>> task.metrics, sums[1].item()
    (('loss', 'error'), 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from stn.coords import box_iou

__all__ = [
    "ClassificationTask",
    "RegressionTask",
    "SequenceTask",
    "Task",
    "TripletTask",
    "task_from_spec",
    "triplet_loss",
]


class Task:
    """Base class of the tasks (see the module docstring). Subclasses set ``name``, ``metrics``, ``primary``
    and implement :meth:`check_output` and :meth:`evaluate`."""

    name: str = "task"
    metrics: tuple[str, ...] = ("loss",)
    primary: str = "loss"

    def check_output(self, output: Tensor, target: Tensor) -> None:
        """Raise ``ValueError`` naming the expected shape when ``output`` cannot be scored against ``target``."""
        raise NotImplementedError

    def evaluate(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, sums)``: the mean loss over the batch (to backpropagate) and the float64 ``(len(metrics),)``
        sums of the metrics over the batch."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What rebuilds the task with :func:`task_from_spec` (saved in checkpoints)."""
        return {"name": self.name}

    @property
    def chance_loss(self) -> float | None:
        """The loss of uniform predictions (where a fresh classifier starts), None when the task has no such level;
        the divergence guard measures the training loss against it (:mod:`stn.engine.guards`)."""
        return None

    def _fail(self, output: Tensor, target: Tensor, expected: str) -> None:
        raise ValueError(
            f"the {self.name} task needs model outputs {expected}, but the model returned "
            f"{tuple(output.shape)} for targets {tuple(target.shape)}"
        )


class ClassificationTask(Task):
    """Logits ``(B, num_classes)`` against labels ``(B,)``: cross-entropy and error rate."""

    name = "classification"
    metrics = ("loss", "error")
    primary = "error"

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes}

    @property
    def chance_loss(self) -> float:
        return math.log(self.num_classes)

    def check_output(self, output: Tensor, target: Tensor) -> None:
        if output.shape != (len(target), self.num_classes) or target.dim() != 1:
            self._fail(output, target, f"(B, {self.num_classes}) for labels (B,)")

    def evaluate(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        output = output.float()
        loss = F.cross_entropy(output, target)
        wrong = (output.argmax(1) != target).sum()
        return loss, torch.stack([loss.detach().double() * len(target), wrong.double()])


class SequenceTask(Task):
    """Logits ``(B, positions, classes)`` against labels ``(B, positions)`` (the null class marks the end of a
    sequence): per sample, the sum over positions of the cross-entropy; a sequence is wrong when any position
    is; ``position_error`` is the share of wrong positions."""

    name = "sequence"
    metrics = ("loss", "error", "position_error")
    primary = "error"

    def __init__(self, positions: int, classes: int) -> None:
        if positions < 1 or classes < 2:
            raise ValueError(f"need positions >= 1 and classes >= 2, got {positions}, {classes}")
        self.positions, self.classes = positions, classes

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "positions": self.positions, "classes": self.classes}

    @property
    def chance_loss(self) -> float:
        return self.positions * math.log(self.classes)

    def check_output(self, output: Tensor, target: Tensor) -> None:
        b = len(target)
        if output.shape != (b, self.positions, self.classes) or target.shape != (b, self.positions):
            self._fail(output, target, f"(B, {self.positions}, {self.classes}) for labels (B, {self.positions})")

    def evaluate(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        output = output.float()
        losses = F.cross_entropy(output.transpose(1, 2), target, reduction="none").sum(1)  # (B,)
        wrong = output.argmax(2) != target  # (B, L)
        sums = [losses.detach().sum().double(), wrong.any(1).sum().double(), wrong.double().mean(1).sum()]
        return losses.mean(), torch.stack(sums)


class RegressionTask(Task):
    """Outputs against targets of the same shape ``(B, ...)``: the mean squared error per sample."""

    name = "regression"
    metrics = ("loss",)
    primary = "loss"

    def check_output(self, output: Tensor, target: Tensor) -> None:
        if output.shape != target.shape:
            self._fail(output, target, f"of the targets' shape {tuple(target.shape)}")

    def evaluate(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        losses = (output.float() - target.float()).pow(2).flatten(1).mean(1)
        return losses.mean(), losses.detach().sum().double().unsqueeze(0)


def triplet_loss(anchor: Tensor, partner: Tensor, random: Tensor, margin: float = 1.0) -> Tensor:
    """The hinge ``max(0, ||a - p||² - ||a - r||² + margin)`` (squared Euclidean distances) of each row of the
    embeddings ``(B, F)`` of anchors, partners and random crops: ``(B,)``. It is zero when the partner is
    closer to the anchor than the random crop by the margin: ``||a - p||² + margin <= ||a - r||²``.

    Example:
        >>> triplet_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.5]]))
        tensor([0.])
    """
    close = (anchor - partner).pow(2).sum(1)
    far = (anchor - random).pow(2).sum(1)
    return (close - far + margin).clamp(min=0)


class TripletTask(Task):
    """Co-localisation by the paper's triplet loss (appendix, Table 5): outputs ``(B, 4 + 3F)`` against boxes
    ``(B, 4)``.

    An output row is the box ``(x0, y0, x1, y1)`` (pixel edges) the model cropped from its anchor image, then the
    embeddings ``(F,)`` of that crop, of its partner image's crop and of a random crop of the anchor image; the
    target is the box of the object in the anchor image. The loss is :func:`triplet_loss` with ``margin``
    (``primary``: it uses no box, so choosing on it stays unsupervised); ``localised`` is the share of crops whose
    IoU with the target box exceeds ``threshold``, ``iou`` their mean IoU.

    Example:
        >>> task = TripletTask()
        >>> output = torch.tensor([[0.0, 0, 2, 2, 0, 0, 1, 0, 0, 1.5]])  # box, then e() of anchor, partner, random
        >>> loss, sums = task.evaluate(output, torch.tensor([[0.0, 0, 2, 1]]))
        >>> loss.item(), sums.tolist()  # IoU 0.5 is not above the threshold
        (0.0, [0.0, 0.0, 0.5])
    """

    name = "triplet"
    metrics = ("loss", "localised", "iou")
    primary = "loss"

    def __init__(self, margin: float = 1.0, threshold: float = 0.5) -> None:
        if not margin >= 0 or not 0 <= threshold < 1:
            raise ValueError(f"need margin >= 0 and 0 <= threshold < 1, got {margin}, {threshold}")
        self.margin, self.threshold = float(margin), float(threshold)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "margin": self.margin, "threshold": self.threshold}

    def check_output(self, output: Tensor, target: Tensor) -> None:
        b = len(target)
        if output.dim() != 2 or len(output) != b or (output.shape[1] - 4) % 3 or output.shape[1] < 7:
            self._fail(output, target, "(B, 4 + 3F): a box and three embeddings of F features, for boxes (B, 4)")
        if target.shape != (b, 4):
            self._fail(output, target, "(B, 4 + 3F) for target boxes (B, 4)")

    def evaluate(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        output = output.float()
        boxes, embeddings = output[:, :4], output[:, 4:]
        losses = triplet_loss(*embeddings.chunk(3, dim=1), margin=self.margin)
        iou = box_iou(boxes.detach(), target.float())
        sums = [losses.detach().sum().double(), (iou > self.threshold).sum().double(), iou.sum().double()]
        return losses.mean(), torch.stack(sums)


_TASKS = {t.name: t for t in (ClassificationTask, SequenceTask, RegressionTask, TripletTask)}


def task_from_spec(spec: dict[str, Any]) -> Task:
    """The task described by ``spec`` (:meth:`Task.spec`).

    Raises:
        ValueError: an unknown task name.
    """
    options = dict(spec)
    name = options.pop("name", None)
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(_TASKS)}")
    return _TASKS[name](**options)
