"""CUB-200-2011 models of the paper's Table 3: a CNN baseline and the 2x / 4x ST-CNN of parallel attention crops.

* **cub-cnn**: an ImageNet backbone on the whole image, global pooling, one linear classifier.
* **cub-st-cnn-2x / -4x**: N attention transformers (θ = ``(s, tx, ty)``, scale fixed at ``s`` = 0.5, translation
  learnt) regressed by one shared localisation head: a backbone on the image downsampled to ``loc_size``. Each
  transformer samples a ``crop_size`` crop (224 from a 448 input in the paper: a window of half the image's width
  at full resolution); each crop goes to its own copy of the backbone; the N feature vectors are concatenated and
  classified by one linear layer. The transformers start at distinct windows (a grid over the image, e.g. left /
  right halves for 2x) so that identical pretrained branches do not stay identical, and each moves at most
  ``1 - s`` from its start. Train the localisation net far slower than the rest
  (``stn.param_groups(model, lr, localization_lr_scale=1e-4)``).

Backbones are named: ``"tiny"`` (four strided convolutions, for tests and smoke runs) and ``"resnet18"`` are built
in (plain PyTorch, random initialisation); any other name is looked up in
[timm](https://github.com/huggingface/pytorch-image-models) (the ``cub`` extra), with ImageNet weights when
``pretrained_backbone=True`` (the paper uses an Inception network with batch norm, e.g. ``"inception_v3"``).
Inputs are RGB in ``[0, 1]``; the models normalise them with the ImageNet mean and standard deviation.

Example:
    >>> import torch
    >>> from stn.models import create_model
    >>> from stn.models.cub import attention_boxes
    >>> model = create_model("cub-st-cnn-2x", num_classes=10, backbone="tiny", crop_size=32, loc_size=32)
    >>> logits, theta = model(torch.rand(2, 3, 64, 64), return_theta=True)
    >>> logits.shape, attention_boxes(theta).shape
    (torch.Size([2, 10]), torch.Size([2, 2, 4]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from stn.algebra import transform_boxes
from stn.coords import box_intersection
from stn.models.registry import register_model
from stn.modules import ParallelSpatialTransformer

__all__ = [
    "BUILTIN_BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CUBClassifier",
    "ResNet18",
    "TinyBackbone",
    "attention_boxes",
    "attention_stats",
    "attention_theta",
    "build_backbone",
    "cub_cnn",
    "cub_st_cnn",
    "initial_windows",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyBackbone(nn.Sequential):
    """Four 3x3 stride-2 convolutions (16, 32, 64, 64 filters) with batch norm and ReLU, then global average
    pooling: ``(B, 3, H, W) -> (B, 64)``. For tests and smoke runs."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64)) -> None:
        layers: list[nn.Module] = []
        prev = 3
        for width in widths:
            layers += [nn.Conv2d(prev, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
            prev = width
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = prev


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) feature extractor in plain PyTorch: ``(B, 3, H, W) -> (B, 512)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(3, 2, 1)
        )
        blocks, prev = [], 64
        for channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_BasicBlock(prev, channels, stride), _BasicBlock(channels, channels, 1)]
            prev = channels
        self.blocks = nn.Sequential(*blocks)
        self.out_features = prev

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)


BUILTIN_BACKBONES = {"tiny": TinyBackbone, "resnet18": ResNet18}


def build_backbone(name: str = "tiny", pretrained: bool = False) -> nn.Module:
    """A feature extractor ``(B, 3, H, W) -> (B, F)`` with ``out_features = F``.

    Args:
        name: ``"tiny"`` or ``"resnet18"`` (built in), or a timm model name.
        pretrained: load timm's ImageNet weights.

    Raises:
        ValueError: ``pretrained=True`` for a built-in backbone (stn ships no ImageNet weights for those).
        KeyError: a name that is neither built in nor known to timm, or timm is not installed.
    """
    if name in BUILTIN_BACKBONES:
        if pretrained:
            raise ValueError(f"built-in backbone {name!r} has no pretrained weights; use a timm name for those")
        return BUILTIN_BACKBONES[name]()
    try:
        import timm
    except ImportError as error:  # timm missing, or one of its own imports (torchvision) missing
        raise KeyError(
            f"unknown backbone {name!r}: built-in backbones are {sorted(BUILTIN_BACKBONES)}; other names come from "
            f"timm, which could not be imported ({error}; pip install 'stn[cub]', which brings timm and torchvision)"
        ) from None
    if not timm.is_model(name):
        raise KeyError(f"unknown backbone {name!r}: neither built in ({sorted(BUILTIN_BACKBONES)}) nor a timm model")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    model.out_features = model.num_features
    return model


class _Normalize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class _Resize(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


class CUBClassifier(nn.Module):
    """Backbone branch(es) + one linear classifier, optionally behind N parallel attention transformers.

    Args:
        num_classes: 200 for the full set.
        backbone: the backbone's name (see :func:`build_backbone`).
        pretrained_backbone: load timm's ImageNet weights into every backbone (timm backbones only).
        num_transformers: 0 for the CNN baseline (the backbone sees the whole input), else N >= 1.
        crop_size: side of each transformer's output crop.
        loc_size: side the input is resized to for the localisation backbone.
        scale: the fixed attention scale s (the window's half-width in normalised coordinates).

    ``forward(x)``: ``(B, 3, H, W)`` in ``[0, 1]`` -> logits ``(B, num_classes)``; with ``return_theta=True``
    (ST models only) also θ ``(B, N, 3)`` = ``(s, tx, ty)`` per transformer (see :func:`attention_boxes`).
    """

    def __init__(
        self,
        num_classes: int = 200,
        backbone: str = "tiny",
        pretrained_backbone: bool = False,
        num_transformers: int = 0,
        *,
        crop_size: int = 224,
        loc_size: int = 224,
        scale: float = 0.5,
    ) -> None:
        super().__init__()
        if num_transformers < 0:
            raise ValueError(f"num_transformers must be >= 0, got {num_transformers}")
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.normalize = _Normalize()
        self.transformer: ParallelSpatialTransformer | None = None
        if num_transformers:
            localization = build_backbone(backbone, pretrained_backbone)
            self.transformer = ParallelSpatialTransformer(
                nn.Sequential(_Resize(loc_size), localization),
                num_transformers,
                "attention",
                (crop_size, crop_size),
                in_features=localization.out_features,
                max_translation=1 - scale if scale < 1 else None,
                scale_range=(scale, scale),
                init_theta=initial_windows(num_transformers, scale),
            )
        self.branches = nn.ModuleList(
            build_backbone(backbone, pretrained_backbone) for _ in range(max(num_transformers, 1))
        )
        self.classifier = nn.Linear(sum(b.out_features for b in self.branches), num_classes)

    def forward(self, x: Tensor, return_theta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        x = self.normalize(x)
        if self.transformer is None:
            if return_theta:
                raise ValueError("the CNN baseline has no transformers: return_theta needs an ST-CNN")
            return self.classifier(self.branches[0](x))
        crops, theta = self.transformer(x, return_theta=True)
        features = torch.cat([branch(crop) for branch, crop in zip(self.branches, crops)], dim=1)
        logits = self.classifier(features)
        return (logits, theta) if return_theta else logits


# Before stn grew shipped weights (create_model(..., pretrained=...)), the factories called ImageNet backbone
# weights ``pretrained``; checkpoints of that time record the old keyword (see registry.upgrade_kwargs).
_RENAMED = {"pretrained": "pretrained_backbone"}


@register_model("cub-cnn", renamed=_RENAMED)
def cub_cnn(num_classes: int = 200, backbone: str = "tiny", pretrained_backbone: bool = False) -> CUBClassifier:
    """The CNN baseline: one backbone on the whole image."""
    return CUBClassifier(num_classes, backbone, pretrained_backbone)


def cub_st_cnn(num_transformers: int, num_classes: int = 200, backbone: str = "tiny", **kwargs) -> CUBClassifier:
    """N parallel attention transformers, each feeding its own backbone (``kwargs``: ``pretrained_backbone``,
    ``crop_size``, ``loc_size``, ``scale``)."""
    pretrained_backbone = kwargs.pop("pretrained_backbone", False)
    return CUBClassifier(num_classes, backbone, pretrained_backbone, num_transformers, **kwargs)


@register_model("cub-st-cnn-2x", renamed=_RENAMED)
def cub_st_cnn_2x(**kwargs) -> CUBClassifier:
    """Two parallel attention transformers (see :func:`cub_st_cnn`)."""
    return cub_st_cnn(2, **kwargs)


@register_model("cub-st-cnn-4x", renamed=_RENAMED)
def cub_st_cnn_4x(**kwargs) -> CUBClassifier:
    """Four parallel attention transformers (see :func:`cub_st_cnn`)."""
    return cub_st_cnn(4, **kwargs)


# --- attention windows (pure functions) -------------------------------------------------------------------------


def initial_windows(num_transformers: int, scale: float) -> Tensor:
    """Starting θ ``(N, 3)``: window centres on a ``ceil(sqrt(N))``-column grid over the translatable range.

    Example:
        >>> from stn.models.cub import initial_windows
        >>> initial_windows(2, 0.5)
        tensor([[ 0.5000, -0.2500,  0.0000],
                [ 0.5000,  0.2500,  0.0000]])
    """
    cols = math.ceil(math.sqrt(num_transformers))
    rows = math.ceil(num_transformers / cols)
    reach = 1 - scale

    def centres(n: int) -> Tensor:
        return (torch.arange(n) * 2 + 1) / n * reach - reach if n > 1 else torch.zeros(1)

    ys, xs = torch.meshgrid(centres(rows), centres(cols), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1)[:num_transformers]
    return torch.cat([torch.full((num_transformers, 1), float(scale)), grid], dim=1)


def attention_boxes(theta: Tensor) -> Tensor:
    """The window each attention θ ``(..., 3)`` = ``(s, tx, ty)`` reads: ``(..., 4)`` = ``(x0, y0, x1, y1)`` in
    normalised input coordinates (``x_s = s * x_t + tx`` over ``x_t`` in ``[-1, 1]``): the output's frame carried
    back through θ by :func:`stn.transform_boxes`.

    Example:
        >>> import torch
        >>> from stn.models.cub import attention_boxes
        >>> attention_boxes(torch.tensor([0.5, 0.25, 0.0]))
        tensor([-0.2500, -0.5000,  0.7500,  0.5000])
    """
    flat = theta.reshape(-1, 3)
    # In an image of one pixel the pixel coordinates are half the normalised ones: its frame is [-0.5, 0.5]².
    frame = flat.new_tensor([-0.5, -0.5, 0.5, 0.5]).expand(len(flat), 1, 4)
    window = transform_boxes(frame, flat, "attention", 1, 1, inverse=True)
    return (2 * window).to(theta.dtype).view(*theta.shape[:-1], 4)


def attention_stats(theta: Tensor, boxes: Tensor) -> dict[str, float | list[float]]:
    """How the attention windows of θ ``(N, T, 3)`` sit on the ground-truth boxes ``(N, 4)`` (normalised
    ``(x0, y0, x1, y1)``): ``centre_in_box`` (share of windows whose centre is in the box), ``window_on_box``
    (mean share of a window's area inside the box), and both per transformer (``..._per_transformer``).

    Example:
        >>> import torch
        >>> from stn.models.cub import attention_stats
        >>> window = torch.tensor([[[0.5, 0.0, 0.0]]])  # one transformer reading [-0.5, 0.5]²
        >>> stats = attention_stats(window, torch.tensor([[-1.0, -1.0, 0.0, 0.0]]))  # the top-left quarter
        >>> stats["centre_in_box"], stats["window_on_box"]
        (1.0, 0.25)
    """
    box = boxes[:, None, :]
    cx, cy = theta[..., 1], theta[..., 2]
    centre = ((cx >= box[..., 0]) & (cx <= box[..., 2]) & (cy >= box[..., 1]) & (cy <= box[..., 3])).float()
    covered = box_intersection(attention_boxes(theta), box) / (2 * theta[..., 0]).square()  # (N, T)
    return {
        "centre_in_box": centre.mean().item(),
        "window_on_box": covered.mean().item(),
        "centre_in_box_per_transformer": centre.mean(0).tolist(),
        "window_on_box_per_transformer": covered.mean(0).tolist(),
    }


@torch.no_grad()
def attention_theta(model: CUBClassifier, images: Dataset, batch_size: int, num_workers: int = 0) -> Tensor:
    """The attention θ ``(N, T, 3)`` of an ST-CNN on every ``(image, label)`` of ``images`` (run on the model's
    device; returned on the CPU)."""
    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(images, batch_size, num_workers=num_workers)
    return torch.cat([model(x.to(device), return_theta=True)[1].cpu() for x, _ in loader])
