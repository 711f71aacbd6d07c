"""The warp algebra: compose and invert θ, and carry points and boxes through a warp.

Conventions (:mod:`stn.coords`): θ maps **output (target) to input (source)** normalised coordinates, so the output
pixel ``q`` reads the input at ``T_θ(q)``. Warping by ``first`` and then warping that output by ``second`` reads
the input at ``T_first(T_second(q))``: :func:`compose` is ``T_first ∘ T_second`` on coordinates, the matrix product
``matrix(first) @ matrix(second)``. Normalised coordinates do not depend on the image size, so neither do
:func:`compose` and :func:`invert`: the intermediate image may have any size.

Points and boxes are in **pixel** coordinates (x right, y down, z deeper; pixel centres at integers, so an image of
width W spans ``[-0.5, W - 0.5]``): the convention of OpenCV and of :func:`stn.theta_from_pixel_matrix`. Add 0.5 to
get coordinates of pixel edges (``[0, W]``, as COCO-style boxes).

Where each family stands:

* translation, attention, similarity, affine, affine3d and projective are groups: :func:`compose` and :func:`invert`
  return θ of the same family. A singular θ (condition number of its homogeneous matrix above ``1e12``) has no
  inverse: a ``ValueError`` naming the samples. A projective result whose ``H[2, 2]`` is 0 (the output's centre
  sent to infinity) cannot be written with ``H[2, 2] = 1``: a ``ValueError`` too.
* tps: the composition or the inverse of a thin-plate spline is not a thin-plate spline, so :func:`compose` and
  :func:`invert` raise a ``ValueError``. :func:`transform_points` works both ways: ``inverse=True`` evaluates the
  spline, the forward direction solves ``T_θ(q) = p`` by Newton's method to :data:`TPS_TOLERANCE` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stn.coords import base_grid, check_size
from stn.functional import _in_graph, flatten_theta
from stn.transforms import MatrixTransform, Projective, ThinPlateSpline, Transform, resolve

__all__ = ["TPS_TOLERANCE", "compose", "invert", "transform_boxes", "transform_points"]

# Beyond this condition number a float64 inverse has lost most of its digits: the matrix counts as singular.
_MAX_CONDITION = 1e12
TPS_TOLERANCE = 1e-4
"""How close, in pixels of the input, the TPS preimages of :func:`transform_points` come to the given points."""
_TPS_MAX_STEPS = 50
_TPS_LATTICE = 41  # Newton's starting points: the nearest of a 41 x 41 lattice
_TPS_STARTS = 4
_TPS_EDGE_SAMPLES = 33  # points per box edge through a TPS, whose image of a straight edge is a curve


def _group(transform: str | Transform, what: str) -> MatrixTransform:
    t = resolve(transform)
    if not isinstance(t, MatrixTransform):
        raise ValueError(
            f"stn.{what} is not defined for {t.name!r}: the {what}d map of a thin-plate spline is no thin-plate "
            "spline; stn.transform_points carries points through a TPS both ways"
        )
    return t


def _checked_inverse(m: Tensor, what: str) -> Tensor:
    """Inverse of the ``(B, n, n)`` float64 matrices ``m``; singular members are a ``ValueError`` naming them
    as ``what[i]`` (not checked in compiled, traced or exported graphs)."""
    if not _in_graph():
        cond = torch.linalg.cond(m.detach())
        bad = (~torch.isfinite(cond) | (cond > _MAX_CONDITION)).nonzero().flatten().tolist()
        if bad:
            shown = ", ".join(f"{what}[{i}]" for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
            verb, pronoun = ("is", "it has") if len(bad) == 1 else ("are", "they have")
            raise ValueError(
                f"{shown} {verb} singular (condition number {float(cond[bad[0]]):.3g}, above {_MAX_CONDITION:.0e}), "
                f"{pronoun} no inverse warp"
            )
    return torch.linalg.inv(m)


def _from_matrix(t: MatrixTransform, m: Tensor, what: str) -> Tensor:
    if isinstance(t, Projective) and not _in_graph():
        bad = (m[:, 2, 2].abs() <= 1e-12 * m[:, 2].abs().amax(dim=1)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"{what}: H[2, 2] is 0 for sample(s) {bad[:10]} (the output's centre is sent to infinity), which "
                "a projective θ with H[2, 2] = 1 cannot express"
            )
    return t.from_matrix(m)


def _result_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for other in tensors[1:]:
        dtype = torch.promote_types(dtype, other.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


def compose(first: Tensor, second: Tensor, transform: str | Transform) -> Tensor:
    """θ of warping by ``first``, then warping that output by ``second``: ``T_first ∘ T_second``.

    ``warp(warp(x, first, t), second, t)`` equals ``warp(x, compose(first, second, t), t)`` up to resampling (the
    composed warp samples once, so it is sharper), whatever the size of the intermediate image.

    Args:
        first, second: ``(B, P)`` θ of ``transform`` (or the ``(B, 2, 3)`` / ``(B, 3, 3)`` matrices
            :func:`stn.warp` takes), the same batch size.
        transform: a matrix family: ``"translation"``, ``"attention"``, ``"similarity"``, ``"affine"``,
            ``"projective"`` or ``"affine3d"`` (a name or a :class:`~stn.transforms.Transform`).

    Returns:
        ``(B, P)`` θ of the same family (each of them is closed under composition), computed in float64, in the
        promoted dtype of the inputs (at least float32). Differentiable.

    Raises:
        ValueError: ``"tps"``; different batch sizes; a projective product with ``H[2, 2] = 0``.

    Example:
        >>> import torch
        >>> from stn import compose
        >>> zoom = torch.tensor([[0.5, 0.0, 0.0]])  # the central half of the image
        >>> right = torch.tensor([[1.0, 0.5, 0.0]])  # then its right part
        >>> compose(zoom, right, "attention")  # the window of half-width 0.5 centred at x = 0.25 of the input
        tensor([[0.5000, 0.2500, 0.0000]])
    """
    t = _group(transform, "compose")
    a, b = flatten_theta(first, t), flatten_theta(second, t)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"first and second must have the same batch size, got {a.shape[0]} and {b.shape[0]}")
    if a.device != b.device:
        raise ValueError(f"first is on {a.device} but second is on {b.device}")
    product = t.matrix(a.to(torch.float64)) @ t.matrix(b.to(torch.float64))
    return _from_matrix(t, product, "stn.compose").to(_result_dtype(a, b))


def invert(theta: Tensor, transform: str | Transform) -> Tensor:
    """θ of the inverse warp: ``T_θ⁻¹``, so that ``compose(theta, invert(theta))`` is the identity.

    ``warp(warp(x, theta, t, out_size), invert(theta, t), t, x.shape[2:])`` gives ``x`` back where the first warp
    kept it (inside its output), up to resampling.

    Args:
        theta: ``(B, P)`` θ of a matrix family (see :func:`compose`), or a matrix form as :func:`stn.warp` takes.
        transform: a matrix family (not ``"tps"``).

    Returns:
        ``(B, P)`` θ of the same family, computed in float64, in θ's dtype (at least float32). Differentiable.

    Raises:
        ValueError: ``"tps"``; a singular θ (condition number above 1e12, e.g. an attention θ with ``s = 0``), naming
            the samples; a projective inverse with ``H[2, 2] = 0``.

    Example:
        >>> import torch
        >>> from stn import invert
        >>> invert(torch.tensor([[0.5, 0.25, 0.0]]), "attention")  # zooming back out
        tensor([[ 2.0000, -0.5000,  0.0000]])
        >>> invert(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.1, 0.2]]), "attention")
        Traceback (most recent call last):
        ...
        ValueError: theta[1] is singular (condition number inf, above 1e+12), it has no inverse warp
    """
    t = _group(transform, "invert")
    flat = flatten_theta(theta, t)
    inverse = _checked_inverse(t.matrix(flat.to(torch.float64)), "theta")
    return _from_matrix(t, inverse, "stn.invert").to(_result_dtype(flat))


def _check_coordinates(values: Tensor, name: str, width: int, layout: str, batch_size: int) -> None:
    if not isinstance(values, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(values).__name__}")
    if values.dim() != 3 or values.shape[2] != width or values.shape[0] != batch_size:
        raise ValueError(f"{name} must have shape {layout} with B = {batch_size} (θ's), got {tuple(values.shape)}")
    if not values.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {values.dtype}")


def _solve2x2(m: Tensor, v: Tensor) -> Tensor:
    """``m⁻¹ v`` for ``m`` ``(..., 2, 2)`` and ``v`` ``(..., 2)`` in closed form (non-finite where m is singular)."""
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    x = m[..., 1, 1] * v[..., 0] - m[..., 0, 1] * v[..., 1]
    y = m[..., 0, 0] * v[..., 1] - m[..., 1, 0] * v[..., 0]
    return torch.stack([x, y], dim=-1) / det.unsqueeze(-1)


def _tps_preimages(t: ThinPlateSpline, theta: Tensor, points: Tensor, pixels_per_unit: Tensor) -> Tensor:
    """The target points ``q`` with ``T_θ(q) = points`` ``(B, N, 2)`` (normalised, float64), NaN where Newton's
    method gets no closer than :data:`TPS_TOLERANCE` pixels (``pixels_per_unit``: the input's per normalised unit).

    Newton starts from the 4 points of a 41 x 41 lattice over ``[-1.5, 1.5]²`` whose images are nearest (one start
    can lie on the wrong side of a fold); the first of them, by that distance, that converges gives the preimage."""
    with torch.no_grad():
        fixed = theta.detach()
        lattice = base_grid((_TPS_LATTICE, _TPS_LATTICE), points.device, points.dtype) * 1.5
        lattice = lattice.view(1, -1, 2).expand(len(points), -1, -1)
        nearest = torch.cdist(points, t.map_points(fixed, lattice)).topk(_TPS_STARTS, largest=False).indices
        q = lattice.gather(1, nearest.flatten(1).unsqueeze(-1).expand(-1, -1, 2))  # (B, N * S, 2)
        targets = points.repeat_interleave(_TPS_STARTS, dim=1)
        for step in range(_TPS_MAX_STEPS + 1):
            residual = t.map_points(fixed, q) - targets
            error = (residual.abs() * pixels_per_unit).amax(-1)
            converged = (error <= TPS_TOLERANCE).view(*points.shape[:2], _TPS_STARTS)
            if step == _TPS_MAX_STEPS or bool(converged.any(-1).all()):
                break
            q = q - _solve2x2(t.jacobian(fixed, q), residual)
        first = converged.int().argmax(-1, keepdim=True)  # the nearest start that converged (0 if none)
        q = q.view(*points.shape[:2], _TPS_STARTS, 2).gather(2, first.unsqueeze(-1).expand(-1, -1, 1, 2)).squeeze(2)
        found = converged.any(-1, keepdim=True)
        q = torch.where(found, q, 0.0)
        jacobian = t.jacobian(fixed, q)
    # One more Newton step, recorded: it moves q by less than the tolerance and gives the exact first-order
    # gradients of the solution (implicit function theorem: dq = J⁻¹ (dp - ∂T_θ/∂θ dθ)).
    q = q - _solve2x2(jacobian, t.map_points(theta, q) - points)
    return torch.where(found, q, torch.nan)


def transform_points(
    points: Tensor,
    theta: Tensor,
    transform: str | Transform,
    in_size: int | Sequence[int],
    out_size: int | Sequence[int],
    *,
    inverse: bool = False,
) -> Tensor:
    """Where points of the input land in the output of ``warp(x, theta, transform, out_size)``.

    Args:
        points: ``(B, N, 2)`` ``(x, y)`` (affine3d: ``(B, N, 3)`` ``(x, y, z)``) in pixel coordinates of the input
            (pixel centres at integers, x right, y down, as OpenCV), one set per sample of θ.
        theta: ``(B, P)`` θ of ``transform`` (or a matrix form as :func:`stn.warp` takes).
        transform: any family.
        in_size: ``(H_in, W_in)`` (``(D, H, W)``) of the warped input.
        out_size: ``(H_out, W_out)`` of the output.
        inverse: map output pixels to input pixels instead (which is T_θ itself, in pixels).

    Returns:
        ``(B, N, 2)`` (``(B, N, 3)``) in pixel coordinates of the output (of the input with ``inverse=True``),
        computed in float64, in the promoted dtype of ``points`` and θ (at least float32). Differentiable in both.
        Points with no image are NaN: through a projective θ, those behind its horizon (``inverse=True``: the
        output points the warp reads no source for, its ``w <= eps``; forward: input points that no output pixel
        sees); through a TPS forward, those where Newton's method does not reach :data:`TPS_TOLERANCE` pixels
        (no preimage). Where a TPS folds and a point has several preimages, the one found is that reached from
        the starting point whose image is nearest (see ``_tps_preimages``).

    Raises:
        ValueError: shapes or sizes that do not fit; a singular θ in the forward direction of a matrix family.

    Example:
        >>> import torch
        >>> from stn import transform_points
        >>> zoom = torch.tensor([[0.5, 0.0, 0.0]])  # the central half of a 64x64 image, output 32x32
        >>> transform_points(torch.tensor([[[16.0, 31.5]]]), zoom, "attention", 64, 32)
        tensor([[[ 0.0000, 15.5000]]])
        >>> transform_points(torch.tensor([[[0.0, 15.5]]]), zoom, "attention", 64, 32, inverse=True)
        tensor([[[16.0000, 31.5000]]])
    """
    t = resolve(transform)
    flat = flatten_theta(theta, t)
    _check_coordinates(points, "points", t.ndim, "(B, N, 2)" if t.ndim == 2 else "(B, N, 3)", flat.shape[0])
    if points.device != flat.device:
        raise ValueError(f"points are on {points.device} but theta is on {flat.device}")
    sizes = check_size(in_size, t.ndim, "in_size"), check_size(out_size, t.ndim, "out_size")
    source, target = sizes[::-1] if inverse else sizes
    # pixel i of an axis of n pixels is at (2i + 1) / n - 1 (stn.coords); sizes are (H, W), points (x, y)
    n_source, n_target = (torch.tensor(s[::-1], dtype=torch.float64, device=flat.device) for s in (source, target))
    p = (2 * points.to(torch.float64) + 1) / n_source - 1
    theta64 = flat.to(torch.float64)
    if isinstance(t, ThinPlateSpline):
        q = t.map_points(theta64, p) if inverse else _tps_preimages(t, theta64, p, n_source / 2)
    else:
        m = t.matrix(theta64)
        m = m if inverse else _checked_inverse(m, "theta")
        h = torch.cat([p, torch.ones_like(p[..., :1])], dim=-1) @ m.transpose(1, 2)
        q = h[..., :-1]
        if isinstance(t, Projective):
            w = h[..., -1:]
            ahead = w > (t.eps if inverse else 0.0)  # forward: w = 1 / (the output point's w)
            q = torch.where(ahead, q / torch.where(ahead, w, 1.0), torch.nan)
    return ((q + 1) * n_target - 1).div(2).to(_result_dtype(points, flat))


def transform_boxes(
    boxes: Tensor,
    theta: Tensor,
    transform: str | Transform,
    in_size: int | Sequence[int],
    out_size: int | Sequence[int],
    *,
    inverse: bool = False,
) -> Tensor:
    """The box enclosing each warped box: ``(B, N, 4)`` ``(x1, y1, x2, y2)`` of the input -> of the output.

    Boxes are in the pixel coordinates of :func:`transform_points` (the whole of a W-wide image spans
    ``x = -0.5 .. W - 0.5``). A matrix family maps a box to a quadrilateral, whose enclosing box is that of its
    warped corners (exact); a TPS maps the edges to curves, sampled at 33 points each.

    Args:
        boxes: ``(B, N, 4)`` ``(x1, y1, x2, y2)``, one set per sample of θ, in pixels of the input (of the output
            with ``inverse=True``).
        theta, transform, in_size, out_size, inverse: as in :func:`transform_points` (2-D families only).

    Returns:
        ``(B, N, 4)`` with ``x1 <= x2`` and ``y1 <= y2``, dtype as :func:`transform_points`. A projective box with
        a corner that has no image (behind the horizon, see :func:`transform_points`) is NaN: its image is
        unbounded or cut by the horizon. Differentiable.

    Example:
        >>> import torch
        >>> from stn import transform_boxes
        >>> crop = torch.tensor([[0.5, 0.5, 0.0]])  # the right half of the middle of a 64x64 image, output 32x32
        >>> frame = torch.tensor([[[-0.5, -0.5, 31.5, 31.5]]])  # the whole output
        >>> transform_boxes(frame, crop, "attention", 64, 32, inverse=True)  # the window the crop reads
        tensor([[[31.5000, 15.5000, 63.5000, 47.5000]]])
    """
    t = resolve(transform)
    if t.ndim != 2:
        raise ValueError(f"transform_boxes takes 2-D boxes (x1, y1, x2, y2); {t.name!r} is {t.ndim}-D")
    batch = flatten_theta(theta, t).shape[0]
    _check_coordinates(boxes, "boxes", 4, "(B, N, 4)", batch)
    samples = _TPS_EDGE_SAMPLES if isinstance(t, ThinPlateSpline) else 2
    s = torch.linspace(0, 1, samples, dtype=boxes.dtype, device=boxes.device)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))  # (B, N, 1)
    along_x, along_y = x1 + s * (x2 - x1), y1 + s * (y2 - y1)  # (B, N, S)
    outline = torch.cat(
        [
            torch.stack([along_x, y1.expand_as(along_x)], dim=-1),  # top
            torch.stack([along_x, y2.expand_as(along_x)], dim=-1),  # bottom
            torch.stack([x1.expand_as(along_y), along_y], dim=-1),  # left
            torch.stack([x2.expand_as(along_y), along_y], dim=-1),  # right
        ],
        dim=2,
    )  # (B, N, 4S, 2)
    moved = transform_points(outline.flatten(1, 2), theta, t, in_size, out_size, inverse=inverse)
    moved = moved.view(*outline.shape)
    return torch.cat([moved.amin(dim=2), moved.amax(dim=2)], dim=-1)
