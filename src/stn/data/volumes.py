"""The 3-D experiment's data: MNIST digits extruded into 60x60x60 volumes and put in random 3-D poses.

Each digit (28x28, centred in a 60x60 plane) is extruded into a slab of :data:`SLAB_DEPTH`
voxels in the middle of the volume, which is then posed — rotations about the x, y and z axes each uniform in
``[-max_angle, max_angle]`` (default 45°) and a translation uniform in ``[-max_translation, max_translation]``
(normalised units, default 0.2 = 6 voxels) per axis — by one batched :func:`stn.warp` with the ``affine3d``
family; θ (the truth, target -> source) is ``[R | t]``. Poses are drawn for a whole epoch at once, so they do not
depend on the batch size, and volumes are made batch by batch where the model runs (:class:`PosedVolumes`: an
epoch of 60x60x60 volumes would not fit in memory).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stn.data.datasets import SPLITS, block_seed, hold_out
from stn.data.mnist import MNIST
from stn.functional import warp

__all__ = [
    "SLAB_DEPTH",
    "VOLUME_SHAPE",
    "PosedVolumes",
    "VolumeBatches",
    "extrude",
    "pose_volumes",
    "posed_volumes",
    "random_poses",
    "rotation_matrix",
]

# One volume of the 3-D experiment, (C, D, H, W); stn.models.appendix.volume_model's defaults are built for it.
VOLUME_SHAPE = (1, 60, 60, 60)
# Thickness (voxels) of the slab a digit is extruded into.
SLAB_DEPTH = 8
VOLUME_SIZE = VOLUME_SHAPE[1]


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
    if not (math.isfinite(max_angle) and math.isfinite(max_translation) and max_angle >= 0 and max_translation >= 0):
        raise ValueError(f"max_angle and max_translation must be finite and >= 0, got {max_angle}, {max_translation}")
    angle = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_angle
    translation = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_translation
    theta = torch.cat([rotation_matrix(angle), translation.unsqueeze(-1)], dim=2).reshape(n, 12)
    return {"angle": angle.float(), "translation": translation.float(), "theta": theta.float()}


def pose_volumes(images: Tensor, theta: Tensor, size: int = VOLUME_SIZE, depth: int = SLAB_DEPTH) -> Tensor:
    """:func:`extrude` the digits, then warp them by the affine3d ``theta`` ``(N, 12)``: ``(N, 1, size^3)``."""
    volumes = extrude(images, size, depth)
    return warp(volumes, theta.to(volumes.device), "affine3d")


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
    epoch's volumes (a :class:`VolumeBatches`) and labels. Training epochs draw fresh poses; the validation and
    test splits' are the same every epoch.

    Args:
        mnist: a loaded split; ``num_samples``: use its first N digits.
        split: ``"train"``, ``"val"`` or ``"test"`` (default: ``mnist``'s own split).
        validation: how many digits at the end of MNIST's training split are held out (as
            :class:`stn.data.DistortedMNIST` holds them out, :func:`stn.data.datasets.hold_out`): ``"train"``
            leaves them out and ``"val"`` serves exactly them.
        seed: seed of the poses.
        max_angle, max_translation: see :func:`random_poses`.
    """

    def __init__(
        self,
        mnist: MNIST,
        *,
        split: str | None = None,
        validation: int | None = None,
        seed: int = 0,
        num_samples: int | None = None,
        max_angle: float = 45.0,
        max_translation: float = 0.2,
    ) -> None:
        split = mnist.split if split is None else split
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if mnist.split != ("test" if split == "test" else "train"):
            raise ValueError(f"mnist holds the {mnist.split!r} split but split={split!r} was asked for")
        mnist = hold_out(mnist, validation, split)
        n = len(mnist) if num_samples is None else min(num_samples, len(mnist))
        if n < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.images, self.labels = mnist.images[:n], mnist.labels[:n]
        self.split, self.source, self.seed = split, mnist.source, seed
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
