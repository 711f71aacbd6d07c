"""θ diagnostics: grid statistics with known answers, and capturing what each transformer of a model did."""

from __future__ import annotations

import math

import pytest
import torch

from stn import ConvLocalization, ParallelSpatialTransformer, sampling_grid
from stn.models import create_model
from stn.modules.diagnostics import (
    apply_transformer,
    capture_transformers,
    grid_jacobian_det,
    grid_stats,
    theta_diagnostics,
)


def affine_stats(*theta: float) -> dict[str, float]:
    return grid_stats(sampling_grid(torch.tensor([theta], dtype=torch.float32), "affine", (28, 28)))


def test_identity() -> None:
    s = affine_stats(1, 0, 0, 0, 1, 0)
    assert s["scale_mean"] == pytest.approx(1) and s["outside_frac"] == 0 and s["fold_frac"] == 0
    assert s["shift_mean"] == pytest.approx(0, abs=1e-6)


def test_zoom_in_and_shift() -> None:
    s = affine_stats(0.5, 0, 0.2, 0, 0.5, 0)
    assert s["scale_mean"] == pytest.approx(0.5) and s["shift_mean"] == pytest.approx(0.2)
    assert s["outside_frac"] == 0


def test_zoom_out_reads_outside_the_input() -> None:
    s = affine_stats(2, 0, 0, 0, 2, 0)
    assert s["scale_mean"] == pytest.approx(2) and s["outside_frac"] == pytest.approx(0.75)


def test_mirror_folds_and_rotation_keeps_the_scale() -> None:
    assert affine_stats(-1, 0, 0, 0, 1, 0)["fold_frac"] == 1
    rotation = affine_stats(0, -1, 0, 1, 0, 0)
    assert rotation["scale_mean"] == pytest.approx(1) and rotation["fold_frac"] == 0


def test_collapse_has_zero_scale() -> None:
    assert affine_stats(0, 0, 0.3, 0, 0, 0)["scale_mean"] == pytest.approx(0, abs=1e-6)


def test_scale_statistics_across_a_batch() -> None:
    theta = torch.tensor([[0.5, 0, 0, 0, 0.5, 0], [1.5, 0, 0, 0, 1.5, 0]])
    s = grid_stats(sampling_grid(theta, "affine", (10, 12)))
    assert (s["scale_mean"], s["scale_std"], s["scale_min"], s["scale_max"]) == pytest.approx((1, 0.5, 0.5, 1.5))


def test_volume_jacobian() -> None:
    theta = torch.tensor([[0.5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0]])
    det = grid_jacobian_det(sampling_grid(theta, "affine3d", (4, 5, 6)))
    assert det.shape == (1, 3, 4, 5)
    torch.testing.assert_close(det, torch.ones_like(det))


def test_grid_too_small() -> None:
    with pytest.raises(ValueError, match=">= 2"):
        grid_jacobian_det(torch.zeros(1, 1, 5, 2))


def test_capture_matches_the_transformer_and_leaves_the_model_as_it_was() -> None:
    model = create_model("st-cnn-tps", in_shape=(1, 42, 42), target_params=50_000).train()
    with torch.no_grad():
        model.transformer.head.linear.weight.normal_(0, 0.1)
    x = torch.rand(3, 1, 42, 42)
    capture = capture_transformers(model, x)["transformer"]
    assert model.training
    assert capture.theta.shape == (3, 1, 32) and capture.grid.shape == (3, 1, 42, 42, 2)
    output, theta = model.transformer(x, return_theta=True)
    torch.testing.assert_close(capture.theta[:, 0], theta)
    torch.testing.assert_close(capture.outputs[:, 0], output)
    assert capture_transformers(create_model("cnn", in_shape=(1, 42, 42)), x) == {}


def test_parallel_transformers_are_replayed_one_by_one() -> None:
    pst = ParallelSpatialTransformer(
        ConvLocalization(1), 2, "attention", (10, 10), init_theta=[[0.5, -0.4, 0.0], [0.5, 0.4, 0.0]]
    )
    x = torch.rand(2, 1, 30, 30)
    outputs, theta = pst(x, return_theta=True)
    grid, replayed = apply_transformer(pst, x, theta)
    assert grid.shape == (2, 2, 10, 10, 2)
    for k in range(2):
        torch.testing.assert_close(replayed[:, k], outputs[k])


def test_theta_diagnostics_keys() -> None:
    stats = theta_diagnostics(create_model("st-fcn-aff", in_shape=(1, 28, 28)), torch.rand(4, 1, 28, 28))
    assert stats["transformer.scale_mean"] == pytest.approx(1, abs=1e-5)
    assert set(stats) == {
        f"transformer.{k}"
        for k in ("scale_mean", "scale_std", "scale_min", "scale_max", "fold_frac", "shift_mean", "outside_frac",
                  "nonfinite_frac")
    }  # fmt: skip
    assert stats["transformer.nonfinite_frac"] == 0


def test_non_finite_theta_are_counted_and_left_out_of_the_other_statistics() -> None:
    theta = torch.tensor([[1.0, 0, 0, 0, 1, 0], [float("nan"), 0, 0, 0, 1, 0], [0.5, 0, 0, 0, 0.5, 0]])
    stats = grid_stats(sampling_grid(theta, "affine", (8, 8)))
    assert stats["nonfinite_frac"] == pytest.approx(1 / 3)
    assert stats["scale_min"] == pytest.approx(0.5) and stats["scale_max"] == pytest.approx(1.0)
    diverged = grid_stats(sampling_grid(torch.full((2, 6), float("inf")), "affine", (8, 8)))
    assert diverged["nonfinite_frac"] == 1 and math.isnan(diverged["scale_mean"])
