"""Exports: ONNX (run in onnxruntime) and TorchScript give the PyTorch model's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from stn.export import StaticAdaptivePool2d, check_export, export_model, export_onnx
from stn.models import create_model


def trained_looking(name: str, shape: tuple[int, int, int]) -> nn.Module:
    """A model whose transformer is not the identity (zero regression weights would hide sampling bugs)."""
    torch.manual_seed(0)
    model = create_model(name, in_shape=shape, target_params=60_000).eval()
    with torch.no_grad():
        model.transformer.head.linear.weight.normal_(0, 0.2)
    return model


def test_onnx_matches_pytorch_for_any_batch_size(tmp_path: Path) -> None:
    model = trained_looking("st-cnn-tps", (1, 42, 42))
    path = export_model(model, (1, 42, 42), tmp_path / "m.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 1, 42, 42)
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4, rtol=1e-4)
    assert isinstance(model.transformer.localization.features[-1], nn.AdaptiveMaxPool2d)  # original untouched


@pytest.mark.parametrize("name", ["st-cnn-aff", "st-fcn-proj"])
def test_torchscript_matches_pytorch(tmp_path: Path, name: str) -> None:
    model = trained_looking(name, (1, 28, 28))
    path = export_model(model, (1, 28, 28), tmp_path / "m.pt", "torchscript")
    assert check_export(model, (1, 28, 28), path, "torchscript", batch_size=4) < 1e-5


def test_static_adaptive_pool_equals_torch() -> None:
    for size in (7, 11, 13, 4, 9):
        x = torch.randn(2, 3, size, size + 3)
        torch.testing.assert_close(StaticAdaptivePool2d(4)(x), nn.AdaptiveMaxPool2d(4)(x))
        torch.testing.assert_close(StaticAdaptivePool2d((3, 2), "mean")(x), nn.AdaptiveAvgPool2d((3, 2))(x))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"output_size": 0}, "output_size"), ({"output_size": 2, "reduce": "min"}, "reduce")]
)
def test_static_adaptive_pool_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StaticAdaptivePool2d(**kwargs)


def test_bad_format_and_opset(tmp_path: Path) -> None:
    model = create_model("fcn")
    with pytest.raises(ValueError, match="onnx, torchscript"):
        export_model(model, (1, 28, 28), tmp_path / "m", "tflite")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, (1, 28, 28), tmp_path / "m.onnx", opset=11)
