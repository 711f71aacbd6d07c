"""``nn.Module`` layer: spatial transformers, localisation nets and optimiser groups.

Example:
    >>> import torch
    >>> from stn.modules import FCLocalization, SpatialTransformer
    >>> st = SpatialTransformer(FCLocalization((1, 28, 28)), "projective")
    >>> x = torch.rand(4, 1, 28, 28)
    >>> torch.allclose(st(x), x, atol=1e-5)  # it starts at the identity
    True
"""

from stn.modules.compositional import CompositionalSpatialTransformer
from stn.modules.localization import ConvLocalization, FCLocalization
from stn.modules.param_groups import localization_parameters, param_groups
from stn.modules.spatial_transformer import ParallelSpatialTransformer, SpatialTransformer, ThetaRegressor

__all__ = [
    "CompositionalSpatialTransformer",
    "ConvLocalization",
    "FCLocalization",
    "ParallelSpatialTransformer",
    "SpatialTransformer",
    "ThetaRegressor",
    "localization_parameters",
    "param_groups",
]
