"""Thin-plate spline (TPS) family: the paper's 16-point TPS transformer.

K = k*k control points sit on a regular k x k grid spanning ``[-1, 1]^2`` in **target** space, ordered row-major
from the top-left (y outer, x inner). θ holds their **source** positions ``(x1, y1, x2, y2, ...)``; the spline
``f(p) = a0 + a1 x + a2 y + Σ_i w_i U(|p - c_i|)`` with ``U(r) = r² log r²`` interpolates them exactly (or, with
``reg > 0``, smooths them), so identity θ = the control points and T_θ is the identity map.

The grid is linear in θ: ``grid = M @ θ`` with ``M = B(G) L⁻¹[:, :K]``, ``(H*W, K)``. ``M`` depends only on
(k, reg, out_size, device, dtype); it is solved once in float64, cached, and every later call is one batched
matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stn.coords import base_grid
from stn.transforms.base import Transform

__all__ = ["ThinPlateSpline", "tps_kernel"]

_BASIS_CACHE: dict[tuple, Tensor] = {}
_BASIS_CACHE_SIZE = 64


def tps_kernel(points: Tensor, centers: Tensor) -> Tensor:
    """``U(|p - c|) = r² log r²`` between ``points`` ``(N, 2)`` and ``centers`` ``(K, 2)``: ``(N, K)``, 0 at r = 0."""
    r2 = (points.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(-1)
    return torch.where(r2 > 0, r2 * torch.log(torch.where(r2 > 0, r2, torch.ones_like(r2))), torch.zeros_like(r2))


def _affine_part(points: Tensor) -> Tensor:
    return torch.cat([torch.ones_like(points[:, :1]), points], dim=1)


class ThinPlateSpline(Transform):
    """TPS with ``k x k`` control points (default 4 x 4 = 16, θ width 32) and regularisation ``reg`` (λ).

    Example:
        >>> tps = ThinPlateSpline(k=4)
        >>> tps.grid(tps.identity(2), (28, 28)).shape
        torch.Size([2, 28, 28, 2])
    """

    name = "tps"
    has_scale = False

    def __init__(self, k: int = 4, reg: float = 0.0) -> None:
        if not isinstance(k, int) or k < 2:
            raise ValueError(f"tps grid size k must be an int >= 2, got {k!r}")
        if reg < 0:
            raise ValueError(f"tps regularisation reg must be >= 0, got {reg!r}")
        self.k = k
        self.reg = float(reg)
        self.num_params = 2 * k * k
        self.translation_index = tuple(range(self.num_params))

    @property
    def control_points(self) -> Tensor:
        """The K control points in target space, ``(K, 2)`` float64, (x, y), row-major from the top-left."""
        axis = torch.linspace(-1.0, 1.0, self.k, dtype=torch.float64)
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([x, y], dim=-1).view(-1, 2)

    def identity_params(self) -> Tensor:
        return self.control_points.reshape(-1)

    def basis(self, out_size: Sequence[int], device: torch.device | None, dtype: torch.dtype) -> Tensor:
        """The cached ``(H*W, K)`` matrix M with ``grid = M @ θ.view(B, K, 2)``."""
        key = (self.k, self.reg, tuple(out_size), str(device), dtype)
        m = _BASIS_CACHE.get(key)
        if m is None:
            c = self.control_points
            n = c.shape[0]
            system = torch.zeros(n + 3, n + 3, dtype=torch.float64)
            system[:n, :n] = tps_kernel(c, c) + self.reg * torch.eye(n, dtype=torch.float64)
            system[:n, n:] = _affine_part(c)
            system[n:, :n] = _affine_part(c).T
            g = base_grid(out_size, dtype=torch.float64).view(-1, 2)
            rows = torch.cat([tps_kernel(g, c), _affine_part(g)], dim=1)
            m = (rows @ torch.linalg.inv(system)[:, :n]).to(device=device, dtype=dtype)
            if len(_BASIS_CACHE) >= _BASIS_CACHE_SIZE:
                _BASIS_CACHE.pop(next(iter(_BASIS_CACHE)))
            _BASIS_CACHE[key] = m
        return m

    def grid(self, theta: Tensor, out_size: Sequence[int]) -> Tensor:
        height, width = out_size
        m = self.basis((height, width), theta.device, theta.dtype)
        return (m @ theta.view(theta.shape[0], m.shape[1], 2)).view(-1, height, width, 2)

    def __repr__(self) -> str:
        return f"ThinPlateSpline(k={self.k}, reg={self.reg})"
