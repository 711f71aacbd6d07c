"""Tests for the transform registry (stn.transforms.get / names / resolve) and the common Transform interface."""

import pytest
import torch

from stn import transforms

# Family -> (num_params, ndim, identity θ) exactly as the public contract states them.
CONTRACT = {
    "translation": (2, 2, [0.0, 0.0]),
    "attention": (3, 2, [1.0, 0.0, 0.0]),
    "similarity": (4, 2, [1.0, 0.0, 0.0, 0.0]),
    "affine": (6, 2, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    "projective": (8, 2, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
    "affine3d": (12, 3, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
}


def test_names_lists_every_family():
    assert set(transforms.names()) == {*CONTRACT, "tps"}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_matrix_family_contract(name):
    num_params, ndim, identity = CONTRACT[name]
    t = transforms.get(name)
    assert (t.name, t.num_params, t.ndim) == (name, num_params, ndim)
    theta = t.identity(3, dtype=torch.float64)
    assert theta.shape == (3, num_params) and theta.dtype == torch.float64
    torch.testing.assert_close(theta, torch.tensor([identity] * 3, dtype=torch.float64), rtol=0, atol=0)


def test_tps_contract_default_and_k():
    assert transforms.get("tps").num_params == 32  # K = 16 by default
    t = transforms.get("tps", k=3)
    assert (t.name, t.num_params, t.ndim) == ("tps", 18, 2)
    ident = t.identity(2, dtype=torch.float64)
    torch.testing.assert_close(ident, t.control_points.to(torch.float64).reshape(1, -1).expand(2, -1))


@pytest.mark.parametrize("name", [*sorted(CONTRACT), "tps"])
def test_identity_follows_device_dtype_and_is_writable(name):
    t = transforms.get(name)
    theta = t.identity(2, device="cpu", dtype=torch.float32)
    assert theta.dtype == torch.float32 and theta.device.type == "cpu"
    theta[0, 0] += 1.0  # must be a fresh tensor, not an expanded view
    assert not torch.equal(theta[0], theta[1])
    assert t.identity(0).shape == (0, t.num_params)


def test_unknown_name_is_key_error_listing_known_names():
    with pytest.raises(KeyError) as info:
        transforms.get("rigid")
    message = str(info.value)
    assert "rigid" in message
    assert all(name in message for name in transforms.names())


def test_unknown_option_is_type_error():
    with pytest.raises(TypeError):
        transforms.get("affine", k=4)


def test_resolve_accepts_name_or_transform_only():
    t = transforms.get("affine")
    assert transforms.resolve(t) is t
    assert transforms.resolve("affine").name == "affine"
    with pytest.raises(TypeError, match="transform"):
        transforms.resolve(6)


@pytest.mark.parametrize("name", [*sorted(CONTRACT), "tps"])
def test_grid_shape_and_dtype(name):
    t = transforms.get(name)
    size = (3, 4, 5) if t.ndim == 3 else (4, 5)
    theta = t.identity(2, dtype=torch.float64)
    grid = t.grid(theta, size)
    assert grid.shape == (2, *size, t.ndim) and grid.dtype == torch.float64


@pytest.mark.parametrize("name", [*sorted(CONTRACT), "tps"])
def test_theta_of_wrong_width_is_rejected(name):
    t = transforms.get(name)
    with pytest.raises(ValueError, match=str(t.num_params)):
        t.check_theta(torch.zeros(2, t.num_params + 1))
    with pytest.raises(ValueError, match=str(t.num_params)):
        t.check_theta(torch.zeros(t.num_params))  # 1-D θ is not silently broadcast
    with pytest.raises(TypeError, match="floating"):
        t.check_theta(torch.zeros(2, t.num_params, dtype=torch.long))
