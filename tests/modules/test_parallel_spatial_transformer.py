"""Tests for stn.ParallelSpatialTransformer: N transformers on one input, shared or separate localisation nets."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import stn
from stn import transforms


def tiny_localization(numel: int, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(numel, width), nn.Tanh())


def head_linears(pst: nn.Module) -> list[nn.Linear]:
    own = {id(m) for m in pst.localization.modules()}
    return [m for m in pst.modules() if isinstance(m, nn.Linear) and id(m) not in own]


def randomise_heads(pst: nn.Module) -> None:
    with torch.no_grad():
        for head in head_linears(pst):
            head.weight.normal_(0, 0.05)
            head.bias.add_(0.05 * torch.randn_like(head.bias))


class GridSampleCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in ("grid_sampler_2d", "grid_sampler_3d", "grid_sampler"):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def build(shared: bool, n: int, name: str, out_size, x: torch.Tensor, **kwargs) -> stn.ParallelSpatialTransformer:
    loc = tiny_localization(x[0].numel()) if shared else [tiny_localization(x[0].numel()) for _ in range(n)]
    return stn.ParallelSpatialTransformer(loc, n, name, out_size, **kwargs).double()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("name", ["attention", "affine", "tps"])
def test_identity_at_initialisation(shared, name):
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    pst = build(shared, 3, name, None, x)
    outs, theta = pst(x, return_theta=True)
    assert isinstance(outs, list) and len(outs) == 3
    assert theta.shape == (2, 3, transforms.get(name).num_params)
    for out in outs:
        torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize(("name", "out_size"), [("attention", (4, 5)), ("projective", None), ("tps", (3, 3))])
def test_equals_n_separate_warps(shared, name, out_size):
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    pst = build(shared, 3, name, out_size, x)
    randomise_heads(pst)
    outs, theta = pst(x, return_theta=True)
    torch.testing.assert_close(pst.localize(x), theta, rtol=0, atol=0)
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, stn.warp(x, theta[:, i], name, out_size), rtol=0, atol=1e-12)
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("shared", [True, False])
def test_concat_is_the_channel_concatenation_of_the_list(shared):
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    listed = build(shared, 2, "affine", (4, 4), x)
    randomise_heads(listed)
    concat = build(shared, 2, "affine", (4, 4), x, concat=True)
    concat.load_state_dict(listed.state_dict())
    out = concat(x)
    assert out.shape == (2, 6, 4, 4)
    torch.testing.assert_close(out, torch.cat(listed(x), dim=1), rtol=0, atol=0)


def test_shared_net_has_one_head_for_all_transformers():
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    shared = build(True, 4, "affine", None, x)
    assert [h.out_features for h in head_linears(shared)] == [24]
    separate = build(False, 4, "affine", None, x)
    assert [h.out_features for h in head_linears(separate)] == [6] * 4
    assert len(list(separate.localization.modules())) > len(list(shared.localization.modules()))


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("concat", [True, False])
def test_input_is_sampled_in_one_call(shared, concat):
    x = torch.rand(2, 3, 8, 8)
    pst = build(shared, 4, "attention", (4, 4), x, concat=concat).float()
    with GridSampleCounter() as counter:
        pst(x)
    assert counter.calls == 1


def test_init_theta_per_transformer():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    init = torch.tensor([[0.5, -0.5, -0.5], [0.5, 0.5, 0.5]], dtype=torch.float64)  # two quadrant crops
    pst = build(True, 2, "attention", (4, 4), x, init_theta=init)
    top_left, bottom_right = pst(x)
    torch.testing.assert_close(top_left, x[:, :, :4, :4], rtol=0, atol=1e-6)
    torch.testing.assert_close(bottom_right, x[:, :, 4:, 4:], rtol=0, atol=1e-6)
    separate = build(False, 2, "attention", (4, 4), x, init_theta=init)
    torch.testing.assert_close(separate.localize(x), init.expand(2, -1, -1), rtol=0, atol=1e-7)


def test_volumes():
    x = torch.rand(2, 1, 4, 4, 4, dtype=torch.float64)
    pst = build(True, 2, "affine3d", (2, 3, 4), x, concat=True)
    randomise_heads(pst)
    out, theta = pst(x, return_theta=True)
    assert out.shape == (2, 2, 2, 3, 4) and theta.shape == (2, 2, 12)
    torch.testing.assert_close(out[:, 1:], stn.warp(x, theta[:, 1], "affine3d", (2, 3, 4)), rtol=0, atol=1e-12)


def test_gradients_reach_every_head():
    x = torch.rand(2, 1, 6, 6)
    pst = stn.ParallelSpatialTransformer([tiny_localization(36) for _ in range(2)], 2, "affine")
    target = torch.roll(x, 1, dims=3)
    sum(nn.functional.mse_loss(out, target) for out in pst(x)).backward()
    assert all(head.weight.grad.abs().sum() > 0 for head in head_linears(pst))


def test_number_of_nets_must_match():
    nets = [tiny_localization(36) for _ in range(2)]
    with pytest.raises(ValueError, match="num_transformers"):
        stn.ParallelSpatialTransformer(nets, 3, "affine")
    with pytest.raises(ValueError, match="num_transformers"):
        stn.ParallelSpatialTransformer(tiny_localization(36), 0, "affine")
    assert stn.ParallelSpatialTransformer(nets, None, "affine").num_transformers == 2


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("name", ["attention", "affine", "tps"])
def test_an_empty_batch_gives_empty_outputs_and_theta(shared, concat, name):
    x = torch.rand(0, 2, 6, 6, dtype=torch.float64)
    pst = build(shared, 3, name, (4, 5), torch.rand(1, 2, 6, 6), concat=concat, check_finite=True)
    out, theta = pst(x, return_theta=True)
    assert theta.shape == (0, 3, transforms.get(name).num_params)
    if concat:
        assert out.shape == (0, 3 * 2, 4, 5)
    else:
        assert len(out) == 3 and all(o.shape == (0, 2, 4, 5) for o in out)
