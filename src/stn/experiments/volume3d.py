"""3-D spatial transformer (appendix): classify digits extruded into posed 60x60x60 volumes.

Data: each MNIST digit (28x28, centred in a 60x60 plane) is extruded into a slab of :data:`SLAB_DEPTH` voxels
in the middle of a 60x60x60 volume, which is then put in a random 3-D pose — rotations about the x, y and z
axes each uniform in ``[-max_angle, max_angle]`` (default 45°) and a translation uniform in
``[-max_translation, max_translation]`` (normalised units, default 0.2 = 6 voxels) per axis — by one batched
:func:`stn.warp` with the ``affine3d`` family. θ (the truth, target -> source) is ``[R | t]``.
Training sets draw fresh poses every epoch, the test set is fixed by its seed; poses are drawn for a whole
epoch at once, so they do not depend on the batch size, and volumes are made batch by batch where the model
runs (:class:`PosedVolumes`: an epoch of 60x60x60 volumes would not fit in memory).

Models (see :mod:`stn.models.appendix`): ``volume-st``, an affine3d transformer whose output volume is
projected along depth into a 2-D image that a CNN classifies, and the baseline ``volume-cnn``, the CNN on the
projection of the posed volume itself. Each is one run of the training engine in ``<runs-dir>/<model>``
(checkpoints, ``metrics.jsonl``, resume; data spec kind ``"posed-volumes"``, so ``stn eval`` scores the
checkpoint again); both see the same volumes in the same order. The paper gives no number for this experiment,
only its figure: ``stn reproduce 3d`` writes ``3d.md`` with both models' test error, ``results.json`` and
``projections.png`` (the digit, the projection of the posed volume, and the learnt projection).

Recipe (ours; the paper does not give one): SGD with momentum 0.9, base learning rate 0.01 (0.03 for the short
``quick`` budget) divided by 10 at 2/3 of training, cross-entropy. ``quick`` is a first look that fits a few
minutes of a 2-core CPU; ``paper`` trains as long as Table 1 (150,000 steps of 256) for a GPU.

Example (shell)::

    stn reproduce 3d --budget quick --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import stn
from stn.data import MNIST, load_mnist
from stn.data.datasets import block_seed
from stn.engine.callbacks import Figures, Reports, ThetaHistory, ThetaStats
from stn.engine.checkpoint import load_model
from stn.engine.config import TEST_SEED, Preset, TrainConfig
from stn.engine.metrics import format_markdown_table
from stn.engine.options import positive_int
from stn.engine.tasks import ClassificationTask
from stn.engine.trainer import Trainer, read_summary, resolve_device, run_status
from stn.experiments._appendix import add_common_arguments, image_rows
from stn.experiments.table1 import config_from_args
from stn.io import write_text_atomic
from stn.models import create_model
from stn.models.appendix import SLAB_DEPTH, VOLUME_SHAPE

__all__ = [
    "BUDGETS",
    "MODELS",
    "PosedVolumes",
    "VolumeBatches",
    "add_arguments",
    "extrude",
    "make_trainer",
    "pose_volumes",
    "posed_volumes",
    "random_poses",
    "rotation_matrix",
    "run",
    "volume_data",
    "volume_spec",
]

VOLUME_SIZE = VOLUME_SHAPE[1]
# table row -> registered model
_BASELINE, _TRANSFORMER = "CNN on the projection", "3-D ST + CNN"
MODELS = {_BASELINE: "volume-cnn", _TRANSFORMER: "volume-st"}


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


class VolumeBatches:
    """The posed volumes of an epoch as a tensor-like ``(N, 1, 60, 60, 60)`` that makes the volumes it is indexed
    for (a slice, or an index tensor on its device): the training engine's fast path indexes the epoch's inputs
    batch by batch, and each batch is posed there, on the device, by one batched warp.

    Example:
        >>> view = VolumeBatches(torch.zeros(5, 28, 28, dtype=torch.uint8), torch.eye(3, 4).flatten().expand(5, 12))
        >>> len(view), view.shape, view[torch.tensor([0, 3])].shape
        (5, torch.Size([5, 1, 60, 60, 60]), torch.Size([2, 1, 60, 60, 60]))
    """

    def __init__(self, digits: Tensor, theta: Tensor) -> None:
        self.digits, self.theta = digits, theta.to(digits.device)
        self.shape = torch.Size((len(digits), *VOLUME_SHAPE))
        self.device = digits.device

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, index: Tensor | slice) -> Tensor:
        return pose_volumes(self.digits[index], self.theta[index])


class PosedVolumes:
    """Posed volumes of one MNIST split for the training engine: ``epoch_tensors(epoch, device)`` gives the
    epoch's volumes (a :class:`VolumeBatches`) and labels. Training epochs draw fresh poses; the test split's
    are the same every epoch.

    Args:
        mnist: a loaded split; ``num_samples``: use its first N digits.
        seed: seed of the poses.
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

    def poses(self, epoch: int = 0) -> Tensor:
        """θ ``(N, 12)``: each digit's pose in ``epoch`` (drawn on the CPU from the seed, split and epoch)."""
        key = epoch if self.split == "train" else 0
        generator = torch.Generator().manual_seed(block_seed("3d", self.seed, self.split, key))
        return random_poses(len(self), generator, **self.pose_options)["theta"]

    def epoch_tensors(self, epoch: int = 0, device: torch.device | str = "cpu") -> tuple[VolumeBatches, Tensor]:
        """``(volumes (N, 1, 60, 60, 60) made when indexed, labels (N,))`` of ``epoch`` on ``device``."""
        return VolumeBatches(self.images.to(device), self.poses(epoch)), self.labels.to(device)


def volume_spec(
    *,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
    max_angle: float = 45.0,
    max_translation: float = 0.2,
    root: str | None = None,
) -> dict[str, Any]:
    """The data spec of a 3-D run (kind ``"posed-volumes"``, see :mod:`stn.experiments.sources`): the first
    ``num_*`` MNIST digits of each split (all: None) in poses drawn from ``seed`` (the test set's from
    :data:`~stn.engine.config.TEST_SEED`); ``root``: where MNIST is (kept absolute, so that ``stn eval`` finds it
    from any folder; None: the default search)."""
    return {
        "kind": "posed-volumes",
        "seed": seed,
        "num_train": num_train,
        "num_test": num_test,
        "max_angle": max_angle,
        "max_translation": max_translation,
        "root": None if root is None else str(Path(root).expanduser().resolve()),
    }


def volume_data(spec: Mapping[str, Any], split: str) -> PosedVolumes:
    """The ``"train"`` or ``"test"`` :class:`PosedVolumes` of a :func:`volume_spec`."""
    train = split == "train"
    return PosedVolumes(
        load_mnist(spec.get("root"), split),
        seed=spec["seed"] if train else TEST_SEED,
        num_samples=spec.get("num_train" if train else "num_test"),
        max_angle=spec["max_angle"],
        max_translation=spec["max_translation"],
    )


# --- the experiment ------------------------------------------------------------------------------------------

# Every model's recipe: SGD with momentum 0.9, the learning rate divided by 10 at 2/3 of training. The θ history
# keeps its test volumes in the checkpoint (0.9 MB each); θ statistics are taken on 64 test volumes.
_RECIPE = {"lr_milestones": (2 / 3,), "eval_batch_size": 100, "theta_samples": 4}
_THETA_STATS_SAMPLES = 64
BUDGETS = {
    "quick": Preset(
        "a first look: minutes on a 2-core CPU",
        {"iterations": 350, "batch_size": 32, "lr": 0.03, **_RECIPE},
        {"num_test": 500},
    ),
    "paper": Preset(
        "as long as Table 1 (150,000 steps of 256), for a GPU",
        {"iterations": 150_000, "batch_size": 256, **_RECIPE},
        {"num_test": None},
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce 3d``."""
    add_common_arguments(parser, BUDGETS, "results/3d", runs="runs/3d")
    parser.add_argument("--num-train", type=positive_int, help="train on the first N digits (default all)")
    parser.add_argument("--num-test", type=positive_int, help="override the budget's number of test digits")
    parser.add_argument("--max-angle", type=float, default=45.0, help="rotation range per axis, degrees")
    parser.add_argument("--max-translation", type=float, default=0.2, help="translation range, normalised units")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def make_trainer(
    name: str, config: TrainConfig, spec: Mapping[str, Any], run_dir: str | Path, *, progress: bool = True
) -> Trainer:
    """The :class:`~stn.engine.trainer.Trainer` of the registered 3-D model ``name`` on the posed volumes of
    ``spec`` (:func:`volume_spec`), initialised from the config's seed; it resumes a run found in ``run_dir``."""
    model = create_model(name, seed=config.seed)
    return Trainer(
        model,
        volume_data(spec, "train"),
        volume_data(spec, "test"),
        ClassificationTask(10),
        config,
        callbacks=[ThetaStats(_THETA_STATS_SAMPLES), ThetaHistory(), Reports(), Figures()],
        run_dir=run_dir,
        resume=True,
        data_spec=spec,
        title=f"{name} on posed volumes",
        progress=progress,
    )


@torch.no_grad()
def plot_projections(models: dict[str, nn.Module], data: PosedVolumes, path: str | Path, count: int = 8) -> Path:
    """The first ``count`` digits of ``data``, the projection of their posed volumes (what the baseline sees), and
    each model's projection (``model.transformer`` output: the learnt one for a transformer model)."""
    rows = [("digit", data.images[:count].float() / 255)]
    for key, model in models.items():
        model.eval()
        volumes, labels = data.epoch_tensors(0, next(model.parameters()).device)
        rows.append((key, model.transformer(volumes[:count]).cpu()[:, 0]))
    return image_rows(rows, path, title=f"3-D transformer: test digits {labels[:count].tolist()}")


def _trained_model(
    name: str, args: argparse.Namespace, config: TrainConfig, spec: dict[str, Any]
) -> nn.Module | int | None:
    """The model of the run of ``name``: trained (or resumed), or loaded when the run finished before; the exit
    code if the training was interrupted; None in the other processes of a data-parallel run."""
    run_dir = Path(args.runs_dir) / name
    if run_status(run_dir, config, spec) == "done":
        print(f"{name}: done before, see {run_dir}")
        return load_model(run_dir, resolve_device(config.device))[0]
    trainer = make_trainer(name, config, spec, run_dir, progress=not args.quiet)
    outcome = trainer.fit()
    if not outcome.finished:
        print(f"{name} interrupted at step {outcome.step}; run the command again to resume")
        return 128 + (outcome.signal or 0)
    return trainer.model if outcome.is_main else None


def run(args: argparse.Namespace) -> int:
    """Train ``volume-cnn`` and ``volume-st``; write ``<out>/3d.md``, ``results.json`` and ``projections.png``.
    Returns 0, or 128 + the signal that interrupted a run."""
    budget = BUDGETS[args.budget]
    config = config_from_args(BUDGETS, args)
    num_test = budget.num_test if args.num_test is None else args.num_test
    poses = {"max_angle": args.max_angle, "max_translation": args.max_translation}
    spec = volume_spec(seed=config.seed, num_train=args.num_train, num_test=num_test, root=args.data_dir, **poses)
    models, results = {}, []
    for row, name in MODELS.items():
        model = _trained_model(name, args, config, spec)
        if isinstance(model, int):
            return model
        if model is None:  # another process of a data-parallel run: the main one writes the results
            continue
        models[row] = model
        summary = read_summary(Path(args.runs_dir) / name)
        results.append(
            {
                "model": row,
                "name": name,
                "test_error": 100 * summary["test_error"],
                "params": summary["params"],
                # time in training steps (the volumes' generation and the evaluations not counted)
                "train_seconds": summary["steps"] * config.batch_size / summary["images_per_s"],
            }
        )
    if not models:
        return 0
    meta = {
        "budget": args.budget,
        **config.to_dict(),
        "num_test": num_test,
        **poses,
        "device": str(next(models[_BASELINE].parameters()).device),
        "train_digits": summary["train_samples"],
        "test_digits": summary["test_samples"],
        "source": summary["source"],
    }
    out = Path(args.out)
    write_text_atomic(out / "results.json", json.dumps({"results": results, **meta}, indent=2) + "\n")
    shown = {"posed projection": models[_BASELINE], "3-D ST output": models[_TRANSFORMER]}
    plot_projections(shown, volume_data(spec, "test"), out / "projections.png")
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
        f"(normalised); {config.iterations} steps of {config.batch_size}, {meta['test_digits']} test volumes "
        f"(budget `{args.budget}`, device {meta['device']}).\n\n{table}\n![projections](projections.png)\n"
    )
    write_text_atomic(out / "3d.md", text)
    for r in results:
        print(f"{r['model']}: test error {r['test_error']:.2f}% ({r['params']} parameters)")
    print(f"wrote {out / '3d.md'}")
    return 0
