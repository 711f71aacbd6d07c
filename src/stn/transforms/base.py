"""The :class:`Transform` interface: one family of T_θ, its θ layout and its grid generator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Transform"]


class Transform(ABC):
    """A family of transformations T_θ mapping target (output) to source (input) coordinates.

    Instances are immutable and cheap; build them with :func:`stn.transforms.get`.

    Attributes:
        name: the registry name (``"affine"``, ``"tps"``, ...).
        num_params: the width P of θ, which is always a ``(B, P)`` tensor.
        ndim: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        translation_index: the entries of θ that :class:`stn.SpatialTransformer` bounds with
            ``max_translation`` (the translation; for TPS every control point).
        has_scale: whether the family has one isotropic scale that ``scale_range`` can clamp.

    Example:
        >>> import torch
        >>> from stn import transforms
        >>> affine = transforms.get("affine")
        >>> affine.num_params, affine.identity(2)
        (6, tensor([[1., 0., 0., 0., 1., 0.],
                [1., 0., 0., 0., 1., 0.]]))
        >>> affine.grid(affine.identity(2), (21, 21)).shape
        torch.Size([2, 21, 21, 2])
        >>> affine.check_theta(torch.zeros(2, 4))
        Traceback (most recent call last):
        ...
        ValueError: theta for 'affine' must have shape (B, 6), got (2, 4)
    """

    name: str
    num_params: int
    ndim: int = 2
    translation_index: tuple[int, ...] = ()
    has_scale: bool = False

    @abstractmethod
    def identity_params(self) -> Tensor:
        """θ of the identity transform, ``(P,)`` in float64."""

    @abstractmethod
    def grid(self, theta: Tensor, out_size: Sequence[int]) -> Tensor:
        """The sampling grid T_θ(G): ``(B, H, W, 2)`` for out_size ``(H, W)`` (3-D ``(B, D, H, W, 3)``).

        ``theta`` must already be validated (see :meth:`check_theta`); the grid has θ's dtype and device.
        """

    def valid_mask(self, theta: Tensor, out_size: Sequence[int]) -> Tensor | None:
        """Where T_θ has a source point: ``(B, *out_size)`` bool, or None when every target point has one (every
        family but ``projective``, whose points on or behind the horizon have none). The sampler reads 0 (or the
        fill) at the others whatever the padding mode."""
        return None

    def identity(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """θ of the identity repeated ``batch_size`` times: ``(B, P)``."""
        row = self.identity_params().to(device=device, dtype=dtype or torch.get_default_dtype())
        return row.expand(batch_size, -1).clone()

    def clamp_scale(self, theta: Tensor, low: float, high: float) -> Tensor:
        """θ with its isotropic scale clamped to ``[low, high]`` (families with ``has_scale`` only)."""
        raise ValueError(f"transform {self.name!r} has no isotropic scale to clamp; use 'attention' or 'similarity'")

    def check_theta(self, theta: Tensor, batch_size: int | None = None) -> Tensor:
        """Validate θ: a floating ``(B, P)`` tensor, with ``B == batch_size`` when given. Never broadcasts."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor of shape (B, {self.num_params}), got {type(theta).__name__}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must be a floating-point tensor, got dtype {theta.dtype}")
        if theta.dim() != 2 or theta.shape[1] != self.num_params:
            raise ValueError(
                f"theta for {self.name!r} must have shape (B, {self.num_params}), got {tuple(theta.shape)}"
            )
        if batch_size is not None and theta.shape[0] != batch_size:
            raise ValueError(f"theta has batch size {theta.shape[0]} but the input has batch size {batch_size}")
        return theta

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_params={self.num_params})"
