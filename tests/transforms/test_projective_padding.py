"""Points on or behind a homography's horizon have no source point: they read 0 in every padding mode (border
and reflection padding would read image pixels there; reflection used to read the image centre), through
``stn.warp`` and through the spatial transformer modules alike, with zero gradient."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stn
from stn import transforms

SIZE = (5, 8)


def horizon_theta(batch: int = 2) -> torch.Tensor:
    """Homographies whose horizon crosses the output: w = 1 - 4x (right part behind), w = 1 + 3y (top behind)."""
    theta = transforms.get("projective").identity(batch, dtype=torch.float64)
    theta[0, 6] = -4.0
    theta[1 % batch, 7] = 3.0
    return theta


def behind(theta: torch.Tensor) -> torch.Tensor:
    g = stn.coords.base_grid(SIZE, dtype=torch.float64)
    w = theta[:, 6, None, None] * g[..., 0] + theta[:, 7, None, None] * g[..., 1] + 1
    return w <= transforms.get("projective").eps


def test_valid_mask_marks_the_points_without_a_source() -> None:
    theta = horizon_theta()
    mask = transforms.get("projective").valid_mask(theta, SIZE)
    assert mask.dtype == torch.bool and mask.shape == (2, *SIZE)
    assert torch.equal(mask, ~behind(theta)) and (~mask).any() and mask.any()
    assert transforms.get("affine").valid_mask(transforms.get("affine").identity(2), SIZE) is None


@pytest.mark.parametrize("padding_mode", ["border", "reflection", "zeros"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_behind_the_horizon_reads_zero_in_every_padding_mode(padding_mode: str, mode: str) -> None:
    theta = horizon_theta()
    x = torch.rand(2, 3, *SIZE, dtype=torch.float64) + 1.0  # no pixel is 0: a 0 can only come from the rule
    out = stn.warp(x, theta, "projective", mode=mode, padding_mode=padding_mode)
    hidden = behind(theta)[:, None].expand_as(out)
    assert torch.equal(out[hidden], torch.zeros_like(out[hidden]))
    # everywhere else the padding mode is untouched: the plain sampler on the same grid
    grid = stn.sampling_grid(theta, "projective", SIZE)
    plain = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    assert torch.equal(out[~hidden], plain[~hidden])
    if padding_mode == "reflection":  # what the rule replaces: the grid's (2, 2) reflects onto the image centre
        assert (plain[hidden] != 0).all()


@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
def test_behind_the_horizon_has_zero_gradient(padding_mode: str) -> None:
    theta = horizon_theta().requires_grad_()
    x = torch.rand(2, 3, *SIZE, dtype=torch.float64, requires_grad=True)
    out = stn.warp(x, theta, "projective", padding_mode=padding_mode)
    hidden = behind(theta.detach())[:, None].expand_as(out)
    gx, gt = torch.autograd.grad(out[hidden].sum(), (x, theta), retain_graph=True)
    assert torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gt, torch.zeros_like(gt))
    gx, gt = torch.autograd.grad((out * torch.randn_like(out)).sum(), (x, theta))
    assert torch.isfinite(gx).all() and torch.isfinite(gt).all() and gt.abs().sum() > 0


def _with_theta(module: nn.Module, theta: torch.Tensor) -> nn.Module:
    """``module`` with its regression layer set to output ``theta`` (flattened) whatever the input."""
    head = module.head
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.copy_(theta.reshape(-1))
    return module


@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
def test_the_modules_follow_the_same_rule(padding_mode: str) -> None:
    theta = horizon_theta().double()
    x = torch.rand(2, 3, *SIZE, dtype=torch.float64) + 1.0
    localization = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 4)).double()
    st = _with_theta(stn.SpatialTransformer(localization, "projective", padding_mode=padding_mode).double(), theta[0])
    expected = stn.warp(x, theta[:1].expand(2, -1), "projective", padding_mode=padding_mode)
    torch.testing.assert_close(st(x), expected)  # the module's θ takes the closed-form gradient's path
    assert torch.equal(st(x) == 0, expected == 0)
    pst = stn.ParallelSpatialTransformer(localization, 2, "projective", padding_mode=padding_mode).double()
    crops = _with_theta(pst, theta)(x)
    for n in range(2):
        expected = stn.warp(x, theta[n : n + 1].expand(2, -1), "projective", padding_mode=padding_mode)
        torch.testing.assert_close(crops[n], expected)
        assert torch.equal(crops[n] == 0, expected == 0) and (expected == 0).any()


def test_sample_checks_the_mask() -> None:
    x = torch.rand(2, 1, *SIZE)
    grid = stn.sampling_grid(transforms.get("affine").identity(2), "affine", SIZE)
    with pytest.raises(ValueError, match=r"bool mask of shape \(2, 5, 8\)"):
        stn.sample(x, grid, valid=torch.ones(2, *SIZE))
    with pytest.raises(ValueError, match="bool mask"):
        stn.sample(x, grid, valid=torch.ones(2, 8, 5, dtype=torch.bool))
    masked = torch.ones(2, *SIZE, dtype=torch.bool)
    masked[:, 0] = False
    out = stn.sample(x, grid, padding_mode="border", valid=masked)
    assert (out[:, :, 0] == 0).all() and torch.allclose(out[:, :, 1:], x[:, :, 1:])
