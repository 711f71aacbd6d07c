"""Co-localisation (the paper's appendix, Table 5): find the object a set of images has in common, with no labels
and no boxes, and train an attention transformer (``coloc-st``) to crop it.

The paper minimises, over the crops ``I_n^T`` the transformer takes, the hinge loss

    L = sum_n sum_{m != n} max(0, ||e(I_n^T) - e(I_m^T)||² - ||e(I_n^T) - e(I_n^rand)||² + α),   α = 1,

where ``I_n^rand`` is a random crop of ``I_n`` and ``e`` (``coloc-encoder``) embeds a 28x28 crop, by SGD over
random pairs ``(n, m)``. Two ways to minimise it:

* **SGD, the paper's**: ``coloc-triplet`` (:class:`TripletColocalizer`) takes a pair and returns the crop's box and
  the three embeddings; the training engine trains its transformer on
  :class:`stn.data.colocalization.ColocalizationPairs` with :class:`stn.engine.tasks.TripletTask` (the loss above,
  the share of crops with IoU > 0.5 as its metric).
* **best response, our departure**: :func:`search_crops` minimises L one image at a time over each image's
  candidate crops (:func:`candidate_crops`, :func:`best_response`); the engine then fits the transformer of a
  ``coloc-locator`` (:class:`CropLocator`) to the crops found by regression of θ.

Boxes are ``(x0, y0, x1, y1)`` pixel edges (:func:`crop_boxes`). ``stn reproduce colocalization``
(:mod:`stn.experiments.colocalization`) runs both on MNIST digits; why the departure: docs/reproductions.md.

Example:
    >>> from stn.models.colocalization import candidate_crops, crop_boxes
    >>> theta = candidate_crops(84, 28, 28)  # the 3x3 tiling of an 84x84 image by 28x28 crops
    >>> crop_boxes(theta[4:5], (84, 84)).round()  # the middle one, in pixel edges
    tensor([[28., 28., 56., 56.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stn.algebra import transform_boxes
from stn.functional import warp
from stn.models.registry import create_model, register_model
from stn.modules import SpatialTransformer

__all__ = [
    "DIGIT_SIZE",
    "IOU_THRESHOLD",
    "CropLocator",
    "SearchResult",
    "TripletColocalizer",
    "best_response",
    "candidate_crops",
    "crop_boxes",
    "expected_triplet_loss",
    "random_crops",
    "search_crops",
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


@dataclass
class SearchResult:
    """What :func:`search_crops` found: ``crops`` ``(N, 3)``, the attention θ chosen for each image;
    ``history`` ``(S, N, 3)``, the crops at the start and after each sweep; ``loss``, the mean triplet loss after
    each sweep."""

    crops: Tensor
    history: Tensor
    loss: list[float]


def search_crops(
    images: Tensor,
    encoder: nn.Module,
    *,
    stride: int = 4,
    rounds: int = 20,
    margin: float = 1.0,
    desc: str = "co-localise",
) -> SearchResult:
    """Our departure from the paper: the common object of ``images`` ``(N, C, S, S)`` (square) by best response
    on the triplet loss of ``encoder``'s embeddings of 28x28 crops (candidates ``stride`` px apart, at most
    ``rounds`` sweeps), every image starting at the candidate nearest its centre."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2] or images.shape[-1] < DIGIT_SIZE:
        raise ValueError(f"images must be square, (N, C, S, S) with S >= {DIGIT_SIZE}, got {tuple(images.shape)}")
    candidates = candidate_crops(images.shape[-1], DIGIT_SIZE, stride)
    embeddings = _embed_candidates(images, encoder, candidates, desc=f"{desc}: embed crops")
    centre = int(candidates[:, 1:].abs().sum(1).argmin())  # the crop nearest the image centre
    start = torch.full((len(images),), centre)
    history, losses = best_response(embeddings, start, margin, rounds, desc=f"{desc}: sweeps")
    return SearchResult(candidates[history[-1]], candidates[torch.stack(history)], losses)


def random_crops(scale: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Attention θ ``(B, 3)`` of crops of half-widths ``scale`` ``(B,)`` (normalised, at most 1) at uniformly
    random places inside the image: the paper's ``I_n^rand``."""
    shift = torch.rand(len(scale), 2, generator=generator, device=scale.device, dtype=scale.dtype) * 2 - 1
    return torch.cat([scale.unsqueeze(1), shift * (1 - scale).unsqueeze(1)], dim=1)


class TripletColocalizer(nn.Module):
    """The paper's co-localisation model: an attention transformer (``coloc-st``) and a frozen embedding e()
    (``coloc-encoder``), scored by :class:`stn.engine.tasks.TripletTask`.

    The input holds a pair: image ``n`` in the first ``C`` channels, image ``m`` in the others. The transformer
    crops both; a random crop of ``n`` (:func:`random_crops`, at the scale of ``n``'s crop) is taken too, from the
    global random stream in training and from a fixed seed in evaluation (the same crops every time). The output
    row is the box of ``n``'s crop (``(x0, y0, x1, y1)``, pixel edges, for the metrics) then e() of the crops of
    ``n``, ``m`` and the random one. Gradients reach the localisation net through both transformer crops; e() stays
    in eval mode with frozen weights.

    Shapes: ``(B, 2C, H, W) -> (B, 4 + 3F)``.
    """

    def __init__(self, transformer: SpatialTransformer, encoder: nn.Module) -> None:
        super().__init__()
        self.transformer, self.encoder = transformer, encoder.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> TripletColocalizer:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        b, channels = len(x), x.shape[1] // 2
        anchor = x[:, :channels]
        crops, theta = self.transformer(torch.cat([anchor, x[:, channels:]]), return_theta=True)
        generator = None if self.training else torch.Generator(x.device).manual_seed(0)
        rand = random_crops(theta[:b, 0].detach(), generator)
        rand_crops = warp(anchor, rand, self.transformer.transform, crops.shape[-2:])
        embeddings = self.encoder(torch.cat([crops, rand_crops])).unflatten(0, (3, b))  # (3, B, F)
        return torch.cat([crop_boxes(theta[:b].detach(), x.shape[-2:]), *embeddings.unbind(0)], dim=1)


class CropLocator(nn.Module):
    """The translation ``(tx, ty)`` of a ``coloc-st``'s θ: what the best-response method's fit regresses onto the
    crops found (with :class:`stn.engine.tasks.RegressionTask`). Shapes: ``(B, C, H, W) -> (B, 2)``."""

    def __init__(self, transformer: SpatialTransformer) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, x: Tensor) -> Tensor:
        return self.transformer.localize(x)[:, 1:]


def _inside_transformer(in_shape: Sequence[int], hidden: int, scale: float | None) -> SpatialTransformer:
    """A ``coloc-st`` (``hidden``-unit localisation net; ``scale``: the crop's half-width, default a 28-pixel crop)
    whose crops stay inside the image, as the random crops do: off its edge the zero padding would be a "common
    object" of every image."""
    c, h, w = (int(s) for s in in_shape)
    scale = DIGIT_SIZE / w if scale is None else scale
    if not 0 < scale < 1:
        raise ValueError(
            f"the crop's scale must be in (0, 1), smaller than the image, for its translation to move it; got {scale}"
        )
    return create_model("coloc-st", in_shape=(c, h, w), hidden=hidden, scale=scale, max_translation=1 - scale)


@register_model("coloc-triplet")
def _coloc_triplet(
    in_shape: Sequence[int] = (1, 84, 84),
    hidden: int = 8,
    scale: float | None = None,
    encoder: dict[str, Any] | None = None,
    taps: Sequence[int] | None = None,
    normalize: bool = False,
) -> TripletColocalizer:
    """:class:`TripletColocalizer` over a ``coloc-st`` cropping inside the image (``hidden`` units in the
    localisation net's fully connected layers: the paper's 8; ``scale``: the crop's fixed half-width) and a
    ``coloc-encoder`` over a fresh ``create_model("cnn", **encoder)`` (``taps``: its layers concatenated,
    ``normalize``: each to unit norm; see :class:`stn.models.appendix.ActivationEncoder`); the caller loads the
    trained encoder's weights into ``model.encoder``."""
    net = create_model("cnn", **(encoder or {}))
    e = create_model("coloc-encoder", classifier=net, taps=taps, normalize=normalize)
    return TripletColocalizer(_inside_transformer(in_shape, hidden, scale), e)


@register_model("coloc-locator")
def _coloc_locator(in_shape: Sequence[int] = (1, 84, 84), hidden: int = 128, scale: float | None = None) -> CropLocator:
    """:class:`CropLocator` over the ``coloc-st`` of ``coloc-triplet`` (the same arguments), so that the fitted
    transformer's weights load into a ``coloc-triplet`` and crop the same."""
    return CropLocator(_inside_transformer(in_shape, hidden, scale))
