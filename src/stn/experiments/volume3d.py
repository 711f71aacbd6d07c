"""3-D spatial transformer (appendix): classify digits extruded into posed 60x60x60 volumes.

Data: each MNIST digit (28x28, centred in a 60x60 plane) is extruded into a slab of :data:`SLAB_DEPTH` voxels
in the middle of a 60x60x60 volume, which is then put in a random 3-D pose — rotations about the x, y and z
axes each uniform in ``[-max_angle, max_angle]`` (default 45°) and a translation uniform in
``[-max_translation, max_translation]`` (normalised units, default 0.2 = 6 voxels) per axis — by one batched
:func:`stn.warp` with the ``affine3d`` family. θ (the truth, target -> source) is ``[R | t]``.
Training sets draw fresh poses every epoch, the test set is fixed by its seed; poses are drawn for a whole
epoch at once, so they do not depend on the batch size.

Models (see :mod:`stn.models.appendix`): ``volume-st``, an affine3d transformer whose output volume is
projected along depth into a 2-D image that a CNN classifies, and the baseline ``volume-cnn``, the CNN on the
projection of the posed volume itself. Both train on the same batches (generating a batch of volumes costs
about as much as a training step). The paper gives no number for this experiment, only its figure: ``stn
reproduce 3d`` writes ``3d.md`` with both models' test error and ``projections.png`` (the digit, the
projection of the posed volume, and the learnt projection).

Recipe (ours; the paper does not give one): SGD with momentum 0.9, base learning rate 0.01 (0.03 for the short
``quick`` budget) divided by 10 at 2/3 of training, cross-entropy. ``quick`` is a first look that fits a few
minutes of a 2-core CPU; ``paper`` trains as long as Table 1 (150,000 steps of 256) for a GPU.

Example (shell)::

    stn reproduce 3d --budget quick --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

import stn
from stn.data import MNIST, load_mnist
from stn.data.datasets import block_seed
from stn.engine.config import TEST_SEED
from stn.engine.metrics import format_markdown_table, write_text_atomic
from stn.engine.trainer import resolve_device, scheduled_step
from stn.experiments._appendix import add_common_arguments, budget_from_args, image_rows
from stn.models import create_model
from stn.models.appendix import SLAB_DEPTH, VOLUME_SHAPE
from stn.models.mnist import count_parameters

__all__ = [
    "BUDGETS",
    "MODELS",
    "Budget",
    "PosedVolumes",
    "add_arguments",
    "extrude",
    "pose_volumes",
    "posed_volumes",
    "random_poses",
    "rotation_matrix",
    "run",
]

VOLUME_SIZE = VOLUME_SHAPE[1]
# table row -> registered model
MODELS = {"CNN on the projection": "volume-cnn", "3-D ST + CNN": "volume-st"}


# --- data ----------------------------------------------------------------------------------------------------


def extrude(images: Tensor, size: int = VOLUME_SIZE, depth: int = SLAB_DEPTH) -> Tensor:
    """Extrude 2-D digits into slabs: ``(N, h, w)`` (uint8 or float in [0, 1]) -> ``(N, 1, size, size, size)``.

    The digit is centred in a ``size x size`` plane and repeated over the ``depth`` middle slices (axis D, the
    z axis of the grid); everything else is 0.
    """
    if not isinstance(images, Tensor) or images.dim() != 3:
        raise ValueError(f"images must be a tensor (N, H, W), got {getattr(images, 'shape', type(images))}")
    n, h, w = images.shape
    if h > size or w > size or not 0 < depth <= size:
        raise ValueError(f"cannot extrude {h}x{w} digits {depth} deep into a {size}^3 volume")
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    top, left, front = (size - h) // 2, (size - w) // 2, (size - depth) // 2
    volume = x.new_zeros(n, 1, size, size, size)
    volume[:, 0, front : front + depth, top : top + h, left : left + w] = x.unsqueeze(1)
    return volume


def rotation_matrix(angles: Tensor) -> Tensor:
    """``(N, 3)`` angles in degrees about the x, y and z axes -> ``(N, 3, 3)`` rotations ``R_z R_y R_x``."""
    a = torch.deg2rad(angles)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def rot(rows: list[list[Tensor]]) -> Tensor:
        return torch.stack([torch.stack(row, -1) for row in rows], -2)

    rx = rot([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = rot([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rz = rot([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def random_poses(
    n: int, generator: torch.Generator, *, max_angle: float = 45.0, max_translation: float = 0.2
) -> dict[str, Tensor]:
    """Draw ``n`` random 3-D poses (on the CPU, from ``generator``).

    Returns:
        ``angle`` ``(n, 3)`` degrees about x, y, z, ``translation`` ``(n, 3)`` normalised, and ``theta``
        ``(n, 12)`` = ``[R | t]`` row-major, the affine3d θ (target -> source) that poses a canonical volume.
    """
    if max_angle < 0 or max_translation < 0:
        raise ValueError(f"max_angle and max_translation must be >= 0, got {max_angle}, {max_translation}")
    angle = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_angle
    translation = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_translation
    theta = torch.cat([rotation_matrix(angle), translation.unsqueeze(-1)], dim=2).reshape(n, 12)
    return {"angle": angle.float(), "translation": translation.float(), "theta": theta.float()}


def pose_volumes(images: Tensor, theta: Tensor, size: int = VOLUME_SIZE, depth: int = SLAB_DEPTH) -> Tensor:
    """:func:`extrude` the digits, then warp them by the affine3d ``theta`` ``(N, 12)``: ``(N, 1, size^3)``."""
    volumes = extrude(images, size, depth)
    return stn.warp(volumes, theta.to(volumes.device), "affine3d")


def posed_volumes(
    images: Tensor,
    generator: torch.Generator,
    *,
    size: int = VOLUME_SIZE,
    depth: int = SLAB_DEPTH,
    max_angle: float = 45.0,
    max_translation: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The 3-D variant: digits ``(N, h, w)`` extruded and put in random poses.

    Returns:
        ``volumes`` ``(N, 1, size, size, size)`` float32 in [0, 1] on the images' device, and the
        :func:`random_poses` params.

    Example:
        >>> vol, params = posed_volumes(torch.zeros(2, 28, 28), torch.Generator().manual_seed(0))
        >>> vol.shape, params["theta"].shape
        (torch.Size([2, 1, 60, 60, 60]), torch.Size([2, 12]))
    """
    params = random_poses(len(images), generator, max_angle=max_angle, max_translation=max_translation)
    return pose_volumes(images, params["theta"], size, depth), params


class PosedVolumes:
    """Posed volumes of one MNIST split, generated batch by batch (an epoch of 60x60x60 volumes would not fit
    in memory). Training epochs draw fresh poses and a fresh order; ``epoch`` is ignored for the test split.

    Args:
        mnist: a loaded split; ``num_samples``: use its first N digits.
        seed: seed of the poses and the order.
        max_angle, max_translation: see :func:`random_poses`.
    """

    def __init__(
        self,
        mnist: MNIST,
        *,
        seed: int = 0,
        num_samples: int | None = None,
        max_angle: float = 45.0,
        max_translation: float = 0.2,
    ) -> None:
        n = len(mnist) if num_samples is None else min(num_samples, len(mnist))
        if n < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.images, self.labels = mnist.images[:n], mnist.labels[:n]
        self.split, self.source, self.seed = mnist.split, mnist.source, seed
        self.pose_options = {"max_angle": max_angle, "max_translation": max_translation}

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(self, epoch: int = 0) -> tuple[Tensor, Tensor]:
        """``(order (N,), theta (N, 12))``: the digits' order and each digit's pose in ``epoch``."""
        key = epoch if self.split == "train" else 0
        generator = torch.Generator().manual_seed(block_seed("3d", self.seed, self.split, key))
        theta = random_poses(len(self), generator, **self.pose_options)["theta"]
        order = torch.randperm(len(self), generator=generator) if self.split == "train" else torch.arange(len(self))
        return order, theta

    def batches(
        self, batch_size: int, epoch: int = 0, device: torch.device | str = "cpu", start: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(volumes (B, 1, 60, 60, 60), labels (B,))`` on ``device`` for the batches of ``epoch`` from
        batch ``start`` on; the last one may be smaller."""
        order, theta = self.epoch(epoch)
        for lo in range(start * batch_size, len(self), batch_size):
            idx = order[lo : lo + batch_size]
            volumes = pose_volumes(self.images[idx].to(device), theta[idx])
            yield volumes, self.labels[idx].to(device)


# --- the experiment ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How long the models train and on how much data."""

    iterations: int
    batch_size: int
    num_test: int | None
    lr: float = 0.01
    momentum: float = 0.9
    lr_milestones: tuple[float, ...] = (2 / 3,)


BUDGETS = {"quick": Budget(350, 32, 500, lr=0.03), "paper": Budget(150_000, 256, None)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce 3d``."""
    add_common_arguments(parser, BUDGETS, "results/3d")
    parser.add_argument("--iterations", type=int, help="override the budget's number of training steps")
    parser.add_argument("--batch-size", type=int, help="override the budget's batch size")
    parser.add_argument("--num-test", type=int, help="override the budget's number of test digits")
    parser.add_argument("--lr", type=float, help="override the budget's base learning rate")
    parser.add_argument("--max-angle", type=float, default=45.0, help="rotation range per axis, degrees")
    parser.add_argument("--max-translation", type=float, default=0.2, help="translation range, normalised units")


def _train(models: dict[str, nn.Module], data: PosedVolumes, budget: Budget, device: torch.device) -> dict[str, float]:
    """Train every model on the same batches; returns each model's training seconds (batches not counted)."""
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=budget.lr, momentum=budget.momentum) for k, m in models.items()}
    seconds = dict.fromkeys(models, 0.0)
    per_epoch = math.ceil(len(data) / budget.batch_size)
    step = 0
    bar = tqdm(total=budget.iterations, unit="step", desc="3-D models", dynamic_ncols=True)
    while step < budget.iterations:
        for x, y in data.batches(budget.batch_size, step // per_epoch, device, start=step % per_epoch):
            losses = {}
            for key, model in models.items():
                start = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                scheduled_step(loss, optimizers[key], step, budget.iterations, budget.lr_milestones)
                seconds[key] += time.perf_counter() - start
                losses[key] = f"{loss.item():.3f}"
            step += 1
            bar.update(1)
            bar.set_postfix(losses)
            if step >= budget.iterations:
                break
    bar.close()
    return seconds


@torch.no_grad()
def _errors(models: dict[str, nn.Module], data: PosedVolumes, device: torch.device) -> dict[str, float]:
    wrong = dict.fromkeys(models, 0)
    for model in models.values():
        model.eval()
    for x, y in tqdm(data.batches(100, device=device), total=math.ceil(len(data) / 100), desc="test", leave=False):
        for key, model in models.items():
            wrong[key] += int((model(x).argmax(1) != y).sum())
    return {k: v / len(data) for k, v in wrong.items()}


@torch.no_grad()
def plot_projections(models: dict[str, nn.Module], data: PosedVolumes, path: str | Path, count: int = 8) -> Path:
    """The digits, the projection of their posed volumes (what the baseline sees), and each transformer model's
    learnt projection (``model.transformer`` output)."""
    volumes, labels = next(data.batches(count))
    rows = [("digit", data.images[:count].float() / 255)]
    for key, model in models.items():
        model.eval()
        projection = model.transformer(volumes.to(next(model.parameters()).device)).cpu()[:, 0]
        rows.append((key, projection))
    return image_rows(rows, path, title=f"3-D transformer: test digits {labels.tolist()}")


def run(args: argparse.Namespace) -> int:
    """Train ``volume-cnn`` and ``volume-st``; write ``<out>/3d.md``, ``results.json`` and ``projections.png``."""
    budget = budget_from_args(BUDGETS, args, ["iterations", "batch_size", "num_test", "lr"])
    device = resolve_device(args.device)
    poses = {"max_angle": args.max_angle, "max_translation": args.max_translation}
    train_set = PosedVolumes(load_mnist(args.data_dir, "train"), seed=args.seed, **poses)
    test_set = PosedVolumes(load_mnist(args.data_dir, "test"), seed=TEST_SEED, num_samples=budget.num_test, **poses)
    torch.manual_seed(args.seed)
    models = {row: create_model(name).to(device) for row, name in MODELS.items()}
    seconds = _train(models, train_set, budget, device)
    errors = _errors(models, test_set, device)
    out = Path(args.out)
    results = [
        {
            "model": row,
            "name": MODELS[row],
            "test_error": 100 * errors[row],
            "params": count_parameters(m),
            "train_seconds": seconds[row],
        }
        for row, m in models.items()
    ]
    meta = {
        "budget": args.budget,
        **asdict(budget),
        **poses,
        "seed": args.seed,
        "device": str(device),
        "train_digits": len(train_set),
        "test_digits": len(test_set),
        "source": train_set.source,
    }
    write_text_atomic(out / "results.json", json.dumps({"results": results, **meta}, indent=2) + "\n")
    plot_projections(
        dict(zip(("posed projection", "3-D ST output"), models.values())), test_set, out / "projections.png"
    )
    table = format_markdown_table(
        [
            [
                r["model"],
                r["name"],
                r["params"],
                f"{r['test_error']:.2f}",
                f"{100 - r['test_error']:.2f}",
                f"{r['train_seconds']:.0f}",
            ]
            for r in results
        ],
        ["model", "name", "params", "test error (%)", "accuracy (%)", "train time (s)"],
    )
    text = (
        "# 3-D spatial transformer (appendix)\n\n"
        "The paper shows this experiment as a figure only (no number). Digits extruded into 60x60x60 volumes, "
        f"rotated up to ±{args.max_angle:g}° about each axis and translated up to ±{args.max_translation:g} "
        f"(normalised); {budget.iterations} steps of {budget.batch_size}, {len(test_set)} test volumes "
        f"(budget `{args.budget}`, device {device}).\n\n{table}\n![projections](projections.png)\n"
    )
    write_text_atomic(out / "3d.md", text)
    for r in results:
        print(f"{r['model']}: test error {r['test_error']:.2f}% ({r['params']} parameters)")
    print(f"wrote {out / '3d.md'}")
    return 0
