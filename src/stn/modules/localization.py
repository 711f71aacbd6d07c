"""Ready localisation networks in the paper's shapes. Each maps its input to a feature vector ``(B, F)`` and
exposes ``out_features = F``; :class:`stn.SpatialTransformer` appends the regression layer that outputs θ."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import Tensor, nn

__all__ = ["ConvLocalization", "FCLocalization"]


class FCLocalization(nn.Sequential):
    """Fully connected localisation net (the paper's ST-FCN): flatten, then ``Linear -> ReLU`` per hidden layer.

    Args:
        in_shape: ``(C, H, W)`` (or ``(C, D, H, W)``) of the input it will see.
        hidden: units of each hidden layer; the paper uses 32-unit layers.

    Example:
        >>> import torch
        >>> from stn.modules import FCLocalization
        >>> loc = FCLocalization((1, 28, 28), hidden=(32, 32))
        >>> loc(torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 32])
    """

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int] = (32, 32)) -> None:
        if not hidden:
            raise ValueError("hidden must name at least one layer")
        layers: list[nn.Module] = [nn.Flatten()]
        width = prod(in_shape)
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            width = units
        super().__init__(*layers)
        self.in_shape = tuple(in_shape)
        self.out_features = width


class ConvLocalization(nn.Module):
    """Convolutional localisation net (the paper's ST-CNN): a 2x max-pool of the input, two ``k x k``
    convolutions with ``channels`` filters, each followed by ReLU and 2x max-pooling, adaptive max-pooling to
    ``pool_size`` (so any input size works), then a fully connected layer of ``hidden`` units.

    Works on images ``(B, C, H, W)``; ``ndim=3`` builds the volumetric version for ``(B, C, D, H, W)``.

    Args:
        in_channels: C of the input.
        channels: filters of each convolution.
        kernel_size: k.
        hidden: units of the fully connected layer, ``out_features``.
        downsample: factor of the first max-pool (1: none).
        pool_size: side of the adaptive max-pool's output.
        ndim: 2 for images, 3 for volumes.

    Example:
        >>> import torch
        >>> from stn.modules import ConvLocalization
        >>> loc = ConvLocalization(1)
        >>> loc(torch.rand(4, 1, 42, 42)).shape, loc(torch.rand(4, 1, 60, 60)).shape
        (torch.Size([4, 20]), torch.Size([4, 20]))
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 20,
        kernel_size: int = 5,
        hidden: int = 20,
        downsample: int = 2,
        pool_size: int = 4,
        ndim: int = 2,
    ) -> None:
        super().__init__()
        conv, pool, adaptive = {
            2: (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d),
            3: (nn.Conv3d, nn.MaxPool3d, nn.AdaptiveMaxPool3d),
        }[ndim]
        pad = kernel_size // 2  # 'same' padding keeps small inputs valid
        self.features = nn.Sequential(
            pool(downsample) if downsample > 1 else nn.Identity(),
            conv(in_channels, channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            pool(2, ceil_mode=True),
            conv(channels, channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            adaptive(pool_size),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels * pool_size**ndim, hidden), nn.ReLU(inplace=True))
        self.out_features = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
