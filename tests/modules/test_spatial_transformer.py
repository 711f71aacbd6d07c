"""Tests for stn.SpatialTransformer: identity at initialisation, θ access, residual mode, bounds, compile/trace."""

import math
import os
import warnings

import pytest
import torch
from torch import nn

import stn
from stn import transforms

FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "tps", "affine3d"]


def volume_or_image(name: str, batch: int = 2, channels: int = 2) -> torch.Tensor:
    size = (3, 4, 5) if transforms.get(name).ndim == 3 else (6, 7)
    return torch.rand(batch, channels, *size, dtype=torch.float64)


def tiny_localization(x: torch.Tensor, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), width), nn.Tanh())


def head_linear(st: nn.Module) -> nn.Linear:
    """The regression layer the transformer appended: the one nn.Linear that is not the localisation net's."""
    own = {id(m) for m in st.localization.modules()}
    heads = [m for m in st.modules() if isinstance(m, nn.Linear) and id(m) not in own]
    assert len(heads) == 1
    return heads[0]


def randomise_head(st: nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        head = head_linear(st)
        head.weight.normal_(0, scale)
        head.bias.add_(torch.randn_like(head.bias) * scale)


@pytest.mark.parametrize("name", FAMILIES)
def test_output_equals_input_at_initialisation(name):
    x = volume_or_image(name).float()
    st = stn.SpatialTransformer(tiny_localization(x), name)
    out, theta = st(x, return_theta=True)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(theta, transforms.get(name).identity(2), rtol=0, atol=0)
    head = head_linear(st)
    assert torch.equal(head.weight, torch.zeros_like(head.weight))


@pytest.mark.parametrize("name", ["affine", "tps", "affine3d"])
def test_module_is_localise_then_warp(name):
    x = volume_or_image(name)
    st = stn.SpatialTransformer(tiny_localization(x), name).double()
    randomise_head(st)
    out, theta = st(x, return_theta=True)
    t = transforms.get(name)
    assert theta.shape == (2, t.num_params)
    torch.testing.assert_close(st.localize(x), theta, rtol=0, atol=0)
    torch.testing.assert_close(st(x), out, rtol=0, atol=0)
    torch.testing.assert_close(out, stn.warp(x, theta, name), rtol=0, atol=1e-12)
    assert not torch.allclose(out, x)


def test_out_size_mode_and_fill_are_passed_to_the_sampler():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    theta0 = [1.5, 0.125, -0.125]  # zoomed out: the fill value shows
    st = stn.SpatialTransformer(
        tiny_localization(x), "attention", (4, 5), init_theta=theta0, mode="bicubic", fill=[0.5, 0.0, -1.0]
    ).double()
    expected = stn.warp(
        x, torch.tensor([theta0] * 2, dtype=torch.float64), "attention", (4, 5), mode="bicubic", fill=[0.5, 0.0, -1.0]
    )
    torch.testing.assert_close(st(x), expected, rtol=0, atol=1e-12)


def test_gradients_reach_the_localisation_net():
    x = torch.rand(4, 1, 10, 10)
    target = torch.roll(x, shifts=(1, 2), dims=(2, 3))  # a non-trivial loss: align x with a shifted copy
    loc = nn.Sequential(nn.Flatten(), nn.Linear(100, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
    st = stn.SpatialTransformer(loc, "affine")
    opt = torch.optim.SGD(st.parameters(), lr=0.1)
    nn.functional.mse_loss(st(x), target).backward()
    # The head starts with zero weights, so the first backward reaches the head only ...
    head = head_linear(st)
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    nn.functional.mse_loss(st(x), target).backward()
    # ... and after one step every parameter of the localisation net receives a gradient.
    for pname, p in loc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_feature_width_from_attribute_last_linear_or_argument():
    x = torch.rand(2, 1, 8, 8)
    last_linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU())
    assert head_linear(stn.SpatialTransformer(last_linear)).in_features == 5
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten())  # no nn.Linear: F must be given
    st = stn.SpatialTransformer(pooled, "attention", in_features=9)
    assert st(x).shape == x.shape
    with pytest.raises(ValueError, match="in_features"):
        stn.SpatialTransformer(pooled, "attention")
    assert head_linear(stn.SpatialTransformer(stn.FCLocalization((1, 8, 8), hidden=(7,)))).in_features == 7


@pytest.mark.parametrize("name", ["attention", "affine", "tps"])
def test_residual_mode_predicts_an_offset_from_the_identity(name):
    x = torch.rand(2, 1, 6, 6)
    st = stn.SpatialTransformer(tiny_localization(x), name, residual=True)
    head = head_linear(st)
    identity = transforms.get(name).identity(2)
    assert torch.equal(head.bias, torch.zeros_like(head.bias))  # a zero output means "no change"
    torch.testing.assert_close(st(x), x, rtol=0, atol=1e-6)
    delta = 0.1 * torch.randn_like(head.bias)
    with torch.no_grad():
        head.bias.copy_(delta)
    torch.testing.assert_close(st.localize(x), identity + delta, rtol=0, atol=1e-6)


def test_max_translation_bounds_translation_only():
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    st = stn.SpatialTransformer(tiny_localization(x), "affine", max_translation=0.2).double()
    torch.testing.assert_close(st(x), x, rtol=0, atol=1e-9)  # the bound keeps the identity at initialisation
    with torch.no_grad():
        head_linear(st).bias.copy_(torch.tensor([2.0, 0.3, 50.0, -0.4, 3.0, -50.0]))
    theta = st.localize(x)
    assert theta[:, [2, 5]].abs().max() <= 0.2 + 1e-12
    assert theta[:, 2].min() > 0.19 and theta[:, 5].max() < -0.19  # saturates towards the bound, keeps sign
    torch.testing.assert_close(theta[:, [0, 1, 3, 4]], torch.tensor([[2.0, 0.3, -0.4, 3.0]] * 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("name", "bias", "expected"),
    [
        ("attention", [5.0, 9.0, -9.0], [1.5, 0.25, -0.25]),
        ("attention", [0.01, 0.0, 0.1], [0.5, 0.0, 0.25 * math.tanh(0.1 / 0.25)]),  # init + b tanh((θ - init) / b)
        ("similarity", [3.0, 4.0, 0.0, 0.0], [0.9, 1.2, 0.0, 0.0]),  # |(a, b)| = 5 clamped to 1.5, angle kept
    ],
)
def test_scale_range_and_translation_bounds(name, bias, expected):
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    st = stn.SpatialTransformer(tiny_localization(x), name, max_translation=0.25, scale_range=(0.5, 1.5)).double()
    torch.testing.assert_close(st(x), x, rtol=0, atol=1e-9)
    with torch.no_grad():
        head_linear(st).bias.copy_(torch.tensor(bias))
    theta = st.localize(x)
    torch.testing.assert_close(theta, torch.tensor([expected] * 2, dtype=torch.float64), rtol=0, atol=1e-6)
    grads = torch.autograd.grad(st(x).sum(), [p for p in st.parameters() if p.requires_grad], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_bad_bounds_are_rejected():
    loc = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    with pytest.raises(ValueError, match="scale"):
        stn.SpatialTransformer(loc, "affine", scale_range=(0.5, 1.0))  # no isotropic scale in an affine map
    with pytest.raises(ValueError, match="scale_range"):
        stn.SpatialTransformer(loc, "attention", scale_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="max_translation"):
        stn.SpatialTransformer(loc, "attention", max_translation=0.0)
    with pytest.raises(KeyError):
        stn.SpatialTransformer(loc, "rigid")


def test_init_theta():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    theta0 = torch.tensor([0.5, 0.25, -0.25], dtype=torch.float64)
    st = stn.SpatialTransformer(tiny_localization(x), "attention", init_theta=theta0).double()
    torch.testing.assert_close(st.localize(x), theta0.expand(2, -1))
    with pytest.raises(ValueError, match="init_theta"):
        stn.SpatialTransformer(tiny_localization(x), "attention", init_theta=[1.0, 0.0])


def test_volume_transformer():
    x = torch.rand(2, 1, 8, 8, 8)
    st = stn.SpatialTransformer(stn.ConvLocalization(1, channels=4, hidden=8, ndim=3), "affine3d", (4, 4, 4))
    out, theta = st(x, return_theta=True)
    assert out.shape == (2, 1, 4, 4, 4) and theta.shape == (2, 12)
    torch.testing.assert_close(out, nn.functional.interpolate(x, size=(4, 4, 4), mode="trilinear"), rtol=0, atol=1e-6)
    out.sum().backward()
    assert head_linear(st).weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("transform", "out_size"),
    [("affine", None), ("projective", (5, 6)), (transforms.get("tps", k=3, reg=0.0123), (7, 5))],
    ids=["affine", "projective", "tps"],
)
def test_jit_trace(transform, out_size):
    # The TPS options and size are used nowhere else: its solve is not cached yet when the trace starts.
    x = torch.rand(3, 1, 10, 10)
    st = stn.SpatialTransformer(stn.ConvLocalization(1, channels=4, hidden=8), transform, out_size)
    randomise_head(st)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(st, (x,))  # check_trace retraces and compares the graphs
    other = torch.rand(5, 1, 10, 10)  # another batch size
    torch.testing.assert_close(traced(other), st(other), rtol=1e-6, atol=1e-6)


# torch 2.13's inductor writes C++ for the CPU's own vector ISA, which disagrees with an ATen capability lowered by
# ATEN_CPU_CAPABILITY: under "default" it does not compile ("'at::vec' has not been declared"), under "avx2" on an
# AVX-512 CPU it runs and returns wrong values (NaN gradients). A torch limitation, not stn's, seen when the suite
# is run under those settings to check its numbers on other kernels; on a CPU that is AVX2 itself these tests run.
needs_inductor = pytest.mark.skipif(
    bool(os.environ.get("ATEN_CPU_CAPABILITY")),
    reason="torch.compile's inductor disagrees with a lowered ATEN_CPU_CAPABILITY (torch 2.13: compile errors or "
    "wrong values); these tests run without it",
)


@pytest.mark.slow
@needs_inductor
def test_torch_compile():
    # TPS options used nowhere else: the solve runs inside the compiled region.
    x = torch.rand(2, 1, 8, 8)
    st = stn.SpatialTransformer(tiny_localization(x), transforms.get("tps", k=3, reg=0.0321), (5, 9))
    randomise_head(st)
    expected_out, expected_theta = st(x, return_theta=True)
    out, theta = torch.compile(st)(x, return_theta=True)
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theta, expected_theta, rtol=1e-5, atol=1e-5)
    (out.square().sum() + theta.sum()).backward()
    assert head_linear(st).weight.grad.abs().sum() > 0


@pytest.mark.slow
@needs_inductor
def test_torch_compile_trains_through_the_projective_closed_form_gradient():
    x = torch.rand(3, 1, 8, 8)
    st = stn.SpatialTransformer(tiny_localization(x), "projective", (6, 7))
    randomise_head(st)

    def grads(module: torch.nn.Module) -> list[torch.Tensor]:
        st.zero_grad()
        module(x).square().sum().backward()
        return [p.grad.clone() for p in st.parameters()]

    expected = grads(st)
    for got, want in zip(grads(torch.compile(st)), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# --- non-finite θ ---------------------------------------------------------------------------------------------------


def _nan_for(st: nn.Module, x: torch.Tensor, samples: list[int]) -> torch.Tensor:
    """``x`` with a NaN in each of ``samples``: a localisation net regresses NaN θ for exactly those."""
    x = x.clone()
    x[samples, 0, 0, 0] = float("nan")
    return x


def test_check_finite_names_the_samples_whose_theta_is_not_finite():
    x = torch.rand(6, 1, 6, 7)
    st = stn.SpatialTransformer(tiny_localization(x), "affine", check_finite=True)
    assert st(x).shape == x.shape  # finite θ: no complaint
    with pytest.raises(ValueError, match=r"SpatialTransformer: θ is NaN or infinite for sample\(s\) \[1, 4\] of 6"):
        st(_nan_for(st, x, [1, 4]))
    with torch.no_grad():
        head_linear(st).bias[0] = float("inf")
    with pytest.raises(ValueError, match=r"infinite for sample\(s\) \[0, 1, 2, 3, 4, 5\] of 6"):
        st(x)


def test_parallel_check_finite_names_the_samples():
    x = torch.rand(3, 1, 6, 7)
    pst = stn.ParallelSpatialTransformer(tiny_localization(x), 2, "attention", check_finite=True)
    with pytest.raises(ValueError, match=r"ParallelSpatialTransformer: .* sample\(s\) \[2\] of 3"):
        pst(_nan_for(pst, x, [2]))


def test_non_finite_theta_is_not_checked_by_default_nor_in_traced_graphs(monkeypatch: pytest.MonkeyPatch):
    x = torch.rand(2, 1, 6, 7)
    monkeypatch.delenv("STN_CHECK_FINITE", raising=False)
    st = stn.SpatialTransformer(tiny_localization(x), "affine")
    assert not st.check_finite and torch.isnan(st(_nan_for(st, x, [0]))[0]).all()
    monkeypatch.setenv("STN_CHECK_FINITE", "1")  # read when the module is built
    assert not st.check_finite
    checked = stn.SpatialTransformer(tiny_localization(x), "affine")
    assert checked.check_finite
    with pytest.raises(ValueError, match=r"sample\(s\) \[0\]"):
        checked(_nan_for(checked, x, [0]))
    assert not stn.SpatialTransformer(tiny_localization(x), "affine", check_finite=False).check_finite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(checked, (x,), check_trace=False)  # a graph cannot raise on data
    assert torch.isnan(traced(_nan_for(checked, x, [1]))[1]).all()


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_an_empty_batch_gives_an_empty_output_and_theta(name, padding_mode):
    x = volume_or_image(name, batch=0).requires_grad_()
    size = (2, 3, 4) if transforms.get(name).ndim == 3 else (4, 5)
    options = {"max_translation": 0.5} if name != "tps" else {}
    st = stn.SpatialTransformer(
        tiny_localization(volume_or_image(name)), name, size, padding_mode=padding_mode, check_finite=True, **options
    ).double()
    out, theta = st(x, return_theta=True)
    assert out.shape == (0, 2, *size) and theta.shape == (0, transforms.get(name).num_params)
    out.sum().backward()  # the backward of nothing is zero gradients, not an error
    assert x.grad.shape == x.shape
