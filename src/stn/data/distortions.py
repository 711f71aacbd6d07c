"""The paper's distorted MNIST variants (section 4.1, appendix A.1, A.2, A.4) as pure batched generators.

Every generator takes a batch of digits ``images`` ``(N, H, W)`` (uint8 in ``0..255`` or float in ``[0, 1]``, on
any device) and a CPU ``torch.Generator``, and returns ``(out, params)``: ``out`` ``(N, C, H_out, W_out)``
float32 in ``[0, 1]`` on the images' device, background 0, and ``params`` a dict of CPU tensors with the truth
that was drawn (angles in degrees counter-clockwise as displayed, scales, offsets and boxes in output pixels).
All random numbers are drawn on the CPU from ``generator`` in a fixed order, so the same generator state gives
the same parameters on every device. Each warp is one batched :func:`stn.warp` call (no per-image loop); the
whole-pixel translations are one batched scatter that copies the pixels exactly (equal to ``stn.warp`` with the
returned θ).

| variant | output | what (defaults from the paper / the issue) |
|---|---|---|
| r | 1x28x28 | rotation uniform in [-90°, 90°] |
| rts | 1x42x42 | rotation in [-45°, 45°], scale in [0.7, 1.2], placed uniformly at random in 42x42 |
| p | 1x28x28 | scale in [0.75, 1], then the 4 image corners moved by N(0, 5 px): a projective warp |
| e | 1x28x28 | scale in [0.75, 1], then the 16 control points of a 4x4 TPS moved by N(0, 1.5 px) |
| t | 1x60x60 | translated: placed uniformly at random (whole pixels) in 60x60 |
| tc | 1x60x60 | t plus six random 6x6 crops of other digits of the same split as clutter |
| addition | 2x42x42 | two independently RTS-distorted digits as two channels; label = their sum (19 classes) |
| coloc | 1x84x84 | one digit placed uniformly at random (whole pixels) in 84x84; ``box`` is the truth |
| coloc-tc | 1x84x84 | coloc plus sixteen random 6x6 clutter crops |

**Placement rule** (rts, t, tc, addition, coloc): the offset of the digit is uniform over all positions that keep
the bounding box of the transformed *ink* (non-zero pixels) inside the canvas, so a digit is never cut off. Only if
the transformed ink box is larger than the canvas along an axis is the digit centred on that axis (and cut).
Offsets of the translation-only variants are whole pixels, so those digits are copied without interpolation blur.

**Clutter** (as in DeepMind's ``mnist-cluttered``): each piece is a uniformly placed crop of a uniformly chosen
digit of the clutter pool (never the sample's own digit), combined with the canvas by a pixel-wise maximum.

Example:
    >>> import torch
    >>> from stn.data.distortions import rts
    >>> g = torch.Generator().manual_seed(0)
    >>> out, params = rts(torch.zeros(8, 28, 28, dtype=torch.uint8), g)
    >>> out.shape, sorted(params)
    (torch.Size([8, 1, 42, 42]), ['angle', 'box', 'offset', 'scale', 'theta'])
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from stn.functional import warp
from stn.transforms import get as get_transform

__all__ = [
    "GENERATORS",
    "VARIANTS",
    "VariantInfo",
    "add_clutter",
    "addition",
    "cluttered",
    "elastic",
    "ink_box",
    "projective",
    "rotated",
    "rts",
    "translated",
    "variant_info",
]

Params = dict[str, Tensor]


class VariantInfo(NamedTuple):
    """What a variant's samples look like: ``image_size`` ``(H, W)``, ``channels``, ``num_classes``."""

    name: str
    image_size: tuple[int, int]
    channels: int
    num_classes: int
    description: str


_INFOS = (
    VariantInfo("r", (28, 28), 1, 10, "rotated ±90°"),
    VariantInfo("rts", (42, 42), 1, 10, "rotated ±45°, scaled 0.7-1.2, translated in 42x42"),
    VariantInfo("p", (28, 28), 1, 10, "projective: scaled 0.75-1, corners moved by N(0, 5 px)"),
    VariantInfo("e", (28, 28), 1, 10, "elastic: scaled 0.75-1, 4x4 TPS control points moved by N(0, 1.5 px)"),
    VariantInfo("t", (60, 60), 1, 10, "translated in 60x60"),
    VariantInfo("tc", (60, 60), 1, 10, "translated in 60x60 with six 6x6 clutter crops"),
    VariantInfo("addition", (42, 42), 2, 19, "two RTS digits as two channels, label = their sum"),
    VariantInfo("coloc", (84, 84), 1, 10, "co-localisation: translated in 84x84, with the digit's box"),
    VariantInfo("coloc-tc", (84, 84), 1, 10, "co-localisation: translated in 84x84 with sixteen clutter crops"),
)
_VARIANT_INFO = {info.name: info for info in _INFOS}
VARIANTS: tuple[str, ...] = tuple(_VARIANT_INFO)


def variant_info(name: str) -> VariantInfo:
    """The :class:`VariantInfo` of a variant (case-insensitive: ``"RTS"`` works).

    Raises:
        KeyError: unknown name; the message lists :data:`VARIANTS`.

    Example:
        >>> from stn.data import variant_info
        >>> info = variant_info("TC")
        >>> info.channels, info.image_size, info.num_classes
        (1, (60, 60), 10)
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _VARIANT_INFO:
        raise KeyError(f"unknown MNIST variant {name!r}; valid variants: {', '.join(VARIANTS)}")
    return _VARIANT_INFO[key]


# --- drawing and geometry helpers ----------------------------------------------------------------------------


def _as_float(images: Tensor) -> Tensor:
    """``(N, H, W)`` uint8 or float -> ``(N, 1, H, W)`` float32 in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, H, W), got {type(images).__name__}")
    if images.dim() != 3:
        raise ValueError(f"images must be (N, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.unsqueeze(1).float().div_(255)
    if images.is_floating_point():
        return images.unsqueeze(1).float()
    raise TypeError(f"images must be uint8 (0..255) or floating point ([0, 1]), got {images.dtype}")


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator must be a CPU torch.Generator, got {generator!r}")


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low


def _normal(generator: torch.Generator, shape: tuple[int, ...], std: float) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


def _check_range(value: tuple[float, float], what: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0 < low <= high:
        raise ValueError(f"{what} must be (low, high) with 0 < low <= high, got {value!r}")
    return low, high


def ink_box(images: Tensor) -> Tensor:
    """Bounding box of the non-zero pixels of each image: ``(N, 4)`` float64 ``(x0, y0, x1, y1)`` on the CPU.

    Coordinates are pixel edges (pixel ``i`` spans ``[i, i + 1]``), so a box is ``x1 - x0`` pixels wide. An
    empty image gets the whole frame.
    """
    ink = images if images.dim() == 3 else images.flatten(1, -3).amax(1)  # (N, H, W), channels merged

    def span(mask: Tensor) -> tuple[Tensor, Tensor]:  # first and one-past-last True along dim 1
        n = mask.shape[1]
        first = mask.byte().argmax(1)  # argmax returns the first maximal index
        last = n - mask.flip(1).byte().argmax(1)
        empty = ~mask.any(1)
        return torch.where(empty, 0, first), torch.where(empty, n, last)

    y0, y1 = span(ink.amax(2) > 0)
    x0, x1 = span(ink.amax(1) > 0)
    return torch.stack([x0, y0, x1, y1], dim=1).cpu().double()


def _rotation(angle: Tensor, scale: Tensor) -> Tensor:
    """``scale * R`` ``(N, 2, 2)``: counter-clockwise rotation as displayed (y points down)."""
    rad = torch.deg2rad(angle)
    c, s = torch.cos(rad) * scale, torch.sin(rad) * scale
    return torch.stack([c, s, -s, c], dim=1).view(-1, 2, 2)


def _place(
    box: Tensor,
    in_size: tuple[int, int],
    forward: Tensor,
    out_size: tuple[int, int],
    u: Tensor,
    whole_pixels: bool,
) -> tuple[Tensor, Tensor]:
    """Offsets by the placement rule (see the module docstring) and the transformed ink boxes.

    Args:
        box: ``(N, 4)`` ink boxes in source pixels; ``forward``: ``(N, 2, 2)`` linear map about the centres;
        u: ``(N, 2)`` uniform [0, 1) draws choosing the offset; ``whole_pixels``: offsets that put the source
            pixels exactly on output pixels (the source frame's top-left corner on a whole pixel).

    Returns:
        ``offset`` ``(N, 2)`` (x, y) pixels of the source centre from the canvas centre, and ``box`` ``(N, 4)``
        the bounding box of the transformed ink box in output pixels.
    """
    (h_in, w_in), (h_out, w_out) = in_size, out_size
    xs = box[:, [0, 2, 0, 2]] - w_in / 2
    ys = box[:, [1, 1, 3, 3]] - h_in / 2
    corners = forward @ torch.stack([xs, ys], dim=1)  # (N, 2, 4)
    low_corner, high_corner = corners.amin(2), corners.amax(2)
    half = torch.tensor([w_out / 2, h_out / 2], dtype=torch.float64)
    lo, hi = -half - low_corner, half - high_corner
    if whole_pixels:  # choose among the offsets t with t + (out - in) / 2 a whole number
        align = torch.tensor([(w_out - w_in) / 2, (h_out - h_in) / 2], dtype=torch.float64)
        lo, hi = torch.ceil(lo + align - 1e-6) - align, torch.floor(hi + align + 1e-6) - align
        offset = torch.minimum(lo + torch.floor(u * (hi - lo + 1)), hi)
        middle = torch.floor((lo + hi) / 2 + align) - align
    else:
        offset = lo + u * (hi - lo)
        middle = (lo + hi) / 2
    offset = torch.where(hi >= lo, offset, middle)
    placed = torch.cat([low_corner + offset + half, high_corner + offset + half], dim=1)
    return offset, placed


def _similarity_theta(forward: Tensor, offset: Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> Tensor:
    """Affine θ ``(N, 6)`` (target -> source, normalised) of the map that takes a source pixel ``u`` (measured
    from the source centre) to ``forward @ u + offset`` (measured from the output centre)."""
    (h_in, w_in), (h_out, w_out) = in_size, out_size
    inverse = torch.linalg.inv(forward)
    d_in = torch.tensor([2 / w_in, 2 / h_in], dtype=torch.float64)
    d_out = torch.tensor([w_out / 2, h_out / 2], dtype=torch.float64)
    linear = d_in[:, None] * inverse * d_out[None, :]
    shift = -d_in * (inverse @ offset.unsqueeze(-1)).squeeze(-1)
    return torch.cat([linear, shift.unsqueeze(-1)], dim=2).reshape(-1, 6).float()


def _paste(x: Tensor, offset: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Translate ``x`` ``(N, C, h, w)`` by whole-pixel ``offset`` (of its centre from the canvas centre) into a
    zero canvas ``out_size``: an exact, interpolation-free :func:`stn.warp` with the translation's θ.

    One scatter of the ``h * w`` source pixels per image; pixels that land outside the canvas go to a spare
    last column that is dropped, so nothing is clamped onto a real pixel. (Gathering the whole canvas instead
    reads and writes ``H * W`` elements per image and is several times slower.)
    """
    n, c, h, w = x.shape
    height, width = out_size
    top_left = (offset + torch.tensor([(width - w) / 2, (height - h) / 2], dtype=torch.float64)).round().long()
    rows = torch.arange(h) + top_left[:, 1:]  # (N, h) canvas rows of the source rows
    cols = torch.arange(w) + top_left[:, :1]  # (N, w)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    target = torch.where(inside, rows[:, :, None] * width + cols[:, None, :], height * width)  # (N, h, w)
    canvas = x.new_zeros(n, c, height * width + 1)
    canvas.scatter_(2, target.view(n, 1, h * w).expand(n, c, h * w).to(x.device), x.reshape(n, c, h * w))
    return canvas[..., : height * width].unflatten(2, (height, width))


def _homography(p: Tensor, q: Tensor) -> Tensor:
    """θ ``(N, 8)`` of the homographies (``H[2, 2] = 1``) taking the 4 points ``p`` ``(N, 4, 2)`` to ``q``."""
    x, y = p.unbind(-1)
    u, v = q.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], dim=-1)
    return torch.linalg.solve(torch.cat([rows_u, rows_v], dim=1), torch.cat([u, v], dim=1))


# --- the generators ------------------------------------------------------------------------------------------


def _affine_variant(
    images: Tensor,
    generator: torch.Generator,
    max_angle: float,
    scale: tuple[float, float],
    size: int | None,
) -> tuple[Tensor, Params]:
    """Rotate, scale and (when ``size`` is given) place the digits in a ``size x size`` canvas."""
    x = _as_float(images)
    _check_generator(generator)
    n, in_size = x.shape[0], tuple(x.shape[-2:])
    low, high = _check_range(scale, "scale")
    angle = _uniform(generator, (n,), -max_angle, max_angle)
    factor = _uniform(generator, (n,), low, high)
    forward = _rotation(angle, factor)
    params: Params = {"angle": angle.float(), "scale": factor.float()}
    if size is None:
        offset = torch.zeros(n, 2, dtype=torch.float64)
        out_size = in_size
    else:
        out_size = (size, size)
        u = _uniform(generator, (n, 2), 0.0, 1.0)
        offset, box = _place(ink_box(images), in_size, forward, out_size, u, whole_pixels=False)
        params.update(offset=offset.float(), box=box.float())
    params["theta"] = _similarity_theta(forward, offset, in_size, out_size)
    return warp(x, params["theta"].to(x.device), "affine", out_size), params


def rotated(images: Tensor, generator: torch.Generator, *, max_angle: float = 90.0) -> tuple[Tensor, Params]:
    """R: rotate each digit about its centre by an angle uniform in ``[-max_angle, max_angle]`` degrees.

    Returns:
        ``out`` ``(N, 1, H, W)`` and ``params`` ``angle`` ``(N,)`` degrees (counter-clockwise as displayed),
        ``theta`` ``(N, 6)`` (affine, target -> source).
    """
    out, params = _affine_variant(images, generator, max_angle, (1.0, 1.0), None)
    del params["scale"]
    return out, params


def rts(
    images: Tensor,
    generator: torch.Generator,
    *,
    max_angle: float = 45.0,
    scale: tuple[float, float] = (0.7, 1.2),
    size: int = 42,
) -> tuple[Tensor, Params]:
    """RTS: rotate by U(-45°, 45°), scale by U(0.7, 1.2) and place at random in a ``size x size`` canvas.

    Returns:
        ``out`` ``(N, 1, size, size)`` and ``params``: ``angle`` ``(N,)`` degrees, ``scale`` ``(N,)``,
        ``offset`` ``(N, 2)`` (x, y) pixels from the canvas centre to the digit's (the 28x28 frame's) centre,
        ``box`` ``(N, 4)`` ``(x0, y0, x1, y1)`` the bounding box of the transformed ink box in output pixels
        (tight for angle 0), ``theta`` ``(N, 6)``.
    """
    return _affine_variant(images, generator, max_angle, scale, size)


def translated(images: Tensor, generator: torch.Generator, *, size: int = 60) -> tuple[Tensor, Params]:
    """T: place each digit at a uniformly random whole-pixel position in a ``size x size`` canvas.

    The digit's pixels are copied exactly (no interpolation); the result equals :func:`stn.warp` with the
    returned ``theta``.

    Returns:
        ``out`` ``(N, 1, size, size)`` and ``params``: ``offset`` ``(N, 2)`` pixels from the canvas centre to
        the digit frame's centre, ``box`` ``(N, 4)`` the digit's ink box ``(x0, y0, x1, y1)`` in output pixels
        (edges), ``theta`` ``(N, 6)`` (affine, target -> source).
    """
    x = _as_float(images)
    _check_generator(generator)
    n, in_size, out_size = x.shape[0], tuple(x.shape[-2:]), (size, size)
    forward = torch.eye(2, dtype=torch.float64).expand(n, 2, 2)
    u = _uniform(generator, (n, 2), 0.0, 1.0)
    offset, box = _place(ink_box(images), in_size, forward, out_size, u, whole_pixels=True)
    theta = _similarity_theta(forward, offset, in_size, out_size)
    return _paste(x, offset, out_size), {"offset": offset.float(), "box": box.float(), "theta": theta}


def add_clutter(
    canvas: Tensor,
    generator: torch.Generator,
    pool: Tensor,
    *,
    num_clutter: int = 6,
    clutter_size: int = 6,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Params]:
    """Add ``num_clutter`` random ``clutter_size``-square crops of digits of ``pool`` to each canvas (max).

    Args:
        canvas: ``(N, C, H, W)`` float in [0, 1].
        pool: ``(M, h, w)`` digits (uint8 or float in [0, 1]) the crops come from, on any device.
        exclude: ``(N,)`` pool index of each canvas's own digit, never used as its clutter.

    Returns:
        The cluttered canvas and ``clutter_index`` ``(N, num_clutter)`` (pool indices), ``clutter_crop``
        ``(N, num_clutter, 2)`` (x, y) top-left of each crop in its digit, ``clutter_pos`` ``(N, num_clutter, 2)``
        (x, y) top-left of each piece in the canvas.
    """
    out = canvas.clone(memory_format=torch.contiguous_format)
    return _add_clutter_(out, generator, pool, num_clutter, clutter_size, exclude)


def _add_clutter_(
    canvas: Tensor,
    generator: torch.Generator,
    pool: Tensor,
    num_clutter: int,
    clutter_size: int,
    exclude: Tensor | None,
) -> tuple[Tensor, Params]:
    """:func:`add_clutter` in place on a contiguous ``canvas``."""
    n, _, height, width = canvas.shape
    m, h, w = pool.shape
    if not 0 < clutter_size <= min(h, w, height, width):
        raise ValueError(f"clutter_size must be in 1..{min(h, w, height, width)}, got {clutter_size}")
    if m < (2 if exclude is not None else 1):
        raise ValueError(f"the clutter pool needs at least {2 if exclude is not None else 1} digits, has {m}")
    shape = (n, num_clutter)
    if exclude is None:
        index = torch.randint(0, m, shape, generator=generator)
    else:
        index = torch.randint(0, m - 1, shape, generator=generator)
        index = index + (index >= exclude.cpu().view(-1, 1)).long()
    crop = torch.stack(
        [
            torch.randint(0, w - clutter_size + 1, shape, generator=generator),
            torch.randint(0, h - clutter_size + 1, shape, generator=generator),
        ],
        dim=-1,
    )
    pos = torch.stack(
        [
            torch.randint(0, width - clutter_size + 1, shape, generator=generator),
            torch.randint(0, height - clutter_size + 1, shape, generator=generator),
        ],
        dim=-1,
    )
    ar = torch.arange(clutter_size)
    rows = (crop[..., 1:] + ar)[..., :, None]  # (N, K, S, 1)
    cols = (crop[..., :1] + ar)[..., None, :]  # (N, K, 1, S)
    flat = (index[..., None, None] * h + rows) * w + cols  # (N, K, S, S) into the flattened pool
    pieces = pool.reshape(-1).take(flat.to(pool.device))
    pieces = pieces.float().div(255) if pieces.dtype == torch.uint8 else pieces.float()
    pieces = pieces.reshape(n, 1, -1).expand(n, canvas.shape[1], -1).to(canvas.device)
    target = (pos[..., 1:] + ar)[..., :, None] * width + (pos[..., :1] + ar)[..., None, :]
    target = target.reshape(n, 1, -1).expand_as(pieces).to(canvas.device)
    canvas.view(n, -1, height * width).scatter_reduce_(2, target, pieces, reduce="amax")  # max with the canvas
    return canvas, {"clutter_index": index, "clutter_crop": crop, "clutter_pos": pos}


def cluttered(
    images: Tensor,
    generator: torch.Generator,
    *,
    size: int = 60,
    num_clutter: int = 6,
    clutter_size: int = 6,
    clutter_pool: Tensor | None = None,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Params]:
    """TC (and the co-localisation sets): :func:`translated`, then :func:`add_clutter`.

    Args:
        clutter_pool: ``(M, h, w)`` digits the clutter is cropped from; default ``images`` themselves, each
            sample then never using its own digit. Pass the whole split (never the other split) with
            ``exclude`` = the pool index of each digit.

    Returns:
        ``out`` ``(N, 1, size, size)`` and the params of :func:`translated` and :func:`add_clutter`.
    """
    out, params = translated(images, generator, size=size)
    if clutter_pool is None:
        clutter_pool = images
        exclude = torch.arange(len(images))
    out, clutter_params = _add_clutter_(out, generator, clutter_pool, num_clutter, clutter_size, exclude)
    return out, {**params, **clutter_params}


def projective(
    images: Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.75, 1.0),
    corner_std: float = 5.0,
) -> tuple[Tensor, Params]:
    """P: scale about the centre by U(0.75, 1), then move each of the 4 image corners by N(0, 5 px).

    Returns:
        ``out`` ``(N, 1, H, W)`` and ``params``: ``scale`` ``(N,)``, ``corner_shift`` ``(N, 4, 2)`` pixels,
        ``corners`` ``(N, 4, 2)`` (x, y) where the source image's corners (top-left, top-right, bottom-left,
        bottom-right; pixel edges) land in the output, ``theta`` ``(N, 8)`` (projective, target -> source).
    """
    x = _as_float(images)
    _check_generator(generator)
    n, (height, width) = x.shape[0], x.shape[-2:]
    low, high = _check_range(scale, "scale")
    factor = _uniform(generator, (n,), low, high)
    shift = _normal(generator, (n, 4, 2), corner_std)
    to_norm = torch.tensor([2 / width, 2 / height], dtype=torch.float64)
    source = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    target = factor.view(-1, 1, 1) * source + shift * to_norm
    theta = _homography(target, source.expand_as(target)).float()
    out = warp(x, theta.to(x.device), "projective")
    corners = (target + 1) / to_norm
    return out, {"scale": factor.float(), "corner_shift": shift.float(), "corners": corners.float(), "theta": theta}


def elastic(
    images: Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.75, 1.0),
    control_std: float = 1.5,
    k: int = 4,
) -> tuple[Tensor, Params]:
    """E: scale about the centre by U(0.75, 1), then move the ``k x k`` TPS control points by N(0, 1.5 px).

    The control points are the ``tps`` family's (a k x k grid over the whole image); θ holds their source
    positions: the scaled-back control point plus the shift.

    Returns:
        ``out`` ``(N, 1, H, W)`` and ``params``: ``scale`` ``(N,)``, ``control_shift`` ``(N, k*k, 2)`` pixels,
        ``theta`` ``(N, 2*k*k)`` (tps, target -> source).
    """
    x = _as_float(images)
    _check_generator(generator)
    n, (height, width) = x.shape[0], x.shape[-2:]
    low, high = _check_range(scale, "scale")
    tps = get_transform("tps", k=k)
    factor = _uniform(generator, (n,), low, high)
    shift = _normal(generator, (n, k * k, 2), control_std)
    to_norm = torch.tensor([2 / width, 2 / height], dtype=torch.float64)
    theta = (tps.control_points / factor.view(-1, 1, 1) + shift * to_norm).reshape(n, -1).float()
    out = warp(x, theta.to(x.device), tps)
    return out, {"scale": factor.float(), "control_shift": shift.float(), "theta": theta}


def addition(images: Tensor, generator: torch.Generator, **rts_options) -> tuple[Tensor, Params]:
    """Addition: RTS-distort two digits per sample independently, as two channels.

    Args:
        images: ``(N, 2, h, w)``: the two digits of each sample.
        **rts_options: passed to :func:`rts` (default canvas 42x42).

    Returns:
        ``out`` ``(N, 2, size, size)`` and the :func:`rts` params with a leading ``(N, 2)`` shape.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 2:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"addition takes images (N, 2, H, W), two digits per sample; got {shape}")
    n = images.shape[0]
    out, params = rts(images.reshape(2 * n, *images.shape[2:]), generator, **rts_options)
    return out.view(n, 2, *out.shape[2:]), {k: v.view(n, 2, *v.shape[1:]) for k, v in params.items()}


# variant name -> generator (coloc / coloc-tc are TC with an 84x84 canvas and 0 / 16 clutter pieces).
GENERATORS: dict[str, Callable[..., tuple[Tensor, Params]]] = {
    "r": rotated,
    "rts": rts,
    "p": projective,
    "e": elastic,
    "t": translated,
    "tc": cluttered,
    "addition": addition,
    "coloc": partial(translated, size=84),
    "coloc-tc": partial(cluttered, size=84, num_clutter=16),
}
