"""Tests for stn.param_groups: localisation nets and their θ heads get their own learning rate."""

import pytest
import torch
from torch import nn

import stn


def tiny_localization() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU())


def ids(params) -> set[int]:
    return {id(p) for p in params}


def split(model: nn.Module, lr: float, scale: float) -> tuple[set[int], set[int]]:
    groups = stn.param_groups(model, lr, localization_lr_scale=scale)
    base = [g for g in groups if g["lr"] == lr]
    loc = [g for g in groups if g["lr"] == lr * scale]
    assert len(base) + len(loc) == len(groups)
    base_ids = set().union(*(ids(g["params"]) for g in base))
    loc_ids = set().union(*(ids(g["params"]) for g in loc))
    every = [id(p) for g in groups for p in g["params"]]
    assert len(every) == len(set(every)) and set(every) == ids(model.parameters())  # each parameter exactly once
    return base_ids, loc_ids


def test_single_transformer():
    st = stn.SpatialTransformer(tiny_localization(), "affine")
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    model = nn.Sequential(st, classifier)
    base, loc = split(model, 0.01, 0.1)
    assert loc == ids(st.parameters())  # localisation net + regression head
    assert base == ids(classifier.parameters())


@pytest.mark.parametrize("shared", [True, False])
def test_parallel_and_nested_transformers(shared):
    pst = stn.ParallelSpatialTransformer(
        tiny_localization() if shared else [tiny_localization() for _ in range(2)], 2, "attention", (3, 3)
    )
    inner = stn.SpatialTransformer(tiny_localization(), "translation")
    trunk = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), inner)
    model = nn.ModuleDict({"pst": pst, "trunk": trunk, "fc": nn.Linear(18, 10)})
    base, loc = split(model, 1.0, 0.01)
    assert loc == ids(pst.parameters()) | ids(inner.parameters())
    assert base == ids(trunk[0].parameters()) | ids(model["fc"].parameters())


def test_model_without_transformer_has_one_group():
    model = nn.Linear(3, 2)
    groups = stn.param_groups(model, 0.5, localization_lr_scale=0.1)
    assert len(groups) == 1 and groups[0]["lr"] == 0.5 and ids(groups[0]["params"]) == ids(model.parameters())


def test_groups_drive_an_optimizer():
    st = stn.SpatialTransformer(tiny_localization(), "affine")
    model = nn.Sequential(st, nn.Flatten(), nn.Linear(36, 2))
    opt = torch.optim.SGD(stn.param_groups(model, 0.1, localization_lr_scale=0.0), lr=0.1)
    before = [p.detach().clone() for p in st.parameters()]
    x = torch.rand(4, 1, 6, 6)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, st.parameters()))  # lr scale 0 freezes the transformer
    assert model[2].weight.grad is not None
