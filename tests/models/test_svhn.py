"""Tests for stn.models.svhn: the Table 2 CNN, ST-CNN Single and ST-CNN Multi."""

import itertools
from math import prod

import pytest
import torch
import torch.nn.functional as F

import stn
from stn.models import create_model
from stn.models.svhn import SVHNNet, sequence_errors, sequence_loss

NAMES = ["svhn-cnn", "svhn-st-cnn-single", "svhn-st-cnn-multi"]


def expected_params(name: str, side: int) -> int:
    """Parameter count from the paper's description, worked out by hand."""
    widths = (3, 48, 64, 128, 160, 192, 192, 192, 192)
    conv = sum(25 * a * b + 2 * b for a, b in itertools.pairwise(widths))  # 5x5, no bias, batch norm
    pooled = side
    for _ in range(4):
        pooled = -(-pooled // 2)
    fc = (192 * pooled**2 * 3072 + 3072) + 2 * (3072 * 3072 + 3072) + (3072 * 55 + 55)
    total = conv + fc
    head = 32 * 6 + 6  # identity-initialised regression to the 6 affine parameters
    if name == "svhn-st-cnn-single":  # conv 32, conv 32, FC 32 (after 4x4 adaptive pooling), FC 32
        total += (25 * 3 * 32 + 32) + (25 * 32 * 32 + 32) + (512 * 32 + 32) + (32 * 32 + 32) + head
    if name == "svhn-st-cnn-multi":  # FC 32, FC 32 on the input of each of the first four convolutions
        half, quarter = -(-side // 2), -(-side // 4)
        for shape in [(3, side, side), (48, half, half), (64, half, half), (128, quarter, quarter)]:
            total += (prod(shape) * 32 + 32) + (32 * 32 + 32) + head
    return total


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_parameter_counts(name):
    model = create_model(name, in_shape=(3, 54, 54))
    assert sum(p.numel() for p in model.parameters()) == expected_params(name, 54)
    logits, thetas = model(torch.rand(2, 3, 54, 54), return_theta=True)
    assert logits.shape == (2, 5, 11)
    assert sorted(thetas) == {"svhn-cnn": [], "svhn-st-cnn-single": [0], "svhn-st-cnn-multi": [0, 1, 2, 3]}[name]
    assert all(t.shape == (2, 6) for t in thetas.values())


def test_parameter_count_at_128px_input():
    assert sum(p.numel() for p in create_model("svhn-cnn", in_shape=(3, 108, 108)).parameters()) == expected_params(
        "svhn-cnn", 108
    )


@pytest.mark.parametrize("name", NAMES[1:])
def test_transformers_start_at_the_identity(name):
    model = create_model(name, in_shape=(3, 24, 24)).eval()
    cnn = create_model("svhn-cnn", in_shape=(3, 24, 24)).eval()
    missing, unexpected = cnn.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("transformers.") for k in unexpected)
    x = torch.rand(3, 3, 24, 24)
    with torch.no_grad():
        logits, thetas = model(x, return_theta=True)
        torch.testing.assert_close(logits, cnn(x), rtol=1e-4, atol=1e-5)
    for theta in thetas.values():
        torch.testing.assert_close(theta, stn.transforms.get("affine").identity(3))


@pytest.mark.parametrize("name", NAMES)
def test_a_few_training_steps_fit_a_batch(name):
    torch.manual_seed(0)
    model = create_model(name, in_shape=(3, 16, 16), dropout=0.0)
    optimizer = torch.optim.SGD(stn.param_groups(model, lr=0.01, localization_lr_scale=0.1), lr=0.01, momentum=0.9)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 11, (8, 5))
    heads = [p.clone() for p in stn.localization_parameters(model)]
    losses = []
    for _ in range(4):
        loss = sequence_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.isfinite(torch.tensor(losses)))
    if name == "svhn-cnn":
        assert not heads
    else:  # the localisation nets learn too
        assert heads and any(not torch.equal(a, b) for a, b in zip(heads, stn.localization_parameters(model)))


def test_sequence_loss_sums_the_positions():
    logits, targets = torch.randn(4, 5, 11), torch.randint(0, 11, (4, 5))
    per_position = [F.cross_entropy(logits[:, i], targets[:, i]) for i in range(5)]
    torch.testing.assert_close(sequence_loss(logits, targets), torch.stack(per_position).sum())


def test_sequence_error_counts_any_wrong_position():
    targets = torch.tensor([[1, 9, 10, 10, 10]] * 3)
    logits = F.one_hot(targets, 11).float()
    logits[1, 2] = F.one_hot(torch.tensor(4), 11).float() * 2  # predicts a third digit where there is none
    logits[2, 0] = F.one_hot(torch.tensor(7), 11).float() * 2  # wrong first digit
    assert sequence_errors(logits, targets).tolist() == [False, True, True]


def test_bad_transformer_layer_is_rejected():
    with pytest.raises(ValueError, match=r"0\.\.7"):
        SVHNNet((3, 16, 16), transformers={8: torch.nn.Identity()})
