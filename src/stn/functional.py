"""The functional layer: grid generator (:func:`sampling_grid`) and sampler (:func:`sample`), and
:func:`warp`, which is the two in sequence.

Conventions are those of :mod:`stn.coords`: normalised ``[-1, 1]`` coordinates with pixel centres as in
``grid_sample(align_corners=False)``, grids ending in ``(x, y)``, and θ mapping target to source coordinates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stn.antialias import supersample
from stn.coords import check_size
from stn.transforms import Affine, Affine3d, Projective, Transform, resolve

__all__ = ["flatten_theta", "sample", "sampling_grid", "warp"]

_MODES = ("bilinear", "nearest", "bicubic")
_PADDING_MODES = ("zeros", "border", "reflection")
Fill = float | Sequence[float] | Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision grids cannot address pixels of large images (bfloat16 has 8 bits of mantissa), so grids,
    # TPS and projective maths, and the sampling itself run in at least float32.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _in_graph() -> bool:
    """Whether this call is being compiled, traced, scripted or exported (where θ cannot be inspected)."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )


def _check_finite_default() -> bool:
    """Whether the environment asks for θ checks (``STN_CHECK_FINITE`` set to anything but empty or ``0``)."""
    return os.environ.get("STN_CHECK_FINITE", "") not in ("", "0")


def _raise_if_not_finite(theta: Tensor, who: str, cause: str) -> None:
    """Raise a ``ValueError`` naming the samples whose θ ``(B, ...)`` is NaN or infinite (eager calls only: a
    compiled, traced, scripted or exported graph cannot raise, and is not checked). ``cause``: the likely cause
    and remedy, for the message."""
    if _in_graph():
        return
    bad = ~torch.isfinite(theta).flatten(1).all(1)
    if bad.any():
        samples = bad.nonzero().flatten().tolist()
        shown = f"{samples[:10]}{' ...' if len(samples) > 10 else ''}"
        raise ValueError(f"{who}: θ is NaN or infinite for sample(s) {shown} of {len(theta)} ({cause})")


def _check_input(x: Tensor, ndim: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    layout = "(B, C, H, W)" if ndim == 2 else "(B, C, D, H, W)"
    if x.dim() != ndim + 2:
        raise ValueError(f"input must be {ndim + 2}-D {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")


def _matrix_shape(t: Transform) -> tuple[int, int] | None:
    """The matrix shape in which θ of ``t`` may also come: ``F.affine_grid``'s for affine maps, 3x3 for H."""
    if isinstance(t, (Affine, Affine3d)):
        return (t.ndim, t.ndim + 1)
    if isinstance(t, Projective):
        return (3, 3)
    return None


def flatten_theta(theta: Tensor, transform: str | Transform, batch_size: int | None = None) -> Tensor:
    """Validate θ and return it as the family's ``(B, P)``.

    Besides ``(B, P)``, an ``affine`` θ may be the ``(B, 2, 3)`` matrix that ``F.affine_grid`` takes (``affine3d``:
    ``(B, 3, 4)``) and a ``projective`` θ the ``(B, 3, 3)`` matrix H, divided by ``H[2, 2]`` (which must not be 0).
    Both are in normalised coordinates, target -> source, like every θ. Never broadcasts over the batch.

    Example:
        >>> import torch
        >>> from stn.functional import flatten_theta
        >>> flatten_theta(2 * torch.eye(3).unsqueeze(0), "projective")
        tensor([[1., 0., 0., 0., 1., 0., 0., 0.]])
    """
    t = resolve(transform)
    shape = _matrix_shape(t)
    if shape is not None and isinstance(theta, Tensor) and theta.shape[1:] != (t.num_params,):
        if theta.dim() != 3 or theta.shape[1:] != shape:
            raise ValueError(
                f"theta for {t.name!r} must have shape (B, {t.num_params}) or (B, {shape[0]}, {shape[1]}), "
                f"got {tuple(theta.shape)}"
            )
        if not theta.is_floating_point():
            raise TypeError(f"theta must be a floating-point tensor, got dtype {theta.dtype}")
        if isinstance(t, Projective) and bool((theta[:, 2, 2] == 0).any()):
            raise ValueError("a (B, 3, 3) projective theta needs H[2, 2] != 0 to be normalised to H[2, 2] = 1")
        theta = t.from_matrix(theta)
    return t.check_theta(theta, batch_size)


def sampling_grid(theta: Tensor, transform: str | Transform, out_size: int | Sequence[int]) -> Tensor:
    """The grid generator: source coordinates T_θ(G) of every output pixel centre.

    Args:
        theta: ``(B, P)`` parameters of ``transform``; an ``affine`` θ may also be ``(B, 2, 3)`` and a
            ``projective`` one ``(B, 3, 3)`` (see :func:`flatten_theta`).
        transform: a family name (see :func:`stn.transforms.names`) or a :class:`~stn.transforms.Transform`.
        out_size: ``(H, W)`` (3-D ``(D, H, W)``).

    Returns:
        ``(B, H, W, 2)`` with ``(x, y)`` in the last dimension (3-D ``(B, D, H, W, 3)``), θ's dtype.

    Example:
        >>> import torch
        >>> from stn import sampling_grid
        >>> theta = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])  # zoom in 2x on the centre
        >>> sampling_grid(theta, "affine", (2, 2))[0, 0]
        tensor([[-0.2500, -0.2500],
                [ 0.2500, -0.2500]])
    """
    t = resolve(transform)
    size = check_size(out_size, t.ndim)
    return t.grid(flatten_theta(theta, t), size)


def _fill_tensor(fill: Fill, x: Tensor) -> Tensor:
    channels = x.shape[1]
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
    if f.numel() not in (1, channels):
        raise ValueError(f"fill must be a scalar or have one value per channel ({channels}), got {f.numel()} values")
    return f.reshape(1, -1, *([1] * (x.dim() - 2)))


def sample(
    x: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    fill: Fill | None = None,
    *,
    valid: Tensor | None = None,
) -> Tensor:
    """The sampler: read ``x`` at the grid's source coordinates, differentiably in ``x`` and ``grid``.

    One ``torch.nn.functional.grid_sample`` call (``align_corners=False``). ``fill`` is the constant value read
    outside the input (only with ``padding_mode="zeros"``): set it to the image background so that a normalised
    input is not padded with a foreign value, the classic cause of transformers that learn to zoom out.

    Args:
        x: ``(B, C, H_in, W_in)`` (3-D ``(B, C, D_in, H_in, W_in)``), any floating dtype.
        grid: ``(B, H, W, 2)`` (3-D ``(B, D, H, W, 3)``), e.g. from :func:`sampling_grid`.
        mode: ``"bilinear"`` (trilinear on volumes), ``"nearest"`` or ``"bicubic"`` (2-D only).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        fill: scalar or per-channel value outside the input.
        valid: ``(B, H, W)`` (3-D ``(B, D, H, W)``) bool, False where the grid has no source point (a
            homography's horizon, see :meth:`stn.transforms.Transform.valid_mask`): those outputs are 0 (or
            ``fill``) in every padding mode, with zero gradient. :func:`warp` and the modules pass it.

    Returns:
        ``(B, C, H, W)`` (3-D ``(B, C, D, H, W)``) in ``x``'s dtype.

    Example:
        >>> import torch
        >>> from stn import sample
        >>> x = torch.full((1, 1, 4, 4), 0.5)
        >>> grid = torch.tensor([[[[0.0, 0.0], [3.0, 0.0]]]])  # (1, 1, 2, 2): the centre, then far outside
        >>> sample(x, grid, fill=1.0)
        tensor([[[[0.5000, 1.0000]]]])
    """
    ndim = grid.dim() - 2
    _check_input(x, ndim)
    if grid.shape[0] != x.shape[0] or grid.shape[-1] != ndim:
        raise ValueError(f"grid of shape {tuple(grid.shape)} does not fit an input of shape {tuple(x.shape)}")
    if mode not in _MODES or (mode == "bicubic" and ndim == 3):
        raise ValueError(f"mode must be one of {_MODES} (bicubic for 2-D only), got {mode!r}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if fill is not None and padding_mode != "zeros":
        raise ValueError(f"fill is a constant background and needs padding_mode='zeros', got {padding_mode!r}")
    if valid is not None and (valid.dtype != torch.bool or valid.shape != grid.shape[:-1]):
        raise ValueError(
            f"valid must be a bool mask of shape {tuple(grid.shape[:-1])}, got {valid.dtype} {tuple(valid.shape)}"
        )
    work = _compute_dtype(x.dtype)
    xs = x.to(work)
    offset = None if fill is None else _fill_tensor(fill, xs)
    if offset is not None:
        xs = xs - offset  # zero padding of (x - fill), plus fill, pads with fill in the same single sampling call
    out = F.grid_sample(xs, grid.to(work), mode=mode, padding_mode=padding_mode, align_corners=False)
    if valid is not None:
        out = out.masked_fill(~valid.unsqueeze(1), 0.0)
    if offset is not None:
        out = out + offset
    return out.to(x.dtype)


def warp(
    x: Tensor,
    theta: Tensor,
    transform: str | Transform,
    out_size: int | Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    fill: Fill | None = None,
    *,
    check_finite: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Warp ``x`` by T_θ: ``out[b, :, y_t, x_t] = x[b, :, T_θ(x_t, y_t)]``.

    A non-finite θ is not an error by default (checking costs a device synchronisation per call): a sample whose
    θ holds NaN or ±inf gets a grid of NaN, and its output is NaN with bilinear or bicubic sampling and zero
    padding (the defaults), or finite but meaningless with ``"nearest"`` (the fill) or ``"border"`` /
    ``"reflection"`` padding (edge pixels); the other samples of the batch are unaffected. ``check_finite=True``,
    or the environment variable ``STN_CHECK_FINITE=1`` when ``check_finite`` is not given, turns it into a
    ``ValueError`` naming those samples, raised before anything is sampled (eager calls; compiled, traced,
    scripted and exported graphs are not checked). The modules take the same option
    (:class:`~stn.modules.SpatialTransformer`).

    Args:
        x: ``(B, C, H_in, W_in)`` (``affine3d``: ``(B, C, D_in, H_in, W_in)``), floating point.
        theta: ``(B, P)`` parameters of ``transform`` (target -> source); an ``affine`` θ may also be
            ``(B, 2, 3)`` as ``F.affine_grid`` takes it, a ``projective`` one ``(B, 3, 3)`` (:func:`flatten_theta`).
        transform: a family name or a :class:`~stn.transforms.Transform`.
        out_size: ``(H, W)`` of the output (3-D ``(D, H, W)``); defaults to the input's spatial size and may
            differ from it (e.g. the paper's 448 -> 224 crops).
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``, see :func:`sample`.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``, see :func:`sample`.
        fill: scalar or per-channel value read outside the input, see :func:`sample`.
        check_finite: raise a ``ValueError`` when θ is NaN or infinite (default: the environment variable
            ``STN_CHECK_FINITE``, read at each call; see above).
        antialias: where T_θ shrinks the input (more than one input pixel between neighbouring output pixels),
            read that sample ``k = ceil(shrink)`` times finer along each shrunk axis and reduce it with a tent filter
            of one output pixel's radius, so that the output does not alias; a sample that does not shrink is read
            exactly as without, bit for bit. It costs about ``k_y * k_x`` times the sampling where it shrinks, and
            one device synchronisation per call: see :mod:`stn.antialias` for the method, its cost and its limits.

    Returns:
        ``(B, C, *out_size)`` in ``x``'s dtype. Grids are computed in at least float32.

    Raises:
        ValueError: with ``check_finite`` (or ``STN_CHECK_FINITE=1``), θ NaN or infinite for some sample.

    Example:
        >>> import torch
        >>> from stn import transforms, warp
        >>> x = torch.rand(8, 1, 42, 42)
        >>> theta = transforms.get("attention").identity(8)  # (8, 3): s, tx, ty
        >>> theta[:, 0] = 0.5  # zoom in 2x on the centre
        >>> warp(x, theta, "attention", out_size=(21, 21)).shape
        torch.Size([8, 1, 21, 21])
        >>> theta[3, 1] = float("nan")
        >>> warp(x, theta, "attention")[3].isnan().all()  # NaN in, NaN out: no error by default
        tensor(True)
        >>> warp(x, theta, "attention", check_finite=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: stn.warp: θ is NaN or infinite for sample(s) [3] of 8 (...)
        >>> stripes = torch.tensor([[[[0.0, 1.0] * 4]]])  # (1, 1, 1, 8), shrunk 8/3 times below
        >>> whole = transforms.get("attention").identity(1)
        >>> warp(stripes, whole, "attention", (1, 3)), warp(stripes, whole, "attention", (1, 3), antialias=True)
        (tensor([[[[0.8333, 0.5000, 0.1667]]]]), tensor([[[[0.4583, 0.5000, 0.5278]]]]))
    """
    t = resolve(transform)
    _check_input(x, t.ndim)
    theta = flatten_theta(theta, t, batch_size=x.shape[0])
    if theta.device != x.device:
        raise ValueError(f"theta is on {theta.device} but the input is on {x.device}")
    if _check_finite_default() if check_finite is None else check_finite:
        _raise_if_not_finite(theta, "stn.warp", "a θ regressed from NaN/inf inputs, or by a net that diverged")
    size = tuple(x.shape[2:]) if out_size is None else check_size(out_size, t.ndim)
    theta = theta.to(_compute_dtype(x.dtype))

    def read(x: Tensor, theta: Tensor, size: tuple[int, ...]) -> Tensor:
        # With zero padding the grid's outside points already read 0 / fill: the mask is needed for the others only.
        valid = None if padding_mode == "zeros" else t.valid_mask(theta, size)
        return sample(x, t.grid(theta, size), mode=mode, padding_mode=padding_mode, fill=fill, valid=valid)

    return supersample(x, theta, t, size, read) if antialias else read(x, theta, size)
