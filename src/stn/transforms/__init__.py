"""Families of T_θ, built by name.

Example:
    >>> from stn import transforms
    >>> t = transforms.get("tps", k=4)
    >>> t.num_params, transforms.names()[:3]
    (32, ['affine', 'affine3d', 'attention'])
"""

from __future__ import annotations

from functools import lru_cache

from stn.transforms.base import Transform
from stn.transforms.matrix import (
    Affine,
    Affine3d,
    Attention,
    MatrixTransform,
    Projective,
    Similarity,
    Translation,
)
from stn.transforms.tps import ThinPlateSpline

__all__ = [
    "Affine",
    "Affine3d",
    "Attention",
    "MatrixTransform",
    "Projective",
    "Similarity",
    "ThinPlateSpline",
    "Transform",
    "Translation",
    "get",
    "names",
    "resolve",
]

_FAMILIES: dict[str, type[Transform]] = {
    cls.name: cls for cls in (Translation, Attention, Similarity, Affine, Projective, ThinPlateSpline, Affine3d)
}


def names() -> list[str]:
    """Sorted names of the known families."""
    return sorted(_FAMILIES)


@lru_cache(maxsize=64)
def _build(name: str, options: tuple) -> Transform:
    return _FAMILIES[name](**dict(options))


def get(name: str, **options) -> Transform:
    """The family ``name`` built with ``options`` (e.g. ``get("tps", k=4, reg=0.0)``).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        TypeError: an option the family does not take.
    """
    if not isinstance(name, str) or name.lower() not in _FAMILIES:
        raise KeyError(f"unknown transform {name!r}; known transforms: {', '.join(names())}")
    return _build(name.lower(), tuple(sorted(options.items())))


def resolve(transform: str | Transform) -> Transform:
    """A Transform from a name or a Transform."""
    if isinstance(transform, Transform):
        return transform
    if isinstance(transform, str):
        return get(transform)
    raise TypeError(f"transform must be a name or a stn.transforms.Transform, got {type(transform).__name__}")
