"""stn.modules.conv.Conv2d: nn.Conv2d's values and gradients, by another kernel for one-channel CPU inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from stn.modules.conv import Conv2d, _SingleChannelConv2d


def _pair(in_channels: int = 1, dtype: torch.dtype = torch.float64, **kwargs) -> tuple[nn.Conv2d, Conv2d]:
    torch.manual_seed(0)
    reference = nn.Conv2d(in_channels, 6, 5, **kwargs).to(dtype)
    ours = Conv2d(in_channels, 6, 5, **kwargs).to(dtype)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _gradients(model: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    y = model(x)
    y.backward(grad)
    return [y.detach(), x.grad, model.weight.grad, model.bias.grad]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("padding", [0, 2, (1, 3)])
def test_values_and_gradients_equal_nn_conv2d(padding, channels_last):
    reference, ours = _pair(padding=padding)
    x = torch.randn(3, 1, 11, 13, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(reference(x))
    assert ours._single_channel_route(x.requires_grad_())
    for expected, got in zip(_gradients(reference, x.detach(), grad), _gradients(ours, x.detach(), grad)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_gradients_agree_to_rounding():
    reference, ours = _pair(dtype=torch.float32, padding=4)
    x = torch.randn(16, 1, 21, 21)
    grad = torch.randn(16, 6, 25, 25)
    expected, got = _gradients(reference, x, grad), _gradients(ours, x, grad)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)  # the forward pass is the same call
    for e, g in zip(expected[1:], got[1:]):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_gradcheck_in_float64():
    x = torch.randn(2, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _SingleChannelConv2d.apply(x, w, b, [1, 2]), (x, w, b))


def test_only_bias_or_only_input_gradients():
    _, ours = _pair(padding=1)
    ours.weight.requires_grad_(False)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None and ours.bias.grad is not None and x.grad is not None


@pytest.mark.parametrize(
    "in_channels, kwargs, requires_grad",
    [
        (1, {}, False),  # no input gradient: nothing to speed up
        (2, {}, True),  # oneDNN is fast with several channels
        (1, {"stride": 2}, True),
        (1, {"dilation": 2}, True),
        (1, {"padding": "same"}, True),
        (1, {"padding": 1, "padding_mode": "reflect"}, True),
    ],
)
def test_other_convolutions_take_nn_conv2d_route(in_channels, kwargs, requires_grad):
    reference, ours = _pair(in_channels, **kwargs)
    x = torch.randn(2, in_channels, 9, 9, dtype=torch.float64, requires_grad=requires_grad)
    assert not ours._single_channel_route(x)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_a_state_dict_of_nn_conv2d_loads():
    reference, ours = _pair()
    assert ours.state_dict().keys() == reference.state_dict().keys()
    assert isinstance(ours, nn.Conv2d)


def test_tracing_records_the_plain_convolution():
    reference, ours = _pair(padding=2)
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    traced = torch.jit.trace(ours, x)
    assert "PythonOp" not in str(traced.graph)
    torch.testing.assert_close(traced(x), reference(x), rtol=0, atol=0)


def test_cpu_autocast_gives_nn_conv2d_values_and_gradient_dtypes():
    reference, ours = _pair(dtype=torch.float32, padding=1)
    x = torch.rand(2, 1, 8, 8)
    grads = []
    for model in (reference, ours):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grads.append(_gradients(model, x, torch.ones(2, 6, 6, 6, dtype=torch.bfloat16)))
    (y_ref, *g_ref), (y, *g) = grads
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    for expected, got in zip(g_ref, g):
        assert got.dtype == expected.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)  # bfloat16 rounding of the input gradient


class _AtenOps(TorchDispatchMode):
    """Records the ATen operators that run while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_first_order_backward_takes_the_im2col_kernel_and_double_backward_does_not():
    _, ours = _pair(padding=1)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    loss = ours(x).square().sum()
    with _AtenOps() as first:
        (gx,) = torch.autograd.grad(loss, x, retain_graph=True)
    assert "aten._slow_conv2d_backward" in first.ops  # the fast path of a training step
    with _AtenOps() as graphed:
        (gx_graph,) = torch.autograd.grad(loss, x, create_graph=True)
    assert "aten._slow_conv2d_backward" not in graphed.ops  # it has no derivative
    torch.testing.assert_close(gx_graph, gx, rtol=1e-12, atol=1e-12)


def test_double_backward_equals_nn_conv2d():
    reference, ours = _pair(padding=(1, 2))
    x = torch.randn(3, 1, 9, 8, dtype=torch.float64)
    results = []
    for model in (reference, ours):
        model.zero_grad()
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(model(xi).square().sum(), xi, create_graph=True)
        gx.square().sum().backward()  # an input-gradient penalty
        results.append([xi.grad, model.weight.grad, model.bias.grad])
    for expected, got in zip(*results):
        assert torch.isfinite(got).all() and got.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(2, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: _SingleChannelConv2d.apply(x, w, b, [1, 1]), (xs, w, b))
