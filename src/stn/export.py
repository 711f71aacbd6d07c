"""Export a trained model for deployment: ONNX (``grid_sample`` needs opset 16 or newer) or TorchScript
(deprecated by PyTorch in favour of ``torch.export``, but still loadable from C++; prefer ONNX).

Both exports fix the input's ``(C, H, W)`` and keep the batch size free.

ONNX has no adaptive pooling whose output size does not divide the input size (the localisation nets' adaptive
max-pool to 4x4, for example), so before export every ``nn.AdaptiveMaxPool2d`` / ``nn.AdaptiveAvgPool2d`` of a
copy of the model is replaced by :class:`StaticAdaptivePool2d`, the same windows written as plain slicing for
the one input size being exported. The original model is not modified.

Example:
    >>> from stn.export import check_export, export_model
    >>> from stn.models import create_model
    >>> model = create_model("st-cnn-aff", in_shape=(1, 42, 42)).eval()
    >>> export_model(model, (1, 42, 42), "model.onnx", "onnx")
    PosixPath('model.onnx')
    >>> check_export(model, (1, 42, 42), "model.onnx") < 1e-4  # onnxruntime against PyTorch, on another batch size
    True
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from stn.io import atomic_path

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "StaticAdaptivePool2d",
    "check_export",
    "export_model",
    "export_onnx",
    "export_torchscript",
]

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18  # grid_sample is in ONNX from opset 16; 18 is the lowest the torch.export-based exporter emits


class StaticAdaptivePool2d(nn.Module):
    """Adaptive max / average pooling ``(B, C, H, W) -> (B, C, *output_size)`` written as slicing, so that it
    exports to ONNX for any input size (the windows are those of ``nn.AdaptiveMaxPool2d``: rows
    ``floor(i * H / h)`` to ``ceil((i + 1) * H / h)``)."""

    def __init__(self, output_size: int | Sequence[int], reduce: str = "max") -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if len(size) != 2 or any(s is None or s < 1 for s in size):
            raise ValueError(f"output_size must be one or two positive ints, got {output_size!r}")
        if reduce not in ("max", "mean"):
            raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
        self.output_size = size
        self.reduce = reduce

    @staticmethod
    def _windows(n_in: int, n_out: int) -> list[tuple[int, int]]:
        return [(i * n_in // n_out, math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        rows = []
        for r0, r1 in self._windows(int(h), self.output_size[0]):
            cells = []
            for c0, c1 in self._windows(int(w), self.output_size[1]):
                window = x[..., r0:r1, c0:c1]
                cells.append(window.amax(dim=(-2, -1)) if self.reduce == "max" else window.mean(dim=(-2, -1)))
            rows.append(torch.stack(cells, dim=-1))
        return torch.stack(rows, dim=-2)


def _exportable(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with adaptive 2-D pooling replaced by :class:`StaticAdaptivePool2d`."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
                if getattr(child, "return_indices", False):
                    raise ValueError(f"cannot export {name}: adaptive pooling that returns indices")
                reduce = "max" if isinstance(child, nn.AdaptiveMaxPool2d) else "mean"
                setattr(parent, name, StaticAdaptivePool2d(child.output_size, reduce))
    return model


def _example(in_shape: Sequence[int], model: nn.Module) -> Tensor:
    """A random input batch; running it once eagerly fills the caches of input-independent constants (such as
    the TPS basis), so that the exporters record them as constants instead of tracing their computation."""
    params = next(model.parameters(), None)
    device = params.device if params is not None else None
    example = torch.rand(2, *in_shape, device=device)
    with torch.no_grad():
        model(example)
    return example


def export_onnx(model: nn.Module, in_shape: Sequence[int], path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as ONNX with input ``images (batch, *in_shape)`` and output ``logits``; returns the path."""
    if opset < 16:
        raise ValueError(f"opset must be >= 16 (grid_sample), got {opset}")
    path = Path(path)
    net = _exportable(model)
    example = _example(in_shape, net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its internals are not the user's business
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    return path


def export_torchscript(model: nn.Module, in_shape: Sequence[int], path: str | os.PathLike) -> Path:
    """Write ``model`` as a traced TorchScript module (load with ``torch.jit.load``); returns the path."""
    path = Path(path)
    net = _exportable(model)
    example = _example(in_shape, net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks of the input become constants
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is frozen, not gone; ONNX is preferred
        traced = torch.jit.trace(net, example)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return path


def export_model(model: nn.Module, in_shape: Sequence[int], path: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Export ``model`` (input ``(B, *in_shape)``) to ``path`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "onnx":
        return export_onnx(model, in_shape, path)
    if fmt == "torchscript":
        return export_torchscript(model, in_shape, path)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")


@torch.no_grad()
def check_export(
    model: nn.Module, in_shape: Sequence[int], path: str | os.PathLike, fmt: str = "onnx", batch_size: int = 3
) -> float:
    """Largest absolute difference between ``model`` and its export at ``path`` on a random batch (of another
    size than the export's example, so a fixed batch size would show). ONNX files run in ``onnxruntime``.

    Raises:
        ImportError: ``fmt="onnx"`` without onnxruntime (``pip install stn[export]``).
    """
    x = torch.rand(batch_size, *in_shape, device=next(model.parameters()).device)
    expected = model.eval()(x).float().cpu()
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError as err:
            raise ImportError("checking an ONNX export needs onnxruntime: pip install stn[export]") from err
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": x.cpu().numpy()})[0])
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            got = torch.jit.load(str(path), map_location=x.device)(x).float().cpu()
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return (got - expected).abs().max().item()
