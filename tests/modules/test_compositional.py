"""Tests for stn.modules.compositional: the K-step (IC-STN) transformer against its definition, written out by hand
with float64 matrix products, and against a plain spatial transformer at K = 1."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from stn import warp
from stn.modules import CompositionalSpatialTransformer, ConvLocalization, SpatialTransformer
from stn.modules.diagnostics import theta_diagnostics
from stn.transforms import get as get_transform


class ScriptedLocalization(nn.Module):
    """Records the views it is given and returns the next of a fixed list of features ``(B, F)``."""

    def __init__(self, features: list[Tensor]) -> None:
        super().__init__()
        self.features = features
        self.views: list[Tensor] = []
        self.out_features = features[0].shape[1]

    def forward(self, x: Tensor) -> Tensor:
        self.views.append(x)
        return self.features[len(self.views) - 1].to(x.dtype)


def _randomise(module: nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Move every parameter off its initial value, so that the regression layer no longer outputs the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _scripted(transform: str, steps: int, batch: int = 3, width: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, width, generator=g, dtype=torch.float64) for _ in range(steps)]
    loc = ScriptedLocalization(features)
    ic = CompositionalSpatialTransformer(loc, transform, steps=steps).double()
    with torch.no_grad():
        ic.head.linear.weight.copy_(0.08 * torch.randn(ic.head.linear.weight.shape, generator=g, dtype=torch.float64))
    return ic, loc, features


def _images(batch: int = 3, size: int = 20, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("transform", ["affine", "projective", "attention"])
def test_matrix_families_compose_each_update_into_theta_by_matrix_products(transform):
    ic, loc, features = _scripted(transform, steps=3)
    family = get_transform(transform)
    x = _images()
    out, thetas = ic(x, return_theta=True)
    deltas = [ic.head(f)[:, 0] for f in features]
    expected = family.matrix(deltas[0])
    for k in range(3):
        if k:
            expected = expected @ family.matrix(deltas[k])
        normalised = expected / expected[:, 2:, 2:]  # a projective θ is its matrix scaled to H[2, 2] = 1
        torch.testing.assert_close(family.matrix(thetas[:, k]), normalised, rtol=1e-12, atol=1e-12)
    # step k's net saw the input warped by θ_{k-1} (step 1: the input itself); the output is x warped by θ_K
    assert loc.views[0] is x
    for k in (1, 2):
        torch.testing.assert_close(loc.views[k], warp(x, thetas[:, k - 1], transform), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, warp(x, thetas[:, -1], transform), rtol=0, atol=1e-12)


def test_tps_updates_add_each_step_s_control_point_moves():
    ic, _, features = _scripted("tps", steps=3)
    identity = ic.transform.identity_params().double()
    _, thetas = ic(_images(), return_theta=True)
    deltas = [ic.head(f)[:, 0] for f in features]
    expected = deltas[0] + (deltas[1] - identity) + (deltas[2] - identity)
    torch.testing.assert_close(thetas[:, -1], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_one_step_equals_a_plain_spatial_transformer_with_the_same_weights(transform):
    torch.manual_seed(0)
    st = SpatialTransformer(ConvLocalization(1), transform, out_size=(14, 14))
    _randomise(st)
    ic = CompositionalSpatialTransformer.from_transformer(st, steps=1)
    x = torch.rand(4, 1, 28, 28)
    out, thetas = ic(x, return_theta=True)
    assert torch.equal(out, st(x))
    assert torch.equal(thetas[:, 0], st.localize(x))
    assert ic.head is st.head and ic.localization is st.localization  # shared, not copied


def test_the_output_is_sampled_once_from_the_original_input():
    torch.manual_seed(0)
    st = SpatialTransformer(ConvLocalization(1), "affine")
    _randomise(st)
    ic = CompositionalSpatialTransformer.from_transformer(st, steps=3)
    x = torch.rand(2, 1, 28, 28)
    sampled_from = []
    original = ic._sample
    ic._sample = lambda source, *rest: sampled_from.append(source) or original(source, *rest)
    out, thetas = ic(x, return_theta=True)
    # K - 1 views for the localisation net and one output, every one of them read from x itself
    assert len(sampled_from) == 3 and all(source is x for source in sampled_from)
    assert out.abs().sum() > 0.5 * x.sum()  # the digit is still in view
    assert torch.equal(out, warp(x, thetas[:, -1], "affine"))
    # what it avoids: warping the warped image, which resamples twice and blurs
    delta = get_transform("affine").from_matrix(
        torch.linalg.solve(get_transform("affine").matrix(thetas[:, 1]), get_transform("affine").matrix(thetas[:, 2]))
    )
    twice = warp(warp(x, thetas[:, 1], "affine"), delta, "affine")
    assert (twice - out).abs().max() > 1e-2


def test_it_starts_at_the_identity_and_returns_every_step_s_theta():
    ic = CompositionalSpatialTransformer(ConvLocalization(1), "projective", steps=4)
    x = torch.rand(5, 1, 28, 28)
    out, thetas = ic(x, return_theta=True)
    assert thetas.shape == (5, 4, 8)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(ic.localize(x), thetas[:, -1])


def test_one_net_per_step_when_given_a_list():
    nets = [ConvLocalization(1) for _ in range(3)]
    ic = CompositionalSpatialTransformer(nets, "affine", steps=3)
    shared = CompositionalSpatialTransformer(ConvLocalization(1), "affine", steps=3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ic) == 3 * count(shared)
    assert "shared=False" in repr(ic) and "steps=3" in repr(ic)
    _randomise(ic)
    out = ic(torch.rand(2, 1, 28, 28))
    out.sum().backward()
    assert all(p.grad is not None for p in ic.parameters())


def test_double_backward_through_every_step():
    torch.manual_seed(0)
    ic = CompositionalSpatialTransformer(ConvLocalization(1), "affine", steps=2).double()
    _randomise(ic, scale=0.1)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ic(x).square().sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradcheck_of_the_output_through_every_step_s_update():
    """The regression layer's weights enter every step's update: the output's gradient w.r.t. them, through the
    compositions and the intermediate views, against finite differences in float64."""
    ic, loc, _ = _scripted("affine", steps=3, batch=2)
    x = _images(batch=2, size=9)

    def output(weight: Tensor) -> Tensor:
        loc.views.clear()
        return functional_call(ic, {**dict(ic.named_parameters()), "head.linear.weight": weight}, (x,))

    weight = ic.head.linear.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(output, (weight,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"steps": 2.0}, "steps must be an int >= 1"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompositionalSpatialTransformer(ConvLocalization(1), "affine", **kwargs)


def test_a_list_of_nets_must_have_one_per_step():
    with pytest.raises(ValueError, match="or 3 \\(one a step\\), got 2"):
        CompositionalSpatialTransformer([ConvLocalization(1), ConvLocalization(1)], "affine", steps=3)


def test_from_transformer_refuses_a_bounded_or_shifted_start():
    bounded = SpatialTransformer(ConvLocalization(1), "attention", scale_range=(0.5, 0.5))
    with pytest.raises(ValueError, match="starts at the identity"):
        CompositionalSpatialTransformer.from_transformer(bounded)
    shifted = SpatialTransformer(ConvLocalization(1), "affine", init_theta=[0.5, 0, 0, 0, 0.5, 0])
    with pytest.raises(ValueError, match="starts at the identity"):
        CompositionalSpatialTransformer.from_transformer(shifted)


def test_diagnostics_give_each_step_its_own_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(CompositionalSpatialTransformer(ConvLocalization(1), "affine", steps=3))
    _randomise(model)
    stats = theta_diagnostics(model, torch.rand(6, 1, 28, 28))
    assert {"0.scale_mean", "0.step1.scale_mean", "0.step2.scale_mean"} <= set(stats)
    assert "0.step3.scale_mean" not in stats  # the last step is the transformer's own
    assert stats["0.step1.scale_mean"] != stats["0.scale_mean"]
