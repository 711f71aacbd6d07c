"""SVHN multi-digit models of the paper's Table 2: the 11-hidden-layer CNN and its ST-CNN Single / Multi forms.

The CNN (after Goodfellow et al., 2014): eight 5x5 convolutions with ``(48, 64, 128, 160, 192, 192, 192, 192)``
filters, each followed by batch norm, ReLU and max-pooling whose stride alternates 2 (2x2 window) and 1 (3x3
window, same size), then three fully connected layers of 3072 units with dropout, and five independent softmax
classifiers, one per sequence position, over the digits 0-9 and a null class ("no digit here"). Batch norm is
our addition (the 2014 model predates it); it makes the net train from scratch in a reasonable time.

* **ST-CNN Single**: one affine spatial transformer on the input whose localisation net is a four-layer CNN
  (two 5x5 convolutions of 32 filters with max-pooling, two fully connected layers of 32 units).
* **ST-CNN Multi**: an affine spatial transformer before each of the first four convolutional layers, each with
  a two-layer, 32-unit fully connected localisation net, acting on that layer's input feature map.

Every transformer starts at the identity; train their localisation nets at 1/10 of the base learning rate
(``stn.param_groups(model, lr, localization_lr_scale=0.1)``).

Example:
    >>> import torch
    >>> from stn.models import create_model
    >>> model = create_model("svhn-st-cnn-multi", in_shape=(3, 54, 54))
    >>> model(torch.rand(2, 3, 54, 54)).shape
    torch.Size([2, 5, 11])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from stn.models.registry import register_model
from stn.modules import ConvLocalization, FCLocalization, SpatialTransformer

__all__ = [
    "CONV_CHANNELS",
    "FC_UNITS",
    "SVHNNet",
    "sequence_errors",
    "sequence_loss",
    "svhn_cnn",
    "svhn_st_cnn_multi",
    "svhn_st_cnn_single",
]

CONV_CHANNELS = (48, 64, 128, 160, 192, 192, 192, 192)
FC_UNITS = (3072, 3072, 3072)


def _conv_block(in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> nn.Sequential:
    pool = nn.MaxPool2d(2, stride=2, ceil_mode=True) if stride == 2 else nn.MaxPool2d(3, stride=1, padding=1)
    norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=not batch_norm), norm, nn.ReLU(inplace=True), pool
    )


class SVHNNet(nn.Module):
    """The sequence CNN, with optional spatial transformers before some of its convolutional layers.

    Args:
        in_shape: ``(C, H, W)`` of the input images.
        num_classes: digit classes per position (10); each head adds the null class.
        max_digits: number of positions (5).
        transformers: ``{layer index: SpatialTransformer}``; the transformer at index ``i`` warps the input of
            convolutional layer ``i`` (index 0 is the image) and must keep its size.
        batch_norm: batch norm after each convolution.
        dropout: dropout rate after each fully connected hidden layer.
        fc_units: widths of the fully connected hidden layers (the paper's three of 3072; smaller for tests).

    ``forward(x)`` maps ``(B, C, H, W)`` to logits ``(B, max_digits, num_classes + 1)``; with
    ``return_theta=True`` it also returns ``{layer index: θ (B, 6)}`` of the transformers.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (3, 54, 54),
        num_classes: int = 10,
        max_digits: int = 5,
        transformers: dict[int, nn.Module] | None = None,
        *,
        batch_norm: bool = True,
        dropout: float = 0.2,
        fc_units: Sequence[int] = FC_UNITS,
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.in_shape = tuple(in_shape)
        self.max_digits, self.num_classes = max_digits, num_classes
        widths = (channels, *CONV_CHANNELS)
        self.convs = nn.ModuleList(
            _conv_block(widths[i], widths[i + 1], 2 if i % 2 == 0 else 1, batch_norm) for i in range(len(CONV_CHANNELS))
        )
        transformers = transformers or {}
        if any(i not in range(len(self.convs)) for i in transformers):
            raise ValueError(
                f"transformer layer indices must be in 0..{len(self.convs) - 1}, got {sorted(transformers)}"
            )
        self.transformers = nn.ModuleDict({str(i): st for i, st in sorted(transformers.items())})
        flat = CONV_CHANNELS[-1] * _pooled(height) * _pooled(width)
        layers: list[nn.Module] = [nn.Flatten()]
        for units in fc_units:
            layers += [nn.Linear(flat, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            flat = units
        self.fc = nn.Sequential(*layers)
        self.classifier = nn.Linear(flat, max_digits * (num_classes + 1))

    def forward(self, x: Tensor, return_theta: bool = False) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
        thetas: dict[int, Tensor] = {}
        for i, conv in enumerate(self.convs):
            if str(i) in self.transformers:
                x, thetas[i] = self.transformers[str(i)](x, return_theta=True)
            x = conv(x)
        logits = self.classifier(self.fc(x)).view(x.shape[0], self.max_digits, self.num_classes + 1)
        return (logits, thetas) if return_theta else logits


def _pooled(size: int) -> int:
    """Spatial size after the four stride-2 poolings (ceil mode)."""
    for _ in range(len(CONV_CHANNELS) // 2):
        size = -(-size // 2)
    return size


def _feature_shapes(in_shape: Sequence[int], count: int) -> list[tuple[int, int, int]]:
    """``(C, H, W)`` of the inputs of the first ``count`` convolutional layers."""
    channels, height, width = in_shape
    shapes = [(channels, height, width)]
    for i in range(count - 1):
        if i % 2 == 0:
            height, width = -(-height // 2), -(-width // 2)
        shapes.append((CONV_CHANNELS[i], height, width))
    return shapes


@register_model("svhn-cnn")
def svhn_cnn(in_shape: Sequence[int] = (3, 54, 54), num_classes: int = 10, **kwargs) -> SVHNNet:
    """The baseline CNN (``kwargs``: ``max_digits``, ``batch_norm``, ``dropout``)."""
    return SVHNNet(in_shape, num_classes, **kwargs)


@register_model("svhn-st-cnn-single")
def svhn_st_cnn_single(in_shape: Sequence[int] = (3, 54, 54), num_classes: int = 10, **kwargs) -> SVHNNet:
    """One affine transformer on the input with a 4-layer CNN localisation net (conv 32, conv 32, FC 32, FC 32)."""
    localization = nn.Sequential(
        ConvLocalization(in_shape[0], channels=32, kernel_size=5, hidden=32, downsample=1),
        nn.Linear(32, 32),
        nn.ReLU(inplace=True),
    )
    return SVHNNet(in_shape, num_classes, transformers={0: SpatialTransformer(localization, "affine")}, **kwargs)


@register_model("svhn-st-cnn-multi")
def svhn_st_cnn_multi(in_shape: Sequence[int] = (3, 54, 54), num_classes: int = 10, **kwargs) -> SVHNNet:
    """An affine transformer before each of the first 4 convolutions, each with a 2-layer 32-unit FC localisation."""
    transformers = {
        i: SpatialTransformer(FCLocalization(shape, hidden=(32, 32)), "affine")
        for i, shape in enumerate(_feature_shapes(in_shape, 4))
    }
    return SVHNNet(in_shape, num_classes, transformers=transformers, **kwargs)


# --- training objective and metric (pure functions) ------------------------------------------------------------


def sequence_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over positions of the mean cross-entropy: logits ``(B, L, K)``, targets ``(B, L)`` -> scalar."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / logits.shape[0]


def sequence_errors(logits: Tensor, targets: Tensor) -> Tensor:
    """``(B,)`` bool: the sequence is wrong if **any** position (null class included) is wrong.

    Example:
        >>> import torch
        >>> from stn.models.svhn import sequence_errors
        >>> logits = torch.zeros(1, 5, 11)
        >>> logits[0, :, 10] = 1  # every position predicts "no digit" ...
        >>> logits[0, 0, 3] = 2  # ... except the first, a 3
        >>> sequence_errors(logits, torch.tensor([[3, 10, 10, 10, 10]]))
        tensor([False])
    """
    return (logits.argmax(-1) != targets).any(dim=1)
