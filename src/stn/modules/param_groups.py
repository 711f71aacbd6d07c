"""Optimiser parameter groups that let localisation nets learn at their own rate."""

from __future__ import annotations

from torch import nn

from stn.modules.spatial_transformer import ParallelSpatialTransformer, SpatialTransformer

__all__ = ["localization_parameters", "param_groups"]


def localization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of every spatial transformer's localisation net and θ regression layer in ``model``.

    Example:
        >>> from torch import nn
        >>> from stn.modules import FCLocalization, SpatialTransformer, localization_parameters
        >>> st = SpatialTransformer(FCLocalization((1, 28, 28), hidden=(32,)), "affine")
        >>> model = nn.Sequential(st, nn.Flatten(), nn.Linear(28 * 28, 10))
        >>> [tuple(p.shape) for p in localization_parameters(model)]  # Linear(784, 32), then the θ layer
        [(32, 784), (32,), (6, 32), (6,)]
    """
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, (SpatialTransformer, ParallelSpatialTransformer)):
            for p in [*module.localization.parameters(), *module.head.parameters()]:
                seen.setdefault(id(p), p)
    return list(seen.values())


def param_groups(model: nn.Module, lr: float, localization_lr_scale: float = 1.0) -> list[dict]:
    """Two groups for ``torch.optim``: the localisation parameters at ``lr * localization_lr_scale``, the rest
    at ``lr``. The paper trains localisation nets at 1/10 of the base rate on SVHN and lower on CUB.

    Args:
        model: any module; its spatial transformers' localisation nets and θ regression layers form the
            ``"localization"`` group, every other parameter the ``"base"`` group.
        lr: the base learning rate.
        localization_lr_scale: factor applied to ``lr`` for the localisation group.

    Returns:
        ``[{"params", "lr", "name": "base"}, {"params", "lr", "name": "localization"}]``, leaving out an empty
        group.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from stn.modules import ConvLocalization, SpatialTransformer, param_groups
        >>> st = SpatialTransformer(ConvLocalization(1), "affine")
        >>> model = nn.Sequential(st, nn.Flatten(), nn.Linear(28 * 28, 10))
        >>> opt = torch.optim.SGD(param_groups(model, lr=0.01, localization_lr_scale=0.1), lr=0.01)
        >>> [(group["name"], group["lr"]) for group in opt.param_groups]
        [('base', 0.01), ('localization', 0.001)]
    """
    loc = localization_parameters(model)
    loc_ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups = [
        {"params": rest, "lr": lr, "name": "base"},
        {"params": loc, "lr": lr * localization_lr_scale, "name": "localization"},
    ]
    return [g for g in groups if g["params"]]
