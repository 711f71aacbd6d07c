"""The spatial transformer modules' ``antialias=`` option: plain sampling where θ does not shrink the input, and
``stn.warp(..., antialias=True)`` of each transformer's θ where it does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stn


def localization(numel: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(numel, 8), nn.Tanh())


def randomise_head(module: nn.Module, scale: float = 0.02) -> None:
    with torch.no_grad():
        module.head.linear.weight.normal_(0, scale)


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_spatial_transformer_at_the_identity_is_plain_and_shrinking_is_antialiased(transform):
    x = torch.rand(3, 2, 24, 24)
    plain = stn.SpatialTransformer(localization(2 * 24 * 24), transform)
    smooth = stn.SpatialTransformer(localization(2 * 24 * 24), transform, antialias=True)
    smooth.load_state_dict(plain.state_dict())
    assert torch.equal(smooth(x), plain(x))  # θ = identity: no shrink

    for module in (plain, smooth):  # the same net, now halving the image into a 12 x 12 output
        module.out_size = (12, 12)
        randomise_head(module)
    smooth.load_state_dict(plain.state_dict())
    out, theta = smooth(x, return_theta=True)
    torch.testing.assert_close(out, stn.warp(x, theta, transform, (12, 12), antialias=True), rtol=0, atol=0)
    assert not torch.allclose(out, plain(x), atol=1e-3)
    out.square().sum().backward()
    assert smooth.localization[1].weight.grad.abs().sum() > 0
    assert "antialias=True" in repr(smooth)


def test_parallel_crops_at_half_scale_are_plain_and_wider_crops_are_antialiased():
    x = torch.rand(2, 3, 64, 64)
    kwargs = dict(
        num_transformers=2, transform="attention", out_size=(32, 32), init_theta=[[0.5, -0.5, 0], [0.5, 0.5, 0]]
    )
    plain = stn.ParallelSpatialTransformer(localization(3 * 64 * 64), scale_range=(0.5, 0.5), **kwargs)
    smooth = stn.ParallelSpatialTransformer(localization(3 * 64 * 64), scale_range=(0.5, 0.5), antialias=True, **kwargs)
    randomise_head(plain)
    smooth.load_state_dict(plain.state_dict())
    # the paper's crops: a window of half the width at half the size reads the input at its own resolution
    assert all(torch.equal(a, b) for a, b in zip(smooth(x), plain(x)))

    wide = stn.ParallelSpatialTransformer(
        localization(3 * 64 * 64), scale_range=(0.75, 0.75), antialias=True, concat=True, **kwargs
    )
    randomise_head(wide)
    out, theta = wide(x, return_theta=True)  # (2, 6, 32, 32): each crop shrinks its 48-pixel window 1.5x
    assert out.shape == (2, 6, 32, 32)
    for i in range(2):
        expected = stn.warp(x, theta[:, i], "attention", (32, 32), antialias=True)
        torch.testing.assert_close(out[:, 3 * i : 3 * i + 3], expected, rtol=0, atol=0)
