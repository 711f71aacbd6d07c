"""``nn.Module`` layer: spatial transformers, localisation nets and optimiser groups."""

from stn.modules.localization import ConvLocalization, FCLocalization
from stn.modules.param_groups import localization_parameters, param_groups
from stn.modules.spatial_transformer import ParallelSpatialTransformer, SpatialTransformer, ThetaRegressor

__all__ = [
    "ConvLocalization",
    "FCLocalization",
    "ParallelSpatialTransformer",
    "SpatialTransformer",
    "ThetaRegressor",
    "localization_parameters",
    "param_groups",
]
