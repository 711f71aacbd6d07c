"""stn: Spatial Transformer Networks (Jaderberg, Simonyan, Zisserman, Kavukcuoglu, NIPS 2015) in PyTorch.

The three parts of the paper's module, bottom up:

* grid generator: :func:`sampling_grid` (families in :mod:`stn.transforms`),
* sampler: :func:`sample` (one ``grid_sample`` call), and :func:`warp` = both,
* localisation net + regression: :class:`SpatialTransformer`, :class:`ParallelSpatialTransformer`, and
  :class:`CompositionalSpatialTransformer` (θ refined over K steps, the output sampled once).

Warps as objects (:mod:`stn.algebra`): :func:`compose`, :func:`invert`, and :func:`transform_points` /
:func:`transform_boxes`, which carry pixel coordinates through a warp.

Coordinates follow :mod:`stn.coords` (``grid_sample(align_corners=False)``; θ maps target to source).
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module defining it. They are imported at first use (module __getattr__), so that
# `import stn`, and with it the `stn` command's start-up, costs almost nothing until the library is used.
_EXPORTS: dict[str, str] = {
    "coords": "stn.coords",
    "transforms": "stn.transforms",
    "sample": "stn.functional",
    "sampling_grid": "stn.functional",
    "warp": "stn.functional",
    "compose": "stn.algebra",
    "invert": "stn.algebra",
    "transform_boxes": "stn.algebra",
    "transform_points": "stn.algebra",
    "pixel_matrix_from_theta": "stn.interop",
    "spatial_transformer_from_tutorial": "stn.interop",
    "theta_from_pixel_matrix": "stn.interop",
    "CompositionalSpatialTransformer": "stn.modules",
    "ConvLocalization": "stn.modules",
    "FCLocalization": "stn.modules",
    "ParallelSpatialTransformer": "stn.modules",
    "SpatialTransformer": "stn.modules",
    "ThetaRegressor": "stn.modules",
    "localization_parameters": "stn.modules",
    "param_groups": "stn.modules",
}

__all__ = [
    "CompositionalSpatialTransformer",
    "ConvLocalization",
    "FCLocalization",
    "ParallelSpatialTransformer",
    "SpatialTransformer",
    "ThetaRegressor",
    "__version__",
    "compose",
    "coords",
    "invert",
    "localization_parameters",
    "param_groups",
    "pixel_matrix_from_theta",
    "sample",
    "sampling_grid",
    "spatial_transformer_from_tutorial",
    "theta_from_pixel_matrix",
    "transform_boxes",
    "transform_points",
    "transforms",
    "warp",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports the same names on demand
    from stn import coords, transforms
    from stn.algebra import compose, invert, transform_boxes, transform_points
    from stn.functional import sample, sampling_grid, warp
    from stn.interop import pixel_matrix_from_theta, spatial_transformer_from_tutorial, theta_from_pixel_matrix
    from stn.modules import (
        CompositionalSpatialTransformer,
        ConvLocalization,
        FCLocalization,
        ParallelSpatialTransformer,
        SpatialTransformer,
        ThetaRegressor,
        localization_parameters,
        param_groups,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stn' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module == f"stn.{name}" else getattr(imported, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
