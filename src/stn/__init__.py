"""stn: Spatial Transformer Networks (Jaderberg, Simonyan, Zisserman, Kavukcuoglu, NIPS 2015) in PyTorch.

The three parts of the paper's module, bottom up:

* grid generator: :func:`sampling_grid` (families in :mod:`stn.transforms`),
* sampler: :func:`sample` (one ``grid_sample`` call), and :func:`warp` = both,
* localisation net + regression: :class:`SpatialTransformer`, :class:`ParallelSpatialTransformer`.

Coordinates follow :mod:`stn.coords` (``grid_sample(align_corners=False)``; θ maps target to source).
"""

from stn import coords, transforms
from stn.functional import sample, sampling_grid, warp
from stn.interop import pixel_matrix_from_theta, spatial_transformer_from_tutorial, theta_from_pixel_matrix
from stn.modules import (
    ConvLocalization,
    FCLocalization,
    ParallelSpatialTransformer,
    SpatialTransformer,
    ThetaRegressor,
    localization_parameters,
    param_groups,
)

__version__ = "0.1.0"

__all__ = [
    "ConvLocalization",
    "FCLocalization",
    "ParallelSpatialTransformer",
    "SpatialTransformer",
    "ThetaRegressor",
    "__version__",
    "coords",
    "localization_parameters",
    "param_groups",
    "pixel_matrix_from_theta",
    "sample",
    "sampling_grid",
    "spatial_transformer_from_tutorial",
    "theta_from_pixel_matrix",
    "transforms",
    "warp",
]
