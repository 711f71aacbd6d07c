"""θ diagnostics against the classic spatial-transformer failures: collapse (the sampling grid shrinks to a
point), zoom-out (the grid grows until the object is a speck) and blank outputs (the grid leaves the input).

Statistics are computed from the sampling grid ``T_θ(G)`` itself, so they mean the same for every family
(affine, projective, TPS...):

* ``scale``: the local linear scale ``|det J|^(1/n)`` of the grid (J its Jacobian, by finite differences),
  averaged over the grid: 1 for the identity, < 1 zooms in, > 1 zooms out, -> 0 is collapse;
* ``fold_frac``: fraction of the grid where ``det J < 0`` (the map folds over or mirrors);
* ``shift``: distance of the grid's centroid from the centre (normalised units; 1 = half the input);
* ``outside_frac``: fraction of grid points outside the input ``[-1, 1]^n`` (those read the padding).

Example:
    >>> import torch
    >>> from stn import sampling_grid
    >>> from stn.modules.diagnostics import grid_stats
    >>> theta = torch.tensor([[2.0, 0, 0, 0, 2.0, 0]])  # zoom out 2x
    >>> stats = grid_stats(sampling_grid(theta, "affine", (28, 28)))
    >>> round(stats["scale_mean"], 3), round(stats["outside_frac"], 2)
    (2.0, 0.75)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stn.functional import sampling_grid, warp
from stn.modules import CompositionalSpatialTransformer, ParallelSpatialTransformer, SpatialTransformer
from stn.transforms import Transform

__all__ = [
    "TransformerCapture",
    "apply_transformer",
    "capture_transformers",
    "grid_jacobian_det",
    "grid_stats",
    "theta_diagnostics",
    "transformer_modules",
]


def grid_jacobian_det(grid: Tensor) -> Tensor:
    """Determinant of the Jacobian of a sampling grid w.r.t. the target coordinates, by forward differences.

    Args:
        grid: ``(B, H, W, 2)`` (3-D ``(B, D, H, W, 3)``), every spatial size >= 2.

    Returns:
        ``(B, H-1, W-1)`` (3-D ``(B, D-1, H-1, W-1)``): 1 for the identity, the area ratio source / target.
    """
    n = grid.shape[-1]
    spatial = grid.shape[1:-1]
    if grid.dim() != n + 2 or min(spatial) < 2:
        raise ValueError(f"grid must be (B, *spatial, {n}) with every spatial size >= 2, got {tuple(grid.shape)}")
    crop = (slice(None), *(slice(0, s - 1) for s in spatial))
    columns = []
    for k in range(n):  # target coordinate k (x, y, z) runs along spatial dimension n - 1 - k
        dim = n - k
        step = 2.0 / grid.shape[dim]  # pixel pitch in normalised coordinates
        columns.append((torch.diff(grid, dim=dim) / step)[crop])
    return torch.linalg.det(torch.stack(columns, dim=-1).double()).to(grid.dtype)


def grid_stats(grid: Tensor) -> dict[str, float]:
    """Summary statistics of a batch of sampling grids (see the module docstring).

    Args:
        grid: ``(B, H, W, 2)`` or ``(B, D, H, W, 3)``.

    Returns:
        ``scale_mean``, ``scale_std`` (across the batch), ``scale_min``, ``scale_max``, ``fold_frac``,
        ``shift_mean``, ``outside_frac`` (over the grids whose values are all finite), and ``nonfinite_frac``:
        the share of grids with a NaN or infinite value (a diverged localisation net).
    """
    grid = grid.detach().float()
    n = grid.shape[-1]
    finite = grid.flatten(1).isfinite().all(1)
    nonfinite_frac = 1.0 - finite.float().mean().item()
    grid = grid[finite]
    if len(grid) == 0:  # every θ diverged: nothing left to measure
        nan = float("nan")
        stats = ("scale_mean", "scale_std", "scale_min", "scale_max", "fold_frac", "shift_mean", "outside_frac")
        return {**dict.fromkeys(stats, nan), "nonfinite_frac": nonfinite_frac}
    det = grid_jacobian_det(grid)
    per_image = det.abs().flatten(1).mean(1).pow(1.0 / n)
    shift = grid.flatten(1, -2).mean(1).norm(dim=-1)
    outside = (grid.abs() > 1).any(dim=-1).float().mean()
    return {
        "scale_mean": per_image.mean().item(),
        "scale_std": per_image.std(unbiased=False).item(),
        "scale_min": per_image.min().item(),
        "scale_max": per_image.max().item(),
        "fold_frac": (det < 0).float().mean().item(),
        "shift_mean": shift.mean().item(),
        "outside_frac": outside.item(),
        "nonfinite_frac": nonfinite_frac,
    }


def transformer_modules(model: nn.Module) -> dict[str, SpatialTransformer | ParallelSpatialTransformer]:
    """The (parallel) spatial transformers inside ``model`` by qualified name (``""`` for the model itself)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (SpatialTransformer, ParallelSpatialTransformer))
    }


@dataclass
class TransformerCapture:
    """What one spatial transformer did to a batch; N is 1 for a :class:`SpatialTransformer`, and K, its number of
    steps, for a :class:`CompositionalSpatialTransformer`: step k's θ, grid and output (the input warped by θ_k), the
    last of them the module's own output.

    Attributes:
        transform: its family.
        inputs: ``(B, C, H, W)`` what it received.
        theta: ``(B, N, P)``.
        grid: ``(B, N, h, w, 2)`` sampling grids in the input's normalised coordinates.
        outputs: ``(B, N, C, h, w)``.
        steps: whether the N are the steps of a :class:`CompositionalSpatialTransformer` (the last one its output)
            rather than N parallel transformers.
    """

    transform: Transform
    inputs: Tensor
    theta: Tensor
    grid: Tensor
    outputs: Tensor
    steps: bool = False


@torch.no_grad()
def apply_transformer(
    module: SpatialTransformer | ParallelSpatialTransformer, inputs: Tensor, theta: Tensor
) -> tuple[Tensor, Tensor]:
    """The grids and outputs of ``module`` for given θ: ``inputs (B, C, H, W)``, ``theta (B, N, P)`` ->
    ``grid (B, N, h, w, 2)``, ``outputs (B, N, C, h, w)`` (e.g. to replay the θ saved during training)."""
    b, n = theta.shape[:2]
    size = module.out_size or tuple(inputs.shape[2:])
    flat = theta.flatten(0, 1)
    grid = sampling_grid(flat, module.transform, size)
    out = warp(
        inputs.repeat_interleave(n, 0),
        flat,
        module.transform,
        size,
        mode=module.mode,
        padding_mode=module.padding_mode,
        fill=module.fill,
    )
    return grid.view(b, n, *grid.shape[1:]), out.view(b, n, *out.shape[1:])


@torch.no_grad()
def capture_transformers(model: nn.Module, x: Tensor) -> dict[str, TransformerCapture]:
    """Run ``model`` on ``x`` and record, for every spatial transformer inside it, its input, θ, grid and output.

    Example:
        >>> import torch
        >>> from stn.models import create_model
        >>> from stn.modules.diagnostics import capture_transformers
        >>> x = torch.rand(8, 1, 42, 42)
        >>> captures = capture_transformers(create_model("st-cnn-aff", in_shape=(1, 42, 42)), x)
        >>> captures["transformer"].theta.shape
        torch.Size([8, 1, 6])
    """
    modules = transformer_modules(model)
    inputs: dict[str, Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: inputs.setdefault(name, args[0]))
        for name, module in modules.items()
    ]
    was_training = model.training
    captures = {}
    try:
        model.eval()
        model(x)
        # still in eval mode: in training mode a localisation net's batch norm would update its running
        # statistics (and fail on a single image)
        for name, module in modules.items():
            if name not in inputs:
                continue
            inp = inputs[name]
            steps = isinstance(module, CompositionalSpatialTransformer)
            if steps:
                theta = module.localize_steps(inp)
            else:
                theta = module.localize(inp).view(inp.shape[0], -1, module.transform.num_params)
            captures[name] = TransformerCapture(
                module.transform, inp, theta, *apply_transformer(module, inp, theta), steps=steps
            )
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return captures


def theta_diagnostics(model: nn.Module, x: Tensor) -> dict[str, float]:
    """:func:`grid_stats` of every spatial transformer of ``model`` on the batch ``x``, as a flat dict with keys
    ``"<transformer name>.<stat>"`` (e.g. ``"transformer.scale_mean"``); empty for a model without one. For a
    :class:`CompositionalSpatialTransformer` these are of its output's warp (θ_K), and each earlier step k has its
    own, ``"<name>.step<k>.<stat>"``."""
    out = {}
    for name, capture in capture_transformers(model, x).items():
        prefix = name or "model"
        grids = {prefix: capture.grid.flatten(0, 1)}
        if capture.steps:
            grids = {f"{prefix}.step{k + 1}": capture.grid[:, k] for k in range(capture.grid.shape[1] - 1)}
            grids[prefix] = capture.grid[:, -1]
        for key, grid in grids.items():
            for stat, value in grid_stats(grid).items():
                out[f"{key}.{stat}"] = value
    return out
