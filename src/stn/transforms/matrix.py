"""Matrix-group families: translation, attention, similarity, affine, projective and affine3d.

Each family embeds θ in a homogeneous matrix (3x3; 4x4 for affine3d) acting on target coordinates
``(x_t, y_t, 1)``; ``compose`` and ``inverse`` are matrix products and inverses mapped back to θ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stn.coords import base_grid
from stn.transforms.base import Transform

__all__ = ["Affine", "Affine3d", "Attention", "MatrixTransform", "Projective", "Similarity", "Translation"]


def homogeneous_grid(out_size: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """The target grid G as homogeneous columns: ``(3, H*W)`` rows ``(x, y, 1)`` (3-D ``(4, D*H*W)``)."""
    g = base_grid(out_size, device, dtype).view(-1, len(out_size))
    return torch.cat([g, torch.ones_like(g[:, :1])], dim=1).T


class MatrixTransform(Transform):
    """A family whose members are homogeneous matrices. Subclasses define :meth:`matrix` and :meth:`from_matrix`.

    Grids are the same as ``F.affine_grid(..., align_corners=False)`` produces for the affine members.

    Example:
        >>> import torch
        >>> from stn import transforms
        >>> attention = transforms.get("attention")
        >>> zoom = torch.tensor([[0.5, 0.25, 0.0]])  # a window of half the width, right of the centre
        >>> attention.matrix(zoom)
        tensor([[[0.5000, 0.0000, 0.2500],
                 [0.0000, 0.5000, 0.0000],
                 [0.0000, 0.0000, 1.0000]]])
        >>> attention.inverse(zoom)
        tensor([[ 2.0000, -0.5000,  0.0000]])
        >>> attention.compose(zoom, attention.inverse(zoom))  # the identity
        tensor([[1., 0., 0.]])
    """

    def matrix(self, theta: Tensor) -> Tensor:
        """Homogeneous matrix of θ: ``(B, 3, 3)`` (affine3d ``(B, 4, 4)``)."""
        top = self.affine(theta)
        bottom = torch.zeros(top.shape[0], 1, self.ndim + 1, dtype=top.dtype, device=top.device)
        bottom[:, 0, -1] = 1
        return torch.cat([top, bottom], dim=1)

    def affine(self, theta: Tensor) -> Tensor:
        """The top ``ndim`` rows of :meth:`matrix`: ``(B, 2, 3)`` (affine3d ``(B, 3, 4)``)."""
        raise NotImplementedError

    def from_matrix(self, m: Tensor) -> Tensor:
        """θ of a homogeneous matrix of this family, ``(B, P)``. Entries outside the family are ignored."""
        raise NotImplementedError

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """θ of ``T_a ∘ T_b`` (apply ``b`` first, then ``a``): ``matrix(a) @ matrix(b)``."""
        return self.from_matrix(self.matrix(a) @ self.matrix(b))

    def inverse(self, theta: Tensor) -> Tensor:
        """θ of ``T_θ⁻¹``."""
        return self.from_matrix(torch.linalg.inv(self.matrix(theta)))

    def identity_params(self) -> Tensor:
        return self.from_matrix(torch.eye(self.ndim + 1, dtype=torch.float64).unsqueeze(0))[0]

    def grid(self, theta: Tensor, out_size: Sequence[int]) -> Tensor:
        # One (B, ndim, ndim+1) @ (ndim+1, N) product; several times faster than F.affine_grid on CPU.
        points = self.affine(theta) @ homogeneous_grid(out_size, theta.device, theta.dtype)
        return points.view(theta.shape[0], self.ndim, *out_size).movedim(1, -1)


class Translation(MatrixTransform):
    """``(tx, ty)``: ``x_s = x_t + tx``, ``y_s = y_t + ty``."""

    name = "translation"
    num_params = 2
    translation_index = (0, 1)

    def affine(self, theta: Tensor) -> Tensor:
        eye = torch.eye(2, dtype=theta.dtype, device=theta.device).expand(theta.shape[0], 2, 2)
        return torch.cat([eye, theta.unsqueeze(-1)], dim=2)

    def from_matrix(self, m: Tensor) -> Tensor:
        return m[:, :2, 2].clone()


class Attention(MatrixTransform):
    """The paper's attention / crop transform ``(s, tx, ty)``: ``x_s = s*x_t + tx``, ``y_s = s*y_t + ty``.

    ``s < 1`` zooms in: the output shows a window of half-width ``s`` centred at ``(tx, ty)``.
    """

    name = "attention"
    num_params = 3
    translation_index = (1, 2)
    has_scale = True

    def affine(self, theta: Tensor) -> Tensor:
        s, tx, ty = theta.unbind(1)
        zero = torch.zeros_like(s)
        return torch.stack([s, zero, tx, zero, s, ty], dim=1).view(-1, 2, 3)

    def from_matrix(self, m: Tensor) -> Tensor:
        return torch.stack([m[:, 0, 0], m[:, 0, 2], m[:, 1, 2]], dim=1)

    def clamp_scale(self, theta: Tensor, low: float, high: float) -> Tensor:
        return torch.cat([theta[:, :1].clamp(low, high), theta[:, 1:]], dim=1)


class Similarity(MatrixTransform):
    """Rotation, isotropic scale and translation, ``(a, b, tx, ty)`` with matrix ``[[a, -b, tx], [b, a, ty]]``.

    ``a = s cos φ`` and ``b = s sin φ``: θ enters the grid linearly, so the parameterisation is smooth everywhere
    (no angle wrap-around, no singularity at ``s = 0`` in the gradients), unlike ``(s, φ, tx, ty)``.

    Example:
        >>> import torch
        >>> from stn import transforms
        >>> transforms.get("similarity").affine(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))  # s = 1, φ = 90°
        tensor([[[ 0., -1.,  0.],
                 [ 1.,  0.,  0.]]])
    """

    name = "similarity"
    num_params = 4
    translation_index = (2, 3)
    has_scale = True

    def affine(self, theta: Tensor) -> Tensor:
        a, b, tx, ty = theta.unbind(1)
        return torch.stack([a, -b, tx, b, a, ty], dim=1).view(-1, 2, 3)

    def from_matrix(self, m: Tensor) -> Tensor:
        return torch.stack([m[:, 0, 0], m[:, 1, 0], m[:, 0, 2], m[:, 1, 2]], dim=1)

    def clamp_scale(self, theta: Tensor, low: float, high: float) -> Tensor:
        ab = theta[:, :2]
        scale = ab.norm(dim=1, keepdim=True)
        ab = ab * (scale.clamp(low, high) / scale.clamp_min(torch.finfo(theta.dtype).tiny))
        return torch.cat([ab, theta[:, 2:]], dim=1)


class Affine(MatrixTransform):
    """A row-major 2x3 matrix ``A``: ``(x_s, y_s) = A (x_t, y_t, 1)``."""

    name = "affine"
    num_params = 6
    translation_index = (2, 5)

    def affine(self, theta: Tensor) -> Tensor:
        return theta.view(-1, 2, 3)

    def from_matrix(self, m: Tensor) -> Tensor:
        return m[:, :2, :].reshape(-1, 6).clone()


class Affine3d(MatrixTransform):
    """A row-major 3x4 matrix for volumes ``(B, C, D, H, W)``: ``(x_s, y_s, z_s) = A (x_t, y_t, z_t, 1)``."""

    name = "affine3d"
    num_params = 12
    ndim = 3
    translation_index = (3, 7, 11)

    def affine(self, theta: Tensor) -> Tensor:
        return theta.view(-1, 3, 4)

    def from_matrix(self, m: Tensor) -> Tensor:
        return m[:, :3, :].reshape(-1, 12).clone()


class Projective(MatrixTransform):
    """A homography: θ is the first 8 entries, row-major, of ``H`` with ``H[2, 2] = 1``.

    The source point is the dehomogenised ``H (x_t, y_t, 1)``, i.e. ``(u / w, v / w)``. Target points with
    ``w <= eps`` lie on or beyond the horizon line of the homography: they have no source point (none at all, or
    one behind the viewer). Their grid entry is ``(2, 2)``, outside the input, with **zero gradient**, so the grid,
    the output and all gradients stay finite; :meth:`valid_mask` marks them, and :func:`stn.warp` and the
    spatial transformer modules give them **0** (or ``fill``) in every padding mode. (Border or reflection
    padding would otherwise read an image pixel there: reflection maps ``(2, 2)`` to the image centre.) Points
    with a small positive ``w`` do have a source point, far outside the input, and read the padding as usual.

    Example:
        >>> import torch
        >>> from stn import transforms
        >>> projective = transforms.get("projective")
        >>> projective.identity(1)
        tensor([[1., 0., 0., 0., 1., 0., 0., 0.]])
        >>> tilt = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0]])  # w = 2x + 1: the horizon at x = -0.5
        >>> projective.grid(tilt, (1, 4))[0, 0]  # the first pixel centre, x = -0.75, is sent outside the input
        tensor([[ 2.0000,  2.0000],
                [-0.5000,  0.0000],
                [ 0.1667,  0.0000],
                [ 0.3000,  0.0000]])
    """

    name = "projective"
    num_params = 8
    translation_index = (2, 5)
    eps = 1e-6
    outside = 2.0

    def matrix(self, theta: Tensor) -> Tensor:
        one = torch.ones(theta.shape[0], 1, dtype=theta.dtype, device=theta.device)
        return torch.cat([theta, one], dim=1).view(-1, 3, 3)

    def affine(self, theta: Tensor) -> Tensor:
        raise ValueError("a projective transform has no 2x3 affine form; use matrix()")

    def from_matrix(self, m: Tensor) -> Tensor:
        m = m / m[:, 2:, 2:]
        return m.reshape(-1, 9)[:, :8].clone()

    def valid_mask(self, theta: Tensor, out_size: Sequence[int]) -> Tensor:
        """``(B, *out_size)`` bool: False on and behind the horizon (``w <= eps``), where there is no source point."""
        w = theta[:, 6:8] @ homogeneous_grid(out_size, theta.device, theta.dtype)[:2] + 1  # H[2] = (h6, h7, 1)
        return (w > self.eps).view(theta.shape[0], *out_size)

    def grid(self, theta: Tensor, out_size: Sequence[int]) -> Tensor:
        h, g = self.matrix(theta), homogeneous_grid(out_size, theta.device, theta.dtype)
        if theta.requires_grad and torch.is_grad_enabled() and not _exporting():
            xy = _ProjectiveGrid.apply(h, g, self.eps, self.outside)
        else:  # the same maths in plain ops, which tracers and exporters can record
            xy = _dehomogenise(h @ g, self.eps, self.outside)
        return xy.view(theta.shape[0], 2, *out_size).movedim(1, -1)


def _dehomogenise(uvw: Tensor, eps: float, outside: float) -> Tensor:
    """``(B, 2, N)`` source points of ``(B, 3, N)`` homogeneous ones; ``w <= eps`` goes to ``outside``."""
    w = uvw[:, 2:]
    return (uvw[:, :2] / w.clamp_min(eps)).masked_fill(w <= eps, outside)


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


class _ProjectiveGrid(torch.autograd.Function):
    """``(B, 2, N)`` dehomogenised ``H @ G`` with a hand-written gradient to ``H``.

    Autograd through the plain ops keeps ``H @ G`` and the mask alive and runs one kernel per op; the gradient in
    closed form needs only the output and ``1/w``: with ``a = (∂L/∂x_s, ∂L/∂y_s) / w``, ``∂L/∂H`` has rows
    ``a @ Gᵀ`` and ``-(a · (x_s, y_s)) @ Gᵀ``. Behind-horizon points have ``1/w`` set to 0, hence zero gradient.
    That makes projective warps cheaper than kornia's ``warp_perspective`` (benchmarks/bench_warp.py).
    When a graph of the backward is built (double backward), the same formula runs on ``x_s, y_s, 1/w`` recomputed
    from ``H`` with plain ops, so that it differentiates again.
    """

    @staticmethod
    def forward(ctx, h: Tensor, g: Tensor, eps: float, outside: float) -> Tensor:  # type: ignore[override]
        uvw = h @ g
        w = uvw[:, 2:]
        ahead = w > eps
        inverse_w = torch.where(ahead, w, 1.0).reciprocal_().mul_(ahead)
        xy = uvw[:, :2].mul_(inverse_w).masked_fill_(~ahead, outside)
        ctx.save_for_backward(h, xy, inverse_w, g)
        ctx.eps, ctx.outside = eps, outside
        return xy

    @staticmethod
    def backward(ctx, grad_xy: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        h, xy, inverse_w, g = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the saved values carry no graph back to H
            uvw = h @ g
            w = uvw[:, 2:]
            ahead = w > ctx.eps
            inverse_w = torch.where(ahead, w, 1.0).reciprocal() * ahead
            xy = (uvw[:, :2] * inverse_w).masked_fill(~ahead, ctx.outside)
        a = grad_xy * inverse_w
        gt = g.T
        return torch.cat([a @ gt, -((a * xy).sum(1, keepdim=True) @ gt)], dim=1), None, None, None
