"""Spatial transformer modules: localisation net -> θ regression -> grid generator -> sampler.

Non-finite θ: a localisation net that diverged (too high a learning rate, inputs holding NaN or inf) regresses
NaN or infinite θ, whose grid reads NaN, and the loss turns NaN with no word of why. By default the modules do
not look (a check costs a device synchronisation every forward, and compiled or traced graphs cannot raise);
``check_finite=True``, or the environment variable ``STN_CHECK_FINITE=1`` when the module is built, makes the
eager forward raise a ``ValueError`` naming the transformer and the samples whose θ is not finite, before
anything is sampled. Compiled (``torch.compile``), traced, scripted and exported forwards skip the check. The
trainer's θ diagnostics record the fraction of non-finite θ every epoch (``<transformer>.nonfinite_frac``).

Example:
    >>> import torch
    >>> from stn.modules import ConvLocalization, SpatialTransformer
    >>> st = SpatialTransformer(ConvLocalization(1), "affine", check_finite=True)
    >>> x = torch.rand(4, 1, 28, 28)
    >>> x[2, 0, 5, 5] = float("nan")  # a corrupt input: the localisation net regresses NaN for sample 2
    >>> st(x)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: SpatialTransformer: θ is NaN or infinite for sample(s) [2] of 4 (the localisation net's ...
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stn.antialias import supersample
from stn.coords import check_size
from stn.functional import Fill, _check_finite_default, _raise_if_not_finite, sample
from stn.transforms import Transform, resolve

__all__ = ["ParallelSpatialTransformer", "SpatialTransformer", "ThetaRegressor"]


def _feature_width(localization: nn.Module, in_features: int | None) -> int:
    if in_features is not None:
        return in_features
    width = getattr(localization, "out_features", None)
    if isinstance(width, int):
        return width
    linears = [m for m in localization.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    raise ValueError(
        "cannot tell the localisation net's output width: pass in_features, or give the net an `out_features` attribute"
    )


class ThetaRegressor(nn.Module):
    """The regression layer that turns localisation features ``(B, F)`` into θ ``(B, N, P)`` for N transformers.

    Initialised so that every transformer starts at ``init_theta`` (default: the identity): zero weights, and a
    bias equal to ``init_theta`` (absolute mode) or zero (``residual=True``, θ = init_theta + output, so a zero
    output means "no change" whatever the scale of the features).

    Bounds, both optional, against the classic failure modes (the transformer flies off the image, collapses to
    a point or zooms out until the object is lost):

    * ``max_translation=b``: the translation entries (for TPS, every control point) move at most ``b`` from their
      initial value, ``θ_i = init_i + b * tanh((θ_i - init_i) / b)`` (slope 1 near the start). Use when the
      object must stay in view.
    * ``scale_range=(lo, hi)``: clamps the isotropic scale (attention and similarity only). ``lo == hi`` fixes it,
      as in the paper's CUB attention transformers (fixed scale, learnt translation).

    Args:
        in_features: F, the width of the localisation features.
        transform: the family of θ.
        num_transformers: N.
        residual: θ = init_theta + output instead of output (whose bias starts at init_theta).
        max_translation: the bound ``b`` on the translation entries' distance from their start (see above).
        scale_range: ``(lo, hi)`` of the isotropic scale (see above).
        init_theta: ``(P,)`` or ``(N, P)`` starting θ; default the identity.

    Example:
        >>> import torch
        >>> from stn import transforms
        >>> from stn.modules import ThetaRegressor
        >>> head = ThetaRegressor(20, transforms.get("attention"), scale_range=(0.5, 0.5))
        >>> head(torch.rand(4, 20))[0]  # (B, N, P); the scale is fixed at 0.5, the translation starts at 0
        tensor([[0.5000, 0.0000, 0.0000]], grad_fn=<SelectBackward0>)
    """

    def __init__(
        self,
        in_features: int,
        transform: Transform,
        num_transformers: int = 1,
        *,
        residual: bool = False,
        max_translation: float | None = None,
        scale_range: tuple[float, float] | None = None,
        init_theta: Tensor | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        p = transform.num_params
        if init_theta is None:
            init = transform.identity_params().to(torch.get_default_dtype()).expand(num_transformers, p)
        else:
            init = torch.as_tensor(init_theta, dtype=torch.get_default_dtype())
            if init.shape not in ((p,), (num_transformers, p)):
                raise ValueError(
                    f"init_theta must have shape ({p},) or ({num_transformers}, {p}), got {tuple(init.shape)}"
                )
            init = init.expand(num_transformers, p)
        if scale_range is not None:
            if not transform.has_scale:
                transform.clamp_scale(init, *scale_range)  # raises the family's explanation
            if not 0 < scale_range[0] <= scale_range[1]:
                raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if max_translation is not None and max_translation <= 0:
            raise ValueError(f"max_translation must be positive, got {max_translation}")
        self.transform = transform
        self.num_transformers = num_transformers
        self.residual = residual
        self.max_translation = max_translation
        self.scale_range = scale_range
        self.register_buffer("init_theta", init.clone())
        self.linear = nn.Linear(in_features, num_transformers * p)
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.bias.copy_(init.reshape(-1) * (not residual))

    def forward(self, features: Tensor) -> Tensor:
        # explicit sizes: an empty batch (B = 0) has no elements to infer a -1 from
        theta = self.linear(features).view(features.shape[0], self.num_transformers, self.transform.num_params)
        if self.residual:
            theta = theta + self.init_theta
        if self.max_translation is not None:
            idx = list(self.transform.translation_index)
            init = self.init_theta[:, idx]
            bound = self.max_translation
            bounded = init + bound * torch.tanh((theta[..., idx] - init) / bound)
            theta = theta.index_copy(2, torch.tensor(idx, device=theta.device), bounded)
        if self.scale_range is not None:
            flat = self.transform.clamp_scale(theta.flatten(0, 1), *self.scale_range)
            theta = flat.view_as(theta)
        return theta


def _in_grid_dtype(theta: Tensor) -> Tensor:
    """θ in the dtype grids are computed in: its own if float32 or float64, else float32 (see stn.functional)."""
    return theta if theta.dtype in (torch.float32, torch.float64) else theta.float()


class _TransformerBase(nn.Module):
    def __init__(
        self,
        transform: str | Transform,
        out_size: int | Sequence[int] | None,
        mode: str,
        padding_mode: str,
        fill: Fill | None,
        check_finite: bool | None,
        antialias: bool,
    ) -> None:
        super().__init__()
        self.transform = resolve(transform)
        self.out_size = None if out_size is None else check_size(out_size, self.transform.ndim)
        self.mode = mode
        self.padding_mode = padding_mode
        self.fill = fill
        self.check_finite = bool(_check_finite_default() if check_finite is None else check_finite)
        self.antialias = antialias

    def _check_finite(self, theta: Tensor) -> None:
        """Raise when θ ``(B, P)`` or ``(B, N, P)`` is NaN or infinite (eager forwards with check_finite only)."""
        if self.check_finite:
            _raise_if_not_finite(
                theta,
                type(self).__name__,
                "the localisation net's input holds NaN/inf, or the net diverged: lower the learning rate, or "
                "bound θ with max_translation / scale_range",
            )

    def _grid(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor | None]:
        """The grid of θ ``(B, P)`` and, where the padding would not read 0 there, the mask of target points
        without a source point (see :meth:`stn.transforms.Transform.valid_mask`)."""
        return self._grid_at(_in_grid_dtype(theta), self.out_size or tuple(x.shape[2:]))

    def _grid_at(self, theta: Tensor, size: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
        valid = None if self.padding_mode == "zeros" else self.transform.valid_mask(theta, size)
        return self.transform.grid(theta, size), valid

    def _sample(self, x: Tensor, grid: Tensor, valid: Tensor | None) -> Tensor:
        return sample(x, grid, mode=self.mode, padding_mode=self.padding_mode, fill=self.fill, valid=valid)

    def _read(self, x: Tensor, theta: Tensor, size: tuple[int, ...]) -> Tensor:
        """The plain warp of ``x`` by θ ``(B, P)`` onto ``size``: what :func:`stn.antialias.supersample` reads."""
        return self._sample(x, *self._grid_at(theta, size))

    def _antialiased(self, x: Tensor, theta: Tensor) -> Tensor:
        """The warp of ``x`` by θ ``(B, P)``, supersampled where it shrinks (``antialias=True``)."""
        size = self.out_size or tuple(x.shape[2:])
        return supersample(x, _in_grid_dtype(theta), self.transform, size, self._read)

    def extra_repr(self) -> str:
        return f"transform={self.transform.name!r}, out_size={self.out_size}{', antialias=True' * self.antialias}"


class SpatialTransformer(_TransformerBase):
    """A spatial transformer: ``x -> localisation net -> θ -> T_θ(G) -> sample(x)``.

    Goes at the input or on any feature map; the same module handles volumes with ``transform="affine3d"``.

    Args:
        localization: any module mapping the input ``(B, C, H, W)`` (3-D ``(B, C, D, H, W)``) to ``(B, F)``.
        transform: family name or Transform (``"affine"``, ``"projective"``, ``"tps"``, ``"attention"``, ...).
        out_size: output ``(H, W)`` (3-D ``(D, H, W)``); defaults to the input's spatial size.
        in_features: F; default ``localization.out_features`` or its last ``nn.Linear``'s width.
        residual: predict θ as a change from ``init_theta`` (see :class:`ThetaRegressor`).
        max_translation: bound on how far the translation moves from its start (see :class:`ThetaRegressor`).
        scale_range: ``(lo, hi)`` clamp of the isotropic scale; ``lo == hi`` fixes it (attention, similarity).
        init_theta: ``(P,)`` starting θ; default the identity.
        mode: interpolation, see :func:`stn.sample`.
        padding_mode: what is read outside the input, see :func:`stn.sample`.
        fill: the constant read outside the input (the image background), see :func:`stn.sample`.
        check_finite: raise a ``ValueError`` naming the samples whose θ is NaN or infinite (eager forwards;
            default: the environment variable ``STN_CHECK_FINITE=1``). See the module docstring.
        antialias: supersample the samples whose θ shrinks the input, so that the output does not alias; those
            that do not shrink are sampled exactly as without (see :mod:`stn.antialias`, and its cost).

    Example:
        >>> import torch
        >>> from stn.modules import ConvLocalization, SpatialTransformer
        >>> st = SpatialTransformer(ConvLocalization(1), "affine", out_size=(21, 21))
        >>> y, theta = st(torch.rand(8, 1, 42, 42), return_theta=True)
        >>> y.shape, theta.shape
        (torch.Size([8, 1, 21, 21]), torch.Size([8, 6]))
    """

    def __init__(
        self,
        localization: nn.Module,
        transform: str | Transform = "affine",
        out_size: int | Sequence[int] | None = None,
        *,
        in_features: int | None = None,
        residual: bool = False,
        max_translation: float | None = None,
        scale_range: tuple[float, float] | None = None,
        init_theta: Tensor | Sequence[float] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        fill: Fill | None = None,
        check_finite: bool | None = None,
        antialias: bool = False,
    ) -> None:
        super().__init__(transform, out_size, mode, padding_mode, fill, check_finite, antialias)
        self.localization = localization
        self.head = ThetaRegressor(
            _feature_width(localization, in_features),
            self.transform,
            residual=residual,
            max_translation=max_translation,
            scale_range=scale_range,
            init_theta=init_theta,
        )

    def localize(self, x: Tensor) -> Tensor:
        """θ for each input: ``(B, P)``."""
        return self.head(self.localization(x))[:, 0]

    def forward(self, x: Tensor, return_theta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The warped input ``(B, C, *out_size)``, or ``(output, θ (B, P))`` with ``return_theta=True``."""
        theta = self.localize(x)
        self._check_finite(theta)
        out = self._antialiased(x, theta) if self.antialias else self._sample(x, *self._grid(x, theta))
        return (out, theta) if return_theta else out


class ParallelSpatialTransformer(_TransformerBase):
    """N spatial transformers on one input (the paper's 2x / 4x ST-CNN on CUB, ST-FCN pairs on MNIST addition).

    With one ``localization`` module, the net is shared and one regression layer outputs N θ's; with a list of N
    modules, each transformer has its own net. All N outputs come from a single sampling call on the one input
    (their grids are stacked along the height axis), so the input is never copied N times.

    Args:
        localization: a module, or a sequence of ``num_transformers`` modules.
        num_transformers: N (inferred from the list when a list is given).
        transform: family name or Transform, as in :class:`SpatialTransformer`.
        out_size: output ``(H, W)`` of every transformer (3-D ``(D, H, W)``); defaults to the input's size.
        in_features: F of the localisation features, as in :class:`SpatialTransformer`.
        concat: return ``(B, N*C, *out_size)`` (outputs concatenated along channels, transformer-major) instead
            of a list of N ``(B, C, *out_size)`` tensors.
        residual: as in :class:`SpatialTransformer`.
        max_translation: as in :class:`SpatialTransformer`.
        scale_range: as in :class:`SpatialTransformer`.
        init_theta: ``(P,)`` or ``(N, P)``; e.g. different starting crops for each transformer.
        mode: as in :class:`SpatialTransformer`.
        padding_mode: as in :class:`SpatialTransformer`.
        fill: as in :class:`SpatialTransformer`.
        check_finite: as in :class:`SpatialTransformer`.
        antialias: as in :class:`SpatialTransformer`; each transformer is then sampled in its own call.

    Example:
        >>> import torch
        >>> from stn.modules import ConvLocalization, ParallelSpatialTransformer
        >>> pst = ParallelSpatialTransformer(ConvLocalization(3), 2, "attention", (48, 48), scale_range=(0.5, 0.5))
        >>> crops, theta = pst(torch.rand(2, 3, 96, 96), return_theta=True)  # two half-size crops per image
        >>> len(crops), crops[0].shape, theta.shape
        (2, torch.Size([2, 3, 48, 48]), torch.Size([2, 2, 3]))
    """

    def __init__(
        self,
        localization: nn.Module | Sequence[nn.Module],
        num_transformers: int | None = None,
        transform: str | Transform = "affine",
        out_size: int | Sequence[int] | None = None,
        *,
        in_features: int | None = None,
        concat: bool = False,
        residual: bool = False,
        max_translation: float | None = None,
        scale_range: tuple[float, float] | None = None,
        init_theta: Tensor | Sequence[float] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        fill: Fill | None = None,
        check_finite: bool | None = None,
        antialias: bool = False,
    ) -> None:
        super().__init__(transform, out_size, mode, padding_mode, fill, check_finite, antialias)
        shared = isinstance(localization, nn.Module)
        nets = [localization] if shared else list(localization)
        n = num_transformers if num_transformers is not None else (None if shared else len(nets))
        if n is None or n < 1 or (not shared and n != len(nets)):
            raise ValueError(
                f"num_transformers must be >= 1 and match the number of localisation nets, got {num_transformers} "
                f"with {'one shared net' if shared else f'{len(nets)} nets'}"
            )
        self.num_transformers = n
        self.concat = concat
        self.shared = shared
        p = self.transform.num_params
        init = None if init_theta is None else torch.as_tensor(init_theta, dtype=torch.get_default_dtype()).expand(n, p)
        options = dict(residual=residual, max_translation=max_translation, scale_range=scale_range)
        self.localization = localization if shared else nn.ModuleList(nets)
        if shared:
            self.head = ThetaRegressor(
                _feature_width(localization, in_features), self.transform, n, init_theta=init, **options
            )
        else:
            self.head = nn.ModuleList(
                ThetaRegressor(
                    _feature_width(net, in_features),
                    self.transform,
                    init_theta=None if init is None else init[i],
                    **options,
                )
                for i, net in enumerate(nets)
            )

    def localize(self, x: Tensor) -> Tensor:
        """θ of every transformer: ``(B, N, P)``."""
        if self.shared:
            return self.head(self.localization(x))
        return torch.cat([head(net(x)) for net, head in zip(self.localization, self.head)], dim=1)

    def forward(
        self, x: Tensor, return_theta: bool = False
    ) -> list[Tensor] | Tensor | tuple[list[Tensor] | Tensor, Tensor]:
        theta = self.localize(x)
        self._check_finite(theta)
        b, n = theta.shape[:2]
        if self.antialias:
            out = torch.stack([self._antialiased(x, theta[:, i]) for i in range(n)], dim=1)  # (B, N, C, *out)
        else:
            grid, valid = self._grid(x, theta.flatten(0, 1))  # (B*N, *out, ndim), (B*N, *out) or None
            out_shape = grid.shape[1:-1]
            stacked = grid.reshape(b, n * out_shape[0], *out_shape[1:], grid.shape[-1])
            if valid is not None:
                valid = valid.reshape(stacked.shape[:-1])
            out = self._sample(x, stacked, valid)  # (B, C, N*out0, ...)
            out = out.view(b, out.shape[1], n, *out_shape).transpose(1, 2)  # (B, N, C, *out)
        result = out.flatten(1, 2) if self.concat else list(out.unbind(1))
        return (result, theta) if return_theta else result
