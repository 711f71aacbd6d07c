"""A drop-in ``nn.Conv2d`` whose CPU input gradient does not go through oneDNN when the input has one channel.

Why: in an ST-CNN the classifier's first convolution reads the transformer's output, so its input gradient is
needed (it is the path from the loss to θ). For a one-channel input oneDNN computes that gradient about 5x slower
than ATen's own im2col kernel (9x9 kernel, 62 filters, batch 256 of 21x21 on one AVX2 core: ~400 ms against
~70 ms), which made it ~40% of a Table 1 ST-CNN training step (``torch.profiler``; see
``benchmarks/bench_train.py``). The forward pass and the weight gradient stay with oneDNN, which is fast for them.

The im2col kernel has no derivative of its own, so when a graph of the backward pass is being built (double
backward: ``torch.autograd.grad(..., create_graph=True)``, gradient penalties) the input gradient comes from
``convolution_backward`` instead, as in ``nn.Conv2d``, and differentiates again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2d"]


class _SingleChannelConv2d(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, no dilation, one group, one input channel)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved_x, saved_weight = ctx.saved_tensors
        # Under autocast F.conv2d ran in grad's dtype on cast copies: differentiate that, as nn.Conv2d does.
        x, weight = saved_x.to(grad.dtype), saved_weight.to(grad.dtype)
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        # Grad mode is on here only when autograd records this backward (create_graph=True): the im2col kernel
        # has no derivative, so the input gradient then comes from convolution_backward, which has one.
        fast_x = need_x and not torch.is_grad_enabled()
        grad_x = grad_w = grad_b = None
        if fast_x:  # ATen's im2col kernel: what F.conv2d's backward runs with oneDNN disabled
            grad_x = torch.ops.aten._slow_conv2d_backward(
                grad, x, weight, weight.shape[2:], [1, 1], ctx.padding, [True, False, False]
            )[0]
        mask = [need_x and not fast_x, need_w, need_b]
        if any(mask):
            plain_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]], [1, 1], ctx.padding, [1, 1], False, [0, 0], 1, mask
            )  # fmt: skip
            grad_x = grad_x if fast_x else plain_x
        return (
            None if grad_x is None else grad_x.to(saved_x.dtype),
            None if grad_w is None else grad_w.to(saved_weight.dtype),
            None if grad_b is None else grad_b.to(saved_weight.dtype),
            None,
        )


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with a faster CPU input gradient for one-channel inputs; otherwise exactly ``nn.Conv2d``.

    Same arguments, parameters and ``state_dict`` as ``nn.Conv2d``, same forward values. Only a CPU convolution
    of a one-channel input that needs its gradient (stride 1, no dilation, one group, zero padding given as
    numbers) takes the other route; its gradients equal ``nn.Conv2d``'s up to float rounding (about 1e-6
    relative in float32; exact to 1e-12 in float64). Double backward works: when a graph of the backward is
    built, the input gradient is ``nn.Conv2d``'s. Under ``torch.jit.trace``, ``torch.compile`` and export it is
    exactly ``nn.Conv2d``.

    Example:
        >>> import torch
        >>> from stn.modules.conv import Conv2d
        >>> conv = Conv2d(1, 8, 5, padding=2)
        >>> x = torch.rand(2, 1, 12, 12, requires_grad=True)
        >>> conv(x).shape
        torch.Size([2, 8, 12, 12])
    """

    def _single_channel_route(self, x: torch.Tensor) -> bool:
        return (
            self.in_channels == 1
            and self.groups == 1
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and x.dim() == 4
            and x.device.type == "cpu"
            and x.requires_grad
            and torch.is_grad_enabled()
            # Tracers and compilers (TorchScript, torch.compile, ONNX export) get the plain convolution.
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._single_channel_route(x):
            return _SingleChannelConv2d.apply(x, self.weight, self.bias, list(self.padding))
        return super().forward(x)
