"""Tests for stn.algebra's transform_points and transform_boxes: against OpenCV's cv2.transform /
cv2.perspectiveTransform with the pixel matrix theta_from_pixel_matrix converts, both ways and with in != out; TPS
against the warp of rendered dots; boxes against attention crops."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import pytest
import torch

import stn
from stn import transforms
from stn.algebra import TPS_TOLERANCE
from stn.coords import base_grid, normalized_to_pixel


def random_pixel_matrix(rng: np.random.Generator, in_size, out_size, projective: bool) -> np.ndarray:
    """A source -> destination pixel matrix: a rotation, scaling and shift taking the input's centre near the
    output's, with mild perspective for ``projective`` (w between 0.8 and 1.2 over the input)."""
    (h, w), (ho, wo) = in_size, out_size
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-40, 40), rng.uniform(0.6, 1.4))
    m[:2, 2] += [(wo - w) / 2 + rng.uniform(-5, 5), (ho - h) / 2 + rng.uniform(-5, 5)]
    if projective:
        m[2, :2] = rng.uniform(-0.1, 0.1, 2) / np.array([w, h])
    return m


def pixel_centres(size) -> torch.Tensor:
    """``(1, H*W, 2)`` pixel coordinates (x, y) of every pixel centre of an image of ``size`` (3-D: ``(x, y, z)``)."""
    return normalized_to_pixel(base_grid(size, dtype=torch.float64), torch.tensor(size[::-1])).view(1, -1, len(size))


@pytest.mark.parametrize("projective", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_points_go_where_opencv_sends_them_and_back(seed, projective):
    rng = np.random.default_rng(seed)
    in_size, out_size = tuple(rng.integers(20, 90, 2)), tuple(rng.integers(20, 90, 2))
    m = random_pixel_matrix(rng, in_size, out_size, projective)
    name = "projective" if projective else "affine"
    theta = stn.theta_from_pixel_matrix(m if projective else m[:2], in_size, out_size, name)
    points = rng.uniform(-10, 100, (1, 40, 2))
    cv_points = points.reshape(-1, 1, 2)
    if projective:
        forward, backward = (
            cv2.perspectiveTransform(cv_points, m),
            cv2.perspectiveTransform(cv_points, np.linalg.inv(m)),
        )
    else:
        forward = cv2.transform(cv_points, m[:2])
        backward = cv2.transform(cv_points, cv2.invertAffineTransform(m[:2]))
    got = stn.transform_points(torch.from_numpy(points), theta, name, in_size, out_size)
    np.testing.assert_allclose(got.numpy().reshape(-1, 1, 2), forward, rtol=0, atol=1e-8)
    # inverse=True: output pixels -> input pixels, T_θ itself
    back = stn.transform_points(torch.from_numpy(points), theta, name, in_size, out_size, inverse=True)
    np.testing.assert_allclose(back.numpy().reshape(-1, 1, 2), backward, rtol=0, atol=1e-8)
    there_and_back = stn.transform_points(got, theta, name, in_size, out_size, inverse=True)
    torch.testing.assert_close(there_and_back, torch.from_numpy(points), rtol=0, atol=1e-8)
    single = stn.transform_points(torch.from_numpy(points).float(), theta.float(), name, in_size, out_size)
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy().reshape(-1, 1, 2), forward, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["translation", "attention", "similarity", "affine", "projective", "tps", "affine3d"])
def test_inverse_points_are_the_sampling_grid_in_pixels(name):
    """The output pixel centres, inverse=True: the source points warp reads, in pixels of the input."""
    t = transforms.get(name)
    in_size, out_size = ((6, 7, 9), (5, 8, 6)) if t.ndim == 3 else ((13, 17), (11, 19))
    theta = t.identity(2, dtype=torch.float64) + 0.1 * torch.randn(2, t.num_params, dtype=torch.float64)
    got = stn.transform_points(pixel_centres(out_size).expand(2, -1, -1), theta, name, in_size, out_size, inverse=True)
    grid = stn.sampling_grid(theta, name, out_size).view(2, -1, t.ndim)
    torch.testing.assert_close(got, normalized_to_pixel(grid, torch.tensor(in_size[::-1])), rtol=0, atol=1e-10)
    if name != "tps":
        there = stn.transform_points(got, theta, name, in_size, out_size)
        torch.testing.assert_close(there, pixel_centres(out_size).expand(2, -1, -1), rtol=0, atol=1e-9)


def test_projective_points_without_an_image_are_nan():
    theta = transforms.get("projective").identity(1, dtype=torch.float64)
    theta[0, 6] = 4.0  # w = 4x + 1: the output's left part, x <= -1/4, is on or behind the horizon
    size = (8, 16)
    back = stn.transform_points(pixel_centres(size), theta, "projective", size, size, inverse=True)
    valid = transforms.get("projective").valid_mask(theta, size).view(1, -1)
    assert torch.equal(back.isnan().any(-1), ~valid) and not back[valid].isnan().any()
    points = torch.from_numpy(np.random.default_rng(0).uniform(-40, 60, (1, 200, 2)))
    forward = stn.transform_points(points, theta, "projective", size, size)
    # an input point is seen where H⁻¹ (p, 1) has w > 0 (H normalised as θ writes it, H[2, 2] = 1)
    normalised = (2 * points + 1) / torch.tensor([16.0, 8.0]) - 1
    w = (
        torch.cat([normalised, torch.ones(1, 200, 1)], -1)
        @ torch.linalg.inv(transforms.get("projective").matrix(theta))[0].T
    )[..., 2]
    assert (w <= 0).any() and torch.equal(forward.isnan().any(-1), w <= 0)


def render_dots(centres: torch.Tensor, size, sigma: float = 1.0) -> torch.Tensor:
    """``(1, 1, H, W)``: a Gaussian dot of ``sigma`` pixels at each ``(x, y)`` of ``centres`` ``(N, 2)``."""
    pixels = pixel_centres(size).view(*size, 2)
    d2 = (pixels[:, :, None, :] - centres).square().sum(-1)
    return torch.exp(-d2 / (2 * sigma**2)).sum(-1)[None, None]


def dot_centroids(image: torch.Tensor, near: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """``(N, 2)`` intensity centroids of ``image`` ``(H, W)`` within ``radius`` pixels of each point of ``near``."""
    pixels = pixel_centres(tuple(image.shape)).view(*image.shape, 2)
    weights = image * ((pixels - near[:, None, None]).abs() <= radius).all(-1)  # (N, H, W)
    return (pixels * weights[..., None]).sum((1, 2)) / weights.sum((1, 2))[:, None]


def test_tps_points_land_on_the_warped_dots():
    """Each warped dot's centroid is within 0.25 px of where transform_points says it lands (in != out). The
    centroid of a dot warped non-linearly is itself off its centre's image by O(σ² T''): measured, at most 0.16 px
    over 20 seeds for these dots (σ = 1 px) and warps (θ = identity + 0.05 N(0, 1))."""
    tps = transforms.get("tps")
    in_size, out_size = (72, 84), (66, 90)
    theta = tps.identity(1, dtype=torch.float64) + 0.05 * torch.randn(1, 32, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(12.0, 66, 16), torch.arange(12.0, 80, 16), indexing="ij")
    centres = torch.stack([xs, ys], -1).view(-1, 2) + torch.rand(xs.numel(), 2) - 0.5  # sub-pixel, >= 15 px apart
    out = stn.warp(render_dots(centres, in_size), theta, "tps", out_size)[0, 0]
    landed = stn.transform_points(centres[None], theta, "tps", in_size, out_size)[0]
    framed = ((landed >= 5) & (landed <= torch.tensor([out_size[1], out_size[0]]) - 6)).all(-1)  # windows inside
    assert framed.sum() >= 15
    errors = (dot_centroids(out, landed[framed]) - landed[framed]).norm(dim=-1)
    assert errors.max() < 0.25, errors
    wrong_way = stn.transform_points(centres[None], theta, "tps", in_size, out_size, inverse=True)[0]
    assert (dot_centroids(out, wrong_way[framed]) - wrong_way[framed]).norm(dim=-1).max() > 1.0
    back = stn.transform_points(landed[None], theta, "tps", in_size, out_size, inverse=True)[0]
    assert (back - centres).abs().max() < TPS_TOLERANCE


def test_tps_forward_points_are_differentiable_and_strong_warps_converge():
    tps = transforms.get("tps")
    theta = (tps.identity(2, dtype=torch.float64) + 0.1 * torch.randn(2, 32, dtype=torch.float64)).requires_grad_()
    points = (torch.rand(2, 5, 2, dtype=torch.float64) * 40).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, t: stn.transform_points(p, t, "tps", (40, 44), (36, 50)), (points, theta))
    strong = tps.identity(4, dtype=torch.float64) + 0.3 * torch.randn(4, 32, dtype=torch.float64)
    points = torch.rand(4, 300, 2, dtype=torch.float64) * torch.tensor([99.0, 79.0])
    landed = stn.transform_points(points, strong, "tps", (80, 100), (90, 96))
    assert landed.isfinite().all()
    back = stn.transform_points(landed, strong, "tps", (80, 100), (90, 96), inverse=True)
    assert (back - points).abs().max() < TPS_TOLERANCE


def test_points_through_an_affine3d_warp_and_gradients():
    theta = transforms.get("affine3d").identity(1, dtype=torch.float64) + 0.1 * torch.randn(1, 12, dtype=torch.float64)
    points = torch.rand(1, 6, 3, dtype=torch.float64) * 10
    landed = stn.transform_points(points, theta, "affine3d", (10, 12, 14), (8, 9, 16))
    back = stn.transform_points(landed, theta, "affine3d", (10, 12, 14), (8, 9, 16), inverse=True)
    torch.testing.assert_close(back, points, rtol=0, atol=1e-10)
    for name in ("affine", "projective"):
        theta = transforms.get(name).identity(1, dtype=torch.float64) + 0.05 * torch.randn(
            1, transforms.get(name).num_params, dtype=torch.float64
        )
        p = (torch.rand(1, 4, 2, dtype=torch.float64) * 20).requires_grad_()
        for inverse in (False, True):
            func = partial(stn.transform_points, transform=name, in_size=(20, 24), out_size=(18, 30), inverse=inverse)
            assert torch.autograd.gradcheck(func, (p, theta.clone().requires_grad_()))


def test_a_box_through_an_attention_crop_and_back():
    x = torch.rand(1, 3, 64, 64)
    theta = torch.tensor([[0.5, -0.25, 0.0]])  # reads exactly pixels [16:48, 8:40] into a 32 x 32 crop
    crop = stn.warp(x, theta, "attention", (32, 32))
    torch.testing.assert_close(crop, x[:, :, 16:48, 8:40])
    frame = torch.tensor([[[-0.5, -0.5, 31.5, 31.5]]])  # the crop's whole frame, in its pixels
    window = stn.transform_boxes(frame, theta, "attention", 64, 32, inverse=True)
    torch.testing.assert_close(window, torch.tensor([[[7.5, 15.5, 39.5, 47.5]]]))  # columns 8..39, rows 16..47
    torch.testing.assert_close(stn.transform_boxes(window, theta, "attention", 64, 32), frame)
    inner = torch.tensor([[[20.0, 30.0, 24.0, 33.0]]])  # a box of the input inside the window
    torch.testing.assert_close(
        stn.transform_boxes(inner, theta, "attention", 64, 32), inner - torch.tensor([8.0, 16.0] * 2)
    )


def test_boxes_enclose_the_warped_corners():
    rng = np.random.default_rng(3)
    m = random_pixel_matrix(rng, (40, 50), (60, 45), projective=True)
    theta = stn.theta_from_pixel_matrix(m, (40, 50), (60, 45), "projective")
    boxes = torch.tensor([[[5.0, 6.0, 20.0, 30.0], [30.0, 2.0, 48.0, 10.0]]], dtype=torch.float64)
    corners = boxes[0][:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 1, 2).numpy()
    warped = cv2.perspectiveTransform(corners, m).reshape(2, 4, 2)
    expected = np.concatenate([warped.min(1), warped.max(1)], axis=1)
    got = stn.transform_boxes(boxes, theta, "projective", (40, 50), (60, 45))
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-8)
    tilt = transforms.get("projective").identity(1, dtype=torch.float64)
    tilt[0, 6] = 4.0  # the left quarter of the output sees nothing: a box reaching there has no image
    nan_box = stn.transform_boxes(
        torch.tensor([[[-0.5, 2.0, 8.0, 5.0]]], dtype=torch.float64), tilt, "projective", 16, 16, inverse=True
    )
    assert nan_box.isnan().all()


def test_tps_boxes_enclose_the_warped_edges():
    tps = transforms.get("tps")
    theta = tps.identity(1, dtype=torch.float64) + 0.15 * torch.randn(1, 32, dtype=torch.float64)
    box = torch.tensor([[[10.0, 12.0, 40.0, 30.0]]], dtype=torch.float64)
    got = stn.transform_boxes(box, theta, "tps", (48, 56), (50, 50), inverse=True)
    s = torch.linspace(0, 1, 2001, dtype=torch.float64)
    edges = torch.cat(
        [torch.stack([10 + 30 * s, torch.full_like(s, y)], -1) for y in (12.0, 30.0)]
        + [torch.stack([torch.full_like(s, x), 12 + 18 * s], -1) for x in (10.0, 40.0)]
    )
    dense = stn.transform_points(edges[None], theta, "tps", (48, 56), (50, 50), inverse=True)[0]
    expected = torch.cat([dense.amin(0), dense.amax(0)])
    assert (got[0, 0] - expected).abs().max() < 0.05  # 33 samples per edge: within 0.05 px of the dense box


def test_errors_name_what_was_expected():
    theta = transforms.get("affine").identity(2)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 2\) with B = 2 \(θ's\), got \(5, 2\)"):
        stn.transform_points(torch.zeros(5, 2), theta, "affine", 8, 8)
    with pytest.raises(ValueError, match=r"got \(1, 5, 2\)"):
        stn.transform_points(torch.zeros(1, 5, 2), theta, "affine", 8, 8)
    with pytest.raises(TypeError, match="floating-point"):
        stn.transform_points(torch.zeros(2, 5, 2, dtype=torch.long), theta, "affine", 8, 8)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        stn.transform_points(torch.zeros(2, 5, 2), transforms.get("affine3d").identity(2), "affine3d", 8, 8)
    with pytest.raises(ValueError, match="in_size must be 2 positive ints"):
        stn.transform_points(torch.zeros(2, 5, 2), theta, "affine", (0, 8), 8)
    with pytest.raises(ValueError, match=r"theta\[1\] is singular"):
        stn.transform_points(torch.zeros(2, 1, 2), torch.stack([theta[0], torch.zeros(6)]), "affine", 8, 8)
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, N, 4\)"):
        stn.transform_boxes(torch.zeros(2, 3, 2), theta, "affine", 8, 8)
    with pytest.raises(ValueError, match=r"2-D boxes.*'affine3d' is 3-D"):
        stn.transform_boxes(torch.zeros(2, 3, 4), transforms.get("affine3d").identity(2), "affine3d", 8, 8)
    for name in ("affine", "tps"):  # no points: no points
        t = transforms.get(name).identity(2)
        assert stn.transform_points(torch.zeros(2, 0, 2), t, name, 8, 8).shape == (2, 0, 2)
