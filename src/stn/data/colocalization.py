"""The co-localisation data of the paper's appendix (Table 5): a set of images of one digit class at random places
(:func:`colocalization_set`), and the random pairs ``(n, m)`` of the set that the paper's SGD on the triplet loss
trains on (:class:`ColocalizationPairs`).

Example:
    >>> import torch
    >>> images, boxes = torch.rand(5, 1, 84, 84), torch.tensor([[0.0, 0, 28, 28]]).expand(5, 4)
    >>> pairs = ColocalizationPairs(images, boxes, seed=0)
    >>> x, box = pairs[2]
    >>> x.shape, torch.equal(x[0], images[2, 0]), box.tolist()  # image 2 and its partner, image 2's box
    (torch.Size([2, 84, 84]), True, [0.0, 0.0, 28.0, 28.0])
"""

from __future__ import annotations

import torch
from torch import Tensor

from stn.data.datasets import EpochDraws, block_seed
from stn.data.distortions import GENERATORS
from stn.data.mnist import MNIST

__all__ = ["ColocalizationPairs", "colocalization_set"]


def colocalization_set(
    mnist: MNIST, digit: int, variant: str = "coloc", count: int = 100, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The co-localisation data of the paper's appendix (Table 5): ``count`` images of class ``digit`` from
    ``mnist``'s split, ``images (N, 1, 84, 84)``, and the boxes ``(N, 4)`` (pixel edges) of the 28x28 frames the
    digits were placed in.

    Args:
        variant: ``"coloc"`` (T) or ``"coloc-tc"`` (TC, clutter from other digits of the same split).
    """
    if variant not in ("coloc", "coloc-tc"):
        raise ValueError(f"variant must be 'coloc' or 'coloc-tc', got {variant!r}")
    generator = torch.Generator().manual_seed(block_seed("colocalization", variant, digit, seed))
    (candidates,) = torch.nonzero(mnist.labels == digit, as_tuple=True)
    if len(candidates) < count:
        raise ValueError(f"the {mnist.split} split has {len(candidates)} digits of class {digit}, {count} needed")
    index = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    options = {"clutter_pool": mnist.images, "exclude": index} if variant == "coloc-tc" else {}
    images, params = GENERATORS[variant](mnist.images[index], generator, **options)
    centre = torch.tensor([images.shape[-1], images.shape[-2]]) / 2 + params["offset"]
    half = mnist.images.shape[-1] / 2
    return images, torch.cat([centre - half, centre + half], dim=1)


class ColocalizationPairs(EpochDraws):
    """Random pairs ``(n, m)``, ``m != n``, of a co-localisation set: sample ``n`` is ``(input (2C, H, W), box
    (4,))``, the channels of image ``n`` then those of a partner ``m`` drawn uniformly from the other images, and
    image ``n``'s box (used by the metrics only). The partner is drawn from ``(seed, epoch, n)``
    (:class:`~stn.data.datasets.EpochDraws`): every training epoch pairs each image with a fresh partner, and a
    set whose epoch is never set (an evaluation set) keeps its pairs.

    Args:
        images: ``(N, C, H, W)``, ``N >= 2``.
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)`` pixel edges of the object in each image.
    """

    def __init__(self, images: Tensor, boxes: Tensor, seed: int = 0) -> None:
        if images.dim() != 4 or len(images) < 2 or boxes.shape != (len(images), 4):
            raise ValueError(
                f"need images (N, C, H, W) with N >= 2 and boxes (N, 4), got {tuple(images.shape)} and "
                f"{tuple(boxes.shape)}"
            )
        super().__init__(images, seed)
        self.images, self.boxes = images, boxes.float()

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        n = len(self.images)
        partner = (index + 1 + int(torch.randint(n - 1, (), generator=self.generator("coloc-pair", index)))) % n
        return torch.cat([self.images[index], self.images[partner]]), self.boxes[index]
