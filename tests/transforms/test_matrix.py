"""Tests for the matrix-group families against closed forms written independently in numpy (float64)."""

import numpy as np
import pytest
import torch

from stn import transforms

MATRIX_FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "affine3d"]


def np_matrix(name: str, theta: np.ndarray) -> np.ndarray:
    """The homogeneous matrices (B, 3, 3) (affine3d (B, 4, 4)) of θ, from the contract's θ layouts."""
    b = theta.shape[0]
    if name == "affine3d":
        return np.concatenate([theta.reshape(b, 3, 4), np.tile([[[0.0, 0.0, 0.0, 1.0]]], (b, 1, 1))], axis=1)
    if name == "projective":
        return np.concatenate([theta, np.ones((b, 1))], axis=1).reshape(b, 3, 3)
    m = np.tile(np.eye(3), (b, 1, 1))
    if name == "translation":
        m[:, :2, 2] = theta
    elif name == "attention":
        m[:, 0, 0] = m[:, 1, 1] = theta[:, 0]
        m[:, :2, 2] = theta[:, 1:]
    elif name == "similarity":
        a, s, tx, ty = theta.T
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, -s, tx
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = s, a, ty
    else:
        m[:, :2, :] = theta.reshape(b, 2, 3)
    return m


def np_pixel_centres(size: tuple[int, ...]) -> np.ndarray:
    """Pixel-centre grid (*size, ndim) with the last dim (x, y[, z]): centre of pixel i of n is (2i + 1)/n - 1."""
    axes = [(2 * np.arange(n) + 1) / n - 1 for n in size]
    return np.stack(np.meshgrid(*axes, indexing="ij")[::-1], axis=-1)


def np_apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply homogeneous matrices (B, n+1, n+1) to points (..., n) -> (B, ..., n), dehomogenised."""
    homogeneous = np.concatenate([points, np.ones((*points.shape[:-1], 1))], axis=-1)
    out = np.einsum("bij,...j->b...i", m, homogeneous)
    return out[..., :-1] / out[..., -1:]


def random_theta(t, batch: int, scale: float = 0.2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return t.identity(batch, dtype=torch.float64) + scale * torch.randn(
        batch, t.num_params, generator=g, dtype=torch.float64
    )


def size_for(t) -> tuple[int, ...]:
    return (3, 4, 5) if t.ndim == 3 else (5, 7)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_matrix_matches_closed_form(name):
    t = transforms.get(name)
    theta = random_theta(t, 4)
    got = t.matrix(theta)
    assert got.shape == (4, t.ndim + 1, t.ndim + 1)
    np.testing.assert_allclose(got.numpy(), np_matrix(name, theta.numpy()), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_grid_matches_closed_form(name):
    t = transforms.get(name)
    theta = random_theta(t, 3)
    size = size_for(t)
    expected = np_apply(np_matrix(name, theta.numpy()), np_pixel_centres(size))
    np.testing.assert_allclose(t.grid(theta, size).numpy(), expected, rtol=0, atol=1e-12)


def test_similarity_is_rotation_and_isotropic_scale():
    t = transforms.get("similarity")
    s, phi = 0.7, 0.4
    theta = torch.tensor([[s * np.cos(phi), s * np.sin(phi), 0.1, -0.2]], dtype=torch.float64)
    m = t.matrix(theta)[0, :2, :2].numpy()
    rotation = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    np.testing.assert_allclose(m, s * rotation, atol=1e-15)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_from_matrix_inverts_matrix(name):
    t = transforms.get(name)
    theta = random_theta(t, 3)
    torch.testing.assert_close(t.from_matrix(t.matrix(theta)), theta, rtol=0, atol=1e-15)


def test_projective_from_matrix_normalises_scale():
    t = transforms.get("projective")
    theta = random_theta(t, 2)
    torch.testing.assert_close(t.from_matrix(-3.0 * t.matrix(theta)), theta, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_compose_with_inverse_is_identity(name):
    t = transforms.get(name)
    theta = random_theta(t, 3)
    identity = t.identity(3, dtype=torch.float64)
    torch.testing.assert_close(t.compose(theta, t.inverse(theta)), identity, rtol=0, atol=1e-12)
    torch.testing.assert_close(t.compose(t.inverse(theta), theta), identity, rtol=0, atol=1e-12)
    torch.testing.assert_close(t.inverse(t.inverse(theta)), theta, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_inverse_matches_numpy(name):
    t = transforms.get(name)
    theta = random_theta(t, 3)
    expected = np.linalg.inv(np_matrix(name, theta.numpy()))
    expected /= expected[:, -1:, -1:]  # a homography is defined up to scale; θ fixes H[2, 2] = 1
    np.testing.assert_allclose(t.matrix(t.inverse(theta)).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_compose_applies_b_first_then_a(name):
    t = transforms.get(name)
    a, b = random_theta(t, 2, seed=1), random_theta(t, 2, seed=2)
    ab = t.compose(a, b)
    expected = np_matrix(name, a.numpy()) @ np_matrix(name, b.numpy())
    np.testing.assert_allclose(t.matrix(ab).numpy(), expected / expected[:, -1:, -1:], rtol=0, atol=1e-12)
    # The grid of T_a∘T_b is the grid of b with T_a applied to its points, per batch element.
    size = size_for(t)
    grid_b = t.grid(b, size).numpy()
    m_a = np_matrix(name, a.numpy())
    expected = np.stack([np_apply(m_a[i : i + 1], grid_b[i])[0] for i in range(2)])
    np.testing.assert_allclose(t.grid(ab, size).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_compose_is_not_commutative_in_general(name):
    # Guards the order of compose for the non-abelian families (translation and attention with equal scales
    # commute, so only check the order where it matters).
    t = transforms.get(name)
    a, b = random_theta(t, 1, seed=3), random_theta(t, 1, seed=4)
    expected = np_matrix(name, a.numpy()) @ np_matrix(name, b.numpy())
    if not np.allclose(expected, np_matrix(name, b.numpy()) @ np_matrix(name, a.numpy())):
        assert not torch.allclose(t.compose(a, b), t.compose(b, a))


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
def test_identity_grid_is_pixel_centres(name):
    t = transforms.get(name)
    size = size_for(t)
    grid = t.grid(t.identity(2, dtype=torch.float64), size).numpy()
    np.testing.assert_allclose(grid, np.broadcast_to(np_pixel_centres(size), grid.shape), rtol=0, atol=1e-15)
