"""Anti-aliased warping: supersample where T_θ shrinks the input (``stn.warp(..., antialias=True)``).

A bilinear sampler reads each output pixel from the 2x2 input pixels around one source point. Where T_θ shrinks
the input (neighbouring output pixels read input points more than one pixel apart), the input pixels between those
points are never read and fine detail folds into false low frequencies: aliasing (the paper, section 3.4).

**Method: supersampling with a tent filter.** For each sample of the batch, :func:`shrink_factors` gives the
largest shrink ``f`` along each output axis: the distance, in input pixels, between the source points of two
neighbouring output pixels (the column norms of T_θ's Jacobian in pixel units; constant for the affine families,
the maximum over up to 17 x 17 output points for ``projective`` and ``tps``). Along an axis with ``f > 1`` the
output is rendered ``k = ceil(f)`` times finer (plain sampling on the finer grid ``T_θ(G_fine)``, whose points are
at most one input pixel apart, so nothing between them is skipped), then reduced by ``k`` with a tent filter one
output pixel in radius, renormalised where it reaches past the output's edge: the filter of
``F.interpolate(mode="bilinear", antialias=True)`` and PIL's bilinear resize, here mapped through T_θ. Axes are
handled separately (``k_x``, ``k_y``), so an anisotropic shrink filters only where needed; ``k`` is capped at
:data:`MAX_FACTOR`.

Why supersampling rather than blurring the input first: the sub-samples lie on T_θ's own finer grid, so the filter
follows rotations, shear, a homography's perspective and a spline's local scale exactly where each output pixel
reads; the sampler's padding, ``fill`` and a homography's horizon mask apply to every sub-sample as they do
without anti-aliasing; only the window that is read is filtered; and for a pure downscaling by an integer factor
the result is that of ``F.interpolate(..., antialias=True)``, edges included.

**Cost.** A sample shrunk by ``(f_y, f_x)`` reads ``k_y * k_x`` sub-samples per output pixel (about as many as the
input pixels its window covers), then one depthwise convolution with a ``2k_y x 2k_x`` kernel at stride ``k``;
memory grows by ``k_y * k_x`` during the call, and the time by somewhat more (forward + backward, k = 2: about 4-7x
the plain warp, benchmarks/bench_warp.py). A sample that does not shrink (``f <= 1 + 1e-4`` on every axis) is
sampled exactly as without anti-aliasing, bit for bit. Choosing ``k`` reads θ on the host (one device
synchronisation per call), so a traced or exported graph cannot do it (a ``ValueError``); under ``torch.compile``
the graph breaks there.

**Limits.** At non-integer factors the sub-samples fall between input pixels, whose bilinear reconstruction widens
the filter beyond ``F.interpolate``'s (its standard deviation 1.34x at a 1.2x shrink, 1.23x at 1.5x, 1.015x at
2.5x; tests/test_antialias.py), and the filter steps where ``k`` changes, most at ``f = 1`` (from none to a tent). For
``projective`` and ``tps`` one ``k`` serves the whole output of a sample (its largest local shrink): where such a
warp magnifies instead, the tent adds a blur of up to one output pixel. Near a homography's horizon the shrink is
unbounded and ``k`` is :data:`MAX_FACTOR`.

Example:
    >>> import torch
    >>> from stn.antialias import shrink_factors
    >>> theta = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]])  # attention: the whole image; its central half
    >>> shrink_factors(theta, "attention", (64, 64), (16, 16))  # (B, 2) as (rows, columns): 4x and 2x smaller
    tensor([[4., 4.],
            [2., 2.]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from stn.coords import check_size, pixel_to_normalized
from stn.transforms import MatrixTransform, Projective, ThinPlateSpline, Transform, resolve

__all__ = ["MAX_FACTOR", "shrink_factors", "supersample", "supersampling_factors"]

MAX_FACTOR = 8
"""The most sub-samples per output pixel along one axis: shrinks beyond 8x are filtered as 8x (and alias a little)."""
_NO_SHRINK = 1e-4  # a shrink within float rounding of 1 (e.g. a 448 -> 224 crop at s = 0.5) is no shrink
_LATTICE = 17  # projective and tps: the local shrink is measured at up to 17 x 17 output points

Read = Callable[[Tensor, Tensor, tuple[int, ...]], Tensor]
"""``read(x, theta, size)``: the plain warp of ``x`` ``(B, C, ...)`` by θ ``(B, P)`` onto an output of ``size``."""


def _lattice(out_size: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Up to 17 output pixel centres per axis, the first and last included: ``(M, ndim)`` normalised ``(x, y)``."""
    steps = [torch.linspace(0, n - 1, min(n, _LATTICE), device=device, dtype=dtype) for n in out_size]
    axes = [pixel_to_normalized(step, n) for step, n in zip(steps, out_size)]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh[::-1], dim=-1).reshape(-1, len(out_size))


def _jacobian(t: Transform, theta: Tensor, out_size: Sequence[int]) -> Tensor:
    """∂(source) / ∂(target) in normalised units: ``(B, M, ndim, ndim)`` at M output points (M = 1 when constant);
    zero at a homography's points on or behind its horizon, which read nothing."""
    if isinstance(t, Projective):
        h = t.matrix(theta)
        points = _lattice(out_size, theta.device, theta.dtype)
        uvw = torch.cat([points, torch.ones_like(points[:, :1])], dim=1) @ h.transpose(1, 2)  # (B, M, 3)
        w = uvw[..., 2:]
        ahead = w > t.eps
        inverse_w = torch.where(ahead, w, 1.0).reciprocal() * ahead
        source = uvw[..., :2] * inverse_w
        # d(u/w) = (A - source ⊗ h₂) / w with A = H[:2, :2] and h₂ = H[2, :2]
        outer = source.unsqueeze(-1) * h[:, None, 2:, :2]
        return (h[:, None, :2, :2] - outer) * inverse_w.unsqueeze(-1)
    if isinstance(t, ThinPlateSpline):  # linear in θ: one product with a cached basis
        basis = _tps_jacobian_basis(t, tuple(out_size), theta.device, theta.dtype)
        return (basis @ theta.view(theta.shape[0], -1, 2)).view(theta.shape[0], -1, 2, 2).transpose(-1, -2)
    if isinstance(t, MatrixTransform):
        return t.affine(theta)[:, None, :, : t.ndim]
    raise ValueError(f"antialias needs the Jacobian of T_θ, which stn does not know for {t.name!r}")


@lru_cache(maxsize=16)
def _tps_jacobian_basis(
    t: ThinPlateSpline, out_size: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``G`` ``(M * 2, K)`` with ``∂T_θ(p_m)_i / ∂p_j = Σ_k G[2m + j, k] θ[k, i]`` at the lattice points ``p_m``:
    row ``k`` of θ's ``(K, 2)`` view moved alone (its x entry 1, every other entry 0) has Jacobian ``G[:, k]``."""
    k = t.num_params // 2
    unit = torch.zeros(k, k, 2, dtype=torch.float64)
    unit[range(k), range(k), 0] = 1.0
    points = _lattice(out_size, None, torch.float64).expand(k, -1, -1)
    jacobian = t.jacobian(unit.view(k, -1), points)  # (K, M, 2, 2): [k, m, 0, j] = G[2m + j, k]
    return jacobian[:, :, 0].permute(1, 2, 0).reshape(-1, k).to(device=device, dtype=dtype)


def shrink_factors(
    theta: Tensor, transform: str | Transform, in_size: int | Sequence[int], out_size: int | Sequence[int]
) -> Tensor:
    """How much T_θ shrinks the input, per sample and output axis: input pixels per output pixel, at most.

    The column norms of T_θ's Jacobian in pixel units, i.e. the distance in input pixels between the source points
    of two neighbouring output pixels: exact for the affine families (constant), the maximum over up to 17 x 17
    output points for ``projective`` (excluding points behind its horizon) and ``tps``. Above 1 the warp shrinks
    (and plain bilinear sampling aliases); 1 copies at the input's resolution; below 1 it magnifies.

    Args:
        theta: ``(B, P)`` θ of ``transform``.
        transform: a family name or a :class:`~stn.transforms.Transform`.
        in_size: ``(H_in, W_in)`` (3-D ``(D_in, H_in, W_in)``) of the warped input.
        out_size: ``(H, W)`` (3-D ``(D, H, W)``) of the output.

    Returns:
        ``(B, ndim)`` in out_size's order (rows, then columns; 3-D: depth, rows, columns), θ's dtype. NaN for a
        NaN θ.

    Example:
        >>> import torch
        >>> from stn.antialias import shrink_factors
        >>> squash = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.5, 0.0]])  # affine: all columns, the central half of rows
        >>> shrink_factors(squash, "affine", (100, 100), (25, 50))
        tensor([[2., 2.]])
    """
    t = resolve(transform)
    theta = t.check_theta(theta)
    in_dims, out_dims = check_size(in_size, t.ndim, "in_size"), check_size(out_size, t.ndim, "out_size")
    jacobian = _jacobian(t, theta, out_dims)
    # pixel units: source axis i (x, y, z) spans in_dims[::-1][i] pixels, target axis j out_dims[::-1][j]
    pixels_in = torch.tensor(in_dims[::-1], dtype=theta.dtype, device=theta.device)
    pixels_out = torch.tensor(out_dims[::-1], dtype=theta.dtype, device=theta.device)
    columns = (jacobian * pixels_in[:, None] / pixels_out).square().sum(dim=-2)  # (B, M, ndim) in (x, y, z) order
    return columns.amax(dim=1).sqrt().flip(-1)


def supersampling_factors(
    theta: Tensor, transform: str | Transform, in_size: int | Sequence[int], out_size: int | Sequence[int]
) -> Tensor:
    """How many times finer ``antialias=True`` reads each sample along each output axis: ``ceil`` of
    :func:`shrink_factors`, 1 where the warp does not shrink (or θ is NaN), at most :data:`MAX_FACTOR`.

    Args:
        theta, transform, in_size, out_size: as in :func:`shrink_factors`.

    Returns:
        ``(B, ndim)`` int64 in out_size's order. Not differentiable (θ is read without its graph).

    Example:
        >>> import torch
        >>> from stn.antialias import supersampling_factors
        >>> theta = torch.tensor([[1.0, 0.0, 0.0], [0.75, 0.0, 0.0], [0.5, 0.0, 0.0]])  # attention windows
        >>> supersampling_factors(theta, "attention", (448, 448), (224, 224))  # shrunk 2x, 1.5x, not at all
        tensor([[2, 2],
                [2, 2],
                [1, 1]])
    """
    with torch.no_grad():
        shrink = torch.nan_to_num(shrink_factors(theta.detach(), transform, in_size, out_size), nan=1.0)
        return (shrink - _NO_SHRINK).ceil().clamp(1, MAX_FACTOR).long()


def _tent(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The tent of radius ``k`` (one output pixel) over the ``2k`` (odd k: ``2k - 1``) fine pixels that an output
    pixel's centre reaches, summing to 1: ``F.interpolate(..., antialias=True)``'s filter for a factor ``k``."""
    offsets = torch.arange(2 * k - k % 2, dtype=dtype, device=device) - k // 2 - (k - 1) / 2
    weights = 1 - offsets.abs() / k
    return weights / weights.sum()


def _tent_reduce(fine: Tensor, factors: tuple[int, ...]) -> Tensor:
    """``(B, C, *(k_d n_d))`` -> ``(B, C, *n_d)``: one strided convolution with the product of the axes' tents,
    renormalised where it reaches past the edges (as ``F.interpolate`` does). Twice differentiable."""
    tents = [_tent(k, fine.dtype, fine.device) for k in factors]
    kernel, reach = tents[0], None
    for tent in tents[1:]:
        kernel = kernel.unsqueeze(-1) * tent
    for tent, k, n in zip(tents, factors, fine.shape[2:]):  # the weight of each output that lies inside
        inside = F.conv1d(fine.new_ones(1, 1, n), tent.view(1, 1, -1), stride=k, padding=k // 2).flatten()
        reach = inside if reach is None else reach.unsqueeze(-1) * inside
    convolve = (F.conv1d, F.conv2d, F.conv3d)[len(factors) - 1]
    channels = fine.shape[0] * fine.shape[1]  # one depthwise convolution: 5x faster on CPU than a 1-channel one
    weight = kernel.expand(channels, 1, *kernel.shape)
    flat = fine.reshape(1, channels, *fine.shape[2:])
    out = convolve(flat, weight, stride=factors, padding=[k // 2 for k in factors], groups=channels)
    return (out / reach).view(*fine.shape[:2], *out.shape[2:])


def _read_at(x: Tensor, theta: Tensor, out_size: tuple[int, ...], factors: tuple[int, ...], read: Read) -> Tensor:
    """``read`` at ``factors`` (out_size's order) times the resolution, then reduced back to ``out_size``."""
    if all(k == 1 for k in factors):
        return read(x, theta, out_size)
    fine = read(x, theta, tuple(n * k for n, k in zip(out_size, factors)))
    work = fine if fine.dtype in (torch.float32, torch.float64) else fine.float()
    return _tent_reduce(work, factors).to(fine.dtype)


def supersample(x: Tensor, theta: Tensor, transform: str | Transform, out_size: Sequence[int], read: Read) -> Tensor:
    """The anti-aliased warp: ``read`` each sample ``k_y x k_x`` times finer where it shrinks, then tent-reduce.

    :func:`stn.warp` and the spatial transformer modules call this with ``antialias=True``; ``read`` is their plain
    warp (grid generator + sampler with their mode, padding and fill), so that a sample which does not shrink is
    read exactly as without anti-aliasing. Samples are grouped by their factors ``k`` (see the module docstring).

    Args:
        x: ``(B, C, *in_size)``.
        theta: ``(B, P)`` θ of ``transform``, validated, in the dtype the grid is computed in.
        transform: a family name or a :class:`~stn.transforms.Transform`.
        out_size: ``(H, W)`` (3-D ``(D, H, W)``).
        read: ``read(x, theta, size) -> (B, C, *size)``, the plain warp.

    Returns:
        ``(B, C, *out_size)``, ``read``'s dtype. Differentiable in ``x`` and θ (twice, where ``read`` is).

    Raises:
        ValueError: under ``torch.jit.trace`` or ONNX export, which cannot choose ``k`` from θ's values.

    Example:
        >>> import torch
        >>> from stn import sample, transforms
        >>> from stn.antialias import supersample
        >>> attention = transforms.get("attention")
        >>> def read(x, theta, size):  # the plain warp: grid generator + bilinear sampler
        ...     return sample(x, attention.grid(theta, size))
        >>> x = torch.tensor([[[[0.0, 1.0] * 4]]])  # (1, 1, 1, 8): stripes one pixel wide
        >>> whole = attention.identity(1)
        >>> read(x, whole, (1, 3))  # shrunk 8/3 times: a false gradient
        tensor([[[[0.8333, 0.5000, 0.1667]]]])
        >>> supersample(x, whole, attention, (1, 3), read)  # close to the stripes' mean, 0.5
        tensor([[[[0.4583, 0.5000, 0.5278]]]])
    """
    t = resolve(transform)
    size = tuple(out_size)
    if x.shape[0] == 0:
        return read(x, theta, size)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        raise ValueError(
            "antialias=True chooses its supersampling from θ's values at run time, which a traced or exported graph "
            "cannot record: trace or export with antialias=False"
        )
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(supersampling_factors(theta, t, x.shape[2:], size).tolist()):
        groups.setdefault(tuple(row), []).append(i)
    if len(groups) == 1:  # the whole batch at one factor: no indexing
        return _read_at(x, theta, size, next(iter(groups)), read)
    pieces, order = [], []
    for group, members in groups.items():
        index = torch.tensor(members, device=x.device)
        pieces.append(_read_at(x.index_select(0, index), theta.index_select(0, index), size, group, read))
        order.extend(members)
    restore = torch.tensor(order, device=x.device).argsort()
    return torch.cat(pieces).index_select(0, restore)
