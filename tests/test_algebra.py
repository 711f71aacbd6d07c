"""Tests for stn.algebra's compose and invert: against matrix products in float64, against warping twice on smooth
images, and their errors. Points and boxes: tests/test_algebra_points.py."""

from __future__ import annotations

import pytest
import torch

import stn
from stn import transforms
from stn.coords import base_grid

MATRIX_FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "affine3d"]


def random_theta(name: str, batch: int, scale: float = 0.15) -> torch.Tensor:
    """θ near the identity in float64; a projective one with mild perspective (its horizon far outside)."""
    t = transforms.get(name)
    theta = t.identity(batch, dtype=torch.float64) + scale * torch.randn(batch, t.num_params, dtype=torch.float64)
    if name == "projective":
        theta[:, 6:] *= 0.5
    return theta


def homogeneous(name: str, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` scaled as the family writes it (a homography with H[2, 2] = 1)."""
    return matrix / matrix[:, 2:, 2:] if name == "projective" else matrix


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_compose_is_the_matrix_product_first_then_second(name):
    t = transforms.get(name)
    first, second = random_theta(name, 5), random_theta(name, 5)
    composed = stn.compose(first, second, name)
    assert composed.shape == (5, t.num_params) and composed.dtype == torch.float64
    # T_first ∘ T_second: the matrix of the result has no entry outside the family
    expected = homogeneous(name, t.matrix(first) @ t.matrix(second))
    torch.testing.assert_close(t.matrix(composed), expected, rtol=0, atol=1e-12)
    if name != "translation":  # the one commutative family
        assert not torch.allclose(composed, stn.compose(second, first, name))


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_invert_is_the_matrix_inverse(name):
    t = transforms.get(name)
    theta = random_theta(name, 5)
    inverse = stn.invert(theta, name)
    torch.testing.assert_close(
        t.matrix(inverse), homogeneous(name, torch.linalg.inv(t.matrix(theta))), rtol=0, atol=1e-12
    )
    identity = t.identity(5, dtype=torch.float64)
    torch.testing.assert_close(stn.compose(theta, inverse, name), identity, rtol=0, atol=1e-12)
    torch.testing.assert_close(stn.compose(inverse, theta, name), identity, rtol=0, atol=1e-12)
    torch.testing.assert_close(stn.invert(inverse, name), theta, rtol=0, atol=1e-12)


def test_restricted_families_compose_in_closed_form():
    s1, t1, s2, t2 = 0.5, torch.tensor([0.2, -0.1]), 0.8, torch.tensor([-0.3, 0.4])
    attention = stn.compose(torch.tensor([[s1, *t1]]), torch.tensor([[s2, *t2]]), "attention")
    torch.testing.assert_close(attention, torch.tensor([[s1 * s2, *(s1 * t2 + t1)]]))  # s1 (s2 q + t2) + t1
    translation = stn.compose(t1[None], t2[None], "translation")
    torch.testing.assert_close(translation, (t1 + t2)[None])
    a, b = complex(0.6, 0.3), complex(0.9, -0.5)  # similarity (a, b): the complex number a + ib
    tr1, tr2 = complex(0.1, 0.2), complex(-0.3, 0.05)
    similarity = stn.compose(
        torch.tensor([[a.real, a.imag, tr1.real, tr1.imag]]),
        torch.tensor([[b.real, b.imag, tr2.real, tr2.imag]]),
        "similarity",
    )
    ab, shift = a * b, a * tr2 + tr1
    torch.testing.assert_close(similarity, torch.tensor([[ab.real, ab.imag, shift.real, shift.imag]]))


def test_matrix_forms_dtypes_and_gradients():
    theta = random_theta("affine", 3)
    torch.testing.assert_close(stn.compose(theta.view(3, 2, 3), theta, "affine"), stn.compose(theta, theta, "affine"))
    assert stn.compose(theta.float(), theta, "affine").dtype == torch.float64
    assert stn.invert(theta.float(), "affine").dtype == torch.float32
    h = random_theta("projective", 2).requires_grad_()
    a = random_theta("projective", 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: stn.compose(x, y, "projective"), (h, a))
    assert torch.autograd.gradcheck(lambda x: stn.invert(x, "projective"), (h,))


def smooth_image(size: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    """Low-frequency waves of amplitude 1 over ``size`` (2-D or 3-D): two bilinear resamplings of them err by at
    most :func:`resampling_tolerance` (measured: 1.6e-3 on 2-D images of ~64 pixels, 9.4e-3 on 3-D ones of ~24,
    over 10 seeds)."""
    g = base_grid(size, dtype=torch.float64)
    x, y = g[..., 0], g[..., 1]
    z = g[..., 2] if len(size) == 3 else 0.0
    waves = [torch.sin(1.5 * x + 1.2 * y + k) * torch.cos(y - z + k) for k in range(batch)]
    return torch.stack(waves).unsqueeze(1)


def resampling_tolerance(name: str) -> float:
    return 1.5e-2 if transforms.get(name).ndim == 3 else 2.5e-3


def inside(grid: torch.Tensor, size: tuple[int, ...], margin: int = 2) -> torch.Tensor:
    """``(B, *out)``: grid points at least ``margin`` pixels inside an image of ``size``."""
    limit = 1 - 2 * margin / torch.tensor(size[::-1], dtype=grid.dtype)
    return (grid.abs() <= limit).all(-1)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_warping_twice_equals_warping_once_by_the_composition(name):
    """At interior output pixels (both warps read at least 2 pixels inside their inputs) they differ by the
    resampling error only; the other order is far off."""
    three_d = transforms.get(name).ndim == 3
    in_size, mid_size, out_size = (
        ((24, 26, 28), (22, 30, 24), (20, 24, 26)) if three_d else ((64, 72), (56, 80), (60, 68))
    )
    first, second = random_theta(name, 2, 0.1), random_theta(name, 2, 0.1)
    x = smooth_image(in_size)
    twice = stn.warp(stn.warp(x, first, name, mid_size), second, name, out_size)
    composed = stn.compose(first, second, name)
    once = stn.warp(x, composed, name, out_size)
    interior = inside(stn.sampling_grid(second, name, out_size), mid_size) & inside(
        stn.sampling_grid(composed, name, out_size), in_size
    )
    assert interior.float().mean() > 0.3
    interior = interior.unsqueeze(1)
    assert (twice - once)[interior].abs().max() < resampling_tolerance(name)
    if name != "translation":  # the one commutative family
        wrong = stn.warp(x, stn.compose(second, first, name), name, out_size)
        assert (twice - wrong)[interior].abs().max() > 4 * resampling_tolerance(name)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_warping_by_the_inverse_gives_the_input_back(name):
    three_d = transforms.get(name).ndim == 3
    in_size, out_size = ((24, 26, 28), (20, 30, 24)) if three_d else ((64, 72), (52, 80))
    theta = random_theta(name, 2, 0.1)
    x = smooth_image(in_size)
    back = stn.warp(stn.warp(x, theta, name, out_size), stn.invert(theta, name), name, in_size)
    # the pixels that the first warp kept, and whose neighbours it read inside the input
    kept = inside(stn.sampling_grid(stn.invert(theta, name), name, in_size), out_size)
    interior = (kept & inside(base_grid(in_size, dtype=torch.float64), in_size)).unsqueeze(1)
    assert interior.float().mean() > 0.3
    assert (back - x)[interior].abs().max() < resampling_tolerance(name)


def test_tps_has_no_composition_or_inverse():
    theta = transforms.get("tps").identity(1)
    with pytest.raises(ValueError, match=r"stn\.compose is not defined for 'tps'.*transform_points"):
        stn.compose(theta, theta, "tps")
    with pytest.raises(ValueError, match=r"stn\.invert is not defined for 'tps'"):
        stn.invert(theta, transforms.get("tps", k=4))


def test_a_singular_theta_is_an_error_naming_the_samples():
    theta = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.1, 0.1], [1.0, 0.0, 0.0], [1e-13, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"theta\[1\], theta\[3\] are singular \(condition number inf.*no inverse"):
        stn.invert(theta, "attention")
    with pytest.raises(ValueError, match=r"theta\[0\] is singular"):
        stn.invert(torch.zeros(1, 2, 3), "affine")


def test_other_errors():
    affine = transforms.get("affine").identity(2)
    with pytest.raises(ValueError, match="same batch size, got 2 and 1"):
        stn.compose(affine, affine[:1], "affine")
    with pytest.raises(ValueError, match=r"must have shape \(B, 6\)"):
        stn.compose(affine, torch.zeros(2, 4), "affine")
    with pytest.raises(KeyError, match="unknown transform"):
        stn.invert(affine, "shear")
    # w = x + 1 composed with a shift by -1: the output's centre goes to infinity, H[2, 2] = 0
    tilt = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
    shift = torch.tensor([[1.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"H\[2, 2\] is 0 for sample\(s\) \[0\]"):
        stn.compose(tilt, shift, "projective")
