"""The validation split: the last training digits held out, disjoint from training, the same for every seed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from stn.data import VALIDATION_SIZE, DistortedMNIST
from stn.data.specs import build, distorted_mnist_spec

VARIANTS = ("rts", "tc", "addition")  # plain, cluttered from the pool, and paired with partners from the pool


@pytest.mark.parametrize("variant", VARIANTS)
def test_validation_digits_are_the_last_of_the_training_split_and_never_trained_on(
    variant: str, make_split: Callable
) -> None:
    mnist = make_split("train", n=300)
    train = DistortedMNIST(variant, "train", mnist=mnist, validation=60, num_samples=500)
    val = DistortedMNIST(variant, "val", mnist=mnist, validation=60)
    assert len(val) == 60 and val.split == "val"
    assert torch.equal(val.mnist.images, mnist.images[240:]) and torch.equal(train.mnist.images, mnist.images[:240])
    trained_on = set(train.epoch_params(0)["index"].tolist()) | set(train.epoch_params(3)["index"].tolist())
    assert max(trained_on) < 240  # indices into the 240 training digits: none of the held-out 60
    if variant == "addition":  # partners, too, come from the same part
        assert int(train.epoch_params(0)["partner"].max()) < 240 and int(val.epoch_params()["partner"].max()) < 60


def test_validation_is_the_same_for_every_seed_and_epoch(tiny_mnist) -> None:
    spec = distorted_mnist_spec("rts", seed=0, validation=20, root=str(tiny_mnist))
    first, other_seed = build(spec, "val"), build({**spec, "seed": 3}, "val")
    other_seed.set_epoch(7)
    assert len(first) == 20 and torch.equal(first.epoch_tensors()[0], other_seed.epoch_tensors()[0])
    assert len(build(spec, "train")) == 76  # tiny MNIST's 96 training digits less the 20 held out


def test_the_validation_digits_are_distorted_unlike_their_training_draws(make_split: Callable) -> None:
    mnist = make_split("train", n=120)
    val = DistortedMNIST("rts", "val", mnist=mnist, validation=20).epoch_tensors()[0]
    test_like = DistortedMNIST("rts", "train", mnist=mnist).epoch_tensors(0)[0][100:]
    assert not torch.equal(val, test_like)  # its own draws, not the training epoch's


@pytest.mark.parametrize(
    ("split", "validation", "message"),
    [
        ("val", None, "split='val' needs validation"),
        ("train", 300, "validation must be an int between 1 and 299"),
        ("train", -5, "validation must be an int between 1 and 299"),
        ("train", True, "validation must be an int"),
    ],
)
def test_bad_validation_counts_are_clear_errors(split: str, validation, message: str, make_split: Callable) -> None:
    with pytest.raises(ValueError, match=message):
        DistortedMNIST("rts", split, mnist=make_split("train", n=300), validation=validation)


def test_the_test_split_takes_no_validation(make_split: Callable) -> None:
    with pytest.raises(ValueError, match="the test split takes none"):
        DistortedMNIST("rts", "test", mnist=make_split("test", n=50), validation=10)


def test_a_spec_without_validation_has_no_val_split_and_keeps_its_old_form() -> None:
    spec = distorted_mnist_spec("rts")
    assert "validation" not in spec  # specs of runs made before validation existed compare equal
    with pytest.raises(ValueError, match="holds no validation digits"):
        build(spec, "val")


def test_the_reproductions_hold_out_the_last_10000_training_digits() -> None:
    assert VALIDATION_SIZE == 10_000
