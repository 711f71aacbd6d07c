"""The library's one coordinate convention.

Every grid, θ and box in ``stn`` uses the convention of
``torch.nn.functional.grid_sample(..., align_corners=False)``:

* coordinates are normalised to ``[-1, 1]`` along each axis, where ``-1`` is the **outer edge** of the first
  pixel and ``+1`` the outer edge of the last one, so pixel ``i`` of an axis with ``n`` pixels has its centre at
  ``(2 * i + 1) / n - 1``;
* a grid's last dimension is ``(x, y)`` (3-D: ``(x, y, z)``), i.e. (column, row[, depth]) — the reverse of the
  tensor's dimension order;
* a transformation θ maps **target (output) coordinates to source (input) coordinates** (the paper's eq. 1):
  the output pixel at ``(x_t, y_t)`` reads the input at ``T_θ(x_t, y_t)``.

Because the normalisation is per axis, a rotation by θ on a non-square image is a rotation in normalised
coordinates, not in pixels; convert with :func:`pixel_to_normalized` when metric accuracy matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["base_grid", "box_intersection", "box_iou", "check_size", "normalized_to_pixel", "pixel_to_normalized"]


def check_size(size: int | Sequence[int], ndim: int, what: str = "out_size") -> tuple[int, ...]:
    """Validate a spatial size: ``ndim`` positive ints ``(H, W)`` (3-D: ``(D, H, W)``); an int means a cube.

    Example:
        >>> from stn.coords import check_size
        >>> check_size(28, 2), check_size((42, 60), 2)
        ((28, 28), (42, 60))
        >>> check_size((0, 28), 2)
        Traceback (most recent call last):
        ...
        ValueError: out_size must be 2 positive ints (H, W), got (0, 28)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,) * ndim
    try:
        dims = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of {ndim} ints, got {size!r}") from None
    if len(dims) != ndim or any(d <= 0 for d in dims) or any(d != s for d, s in zip(dims, size)):
        expected = "(H, W)" if ndim == 2 else "(D, H, W)"
        raise ValueError(f"{what} must be {ndim} positive ints {expected}, got {tuple(size)!r}")
    return dims


def _axis(n: int, device: torch.device | None, dtype: torch.dtype) -> Tensor:
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


def base_grid(
    out_size: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """The regular target grid G of pixel centres, in normalised coordinates.

    Args:
        out_size: ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(H, W, 2)`` with ``[..., 0] = x`` and ``[..., 1] = y`` (3-D: ``(D, H, W, 3)`` with ``(x, y, z)``).

    Example:
        >>> from stn.coords import base_grid
        >>> base_grid((1, 2))[0]
        tensor([[-0.5000,  0.0000],
                [ 0.5000,  0.0000]])
    """
    dims = check_size(out_size, len(out_size))
    dtype = dtype or torch.get_default_dtype()
    axes = [_axis(n, device, dtype) for n in dims]
    mesh = torch.meshgrid(*axes, indexing="ij")  # (z,) y, x order
    return torch.stack(mesh[::-1], dim=-1)


def pixel_to_normalized(p: Tensor | float, size: int) -> Tensor | float:
    """Pixel index (centre of pixel 0 is 0.0) along an axis of ``size`` pixels -> normalised coordinate.

    Example:
        >>> from stn.coords import pixel_to_normalized
        >>> pixel_to_normalized(0, 4), pixel_to_normalized(3, 4)  # the centres of the first and last pixels
        (-0.75, 0.75)
    """
    return (2 * p + 1) / size - 1


def normalized_to_pixel(c: Tensor | float, size: int) -> Tensor | float:
    """Normalised coordinate -> pixel index (the inverse of :func:`pixel_to_normalized`).

    Example:
        >>> from stn.coords import normalized_to_pixel
        >>> normalized_to_pixel(-1.0, 4)  # the outer edge of the first pixel
        -0.5
    """
    return ((c + 1) * size - 1) / 2


def box_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Area shared by boxes ``a`` and ``b`` ``(..., 4)`` = ``(x0, y0, x1, y1)`` (broadcast against each other), in
    the boxes' own units: ``(...)``."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of boxes ``a`` and ``b`` ``(..., 4)`` = ``(x0, y0, x1, y1)`` (broadcast): ``(...)``.

    Example:
        >>> from stn.coords import box_iou
        >>> box_iou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([[1.0, 0.0, 3.0, 2.0], [2.0, 2.0, 3.0, 3.0]]))
        tensor([0.3333, 0.0000])
    """
    inter = box_intersection(a, b)
    union = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1) - inter
    return inter / union.clamp(min=1e-12)
