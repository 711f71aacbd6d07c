"""TrainConfig: the paper's defaults, validation, serialisation, resume compatibility."""

from __future__ import annotations

import pytest

from stn.engine.config import RESUMABLE_FIELDS, TrainConfig


def test_defaults_are_the_papers_recipe() -> None:
    c = TrainConfig()
    assert (c.batch_size, c.lr, c.weight_decay, c.lr_gamma, c.localization_lr_scale) == (256, 0.01, 0.0, 0.1, 1.0)
    assert c.lr_milestones == pytest.approx((1 / 3, 2 / 3))  # /10 every 50k of 150k steps


def test_round_trip_through_a_dict() -> None:
    c = TrainConfig(iterations=7, lr_milestones=[0.5], optimizer="adam", clip_grad_norm=1.5)
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
        ("num_workers", -1, "num_workers"),
        ("lr", 0.0, "lr"),
        ("lr", float("nan"), "lr must be a finite number > 0"),
        ("lr", float("inf"), "lr"),
        ("weight_decay", -0.1, "weight_decay"),
        ("localization_lr_scale", float("nan"), "localization_lr_scale"),
        ("clip_grad_norm", 0.0, "clip_grad_norm"),
        ("lr_gamma", 2.0, "lr_gamma"),
        ("optimizer", "lbfgs", "optimizer"),
        ("momentum", 1.0, "momentum"),
        ("lr_milestones", (0.5, 1.5), "lr_milestones"),
        ("theta_samples", -1, "theta_samples"),
        ("on_nonfinite", "ignore", "on_nonfinite must be one of stop, skip, raise"),
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


def test_presets_override_the_defaults_and_expose_their_values() -> None:
    from stn.engine.config import Preset

    quick = Preset("short", {"iterations": 100, "lr": 0.03}, {"num_test": 500})
    assert quick.config().lr == 0.03 and quick.config(lr=None, batch_size=8).batch_size == 8
    assert (quick.lr, quick.num_test, quick.momentum) == (0.03, 500, 0.9)
    with pytest.raises(ValueError, match="lr"):
        Preset("bad", {"lr": -1.0}).config()
    # A length asked for in epochs replaces the preset's steps; steps asked for win over both.
    assert (quick.config(epochs=3).epochs, quick.config(epochs=3).iterations) == (3, None)
    assert quick.config(epochs=3, iterations=7).iterations == 7
    assert quick.config(epochs=None).iterations == 100


def test_the_command_line_and_the_config_share_one_rule() -> None:
    import argparse

    from stn.engine.options import RULES, option_type

    for name in ("lr", "momentum", "weight_decay", "localization_lr_scale", "clip_grad_norm"):
        parse = option_type(name)
        for text in ("nan", "inf", "-inf", "-1"):
            with pytest.raises(
                argparse.ArgumentTypeError,
                match=RULES[name][2].replace("(", r"\(").replace(")", r"\)").replace("[", r"\["),
            ):
                parse(text)
            with pytest.raises(ValueError, match=name):
                TrainConfig(**{name: float(text)})


def test_on_nan_chooses_what_a_non_finite_loss_does_and_may_change_on_resume() -> None:
    import argparse

    from stn.engine.options import add_training_options

    parser = argparse.ArgumentParser()
    add_training_options(parser, {"": TrainConfig()})
    assert parser.parse_args(["--on-nan", "skip"]).on_nonfinite == "skip"
    assert parser.parse_args([]).on_nonfinite is None and TrainConfig().on_nonfinite == "stop"
    assert "on_nonfinite" in RESUMABLE_FIELDS
