"""Tests for the projective family where the homography's denominator w approaches zero or goes negative.

Documented behaviour: target points with w <= eps (on or beyond the horizon line) are sent outside the input,
so they read the padding / fill value, and the grid, the output and the gradients stay finite.
"""

import pytest
import torch

import stn
from stn import transforms
from stn.transforms.matrix import _dehomogenise, homogeneous_grid

W = 8


def horizon_theta(h31: float, batch: int = 1) -> torch.Tensor:
    """Identity plus H[2, 0] = h31: w = h31 * x_t + 1, which is 0 at x_t = -1 / h31."""
    theta = transforms.get("projective").identity(batch, dtype=torch.float64)
    theta[:, 6] = h31
    return theta


def denominators(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    g = stn.coords.base_grid(size, dtype=torch.float64)
    return theta[:, 6, None, None] * g[..., 0] + theta[:, 7, None, None] * g[..., 1] + 1


def test_exact_zero_denominator_at_a_pixel_centre():
    theta = horizon_theta(8.0)  # w = 8x + 1 = 0 at x = -1/8, the centre of pixel 3 of 8
    w = denominators(theta, (4, W))
    assert (w == 0).any() and (w < 0).any() and (w > 0).any()
    grid = stn.sampling_grid(theta, "projective", (4, W))
    assert torch.isfinite(grid).all()
    x = torch.rand(1, 2, 4, W, dtype=torch.float64) + 0.5  # strictly positive: padding reads as exactly 0
    out = stn.warp(x, theta, "projective")
    assert torch.isfinite(out).all()
    behind = (w <= 0)[:, None].expand_as(out)
    assert torch.equal(out[behind], torch.zeros_like(out[behind]))
    assert (out[~behind] != 0).any()


@pytest.mark.parametrize("h31", [8.0, 7.999999, 8.000001, -3.0, 1e8])
def test_gradients_stay_finite_through_the_horizon(h31):
    theta = horizon_theta(h31).requires_grad_()
    x = torch.rand(1, 2, 4, W, dtype=torch.float64, requires_grad=True)
    for kwargs in ({}, {"fill": 0.5}, {"padding_mode": "border"}, {"padding_mode": "reflection"}):
        out = stn.warp(x, theta, "projective", **kwargs)
        assert torch.isfinite(out).all(), kwargs
        gx, gt = torch.autograd.grad((out * torch.randn_like(out)).sum(), (x, theta))
        assert torch.isfinite(gx).all() and torch.isfinite(gt).all(), kwargs


def test_points_behind_the_horizon_read_the_fill_value():
    theta = horizon_theta(-4.0)  # w = 1 - 4x <= 0 for x >= 1/4: the right part of the image
    x = torch.rand(1, 3, 4, W, dtype=torch.float64)
    fill = [0.25, -1.0, 3.0]
    out = stn.warp(x, theta, "projective", fill=fill)
    behind = (denominators(theta, (4, W)) <= 0)[0]
    assert behind.any()
    for c, value in enumerate(fill):
        assert torch.equal(out[0, c][behind], torch.full_like(out[0, c][behind], value))


def test_float32_and_bfloat16_through_the_horizon():
    theta = horizon_theta(8.0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.rand(1, 1, 4, W, dtype=dtype)
        out = stn.warp(x, theta.to(dtype), "projective")
        assert out.dtype == dtype and torch.isfinite(out).all()


def test_small_positive_denominator_maps_far_outside():
    theta = horizon_theta(1.0)
    theta[:, 2] = 0.5  # u = x + 0.5; w = x + 1 is tiny near the left edge
    grid = stn.sampling_grid(theta, "projective", (3, 2000))
    assert torch.isfinite(grid).all()
    assert grid[0, :, 0, 0].abs().min() > 1  # the leftmost column reads the padding


def test_negative_denominators_on_both_sides_are_handled_per_batch_element():
    theta = torch.cat([horizon_theta(8.0), horizon_theta(-8.0), transforms.get("projective").identity(1).double()])
    x = torch.rand(3, 1, 4, W, dtype=torch.float64) + 0.5
    out = stn.warp(x, theta, "projective")
    w = denominators(theta, (4, W))
    assert torch.equal(out[:, 0][w <= 0], torch.zeros_like(out[:, 0][w <= 0]))
    torch.testing.assert_close(out[2], x[2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("h31", [8.0, -4.0, 0.3])
def test_hand_written_gradient_matches_autograd_through_plain_ops(h31):
    """The training path (closed-form gradient) and the tracing path (plain ops) agree in grid and in ∂L/∂θ."""
    torch.manual_seed(0)
    projective = transforms.get("projective")
    theta = horizon_theta(h31, batch=3) + 0.05 * torch.randn(3, 8, dtype=torch.float64)
    size = (5, W)
    weights = torch.randn(3, *size, 2, dtype=torch.float64)
    fast = theta.clone().requires_grad_()
    (stn.sampling_grid(fast, "projective", size) * weights).sum().backward()
    plain = theta.clone().requires_grad_()
    uvw = projective.matrix(plain) @ homogeneous_grid(size, plain.device, plain.dtype)
    grid_plain = _dehomogenise(uvw, projective.eps, projective.outside).view(3, 2, *size).movedim(1, -1)
    (grid_plain * weights).sum().backward()
    torch.testing.assert_close(stn.sampling_grid(theta, "projective", size), grid_plain.detach(), rtol=0, atol=1e-12)
    assert torch.isfinite(plain.grad).all()
    torch.testing.assert_close(fast.grad, plain.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("h31", [8.0, 0.3])
def test_double_backward_through_the_projective_grid_equals_the_plain_ops(h31):
    """With create_graph the hand-written gradient differentiates again (behind the horizon too: zero there),
    and its second derivative is the plain ops' one; gradgradcheck passes."""
    torch.manual_seed(0)
    projective = transforms.get("projective")
    theta = horizon_theta(h31, batch=2) + 0.05 * torch.randn(2, 8, dtype=torch.float64)
    size = (4, W)
    weights = torch.randn(2, *size, 2, dtype=torch.float64)

    def plain_grid(t: torch.Tensor) -> torch.Tensor:
        uvw = projective.matrix(t) @ homogeneous_grid(size, t.device, t.dtype)
        return _dehomogenise(uvw, projective.eps, projective.outside).view(2, 2, *size).movedim(1, -1)

    second = []
    for grid_of in (lambda t: stn.sampling_grid(t, "projective", size), plain_grid):
        t = theta.clone().requires_grad_()
        (g,) = torch.autograd.grad((grid_of(t) * weights).square().sum(), t, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), t)
        second.append(gg)
    assert torch.isfinite(second[0]).all() and second[0].abs().sum() > 0
    torch.testing.assert_close(second[0], second[1], rtol=1e-9, atol=1e-9)
    t = theta.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: stn.sampling_grid(t, "projective", size), (t,))
