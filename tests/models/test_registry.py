"""Tests for stn.models.registry: every registered model, by name, on an empty batch and through a double backward;
the pretrained= argument."""

import pytest
import torch
from torch import nn

import stn
from stn.models import create_model, list_models

# Small, valid arguments and input shapes per family; a model not listed here is built with its defaults and fed
# its own ``in_shape``.
SMALL = {
    "coloc-st": (dict(in_shape=(1, 84, 84)), (1, 84, 84)),
    "coloc-encoder": ({}, (1, 28, 28)),
    "coloc-triplet": (dict(in_shape=(1, 56, 56)), (2, 56, 56)),  # a pair of images
    "coloc-locator": (dict(in_shape=(1, 56, 56)), (1, 56, 56)),
    "cub-cnn": (dict(num_classes=10, backbone="tiny"), (3, 32, 32)),
    "cub-st-cnn-2x": (dict(num_classes=10, backbone="tiny", crop_size=16, loc_size=16), (3, 32, 32)),
    "cub-st-cnn-4x": (dict(num_classes=10, backbone="tiny", crop_size=16, loc_size=16), (3, 32, 32)),
    "svhn-cnn": (dict(in_shape=(3, 24, 24)), (3, 24, 24)),
    "svhn-st-cnn-single": (dict(in_shape=(3, 24, 24)), (3, 24, 24)),
    "svhn-st-cnn-multi": (dict(in_shape=(3, 24, 24)), (3, 24, 24)),
    "volume-cnn": (dict(in_shape=(1, 20, 20, 20), out_size=(10, 10, 10), channels=4), (1, 20, 20, 20)),
    "volume-st": (dict(in_shape=(1, 20, 20, 20), out_size=(10, 10, 10), channels=4), (1, 20, 20, 20)),
}


def build_small(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model registered as ``name`` built small, and the ``(C, *spatial)`` shape of one of its inputs."""
    kwargs, shape = SMALL.get(name, ({}, None))
    model = create_model(name, seed=0, **kwargs)
    if name == "coloc-locator":  # its output is θ alone, which the zero-initialised θ layer keeps from the input
        nn.init.normal_(model.transformer.head.linear.weight, std=0.1)
    shape = shape or getattr(model, "in_shape", None)
    assert shape is not None, f"add {name!r} to SMALL: it records no in_shape to feed it"
    return model, tuple(shape)


def shapes(result: object) -> object:
    """The shapes of a model's output, whatever its structure (a tensor, a list / tuple / dict of them)."""
    if isinstance(result, torch.Tensor):
        return tuple(result.shape)
    if isinstance(result, dict):
        return {k: shapes(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return [shapes(v) for v in result]
    raise AssertionError(f"unexpected output type {type(result).__name__}")


def tensors(result: object) -> list[torch.Tensor]:
    """Every tensor of a model's output, whatever its structure."""
    if isinstance(result, torch.Tensor):
        return [result]
    values = result.values() if isinstance(result, dict) else result
    return [t for v in values for t in tensors(v)]


def emptied(structure: object) -> object:
    """``shapes`` of a batch of two with every batch size 0 (the first axis of each shape)."""
    if isinstance(structure, tuple):
        return (0, *structure[1:])
    if isinstance(structure, dict):
        return {k: emptied(v) for k, v in structure.items()}
    return [emptied(v) for v in structure]


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_returns_an_empty_result_for_an_empty_batch(name):
    model, shape = build_small(name)
    for train in (False, True):
        model.train(train)
        with torch.no_grad():
            full = shapes(model(torch.rand(2, *shape)))
        empty = model(torch.rand(0, *shape))
        assert shapes(empty) == emptied(full), f"{name} ({'train' if train else 'eval'} mode)"
    total = sum(t.sum() for t in tensors(empty))
    if total.requires_grad:
        total.backward()  # the backward of an empty batch: zero gradients, not an error


@pytest.mark.parametrize("pretrained", [1, 0, None, 1.0, ["rts"]])
def test_pretrained_that_is_neither_bool_nor_str_is_a_type_error_naming_what_is_expected(pretrained):
    with pytest.raises(TypeError, match=r"pretrained must be True, False or a tag such as 'rts'.*got"):
        create_model("st-cnn-aff", pretrained=pretrained)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_supports_double_backward(name):
    """An input-gradient penalty ||∂L/∂x||² trains every model: its gradient (second order) is finite, and it
    reaches the localisation nets of the models that have spatial transformers."""
    model, shape = build_small(name)
    x = torch.rand(2, *shape, requires_grad=True)
    out = model(x)
    (grad_x,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), x, create_graph=True)
    grad_x.square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values()), name
    assert sum(g.abs().sum() for g in grads.values()) > 0, name
    localization = stn.localization_parameters(model)
    if localization:
        assert sum(p.grad.abs().sum() for p in localization if p.grad is not None) > 0, name
