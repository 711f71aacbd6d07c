"""Tests for the ready localisation nets FCLocalization and ConvLocalization."""

import pytest
import torch
from torch import nn

import stn


@pytest.mark.parametrize(
    ("in_shape", "hidden"), [((1, 28, 28), (32, 32)), ((3, 10, 12), (16,)), ((2, 4, 5, 6), (8, 4))]
)
def test_fc_localization_shapes(in_shape, hidden):
    loc = stn.FCLocalization(in_shape, hidden=hidden)
    assert loc.out_features == hidden[-1]
    assert loc(torch.rand(5, *in_shape)).shape == (5, hidden[-1])
    assert [m.out_features for m in loc.modules() if isinstance(m, nn.Linear)] == list(hidden)


def test_fc_localization_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="hidden"):
        stn.FCLocalization((1, 8, 8), hidden=())


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (42, 42), (60, 60), (37, 53), (64, 16)])
def test_conv_localization_accepts_any_input_size(size):
    loc = stn.ConvLocalization(3)
    out = loc(torch.rand(2, 3, *size))
    assert out.shape == (2, 20) and loc.out_features == 20


def upsampled_maxima(x: torch.Tensor) -> torch.Tensor:
    """x with every 2x2 block replaced by its maximum: the same as x after a 2x max-pool."""
    return nn.functional.max_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)


def test_conv_localization_has_the_papers_shape():
    loc = stn.ConvLocalization(1, channels=20, kernel_size=5, hidden=20)
    convs = [m for m in loc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5))] * 2
    assert [m.out_features for m in loc.modules() if isinstance(m, nn.Linear)] == [20]
    # The input is max-pooled 2x first: the output depends only on the 2x2 maxima of the input.
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(loc(upsampled_maxima(x)), loc(x))


def test_conv_localization_options():
    loc = stn.ConvLocalization(2, channels=6, kernel_size=3, hidden=12, downsample=1)
    x = torch.rand(3, 2, 20, 30)
    assert loc(x).shape == (3, 12) and loc.out_features == 12
    assert [c.kernel_size for c in loc.modules() if isinstance(c, nn.Conv2d)] == [(3, 3)] * 2
    assert not torch.allclose(loc(upsampled_maxima(x)), loc(x))  # no max-pool on the input


def test_conv_localization_volumes():
    loc = stn.ConvLocalization(1, channels=4, hidden=8, ndim=3)
    for size in [(8, 8, 8), (12, 10, 6)]:
        assert loc(torch.rand(2, 1, *size)).shape == (2, 8)


@pytest.mark.parametrize("make", [lambda: stn.FCLocalization((1, 12, 12)), lambda: stn.ConvLocalization(1)])
def test_nets_plug_into_a_transformer(make):
    st = stn.SpatialTransformer(make(), "affine")
    x = torch.rand(2, 1, 12, 12)
    out = st(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    out.sum().backward()
