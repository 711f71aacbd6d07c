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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from stn.coords import pixel_to_normalized
from stn.transforms.base import Transform

__all__ = ["ThinPlateSpline", "regular_control_points", "solve_basis", "solve_coefficients", "tps_kernel"]

_BASIS_CACHE: dict[tuple, Tensor] = {}
_BASIS_CACHE_SIZE = 64
_BASIS_OUTSIDE_GRAPHS: Callable[..., Tensor] | None = None


def tps_kernel(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``U(|p - c|) = r² log r²`` between ``points`` ``(N, 2)`` and ``centers`` ``(K, 2)``: ``(N, K)``, 0 at r = 0."""
    r2 = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return r2 * np.log(np.where(r2 > 0, r2, 1.0))


def _affine_part(points: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ones_like(points[:, :1]), points], axis=1)


@contextmanager
def _untraced() -> Iterator[None]:
    # The first call solves, later calls hit the cache: under torch.jit.trace both must record the same graph,
    # in which M is a constant, so the cache miss runs with the tracer paused.
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def regular_control_points(k: int) -> np.ndarray:
    """``k x k`` points on a regular grid over ``[-1, 1]^2``, ``(k*k, 2)`` as (x, y), y outer and x inner."""
    axis = np.linspace(-1.0, 1.0, k)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([x, y], axis=-1).reshape(-1, 2)


def solve_coefficients(control_points: np.ndarray, reg: float) -> np.ndarray:
    """The ``(K + 3, K)`` matrix ``L⁻¹[:, :K]`` taking the source positions of the K control points to the spline's
    coefficients: the kernel weights ``w_1 .. w_K``, then ``a0, a1, a2``. float64."""
    c = control_points
    n = c.shape[0]
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = tps_kernel(c, c) + reg * np.eye(n)
    system[:n, n:] = _affine_part(c)
    system[n:, :n] = _affine_part(c).T
    return np.linalg.inv(system)[:, :n]


@lru_cache(maxsize=16)
def _regular_coefficients(k: int, reg: float) -> np.ndarray:
    return solve_coefficients(regular_control_points(k), reg)


def solve_basis(control_points: np.ndarray, reg: float, out_size: Sequence[int]) -> np.ndarray:
    """The ``(H*W, K)`` matrix M mapping source positions of the control points to the grid, in float64.

    NumPy, not torch: the solve is a constant of the grid generator, so it must not appear in traced graphs.
    """
    ys, xs = (pixel_to_normalized(np.arange(n, dtype=np.float64), n) for n in out_size)
    g = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # the pixel-centre grid G, row-major
    rows = np.concatenate([tps_kernel(g, control_points), _affine_part(g)], axis=1)
    return rows @ solve_coefficients(control_points, reg)


def _cached_basis(
    k: int, reg: float, out_size: tuple[int, ...], device: torch.device | None, dtype: torch.dtype
) -> Tensor:
    key = (k, reg, out_size, str(device), dtype)
    m = _BASIS_CACHE.get(key)
    if m is None:
        with _untraced():
            solved = solve_basis(regular_control_points(k), reg, out_size)
            m = torch.tensor(solved, dtype=dtype, device=device)
        if len(_BASIS_CACHE) >= _BASIS_CACHE_SIZE:
            _BASIS_CACHE.pop(next(iter(_BASIS_CACHE)))
        _BASIS_CACHE[key] = m
    return m


def _basis_outside_graphs() -> Callable[..., Tensor]:
    """:func:`_cached_basis` under ``torch.compiler.disable``: M is a cached constant, so the dict look-ups and
    the solve stay out of compiled graphs. Wrapped at the first TPS built rather than at import, because
    ``torch.compiler.disable`` imports ``torch._dynamo``, which takes about as long as importing torch."""
    global _BASIS_OUTSIDE_GRAPHS
    if _BASIS_OUTSIDE_GRAPHS is None:
        _BASIS_OUTSIDE_GRAPHS = torch.compiler.disable(_cached_basis)
    return _BASIS_OUTSIDE_GRAPHS


class ThinPlateSpline(Transform):
    """TPS with ``k x k`` control points (default 4 x 4 = 16, θ width 32) and regularisation ``reg`` (λ).

    ``reg`` adds ``λ I`` to the kernel matrix: 0 interpolates the control points exactly, larger values trade
    fidelity for smoothness (scipy's ``RBFInterpolator(kernel="thin_plate_spline", smoothing=λ / 2)``, whose
    kernel is ``r² log r``, half of ours).

    Example:
        >>> from stn.transforms import ThinPlateSpline
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
        _basis_outside_graphs()  # before any torch.compile traces basis(), which must see the wrapper

    @property
    def control_points(self) -> Tensor:
        """The K control points in target space, ``(K, 2)`` float64, (x, y), row-major from the top-left."""
        return torch.from_numpy(regular_control_points(self.k))

    def identity_params(self) -> Tensor:
        return self.control_points.reshape(-1)

    def basis(self, out_size: Sequence[int], device: torch.device | None, dtype: torch.dtype) -> Tensor:
        """The cached ``(H*W, K)`` matrix M with ``grid = M @ θ.view(B, K, 2)``."""
        return _basis_outside_graphs()(self.k, self.reg, tuple(out_size), device, dtype)

    def grid(self, theta: Tensor, out_size: Sequence[int]) -> Tensor:
        height, width = out_size
        m = self.basis((height, width), theta.device, theta.dtype)
        return (m @ theta.view(theta.shape[0], m.shape[1], 2)).view(-1, height, width, 2)

    def coefficients(self, theta: Tensor) -> Tensor:
        """The spline of each θ ``(B, P)``: ``(B, K + 3, 2)``, the kernel weights ``w_1 .. w_K``, then ``a0, a1, a2``
        (columns: x_s, y_s), so that ``T_θ(p) = Σ_i w_i U(|p - c_i|) + a0 + a1 x + a2 y``. Linear in θ."""
        c = torch.as_tensor(_regular_coefficients(self.k, self.reg), dtype=theta.dtype, device=theta.device)
        return c @ theta.view(theta.shape[0], -1, 2)

    def _offsets(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``p - c_i`` ``(B, N, K, 2)``, ``r²`` and ``log r²`` (0 where r = 0) ``(B, N, K)``."""
        centres = self.control_points.to(dtype=points.dtype, device=points.device)
        diff = points.unsqueeze(2) - centres
        r2 = diff.square().sum(-1)
        return diff, r2, torch.log(torch.where(r2 > 0, r2, 1.0))

    def map_points(self, theta: Tensor, points: Tensor) -> Tensor:
        """T_θ at any target points, not only a grid's: ``points`` ``(B, N, 2)`` normalised ``(x_t, y_t)`` -> their
        source points ``(B, N, 2)``. Differentiable in θ and in the points.

        Example:
            >>> import torch
            >>> from stn.transforms import ThinPlateSpline
            >>> tps = ThinPlateSpline(k=3)
            >>> theta = tps.identity(1, dtype=torch.float64) * 0.5  # every control point halfway to the centre
            >>> tps.map_points(theta, torch.tensor([[[0.4, -1.0]]], dtype=torch.float64))
            tensor([[[ 0.2000, -0.5000]]], dtype=torch.float64)
        """
        _, r2, log_r2 = self._offsets(points)
        rows = torch.cat([r2 * log_r2, torch.ones_like(points[..., :1]), points], dim=-1)
        return rows @ self.coefficients(theta)

    def jacobian(self, theta: Tensor, points: Tensor) -> Tensor:
        """The derivative of T_θ at ``points`` ``(B, N, 2)`` (normalised): ``(B, N, 2, 2)`` with ``[..., i, j]`` =
        ∂(source coordinate i) / ∂(target coordinate j). ``∇U(p - c) = 2 (p - c)(log r² + 1)``, 0 at ``c``."""
        diff, _, log_r2 = self._offsets(points)
        coefficients = self.coefficients(theta)
        k = diff.shape[2]
        kernel = torch.einsum("bnkj,bki->bnij", 2 * diff * (log_r2 + 1).unsqueeze(-1), coefficients[:, :k])
        return kernel + coefficients[:, k + 1 :].transpose(1, 2).unsqueeze(1)

    def __repr__(self) -> str:
        return f"ThinPlateSpline(k={self.k}, reg={self.reg})"
