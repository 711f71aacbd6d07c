"""kornia as a second, independent reference for warps whose conventions can be matched.

kornia's matrix warps take the source -> destination matrix in **pixel** coordinates; ours take θ mapping
target -> source in normalised coordinates. With N_s the pixel -> normalised map of an axis of size s
(pixel i has centre (2i + 1)/s - 1), the pixel-space target -> source map is N_in⁻¹ Θ N_out and kornia's
matrix is its inverse.

kornia's TPS (``get_tps_transform(dst, src)`` + ``warp_image_tps(..., kernel_centers=src)``, as its docs
prescribe) places the kernel centres at the *source* points, so it is a different spline from the textbook TPS
(centres at the target control points) except where both reduce to an affine map; only that case is compared.
"""

import numpy as np
import pytest
import torch
from kornia.geometry.transform import get_tps_transform, warp_affine, warp_affine3d, warp_image_tps, warp_perspective

import stn
from stn import transforms


def pixel_to_normalized(size: tuple[int, ...]) -> torch.Tensor:
    """Homogeneous matrix mapping pixel (x, y[, z]) to normalised coordinates for a spatial size (H, W) / (D, H, W)."""
    extents = list(size[::-1])  # x, y[, z]
    n = len(extents)
    m = torch.eye(n + 1, dtype=torch.float64)
    for i, s in enumerate(extents):
        m[i, i] = 2 / s
        m[i, n] = 1 / s - 1
    return m


def kornia_matrix(theta_matrix: torch.Tensor, in_size, out_size) -> torch.Tensor:
    """kornia's source -> destination pixel matrix for our normalised target -> source matrices (B, n+1, n+1)."""
    target_to_source = torch.linalg.inv(pixel_to_normalized(in_size)) @ theta_matrix @ pixel_to_normalized(out_size)
    return torch.linalg.inv(target_to_source)


def perturbed(t, batch: int, scale: float) -> torch.Tensor:
    return t.identity(batch, dtype=torch.float64) + scale * torch.randn(batch, t.num_params, dtype=torch.float64)


@pytest.mark.parametrize("name", ["translation", "attention", "similarity", "affine"])
@pytest.mark.parametrize(("in_size", "out_size"), [((9, 9), (9, 9)), ((8, 12), (5, 7))])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_affine_families_match_kornia_warp_affine(name, in_size, out_size, padding_mode):
    t = transforms.get(name)
    theta = perturbed(t, 3, 0.3)
    x = torch.randn(3, 2, *in_size, dtype=torch.float64)
    m = kornia_matrix(t.matrix(theta), in_size, out_size)
    expected = warp_affine(x, m[:, :2], out_size, padding_mode=padding_mode, align_corners=False)
    out = stn.warp(x, theta, name, out_size=out_size, padding_mode=padding_mode)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("in_size", "out_size"), [((9, 9), (9, 9)), ((8, 12), (5, 7))])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_projective_matches_kornia_warp_perspective(in_size, out_size, mode):
    t = transforms.get("projective")
    theta = perturbed(t, 3, 0.15)
    x = torch.randn(3, 2, *in_size, dtype=torch.float64)
    m = kornia_matrix(t.matrix(theta), in_size, out_size)
    expected = warp_perspective(x, m, out_size, mode=mode, align_corners=False)
    out = stn.warp(x, theta, "projective", out_size=out_size, mode=mode)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_affine3d_matches_kornia_warp_affine3d():
    # warp_affine3d builds its pixel grid with the corner convention (align_corners=True): pixel i of s sits
    # at 2i/(s - 1) - 1 there, but both place pixel centres at integer pixel coordinates, so the pixel-space
    # matrix is the same.
    t = transforms.get("affine3d")
    theta = perturbed(t, 2, 0.2)
    in_size, out_size = (4, 5, 6), (3, 5, 4)
    x = torch.randn(2, 2, *in_size, dtype=torch.float64)
    m = kornia_matrix(t.matrix(theta), in_size, out_size)
    expected = warp_affine3d(x, m[:, :3], out_size, align_corners=True)
    out = stn.warp(x, theta, "affine3d", out_size=out_size)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_tps_with_affine_control_points_matches_kornia():
    t = transforms.get("tps", k=4)
    a = np.array([[0.9, 0.2, -0.1], [-0.15, 1.1, 0.05]])
    control = t.control_points.to(torch.float64)
    source = control @ torch.from_numpy(a[:, :2]).T + torch.from_numpy(a[:, 2])
    x = torch.randn(1, 3, 10, 12, dtype=torch.float64)
    kernel_weights, affine_weights = get_tps_transform(control[None], source[None])
    expected = warp_image_tps(x, source[None], kernel_weights, affine_weights, align_corners=False)
    out = stn.warp(x, source.reshape(1, -1), t)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
