"""Co-localisation (the paper's appendix, Table 5): find the object a set of images has in common, with no labels
and no boxes, and train an attention transformer (``coloc-st``) to crop it.

The paper minimises, over the crops ``I_n^T`` the transformer takes, the hinge loss

    L = sum_n sum_{m != n} max(0, ||e(I_n^T) - e(I_m^T)||² - ||e(I_n^T) - e(I_n^rand)||² + α),   α = 1,

where ``I_n^rand`` is a random crop of ``I_n`` and ``e`` (``coloc-encoder``) embeds a 28x28 crop. SGD on L moves
every crop onto empty background (docs/reproductions.md), so :func:`colocalize` minimises L one image at a time by
**best response** (:func:`best_response`) over each image's candidate crops (:func:`candidate_crops`), then fits the
transformer to the crops found by regression of θ (:func:`fit_transformer`). Boxes are ``(x0, y0, x1, y1)`` pixel
edges; a crop counts as localised when its IoU with the truth exceeds 0.5 (:func:`fraction_localised`).
``stn reproduce colocalization`` (:mod:`stn.experiments.colocalization`) runs it on MNIST digits.

Example:
    >>> from stn.models.colocalization import candidate_crops, crop_boxes
    >>> theta = candidate_crops(84, 28, 28)  # the 3x3 tiling of an 84x84 image by 28x28 crops
    >>> crop_boxes(theta[4:5], (84, 84)).round()  # the middle one, in pixel edges
    tensor([[28., 28., 56., 56.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stn.algebra import transform_boxes
from stn.coords import box_iou
from stn.functional import warp
from stn.models.registry import create_model
from stn.modules import SpatialTransformer

__all__ = [
    "DIGIT_SIZE",
    "IOU_THRESHOLD",
    "ColocalizationResult",
    "best_response",
    "candidate_crops",
    "colocalize",
    "crop_boxes",
    "expected_triplet_loss",
    "fit_transformer",
    "fraction_localised",
]

DIGIT_SIZE = 28  # side of the crops e() embeds
IOU_THRESHOLD = 0.5


def crop_boxes(theta: Tensor, size: Sequence[int]) -> Tensor:
    """The input region an attention θ ``(N, 3)`` crops (:func:`stn.models.cub.attention_boxes`), as ``(N, 4)``
    ``(x0, y0, x1, y1)`` pixel edges of an input of ``size`` ``(H, W)``: the output's frame carried back through θ
    by :func:`stn.transform_boxes`."""
    height, width = size
    frame = theta.new_tensor([-0.5, -0.5, width - 0.5, height - 0.5]).expand(len(theta), 1, 4)  # pixel centres
    return (transform_boxes(frame, theta, "attention", size, size, inverse=True)[:, 0] + 0.5).to(theta.dtype)


def candidate_crops(size: int, crop: int, stride: int) -> Tensor:
    """Attention θ ``(G, 3)`` of the ``crop``-pixel square windows of a ``size``-pixel square image whose corners
    step by ``stride`` pixels from the top-left window, row by row (the last row and column may stop short of the
    border); ``G = k²`` with ``k = (size - crop) // stride + 1``.

    Example:
        >>> theta = candidate_crops(84, 28, 28)  # the 3x3 tiling of an 84x84 image by 28x28 crops
        >>> theta.shape, theta[4]  # the middle one: (scale 1/3, the image centre)
        (torch.Size([9, 3]), tensor([0.3333, 0.0000, 0.0000]))
        >>> crop_boxes(theta[:1], (84, 84)).round()  # the top-left one, in pixel edges
        tensor([[ 0.,  0., 28., 28.]])
    """
    if not 0 < crop <= size or stride < 1:
        raise ValueError(f"need 0 < crop <= size and stride >= 1, got size {size}, crop {crop}, stride {stride}")
    centres = (torch.arange(0, size - crop + 1, stride) + crop / 2) * 2 / size - 1
    ty, tx = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([torch.full_like(tx, crop / size), tx, ty], dim=-1).reshape(-1, 3)


def expected_triplet_loss(close: Tensor, far: Tensor, margin: float = 1.0) -> Tensor:
    """The paper's hinge ``max(0, ||c - p||² - ||c - r||² + margin)`` of each candidate crop ``c``, averaged over
    every partner ``p`` and random crop ``r``, from the squared distances ``close`` ``(G, M)`` of the ``G``
    candidates to the ``M`` partners and ``far`` ``(G, R)`` to the ``R`` random crops: ``(G,)``."""
    return (close.unsqueeze(2) - far.unsqueeze(1) + margin).clamp(min=0).mean((1, 2))


def best_response(
    embeddings: Tensor, start: Tensor, margin: float = 1.0, rounds: int = 20, desc: str = "best response"
) -> tuple[list[Tensor], list[float]]:
    """Minimise the triplet loss over each image's candidate crops, one image at a time.

    Args:
        embeddings: ``(N, G, F)``: e() of the ``G`` candidate crops of each of ``N`` images (the random crops of
            an image are its candidates too).
        start: ``(N,)`` index of every image's first crop.
        rounds: sweeps at most; a sweep in which no image changes its crop ends the search.

    Returns:
        The choice ``(N,)`` after each sweep (the start first) and the mean loss of the choices after each sweep.
    """
    n = len(embeddings)
    if n < 2:
        raise ValueError(f"co-localisation needs at least 2 images, got {n}")
    # an image's random crops are its candidates, so its ||c - r||² are fixed: computed once
    far = torch.cdist(embeddings, embeddings).pow(2)  # (N, G, G)
    choice = start.clone()
    chosen = embeddings[torch.arange(n), choice]
    history, losses = [choice.clone()], []
    for _ in tqdm(range(rounds), desc=desc, leave=False, dynamic_ncols=True):
        total, changed = 0.0, False
        for i in range(n):
            others = torch.cat([chosen[:i], chosen[i + 1 :]])
            loss = expected_triplet_loss(torch.cdist(embeddings[i], others).pow(2), far[i], margin)
            best = int(loss.argmin())
            changed |= best != int(choice[i])
            choice[i], chosen[i] = best, embeddings[i, best]
            total += loss[best].item()
        history.append(choice.clone())
        losses.append(total / n)
        if not changed:
            break
    return history, losses


@torch.no_grad()
def _embed_candidates(images: Tensor, encoder: nn.Module, theta: Tensor, desc: str) -> Tensor:
    """e() of every candidate crop ``theta`` ``(G, 3)`` of every image: ``(N, G, F)``."""
    theta = theta.to(images.device)
    out = [
        encoder(warp(image.expand(len(theta), -1, -1, -1), theta, "attention", (DIGIT_SIZE, DIGIT_SIZE)))
        for image in tqdm(images.unsqueeze(1), desc=desc, leave=False, dynamic_ncols=True)
    ]
    return torch.stack(out)


def fit_transformer(images: Tensor, theta: Tensor, steps: int, lr: float = 1e-3, seed: int = 0) -> SpatialTransformer:
    """A ``coloc-st`` trained (Adam, full batch) to crop ``theta`` ``(N, 3)`` (one scale) out of ``images``
    ``(N, C, H, W)`` by regression of its translation."""
    torch.manual_seed(seed)
    scale = theta[0, 0].item()
    st = create_model("coloc-st", in_shape=tuple(images.shape[1:]), scale=scale).to(images.device)
    optimizer = torch.optim.Adam(st.parameters(), lr=lr)
    target = theta[:, 1:].to(images.device)
    for _ in tqdm(range(steps), desc="fit transformer", leave=False, dynamic_ncols=True):
        loss = (st.localize(images)[:, 1:] - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return st.eval()


@dataclass
class ColocalizationResult:
    """``theta`` ``(N, 3)``: the trained transformer's crops, ``iou`` ``(N,)`` theirs; ``history`` ``(S, N, 3)``:
    the best-response crops at the start and after each sweep, ``loss``: the mean triplet loss after each sweep;
    ``transformer``: the trained ``coloc-st``."""

    theta: Tensor
    iou: Tensor
    history: Tensor
    loss: list[float]
    transformer: SpatialTransformer

    @property
    def localised(self) -> float:
        """Fraction of digits with IoU above 0.5."""
        return fraction_localised(self.iou)


def fraction_localised(iou: Tensor) -> float:
    """Fraction of the IoUs ``(N,)`` above 0.5."""
    return (iou > IOU_THRESHOLD).float().mean().item()


def colocalize(
    images: Tensor,
    boxes: Tensor,
    encoder: nn.Module,
    *,
    stride: int = 4,
    rounds: int = 20,
    margin: float = 1.0,
    fit_steps: int = 500,
    fit_lr: float = 1e-3,
    seed: int = 0,
    desc: str = "co-localise",
) -> ColocalizationResult:
    """Find the common object of ``images`` ``(N, 1, H, W)`` (square) by best response on the triplet loss of
    ``encoder``'s embeddings of 28x28 crops (candidates ``stride`` px apart, at most ``rounds`` sweeps), train a
    ``coloc-st`` to take those crops (:func:`fit_transformer`), and score its crops against ``boxes`` ``(N, 4)``
    (used for nothing else)."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2] or images.shape[-1] < DIGIT_SIZE:
        raise ValueError(f"images must be square, (N, C, S, S) with S >= {DIGIT_SIZE}, got {tuple(images.shape)}")
    candidates = candidate_crops(images.shape[-1], DIGIT_SIZE, stride)
    embeddings = _embed_candidates(images, encoder, candidates, desc=f"{desc}: embed crops")
    centre = int(candidates[:, 1:].abs().sum(1).argmin())  # the crop nearest the image centre
    start = torch.full((len(images),), centre)
    history, losses = best_response(embeddings, start, margin, rounds, desc=f"{desc}: sweeps")
    found = candidates[history[-1]]
    st = fit_transformer(images, found, fit_steps, fit_lr, seed)
    with torch.no_grad():
        theta = st.localize(images).cpu()
    iou = box_iou(crop_boxes(theta, images.shape[-2:]), boxes.cpu())
    return ColocalizationResult(theta, iou, candidates[torch.stack(history)], losses, st)
