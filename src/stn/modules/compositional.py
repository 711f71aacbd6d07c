"""The compositional spatial transformer: θ refined over K steps, the output sampled once (the inverse
compositional STN, IC-STN, of Lin & Lucey, CVPR 2017).

At step k = 1..K the localisation net looks at the input warped by the current θ_{k-1} (θ_0 is the identity,
so step 1 sees the input itself) and regresses an update Δ_k, which is composed into θ:

* matrix families (``translation``, ``attention``, ``similarity``, ``affine``, ``projective``, ``affine3d``):
  ``θ_k = compose(θ_{k-1}, Δ_k)`` (:func:`stn.compose`), i.e. Δ_k warps further the view the net has just seen;
  this is IC-STN's rule, in stn's convention (θ maps output to input coordinates);
* ``tps``: ``θ_k = θ_{k-1} + (Δ_k - identity)``: the control points' source positions move by what Δ_k moves
  them (thin-plate splines are not closed under composition).

The output is sampled **once, from the original input**, with θ_K: only the views the localisation net reads
along the way are resampled, so undoing a large distortion in several steps costs no extra blur. The views are
sampled at the input's size (the size the localisation net takes), the output at ``out_size``. Every step starts
at "no change" (the regression layer's zero weights and identity bias), so the module starts at the identity, and
with ``steps=1`` it computes exactly what a :class:`~stn.modules.SpatialTransformer` with the same weights does.

By default one localisation net serves every step (IC-STN's weight sharing, and the parameter count of a
single-step transformer); a list of K nets gives each step its own (Lin & Lucey's "c-STN").

Example:
    >>> import torch
    >>> from stn.modules import CompositionalSpatialTransformer, ConvLocalization
    >>> ic = CompositionalSpatialTransformer(ConvLocalization(1), "affine", steps=3)
    >>> y, thetas = ic(torch.rand(8, 1, 28, 28), return_theta=True)
    >>> y.shape, thetas.shape  # every step's θ; the last is the one that sampled y
    (torch.Size([8, 1, 28, 28]), torch.Size([8, 3, 6]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stn.algebra import compose
from stn.functional import Fill
from stn.modules.spatial_transformer import SpatialTransformer, ThetaRegressor, _feature_width, _in_grid_dtype
from stn.transforms import MatrixTransform, Transform

__all__ = ["CompositionalSpatialTransformer"]


class CompositionalSpatialTransformer(SpatialTransformer):
    """A spatial transformer that refines θ over ``steps`` looks at the input (see the module docstring).

    Args:
        localization: a module mapping the input ``(B, C, H, W)`` (3-D ``(B, C, D, H, W)``) to ``(B, F)``, shared
            by every step; or a sequence of ``steps`` such modules, one per step.
        transform: family name or Transform; a matrix family, or ``"tps"`` (additive updates).
        out_size: output ``(H, W)`` (3-D ``(D, H, W)``); defaults to the input's spatial size.
        steps: K >= 1, the number of updates.
        in_features: F; default each net's ``out_features`` or its last ``nn.Linear``'s width.
        mode: interpolation, see :func:`stn.sample` (views and output alike).
        padding_mode: what is read outside the input, see :func:`stn.sample`.
        fill: the constant read outside the input, see :func:`stn.sample`.
        check_finite: as in :class:`~stn.modules.SpatialTransformer`, for every step's θ.
        antialias: supersample the output where θ_K shrinks the input (the views are read plainly).

    Shapes: ``(B, C, *in) -> (B, C, *out_size)``; ``return_theta=True`` also returns every step's θ ``(B, K, P)``.
    :meth:`localize` gives θ_K ``(B, P)``, so diagnostics and figures that replay θ see the output's warp.
    """

    def __init__(
        self,
        localization: nn.Module | Sequence[nn.Module],
        transform: str | Transform = "affine",
        out_size: int | Sequence[int] | None = None,
        *,
        steps: int = 4,
        in_features: int | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        fill: Fill | None = None,
        check_finite: bool | None = None,
        antialias: bool = False,
    ) -> None:
        shared = isinstance(localization, nn.Module)
        nets = [localization] if shared else list(localization)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if not shared and len(nets) != steps:
            raise ValueError(
                f"give one localisation net shared by every step, or {steps} (one a step), got {len(nets)}"
            )
        super().__init__(
            nets[0],
            transform,
            out_size,
            in_features=in_features,
            mode=mode,
            padding_mode=padding_mode,
            fill=fill,
            check_finite=check_finite,
            antialias=antialias,
        )
        self.steps = steps
        self.shared = shared
        if not shared:
            self.localization = nn.ModuleList(nets)
            self.head = nn.ModuleList(ThetaRegressor(_feature_width(n, in_features), self.transform) for n in nets)

    @classmethod
    def from_transformer(cls, transformer: SpatialTransformer, steps: int = 4) -> CompositionalSpatialTransformer:
        """A K-step transformer sharing ``transformer``'s localisation net and regression layer (the same
        parameters, not copies): e.g. to refine a trained ST-CNN's θ. Its sampling options are kept; a regression
        layer with bounds or a non-identity start is refused, since each step's update must start at "no change".
        """
        head = transformer.head
        bounded = head.residual or head.max_translation is not None or head.scale_range is not None
        if bounded or not torch.equal(head.init_theta[0], transformer.transform.identity_params().to(head.init_theta)):
            raise ValueError(
                "from_transformer needs a regression layer that starts at the identity, without residual, "
                "max_translation or scale_range: every step's update starts at 'no change'"
            )
        ic = cls(
            transformer.localization,
            transformer.transform,
            transformer.out_size,
            steps=steps,
            in_features=head.linear.in_features,
            mode=transformer.mode,
            padding_mode=transformer.padding_mode,
            fill=transformer.fill,
            check_finite=transformer.check_finite,
            antialias=transformer.antialias,
        )
        ic.head = head
        return ic

    def _update(self, k: int, view: Tensor) -> Tensor:
        """Δ_k ``(B, P)``: what step ``k`` (0-based) regresses from the view it is given."""
        if self.shared:
            return self.head(self.localization(view))[:, 0]
        return self.head[k](self.localization[k](view))[:, 0]

    def _composed(self, theta: Tensor, delta: Tensor) -> Tensor:
        if isinstance(self.transform, MatrixTransform):
            return compose(theta, delta, self.transform)
        return theta + (delta - self.transform.identity_params().to(delta))

    def localize_steps(self, x: Tensor) -> Tensor:
        """Every step's θ ``(B, K, P)``: θ_1 ... θ_K, the last the one the output is sampled with."""
        in_size = tuple(x.shape[2:])
        theta = self._update(0, x)  # θ_1 = Δ_1: composing with the identity θ_0 would only add rounding
        thetas = [theta]
        for k in range(1, self.steps):
            view = self._sample(x, *self._grid_at(_in_grid_dtype(theta), in_size))
            theta = self._composed(theta, self._update(k, view))
            thetas.append(theta)
        return torch.stack(thetas, dim=1)

    def localize(self, x: Tensor) -> Tensor:
        """θ_K for each input: ``(B, P)``."""
        return self.localize_steps(x)[:, -1]

    def forward(self, x: Tensor, return_theta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The input warped once by θ_K ``(B, C, *out_size)``, or ``(output, θ (B, K, P))`` with
        ``return_theta=True``."""
        thetas = self.localize_steps(x)
        self._check_finite(thetas)
        theta = thetas[:, -1]
        out = self._antialiased(x, theta) if self.antialias else self._sample(x, *self._grid(x, theta))
        return (out, thetas) if return_theta else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, steps={self.steps}{', shared=False' * (not self.shared)}"
