"""Interoperability: OpenCV / kornia pixel matrices and checkpoints of the PyTorch STN tutorial.

OpenCV's ``cv2.warpAffine`` / ``cv2.warpPerspective`` and kornia's ``warp_affine`` / ``warp_perspective`` take a
matrix ``M`` in **pixel** coordinates that maps **source to destination** (pixel centres at integers, x right,
y down). ``stn``'s θ maps **target to source** in normalised coordinates (:mod:`stn.coords`). So
θ = N_in · M⁻¹ · N_out⁻¹, where N_in and N_out take the pixel coordinates of the input and of the output to
normalised ones (they differ whenever the sizes do). Passing M, or M⁻¹, as θ warps the wrong way or by the wrong
amount: :func:`theta_from_pixel_matrix` does the conversion, :func:`pixel_matrix_from_theta` the reverse.

:func:`spatial_transformer_from_tutorial` loads a checkpoint of the official PyTorch tutorial's ``Net``
(https://pytorch.org/tutorials/intermediate/spatial_transformer_tutorial.html) into a
:class:`stn.SpatialTransformer` and a :class:`TutorialClassifier` (key mapping: :data:`TUTORIAL_KEY_MAP`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn.algebra import _checked_inverse
from stn.coords import check_size
from stn.functional import flatten_theta
from stn.modules import SpatialTransformer
from stn.transforms import Affine, Projective, Transform, resolve

__all__ = [
    "TUTORIAL_KEY_MAP",
    "TutorialClassifier",
    "pixel_matrix_from_theta",
    "spatial_transformer_from_tutorial",
    "theta_from_pixel_matrix",
    "tutorial_localization",
]


def _family(transform: str | Transform) -> Transform:
    t = resolve(transform)
    if not isinstance(t, (Affine, Projective)):
        raise ValueError(f"transform must be 'affine' or 'projective', got {t.name!r}")
    return t


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _normalization(size: tuple[int, ...], align_corners: bool, like: Tensor) -> Tensor:
    """``(3, 3)``: pixel coordinates ``(x, y, 1)`` of an image of ``size = (H, W)`` -> normalised ones."""
    h, w = size
    if align_corners:  # pixel centres 0 and n - 1 at -1 and +1
        sx, sy, tx, ty = 2 / (w - 1), 2 / (h - 1), -1.0, -1.0
    else:  # stn's convention: pixel i at (2i + 1) / n - 1
        sx, sy, tx, ty = 2 / w, 2 / h, 1 / w - 1, 1 / h - 1
    return torch.tensor([[sx, 0.0, tx], [0.0, sy, ty], [0.0, 0.0, 1.0]], dtype=like.dtype, device=like.device)


def _sizes(in_size: int | Sequence[int], out_size: int | Sequence[int], align_corners: bool) -> tuple[tuple, tuple]:
    sizes = check_size(in_size, 2, "in_size"), check_size(out_size, 2, "out_size")
    if align_corners and min(min(s) for s in sizes) < 2:
        raise ValueError(
            f"align_corners=True needs every side >= 2 pixels, got in_size {sizes[0]}, out_size {sizes[1]}"
        )
    return sizes


def _pixel_matrices(m: Tensor | np.ndarray, affine: bool) -> tuple[Tensor, torch.dtype]:
    """``M`` as a ``(B, 3, 3)`` float64 tensor, and the dtype of the result. For ``affine``, a 3x3 ``M`` must have
    an affine last row."""
    if isinstance(m, np.ndarray):
        m = torch.from_numpy(m)
    if not isinstance(m, Tensor):
        raise TypeError(f"M must be a torch.Tensor or a NumPy array, got {type(m).__name__}")
    if m.dtype == torch.bool or m.is_complex() or m.dim() not in (2, 3) or m.shape[-2:] not in ((2, 3), (3, 3)):
        raise ValueError(
            f"M must be a real (2, 3), (B, 2, 3), (3, 3) or (B, 3, 3) matrix, got shape {tuple(m.shape)} of {m.dtype}"
        )
    dtype = _result_dtype(m.dtype)
    eps = torch.finfo(m.dtype if m.is_floating_point() else torch.float64).eps
    m = m.to(torch.float64).reshape(-1, *m.shape[-2:])
    if not torch.isfinite(m).all():
        raise ValueError("M has non-finite entries")
    if m.shape[1] == 2:
        last = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(len(m), 1, 3)
        return torch.cat([m, last], dim=1), dtype
    if affine:
        scale = m[:, 2:, 2:]
        bad = ((m[:, 2, :2].abs() > eps * scale[:, 0].abs()).any(dim=1) | (scale[:, 0, 0] == 0)).nonzero()
        if len(bad):
            i = int(bad[0, 0])
            raise ValueError(
                f"M[{i}] has last row {m[i, 2].tolist()}, not (0, 0, 1): it is a homography, not an affine map; "
                "use transform='projective'"
            )
        m = m / scale
    return m, dtype


def theta_from_pixel_matrix(
    M: Tensor | np.ndarray,
    in_size: int | Sequence[int],
    out_size: int | Sequence[int],
    transform: str | Transform = "affine",
    *,
    align_corners: bool = False,
) -> Tensor:
    """θ that makes :func:`stn.warp` do what OpenCV and kornia do with the pixel matrix ``M``.

    ``stn.warp(x, theta, transform, out_size)`` then equals ``cv2.warpAffine(img, M, (W_out, H_out))``
    (``cv2.warpPerspective`` for ``"projective"``) with ``INTER_LINEAR`` and a constant 0 border, and kornia's
    ``warp_affine(x, M, (H_out, W_out))`` / ``warp_perspective`` (kornia >= 0.9 with either ``align_corners``; older
    kornia with ``align_corners=True``, its default).

    Args:
        M: source -> destination in pixel coordinates (centre of the top-left pixel at ``(0, 0)``, x right, y
            down): ``(2, 3)``, ``(B, 2, 3)``, ``(3, 3)`` or ``(B, 3, 3)``, a tensor or a NumPy array. For
            ``"affine"`` a 3x3 ``M`` must have the last row ``(0, 0, c)``, c != 0.
        in_size: ``(H_in, W_in)`` of the image that is warped (an int for a square).
        out_size: ``(H_out, W_out)`` of the result, as passed to :func:`stn.warp`.
        transform: ``"affine"`` or ``"projective"``.
        align_corners: False: normalise pixel ``i`` of ``n`` to ``(2i + 1) / n - 1`` (stn's convention; this is
            what reproduces the warps above). True: to ``2i / (n - 1) - 1``, pixel centres at ±1, the frame of
            ``kornia.geometry.conversions.normalize_homography``'s default; the θ then reproduces kornia < 0.9's
            ``warp_affine(..., align_corners=False)``, which mixed that frame with ``grid_sample``'s
            (a sub-pixel scale and shift away from OpenCV). Needs every side >= 2.

    Returns:
        ``(B, 6)`` (affine, row-major 2x3) or ``(B, 8)`` (projective, H with H[2, 2] = 1), target -> source in
        normalised coordinates; float64 when ``M`` is float64, else float32; on ``M``'s device. Computed in
        float64.

    Raises:
        ValueError: a shape other than the four above, a singular ``M``, a non-affine ``M`` for ``"affine"``, bad
            sizes, or a homography sending the output's centre to infinity (which H[2, 2] = 1 cannot express).

    Example:
        >>> import torch
        >>> from stn import theta_from_pixel_matrix, warp
        >>> M = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # move the content 2 pixels right
        >>> theta = theta_from_pixel_matrix(M, (4, 4), (4, 4))
        >>> theta
        tensor([[ 1.,  0., -1.,  0.,  1.,  0.]])
        >>> warp(torch.arange(4.0).expand(1, 1, 4, 4), theta, "affine")[0, 0, 0]
        tensor([0., 0., 0., 1.])
    """
    t = _family(transform)
    m, dtype = _pixel_matrices(M, affine=isinstance(t, Affine))
    size_in, size_out = _sizes(in_size, out_size, align_corners)
    theta = (
        _normalization(size_in, align_corners, m)
        @ _checked_inverse(m, "M")
        @ torch.linalg.inv(_normalization(size_out, align_corners, m))
    )
    # w at the output's centre: (almost) 0 puts that centre on the horizon, and dividing by it is meaningless.
    if isinstance(t, Projective) and bool((theta[:, 2, 2].abs() <= 1e-12 * theta[:, 2].abs().amax(dim=1)).any()):
        raise ValueError("M sends the centre of the output to infinity in the input: no projective θ with H[2, 2] = 1")
    return t.from_matrix(theta).to(dtype)


def pixel_matrix_from_theta(
    theta: Tensor,
    transform: str | Transform,
    in_size: int | Sequence[int],
    out_size: int | Sequence[int],
    *,
    align_corners: bool = False,
) -> Tensor:
    """The OpenCV / kornia pixel matrix of θ: the inverse of :func:`theta_from_pixel_matrix`.

    Args:
        theta: ``(B, 6)`` or ``(B, 2, 3)`` affine, ``(B, 8)`` or ``(B, 3, 3)`` projective (as :func:`stn.warp`
            takes it).
        transform: ``"affine"`` or ``"projective"``.
        in_size, out_size, align_corners: as in :func:`theta_from_pixel_matrix`.

    Returns:
        ``M``, source -> destination in pixels: ``(B, 2, 3)`` for affine (what ``cv2.warpAffine`` and kornia's
        ``warp_affine`` take) and ``(B, 3, 3)`` for projective, scaled to ``M[2, 2] = 1`` unless that entry is 0.
        float64 when θ is float64, else float32.

    Example:
        >>> import torch
        >>> from stn import pixel_matrix_from_theta
        >>> theta = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])  # zoom in 2x on the centre
        >>> pixel_matrix_from_theta(theta, "affine", (32, 32), (32, 32))
        tensor([[[  2.0000,   0.0000, -15.5000],
                 [  0.0000,   2.0000, -15.5000]]])
    """
    t = _family(transform)
    flat = flatten_theta(theta, t)
    size_in, size_out = _sizes(in_size, out_size, align_corners)
    h = t.matrix(flat.to(torch.float64))
    m = (
        torch.linalg.inv(_normalization(size_out, align_corners, h))
        @ _checked_inverse(h, "theta")
        @ _normalization(size_in, align_corners, h)
    )
    if isinstance(t, Affine):
        return m[:, :2].to(_result_dtype(flat.dtype))
    scale = m[:, 2:, 2:]
    return (m / torch.where(scale == 0, 1.0, scale)).to(_result_dtype(flat.dtype))


# The tutorial's Net -> (SpatialTransformer, TutorialClassifier). Its localisation Sequential keeps its indices
# inside tutorial_localization(), fc_loc's hidden layer follows it after a Flatten, and the last Linear, which
# outputs θ, is the transformer's regression layer. The classifier keeps the tutorial's names.
TUTORIAL_KEY_MAP: dict[str, str] = {
    **{f"localization.{i}.{p}": f"localization.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")},
    **{f"fc_loc.0.{p}": f"localization.7.{p}" for p in ("weight", "bias")},
    **{f"fc_loc.2.{p}": f"head.linear.{p}" for p in ("weight", "bias")},
}


def tutorial_localization() -> nn.Sequential:
    """The tutorial's localisation net for 1x28x28 inputs, with its ``fc_loc`` hidden layer: ``(B, 32)`` features.

    ``Conv2d(1, 8, 7) -> MaxPool2d(2) -> ReLU -> Conv2d(8, 10, 5) -> MaxPool2d(2) -> ReLU -> Flatten ->
    Linear(90, 32) -> ReLU``; :class:`stn.SpatialTransformer` appends the ``Linear(32, 6)`` that outputs θ.

    Example:
        >>> import torch
        >>> from stn.interop import tutorial_localization
        >>> tutorial_localization()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 32])
    """
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=7),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(True),
        nn.Conv2d(8, 10, kernel_size=5),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(True),
        nn.Flatten(),
        nn.Linear(10 * 3 * 3, 32),
        nn.ReLU(True),
    )


class TutorialClassifier(nn.Module):
    """The tutorial's MNIST classifier that follows its transformer: ``(B, 1, 28, 28)`` -> log-probabilities
    ``(B, 10)``, with the tutorial's layer names (``conv1``, ``conv2``, ``conv2_drop``, ``fc1``, ``fc2``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def spatial_transformer_from_tutorial(
    state_dict: Mapping[str, Tensor] | str | os.PathLike,
) -> tuple[SpatialTransformer, TutorialClassifier]:
    """Load the PyTorch STN tutorial's ``Net`` weights into ``stn`` modules.

    The tutorial's θ, ``theta.view(-1, 2, 3)`` fed to ``F.affine_grid(theta, x.size())`` and ``F.grid_sample``
    with their defaults (``align_corners=False``), is exactly stn's affine θ, so nothing is converted but the key
    names (:data:`TUTORIAL_KEY_MAP`; the classifier's keys are unchanged).

    Args:
        state_dict: ``Net().state_dict()`` of the tutorial, or the path of a file ``torch.save`` wrote it to.

    Returns:
        ``(transformer, classifier)``: an affine :class:`stn.SpatialTransformer` over
        :func:`tutorial_localization` and a :class:`TutorialClassifier`, in train mode like a new module;
        ``classifier(transformer(x))`` is the tutorial's ``Net(x)`` and ``transformer(x)`` its ``Net.stn(x)``.

    Raises:
        ValueError: missing or unexpected keys, or a tensor of the wrong shape (named by its tutorial key).

    Example:
        >>> import torch
        >>> from stn import spatial_transformer_from_tutorial
        >>> from stn.interop import TUTORIAL_KEY_MAP
        >>> st, classifier = spatial_transformer_from_tutorial(torch.load("tutorial_stn.pt"))  # doctest: +SKIP
        >>> TUTORIAL_KEY_MAP["fc_loc.2.weight"]
        'head.linear.weight'
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of tensors or a file path, got {type(state_dict).__name__}")
    transformer, classifier = SpatialTransformer(tutorial_localization(), "affine"), TutorialClassifier()
    # Start from the modules' own state so that stn-only entries (the regression layer's init_theta, the
    # identity) stay, and every tutorial tensor then replaces exactly one entry.
    targets = [transformer.state_dict(), classifier.state_dict()]
    routes = {**{k: (0, v) for k, v in TUTORIAL_KEY_MAP.items()}, **{k: (1, k) for k in targets[1]}}
    missing, unexpected = sorted(set(routes) - set(state_dict)), sorted(set(state_dict) - set(routes))
    if missing or unexpected:
        raise ValueError(
            f"not a state dict of the PyTorch STN tutorial's Net: missing keys {missing}, unexpected keys {unexpected}"
        )
    for key, value in state_dict.items():
        part, ours = routes[key]
        expected = tuple(targets[part][ours].shape)
        if not isinstance(value, Tensor) or tuple(value.shape) != expected:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"tutorial key {key!r} must be a tensor of shape {expected}, got {got}")
        targets[part][ours] = value
    transformer.load_state_dict(targets[0])
    classifier.load_state_dict(targets[1])
    return transformer, classifier
