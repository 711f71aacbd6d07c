"""Tests for stn.models.cub: backbones, the CNN baseline and the 2x / 4x attention ST-CNNs."""

import sys
import types

import pytest
import torch
from torch import nn

import stn
from stn.models import create_model
from stn.models.cub import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNet18,
    attention_boxes,
    attention_stats,
    attention_theta,
    build_backbone,
    initial_windows,
)

TINY = dict(num_classes=10, backbone="tiny", crop_size=16, loc_size=16)


def test_builtin_backbones():
    tiny = build_backbone("tiny")
    assert tiny.out_features == 64 and tiny(torch.rand(2, 3, 20, 28)).shape == (2, 64)
    resnet = ResNet18()
    assert resnet.out_features == 512 and resnet(torch.rand(2, 3, 64, 64)).shape == (2, 512)
    assert sum(p.numel() for p in resnet.parameters()) == 11_176_512  # torchvision's resnet18 without its fc
    with pytest.raises(ValueError, match="pretrained"):
        build_backbone("tiny", pretrained=True)


def test_other_names_need_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import fails as if timm were not installed
    with pytest.raises(KeyError, match=r"timm.*stn\[cub\]"):
        build_backbone("inception_v3")


def test_timm_backbones_are_used_by_name(monkeypatch):
    calls = []

    def create_model(name, pretrained, num_classes):
        calls.append((name, pretrained, num_classes))
        net = nn.Sequential(nn.Conv2d(3, 7, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        net.num_features = 7
        return net

    fake = types.SimpleNamespace(is_model=lambda name: name == "inception_v3", create_model=create_model)
    monkeypatch.setitem(sys.modules, "timm", fake)
    net = build_backbone("inception_v3", pretrained=True)
    assert calls == [("inception_v3", True, 0)] and net.out_features == 7
    with pytest.raises(KeyError, match="neither built in"):
        build_backbone("no_such_net")


@pytest.mark.parametrize(("name", "n"), [("cub-cnn", 0), ("cub-st-cnn-2x", 2), ("cub-st-cnn-4x", 4)])
def test_shapes_and_parameter_counts(name, n):
    kwargs = dict(num_classes=10, backbone="tiny") if n == 0 else TINY
    model = create_model(name, **kwargs)
    tiny = sum(p.numel() for p in build_backbone("tiny").parameters())
    branches = max(n, 1)
    localization = 0 if n == 0 else tiny + 64 * 3 * n + 3 * n  # shared backbone + regression of N (s, tx, ty)
    assert sum(p.numel() for p in model.parameters()) == branches * tiny + 64 * branches * 10 + 10 + localization
    x = torch.rand(2, 3, 32, 32)
    if n == 0:
        assert model(x).shape == (2, 10)
        with pytest.raises(ValueError, match="no transformers"):
            model(x, return_theta=True)
    else:
        logits, theta = model(x, return_theta=True)
        assert logits.shape == (2, 10) and theta.shape == (2, n, 3)
        torch.testing.assert_close(theta[0], initial_windows(n, 0.5))


def test_crops_are_the_attention_windows_at_full_resolution():
    model = create_model("cub-st-cnn-2x", num_classes=3, backbone="tiny", crop_size=32, loc_size=16).eval()
    x = torch.rand(1, 3, 64, 64)
    normalized = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    crops, theta = model.transformer(normalized, return_theta=True)
    # s = 0.5 at the starting windows: x in [-0.75, 0.25] and [-0.25, 0.75], y in [-0.5, 0.5]; a 32-pixel crop
    # of a 64-pixel input reads exactly the pixels of its window, like the paper's 224 crops of 448 inputs
    torch.testing.assert_close(crops[0], normalized[:, :, 16:48, 8:40])
    torch.testing.assert_close(crops[1], normalized[:, :, 16:48, 24:56])
    torch.testing.assert_close(
        attention_boxes(theta[0]), torch.tensor([[-0.75, -0.5, 0.25, 0.5], [-0.25, -0.5, 0.75, 0.5]])
    )


def test_scale_stays_fixed_and_translation_stays_bounded():
    model = create_model("cub-st-cnn-2x", **TINY)
    with torch.no_grad():  # push the regression far off: the scale stays 0.5, the centre moves at most 1 - s
        model.transformer.head.linear.bias.copy_(torch.tensor([3.0, 5.0, -5.0, 0.1, -5.0, 5.0]))
    _, theta = model(torch.rand(2, 3, 32, 32), return_theta=True)
    torch.testing.assert_close(theta[..., 0], torch.full((2, 2), 0.5))
    start = initial_windows(2, 0.5)[:, 1:]
    assert ((theta[..., 1:] - start).abs() <= 0.5).all() and ((theta[..., 1:] - start).abs() > 0.45).all()


@pytest.mark.parametrize("name", ["cub-cnn", "cub-st-cnn-2x", "cub-st-cnn-4x"])
def test_a_few_training_steps_fit_a_batch(name):
    torch.manual_seed(0)
    model = create_model(name, **(TINY if name != "cub-cnn" else dict(num_classes=10, backbone="tiny")))
    optimizer = torch.optim.SGD(stn.param_groups(model, lr=0.05, localization_lr_scale=0.1), lr=0.05, momentum=0.9)
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    if name != "cub-cnn":
        _, theta = model(x, return_theta=True)
        assert not torch.allclose(theta[..., 1:], initial_windows(theta.shape[1], 0.5)[:, 1:].expand_as(theta[..., 1:]))
        torch.testing.assert_close(theta[..., 0], torch.full(theta.shape[:2], 0.5))


def test_localization_is_in_its_own_parameter_group():
    model = create_model("cub-st-cnn-2x", **TINY)
    groups = {g["name"]: g for g in stn.param_groups(model, lr=0.1, localization_lr_scale=1e-4)}
    loc = {id(p) for p in groups["localization"]["params"]}
    assert {id(p) for p in model.transformer.parameters()} == loc
    assert groups["localization"]["lr"] == pytest.approx(1e-5)
    assert not loc & {id(p) for p in model.branches.parameters()}


def test_initial_windows_and_boxes():
    torch.testing.assert_close(initial_windows(1, 0.5), torch.tensor([[0.5, 0.0, 0.0]]))
    four = initial_windows(4, 0.5)
    torch.testing.assert_close(four[:, 1:], torch.tensor([[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]]))
    assert initial_windows(3, 0.5).shape == (3, 3)
    boxes = attention_boxes(torch.tensor([[[0.5, 0.25, -0.5]]]))
    torch.testing.assert_close(boxes, torch.tensor([[[-0.25, -1.0, 0.75, 0.0]]]))


@pytest.mark.parametrize("name", ["cub-cnn", "cub-st-cnn-2x"])
def test_a_checkpoint_from_before_the_pretrained_backbone_rename_still_loads(name):
    from stn.engine.checkpoint import build_model

    kwargs = TINY if name != "cub-cnn" else dict(num_classes=10, backbone="tiny")
    model = create_model(name, pretrained_backbone=False, **kwargs)
    old = dict(model.stn_spec["kwargs"])
    old["pretrained"] = old.pop("pretrained_backbone")  # how checkpoints recorded it before
    rebuilt = build_model({"model_name": name, "model_kwargs": old, "model": model.state_dict()})
    assert rebuilt.stn_spec == model.stn_spec


def test_attention_stats():
    theta = torch.tensor([[[0.5, 0.0, 0.0], [0.5, 0.5, 0.5]]])  # windows [-.5, .5]^2 and [0, 1]^2
    boxes = torch.tensor([[-1.0, -1.0, 0.25, 0.25]])
    stats = attention_stats(theta, boxes)
    assert stats["centre_in_box_per_transformer"] == [1.0, 0.0]
    assert stats["window_on_box_per_transformer"] == pytest.approx([0.5625, 0.0625])
    assert stats["centre_in_box"] == 0.5 and stats["window_on_box"] == pytest.approx(0.3125)


def test_attention_theta_is_the_models_theta_on_every_image_in_order():
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    model = create_model("cub-st-cnn-2x", **TINY)
    images = torch.rand(5, 3, 32, 32)
    theta = attention_theta(model, TensorDataset(images, torch.zeros(5)), batch_size=2)
    assert theta.shape == (5, 2, 3) and not model.training
    torch.testing.assert_close(theta, model(images, return_theta=True)[1])
