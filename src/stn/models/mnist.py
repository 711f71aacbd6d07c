"""The distorted-MNIST models of the paper's Table 1 (section 4.1): FCN, CNN, ST-FCN and ST-CNN.

Every classification network has three weight layers and ReLU non-linearities:

* **FCN**: ``Linear(in, h) -> Linear(h, h) -> Linear(h, classes)``;
* **CNN**: ``conv 9x9 (c1) -> 2x2 max-pool -> conv 7x7 (c2) -> 2x2 max-pool -> Linear(classes)`` with
  ``c1 = ceil(c2 / 2)``. The convolutions are *valid* (unpadded), as in the paper's Torch models; an input smaller
  than MNIST's 28x28 (the half-resolution transformer output on RTS, 21x21) is zero-padded by the first
  convolution so that the stack still fits and its later feature maps are as large as for a 28x28 input.

The widths ``h`` / ``c2`` are solved for so that every model of an experiment has about ``target_params``
parameters **including** its localisation net (the paper compares models of equal size; its nets have about
400k). ST-FCN models put a spatial transformer with :class:`stn.FCLocalization` (32-unit layers) in front of
the FCN; ST-CNN models one with :class:`stn.ConvLocalization` (2x max-pool, two 5x5 convs with 20 filters,
20-unit FC layer). The regression layer starts at the identity. The transformer is affine (``aff``,
6 parameters), projective (``proj``, 8) or a 16-point thin plate spline (``tps``, 32).

On inputs larger than 28x28 (RTS 42x42, T/TC 60x60) the transformer's output is **average-pooled 2x** before
the classifier (``downsample``): the transformer can zoom in on the digit, so the classifier works at half
resolution. Average pooling of a full-resolution output was chosen over a smaller ``out_size`` because a
zoomed-in transformer sampling a coarse grid would skip input pixels (aliasing), while the pool lets every
sampled pixel contribute. The baselines FCN and CNN see the full-resolution input.

Inputs are images in ``[0, 1]`` with background 0 and are not mean-normalised, so the transformer's zero
padding equals the background.

Example:
    >>> import torch
    >>> from stn.models import create_model
    >>> model = create_model("st-cnn-aff", in_shape=(1, 42, 42))
    >>> model(torch.rand(8, 1, 42, 42)).shape
    torch.Size([8, 10])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from stn.models.registry import register_model
from stn.modules import CompositionalSpatialTransformer, ConvLocalization, FCLocalization, SpatialTransformer
from stn.modules.conv import Conv2d
from stn.transforms import get as get_transform

__all__ = [
    "DEFAULT_TARGET_PARAMS",
    "MNIST_MEAN",
    "MNIST_STD",
    "TRANSFORMS",
    "DigitClassifier",
    "Standardize",
    "cnn_classifier",
    "count_parameters",
    "fcn_classifier",
    "ic_mnist_model",
    "mnist_model",
    "solve_width",
]

DEFAULT_TARGET_PARAMS = 400_000
# Short names used in model names ("st-cnn-aff") -> transform family of stn.transforms.
TRANSFORMS: dict[str, str] = {"aff": "affine", "proj": "projective", "tps": "tps"}
_TPS_POINTS_PER_SIDE = 4  # 16 control points, as in the paper
_MNIST_SIDE = 28


# Pixel statistics of the MNIST training digits in [0, 1] (the usual constants).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed constants: what a fully connected net needs to learn at a useful rate.

    Raw digits are ~80% exact zeros with mean 0.13: an MLP's first layer then sees badly conditioned inputs and
    learns slowly (results/fcn-study). Put it in front of the localisation net and the classifier, never in front
    of the sampler, so that the transformer's zero padding still equals the background.

    Example:
        >>> import torch
        >>> from stn.models.mnist import Standardize
        >>> Standardize(0.5, 0.25)(torch.tensor([0.0, 0.5, 1.0]))
        tensor([-2.,  0.,  2.])
    """

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"Standardize needs a finite mean and a finite std > 0, got mean={mean}, std={std}")
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def count_parameters(module: nn.Module) -> int:
    """Number of learnable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class DigitClassifier(nn.Module):
    """``[spatial transformer] -> [2x average pool] -> classifier``: the shape of every Table 1 model.

    Args:
        classifier: maps ``(B, C, H', W')`` to logits ``(B, classes)``.
        transformer: optional spatial transformer applied first (a :class:`stn.SpatialTransformer` or any module
            such as :class:`stn.ParallelSpatialTransformer`).
        downsample: average-pooling factor between transformer and classifier (1 = none).
        in_shape: the ``(C, H, W)`` (or ``(C, D, H, W)``) the model was built for; inputs of another shape are
            refused with a ``ValueError`` naming both (None: no check).

    Shapes: ``(B, C, H, W) -> (B, classes)``.
    """

    def __init__(
        self,
        classifier: nn.Module,
        transformer: nn.Module | None = None,
        downsample: int = 1,
        *,
        in_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be a positive int, got {downsample}")
        self.transformer = transformer
        self.pool = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        self.classifier = classifier
        self.in_shape = None if in_shape is None else tuple(int(s) for s in in_shape)

    def forward(self, x: Tensor) -> Tensor:
        # Not while tracing: the check would be baked into the export as a constant.
        if self.in_shape is not None and not torch.jit.is_tracing() and tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"this model takes inputs (B, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        if self.transformer is not None:
            x = self.transformer(x)
        return self.classifier(self.pool(x))


def fcn_classifier(in_shape: Sequence[int], num_classes: int, hidden: int) -> nn.Sequential:
    """The FCN: three fully connected layers ``in -> hidden -> hidden -> num_classes``; ``(B, C, H, W) -> (B, K)``."""
    features = math.prod(in_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def cnn_classifier(in_shape: Sequence[int], num_classes: int, channels: int) -> nn.Sequential:
    """The CNN: ``conv 9x9 -> pool -> conv 7x7 -> pool -> linear`` with ``ceil(channels/2)`` then ``channels``
    filters; valid convolutions, the first one padded on inputs smaller than 28x28. ``(B, C, H, W) -> (B, K)``."""
    c, h, w = in_shape
    pad = max(0, math.ceil((_MNIST_SIDE - min(h, w)) / 2))
    c1 = math.ceil(channels / 2)

    def out_side(side: int) -> int:
        return ((side + 2 * pad - 8) // 2 - 6) // 2

    return nn.Sequential(
        Conv2d(c, c1, 9, padding=pad),  # an ST-CNN back-propagates through it to θ: see stn.modules.conv
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, channels, 7),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * out_side(h) * out_side(w), num_classes),
    )


def solve_width(build: Callable[[int], nn.Module], target: int) -> int:
    """The width ``w >= 1`` whose ``build(w)`` has the parameter count closest to ``target`` (built on the meta
    device, so nothing is allocated or initialised)."""

    def params(width: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(width))

    low, high = 1, 2
    while params(high) < target:
        low, high = high, high * 2
    while high - low > 1:  # invariant: params(low) < target <= params(high), or low == 1
        mid = (low + high) // 2
        low, high = (mid, high) if params(mid) < target else (low, mid)
    return min((low, high), key=lambda w: abs(params(w) - target))


def _check_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {tuple(in_shape)}")
    return shape  # type: ignore[return-value]


def mnist_model(
    kind: str,
    transform: str | None = None,
    *,
    in_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    target_params: int = DEFAULT_TARGET_PARAMS,
    width: int | None = None,
    downsample: int | None = None,
    standardize: bool = False,
) -> DigitClassifier:
    """Build a Table 1 model.

    Args:
        kind: ``"fcn"`` or ``"cnn"`` (the classifier, and the localisation net: FC for ST-FCN, conv for ST-CNN).
        transform: ``None`` for the baseline, else ``"aff"``, ``"proj"`` or ``"tps"``.
        in_shape: input ``(C, H, W)``.
        num_classes: classifier outputs.
        target_params: total parameter count the width is solved for (ignored when ``width`` is given).
        width: the FCN's hidden units / the CNN's second-layer filters, instead of solving for it.
        downsample: average pool between transformer and classifier; default 2 for inputs larger than 28x28
            with a transformer, else 1.
        standardize: put :class:`Standardize` (MNIST's mean and std) in front of the localisation net and the
            classifier; the sampler still reads the raw image. Off in the paper's models; the FCN family needs
            it to learn at a useful rate (results/fcn-study).

    Example:
        >>> from stn.models.mnist import mnist_model
        >>> mnist_model("cnn", "tps", in_shape=(1, 60, 60)).pool
        AvgPool2d(kernel_size=2, stride=2, padding=0)
    """
    c, h, w = _check_shape(in_shape)
    if kind not in ("fcn", "cnn"):
        raise ValueError(f"kind must be 'fcn' or 'cnn', got {kind!r}")
    if transform is not None and transform not in TRANSFORMS:
        raise ValueError(f"transform must be None or one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if downsample is None:
        downsample = 2 if transform is not None and min(h, w) > _MNIST_SIDE else 1
    if downsample < 1:
        raise ValueError(f"downsample must be a positive int, got {downsample}")
    transformer = None
    if transform is not None:
        loc = FCLocalization((c, h, w), hidden=(32, 32)) if kind == "fcn" else ConvLocalization(c)
        if standardize:
            loc = nn.Sequential(Standardize(), loc)
        family = TRANSFORMS[transform]
        options = {"k": _TPS_POINTS_PER_SIDE} if family == "tps" else {}
        transformer = SpatialTransformer(loc, get_transform(family, **options))
    cls_shape = (c, h // downsample, w // downsample)
    make = fcn_classifier if kind == "fcn" else cnn_classifier
    if width is None:
        fixed = 0 if transformer is None else count_parameters(transformer)
        width = solve_width(lambda n: make(cls_shape, num_classes, n), target_params - fixed)
        if width == 1:
            raise ValueError(
                f"target_params={target_params} leaves no room for the classifier (the spatial "
                f"transformer alone has {fixed} parameters)"
            )
    classifier = make(cls_shape, num_classes, width)
    if standardize:
        classifier = nn.Sequential(Standardize(), classifier)
    return DigitClassifier(classifier, transformer, downsample, in_shape=(c, h, w))


def ic_mnist_model(transform: str, *, steps: int = 4, **kwargs) -> DigitClassifier:
    """An ST-CNN of Table 1 whose transformer refines θ over ``steps`` looks (IC-STN, Lin & Lucey 2017; see
    :class:`stn.CompositionalSpatialTransformer`). The steps share the ST-CNN's localisation net and regression
    layer, so the model has the ST-CNN's parameters, count and classifier; only its forward pass differs.

    Args:
        transform: ``"aff"``, ``"proj"`` or ``"tps"``.
        steps: K, the number of updates of θ (1 computes what the ST-CNN does).
        **kwargs: :func:`mnist_model`'s keyword arguments.

    Example:
        >>> from stn.models.mnist import count_parameters, ic_mnist_model, mnist_model
        >>> ic, st = ic_mnist_model("aff", in_shape=(1, 42, 42)), mnist_model("cnn", "aff", in_shape=(1, 42, 42))
        >>> ic.transformer.steps, count_parameters(ic) == count_parameters(st)
        (4, True)
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    model = mnist_model("cnn", transform, **kwargs)
    model.transformer = CompositionalSpatialTransformer.from_transformer(model.transformer, steps)
    return model


def _register(name: str, kind: str, transform: str | None) -> None:
    def factory(**kwargs) -> DigitClassifier:
        return mnist_model(kind, transform, **kwargs)

    factory.__doc__ = f"The paper's {name.upper()} (see :func:`mnist_model` for the keyword arguments)."
    # mnist_model's keyword arguments, so that create_model records their defaults in checkpoints too
    factory.__signature__ = inspect.signature(mnist_model).replace(parameters=_MODEL_PARAMETERS)
    register_model(name)(factory)


def _register_ic(transform: str) -> None:
    def factory(**kwargs) -> DigitClassifier:
        return ic_mnist_model(transform, **kwargs)

    factory.__doc__ = f"ST-CNN {transform} refined over K steps (see :func:`ic_mnist_model`)."
    steps = inspect.signature(ic_mnist_model).parameters["steps"]
    factory.__signature__ = inspect.signature(mnist_model).replace(parameters=[steps, *_MODEL_PARAMETERS])
    register_model(f"ic-st-cnn-{transform}")(factory)


_MODEL_PARAMETERS = list(inspect.signature(mnist_model).parameters.values())[2:]
for _kind in ("fcn", "cnn"):
    _register(_kind, _kind, None)
    for _short in TRANSFORMS:
        _register(f"st-{_kind}-{_short}", _kind, _short)
for _short in ("aff", "proj"):
    _register_ic(_short)
