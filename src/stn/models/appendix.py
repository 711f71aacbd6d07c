"""Models of the paper's appendix experiments: MNIST addition, co-localisation and the 3-D transformer.

**MNIST addition** (Table 4; inputs ``(B, 2, 42, 42)``, one RTS digit per channel, 19 classes for the sums 0-18).
All models have about the same number of parameters (the Table 1 target, 400k, solved for by
:func:`stn.models.mnist.mnist_model`):

* ``add-fcn``, ``add-cnn``: the Table 1 FCN and CNN on the two-channel input;
* ``add-st-fcn-{aff,proj,tps}``: one spatial transformer (fully connected localisation net) that sees both
  channels and warps both with the same θ, then the FCN — the Table 1 ST-FCN on two channels;
* ``add-2xst-fcn-{aff,proj,tps}``: two spatial transformers in parallel, each with its own localisation net,
  each seeing both channels and warping both; their two 2-channel outputs are concatenated into a 4-channel map
  for the FCN (:class:`stn.ParallelSpatialTransformer` with ``concat=True``).

As in Table 1, the transformers' output is average-pooled 2x before the FCN.

**Co-localisation** (appendix, Table 5): ``coloc-st`` is the attention transformer (θ = scale, translation;
:func:`colocalization_localization` is the paper's localisation net: eight 9x9 convolutions with stride 4,
2x2 max-pooling, two fully connected layers) cropping a 28x28 window out of an 84x84 image, its scale fixed at the
digit's size and its centre inside the image;
``coloc-encoder`` is the embedding e() of the triplet loss: :class:`ActivationEncoder` over a digit classifier
(the Table 1 CNN), concatenating the activations of its two hidden layers and its logits.

**3-D transformer** (appendix): ``volume-st`` takes a volume ``(B, 1, 60, 60, 60)``, applies an ``affine3d``
transformer (a 3-D :class:`stn.ConvLocalization` on a 4x-downsampled volume) sampling a 30x30x30 output,
projects it along depth (:class:`DepthProjection`) into a 2-D image and classifies that with the Table 1 CNN;
``volume-cnn`` is the same without the transformer (the baseline: the projection of the posed digit).

Example:
    >>> import torch
    >>> from stn.models import create_model
    >>> model = create_model("add-2xst-fcn-aff")
    >>> model(torch.rand(4, 2, 42, 42)).shape
    torch.Size([4, 19])
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn.coords import check_size
from stn.models.mnist import (
    DEFAULT_TARGET_PARAMS,
    TRANSFORMS,
    DigitClassifier,
    Standardize,
    cnn_classifier,
    count_parameters,
    fcn_classifier,
    mnist_model,
    solve_width,
)
from stn.models.registry import create_model, register_model
from stn.modules import ConvLocalization, FCLocalization, ParallelSpatialTransformer, SpatialTransformer
from stn.transforms import Transform
from stn.transforms import get as get_transform

__all__ = [
    "ADDITION_CLASSES",
    "ADDITION_SHAPE",
    "ActivationEncoder",
    "DepthProjection",
    "addition_model",
    "colocalization_localization",
    "colocalization_transformer",
    "volume_model",
]

ADDITION_SHAPE = (2, 42, 42)
ADDITION_CLASSES = 19
# The 3-D experiment's volumes (stn.data.volumes.VOLUME_SHAPE; data sits above models, so the model cannot import
# it): 60x60x60 with the digit in a slab of 8 voxels, which the projection's default scale undoes.
_VOLUME_SHAPE = (1, 60, 60, 60)
_SLAB_DEPTH = 8
_TPS_POINTS_PER_SIDE = 4


def _transform(short: str) -> Transform:
    """``"aff"`` / ``"proj"`` / ``"tps"`` -> the Table 1 transform (TPS with 4x4 control points)."""
    if short not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {short!r}")
    family = TRANSFORMS[short]
    return get_transform(family, **({"k": _TPS_POINTS_PER_SIDE} if family == "tps" else {}))


# --- MNIST addition ------------------------------------------------------------------------------------------


def addition_model(
    kind: str,
    transform: str | None = None,
    *,
    in_shape: Sequence[int] = ADDITION_SHAPE,
    num_classes: int = ADDITION_CLASSES,
    target_params: int = DEFAULT_TARGET_PARAMS,
    width: int | None = None,
    standardize: bool = False,
) -> DigitClassifier:
    """Build a Table 4 model.

    Args:
        kind: ``"fcn"``, ``"cnn"``, ``"st-fcn"`` or ``"2xst-fcn"``.
        transform: for the ST models ``"aff"``, ``"proj"`` or ``"tps"``; ``None`` for FCN / CNN.
        in_shape: input ``(C, H, W)`` (two 42x42 channels in the paper).
        num_classes: 19 sums.
        target_params: total parameters the classifier width is solved for (ignored when ``width`` is given).
        width: the FCN's hidden units / the CNN's second-layer filters.
        standardize: :class:`~stn.models.mnist.Standardize` in front of every localisation net and the classifier
            (as in :func:`~stn.models.mnist.mnist_model`; off in the paper's models).

    Shapes: ``(B, C, H, W) -> (B, num_classes)``.
    """
    if kind in ("fcn", "cnn", "st-fcn"):
        if (transform is None) != (kind != "st-fcn"):
            raise ValueError(f"{kind!r} takes {'a' if kind == 'st-fcn' else 'no'} transform, got {transform!r}")
        return mnist_model(
            kind.removeprefix("st-"),
            transform,
            in_shape=in_shape,
            num_classes=num_classes,
            target_params=target_params,
            width=width,
            standardize=standardize,
        )
    if kind != "2xst-fcn":
        raise ValueError(f"kind must be 'fcn', 'cnn', 'st-fcn' or '2xst-fcn', got {kind!r}")
    if transform is None:
        raise ValueError("'2xst-fcn' needs a transform: 'aff', 'proj' or 'tps'")
    c, h, w = (int(s) for s in in_shape)
    nets = [FCLocalization((c, h, w), hidden=(32, 32)) for _ in range(2)]
    if standardize:
        nets = [nn.Sequential(Standardize(), net) for net in nets]
    transformer = ParallelSpatialTransformer(nets, 2, _transform(transform), concat=True)
    cls_shape = (2 * c, h // 2, w // 2)
    if width is None:
        budget = target_params - count_parameters(transformer)
        width = solve_width(lambda n: fcn_classifier(cls_shape, num_classes, n), budget)
    classifier = fcn_classifier(cls_shape, num_classes, width)
    if standardize:
        classifier = nn.Sequential(Standardize(), classifier)
    return DigitClassifier(classifier, transformer, 2, in_shape=(c, h, w))


def _register_addition(kind: str, transform: str | None) -> None:
    name = f"add-{kind}" + (f"-{transform}" if transform else "")

    def factory(**kwargs) -> DigitClassifier:
        return addition_model(kind, transform, **kwargs)

    factory.__doc__ = f"The MNIST-addition {name[4:].upper()} (see :func:`addition_model` for the keywords)."
    # addition_model's keyword arguments, so that create_model records their defaults in checkpoints too
    parameters = list(inspect.signature(addition_model).parameters.values())[2:]
    factory.__signature__ = inspect.signature(addition_model).replace(parameters=parameters)
    register_model(name)(factory)


# --- co-localisation -----------------------------------------------------------------------------------------


def colocalization_localization(
    in_shape: Sequence[int] = (1, 84, 84), filters: int = 8, hidden: int = 128
) -> nn.Sequential:
    """The paper's co-localisation localisation net: conv 9x9 (``filters``, stride 4) -> ReLU -> 2x2 max-pool
    -> two fully connected layers of ``hidden`` units. ``(B, C, H, W) -> (B, hidden)`` for the ``in_shape``
    ``(C, H, W)`` it is built for (at least 17x17).

    The paper's text has "two 8-unit fully-connected layers" in "a 100k parameter CNN"; on 84x84 the 8-unit
    layers give 5,947 parameters with the 3-unit θ layer, 128-unit ones 100,627 (the stated 100k; so does a
    stride-1 convolution with 8-unit layers: 93,179). The default is 128; the paper's SGD method
    (``coloc-triplet``) takes the 8 of the text.
    """
    c, h, w = (int(s) for s in in_shape)
    if min(h, w) < 17:
        raise ValueError(f"the co-localisation net needs inputs of at least 17x17, got {(h, w)}")
    side_h, side_w = ((h - 9) // 4 + 1) // 2, ((w - 9) // 4 + 1) // 2
    net = nn.Sequential(
        nn.Conv2d(c, filters, 9, stride=4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(filters * side_h * side_w, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
    )
    net.out_features = hidden
    return net


def colocalization_transformer(
    in_shape: Sequence[int] = (1, 84, 84),
    out_size: int | Sequence[int] = (28, 28),
    *,
    scale: float | None = None,
    max_translation: float | None = 1.0,
    hidden: int = 128,
) -> SpatialTransformer:
    """The co-localisation attention transformer: θ = ``(s, tx, ty)``, the crop ``[tx - s, tx + s] x
    [ty - s, ty + s]`` of the input (normalised coordinates) resampled to ``out_size``; ``s`` fixed, ``t`` learnt
    (starting at the centre).

    The paper learns the scale too. We fix it at the object's size, as the paper does for its CUB transformers:
    with a free scale the triplet loss is lowest for crops of the whole image (there every image's crop looks
    alike, and so do the random crops, which then take the whole image as well), and the crops grow to it.

    Args:
        in_shape: ``(C, H, W)`` of the images (84x84 in the paper).
        out_size: the crop's size (28x28: what the digit encoder takes).
        scale: ``s``, the crop's half-width in normalised coordinates; default ``out_size / in_shape``, a crop of
            ``out_size`` pixels sampled at the image's own resolution (28x28 out of 84x84: ``s = 1/3``).
        max_translation: bound of ``|t|`` (default 1: the crop's centre stays in the image; None: free). See
            :class:`stn.ThetaRegressor`.
        hidden: units of the localisation net's two fully connected layers (:func:`colocalization_localization`).

    Shapes: ``(B, C, H, W) -> (B, C, *out_size)``; ``return_theta=True`` adds θ ``(B, 3)``.
    """
    out_size = check_size(out_size, 2)
    if scale is None:
        scale = out_size[-1] / in_shape[-1]
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1] (1 = the whole image), got {scale}")
    return SpatialTransformer(
        colocalization_localization(in_shape, hidden=hidden),
        "attention",
        out_size,
        init_theta=[scale, 0.0, 0.0],
        scale_range=(scale, scale),
        max_translation=max_translation,
    )


class ActivationEncoder(nn.Module):
    """e(): runs a sequential net and concatenates the flattened outputs of the layers listed in ``taps``.

    The co-localisation embedding uses the Table 1 CNN's two hidden layers (after each max-pool) and its
    classification layer without softmax, concatenated as they are (the paper's e()). ``normalize=True`` scales
    each layer's activations to unit L2 norm first, so that every layer weighs the same; on raw activations the
    first hidden layer (the largest, and the one that keeps where the strokes are) dominates the distances, which
    is what places co-localisation crops precisely (with normalised layers the best crops of thin digits such as
    1 drift sideways off the digit's box).

    Args:
        net: an ``nn.Sequential`` (e.g. ``create_model("cnn").classifier``).
        taps: indices of the layers whose outputs are concatenated; default every max-pool and the last layer.
        normalize: unit-normalise each layer's activations.

    Shapes: ``(B, C, H, W) -> (B, F)``.

    Example:
        >>> import torch
        >>> from stn.models import create_model
        >>> from stn.models.appendix import ActivationEncoder
        >>> enc = ActivationEncoder(create_model("cnn").classifier)
        >>> enc(torch.rand(2, 1, 28, 28)).shape[0]
        2
    """

    def __init__(self, net: nn.Sequential, taps: Sequence[int] | None = None, normalize: bool = False) -> None:
        super().__init__()
        if not isinstance(net, nn.Sequential):
            raise TypeError(f"net must be an nn.Sequential, got {type(net).__name__}")
        if taps is None:
            taps = [i for i, m in enumerate(net) if isinstance(m, nn.MaxPool2d)] + [len(net) - 1]
        if not taps or any(not -len(net) <= int(t) < len(net) for t in taps):
            raise ValueError(f"taps must be indices of layers of the {len(net)}-layer net, got {list(taps)}")
        self.net = net
        self.taps = tuple(sorted({int(t) % len(net) for t in taps}))
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        features = []
        for i, layer in enumerate(self.net[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                f = x.flatten(1)
                features.append(F.normalize(f, dim=1) if self.normalize else f)
        return torch.cat(features, dim=1)

    def extra_repr(self) -> str:
        return f"taps={self.taps}, normalize={self.normalize}"


# --- 3-D transformer -----------------------------------------------------------------------------------------


class DepthProjection(nn.Module):
    """Project a volume along depth: ``(B, C, D, H, W) -> (B, C, H, W)``.

    The paper sums along depth; we take the mean times ``scale``, which is the sum up to the constant ``D``
    and so does not change with the depth resolution at which the transformer samples its output. With
    ``scale = D / slab depth`` (the default of :func:`volume_model`) the projection of an upright extruded digit
    is the digit itself, in ``[0, 1]``.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=2) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def volume_model(
    transform: bool = True,
    *,
    in_shape: Sequence[int] = _VOLUME_SHAPE,
    num_classes: int = 10,
    out_size: Sequence[int] | None = None,
    projection_scale: float = _VOLUME_SHAPE[1] / _SLAB_DEPTH,
    channels: int = 32,
    localization_channels: int = 8,
    localization_downsample: int = 4,
) -> DigitClassifier:
    """The 3-D model: ``[affine3d transformer] -> projection along depth -> CNN``.

    The transformer samples its output volume at ``out_size`` (default half the input along every axis,
    30x30x30 for 60x60x60): at the identity this equals 2x average pooling, and it costs an eighth of a
    full-resolution 3-D sampling (whose backward pass dominates a CPU step). Without the transformer
    (``volume-cnn``), the projection of the input is average-pooled to the same size. The classifier is the
    Table 1 CNN with ``channels`` second-layer filters.

    Args:
        transform: with the affine3d transformer (``volume-st``) or without (``volume-cnn``).
        in_shape: ``(C, D, H, W)`` of the volumes.
        out_size: ``(D, H, W)`` the transformer outputs; ``H`` and ``W`` must divide the input's.
        projection_scale: see :class:`DepthProjection`.
        localization_channels: channels of the 3-D :class:`stn.ConvLocalization`.
        localization_downsample: max-pooling factor of the volume before the localisation net's convolutions.

    Shapes: ``(B, C, D, H, W) -> (B, num_classes)``. ``model.transformer`` is an ``nn.Sequential`` of the
    :class:`stn.SpatialTransformer` (``volume-st`` only) and the :class:`DepthProjection`.
    """
    c, d, h, w = (int(s) for s in in_shape)
    size = tuple(int(s) for s in out_size) if out_size is not None else (d // 2, h // 2, w // 2)
    if len(size) != 3 or min(size) < 1 or h % size[1] or w % size[2] or h // size[1] != w // size[2]:
        raise ValueError(f"out_size must be (D, H, W) with H, W dividing {(h, w)} by one factor, got {out_size}")
    stages: list[nn.Module] = []
    if transform:
        loc = ConvLocalization(c, localization_channels, downsample=localization_downsample, ndim=3)
        stages.append(SpatialTransformer(loc, "affine3d", size))
    stages.append(DepthProjection(projection_scale))
    classifier = cnn_classifier((c, size[1], size[2]), num_classes, channels)
    downsample = 1 if transform else h // size[1]
    return DigitClassifier(classifier, nn.Sequential(*stages), downsample, in_shape=(c, d, h, w))


# --- registration --------------------------------------------------------------------------------------------

for _kind in ("fcn", "cnn"):
    _register_addition(_kind, None)
for _kind in ("st-fcn", "2xst-fcn"):
    for _short in TRANSFORMS:
        _register_addition(_kind, _short)


@register_model("coloc-st")
def _coloc_st(**kwargs) -> SpatialTransformer:
    """The co-localisation attention transformer (see :func:`colocalization_transformer`)."""
    return colocalization_transformer(**kwargs)


@register_model("coloc-encoder")
def _coloc_encoder(
    classifier: nn.Module | None = None, taps: Sequence[int] | None = None, normalize: bool = False
) -> ActivationEncoder:
    """e() over ``classifier`` (a Table 1 model or its ``.classifier``; default a fresh 28x28 CNN)."""
    net = classifier if classifier is not None else create_model("cnn")
    return ActivationEncoder(getattr(net, "classifier", net), taps, normalize)


@register_model("volume-st")
def _volume_st(**kwargs) -> DigitClassifier:
    """The 3-D spatial transformer classifier (see :func:`volume_model`)."""
    return volume_model(True, **kwargs)


@register_model("volume-cnn")
def _volume_cnn(**kwargs) -> DigitClassifier:
    """The 3-D baseline: depth projection of the posed volume, then the CNN (see :func:`volume_model`)."""
    return volume_model(False, **kwargs)
