"""TrainConfig: the paper's defaults, validation, serialisation, resume compatibility."""

from __future__ import annotations

import pytest

from stn.engine.config import RESUMABLE_FIELDS, TrainConfig


def test_defaults_are_the_papers_recipe() -> None:
    c = TrainConfig()
    assert (c.batch_size, c.lr, c.weight_decay, c.lr_gamma, c.localization_lr_scale) == (256, 0.01, 0.0, 0.1, 1.0)
    assert c.lr_milestones == pytest.approx((1 / 3, 2 / 3))  # /10 every 50k of 150k steps


def test_round_trip_through_a_dict() -> None:
    c = TrainConfig(data="tc", model="st-fcn-tps", iterations=7, lr_milestones=[0.5], model_options={"width": 3})
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert c.to_dict()["lr_milestones"] == [0.5]


def test_unknown_fields_are_named() -> None:
    with pytest.raises(KeyError, match="colour"):
        TrainConfig.from_dict({"colour": "red"})


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs"),
        ("iterations", -3, "iterations"),
        ("batch_size", 2.5, "batch_size"),
        ("num_train", 0, "num_train"),
        ("lr", 0.0, "lr"),
        ("momentum", 1.0, "momentum"),
        ("lr_milestones", (0.5, 1.5), "lr_milestones"),
        ("theta_samples", -1, "theta_samples"),
    ],
)
def test_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_differences_ignore_what_a_resume_may_change() -> None:
    a = TrainConfig(epochs=3, device="cpu")
    b = TrainConfig(epochs=5, device="cuda", seed=2)
    assert a.differences(b) == {"seed": (0, 2)}
    assert {"epochs", "device"} <= RESUMABLE_FIELDS
    assert "epochs" in a.differences(b, ignore=frozenset())
