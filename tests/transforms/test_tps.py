"""Tests for the thin-plate-spline family against scipy's RBFInterpolator (float64)."""

import numpy as np
import pytest
import torch
from scipy.interpolate import RBFInterpolator
from torch.utils._python_dispatch import TorchDispatchMode

from stn import transforms


def pixel_centres(size: tuple[int, int]) -> np.ndarray:
    """(H*W, 2) (x, y) pixel centres, row-major: centre of pixel i of n is (2i + 1)/n - 1."""
    ys, xs = ((2 * np.arange(n) + 1) / n - 1 for n in size)
    return np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)


def perturbed(t, batch: int, scale: float = 0.15, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, t.num_params, generator=g, dtype=torch.float64)
    return t.identity(batch, dtype=torch.float64) + scale * noise


def scipy_grid(t, theta: torch.Tensor, size: tuple[int, int], smoothing: float = 0.0) -> np.ndarray:
    control = t.control_points.to(torch.float64).numpy()
    out = []
    for row in theta.numpy():
        spline = RBFInterpolator(control, row.reshape(-1, 2), kernel="thin_plate_spline", degree=1, smoothing=smoothing)
        out.append(spline(pixel_centres(size)).reshape(*size, 2))
    return np.stack(out)


def test_control_points_layout():
    t = transforms.get("tps", k=3)
    expected = [[x, y] for y in (-1.0, 0.0, 1.0) for x in (-1.0, 0.0, 1.0)]  # y outer, x inner, top-left first
    assert t.control_points.shape == (9, 2)
    np.testing.assert_allclose(t.control_points.numpy(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("k", "size"), [(2, (4, 4)), (3, (5, 7)), (4, (6, 5)), (5, (3, 9))])
def test_grid_matches_scipy_thin_plate_spline(k, size):
    t = transforms.get("tps", k=k)
    theta = perturbed(t, 3, seed=k)
    np.testing.assert_allclose(t.grid(theta, size).numpy(), scipy_grid(t, theta, size), rtol=0, atol=1e-10)


def test_identity_theta_gives_pixel_centres():
    t = transforms.get("tps")
    grid = t.grid(t.identity(2, dtype=torch.float64), (6, 5)).numpy()
    np.testing.assert_allclose(
        grid, np.broadcast_to(pixel_centres((6, 5)).reshape(6, 5, 2), grid.shape), rtol=0, atol=1e-12
    )


def test_affine_control_points_give_the_affine_grid():
    # A TPS reproduces affine maps exactly (its kernel weights vanish).
    t = transforms.get("tps", k=4)
    a = np.array([[0.8, -0.3, 0.1], [0.2, 1.1, -0.05]])
    control = t.control_points.numpy()
    theta = torch.from_numpy((control @ a[:, :2].T + a[:, 2]).reshape(1, -1))
    expected = pixel_centres((5, 6)) @ a[:, :2].T + a[:, 2]
    np.testing.assert_allclose(t.grid(theta, (5, 6)).numpy().reshape(-1, 2), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("reg", [0.1, 1.0])
def test_regularisation_matches_scipy_smoothing(reg):
    # The documented kernel is U(r) = r² log r² (twice scipy's r² log r) with λ added to the kernel's diagonal,
    # which is scipy's smoothing = λ / 2.
    t = transforms.get("tps", k=4, reg=reg)
    theta = perturbed(t, 2)
    np.testing.assert_allclose(
        t.grid(theta, (5, 6)).numpy(), scipy_grid(t, theta, (5, 6), smoothing=reg / 2), rtol=0, atol=1e-10
    )


def test_large_regularisation_tends_to_least_squares_affine_fit():
    t = transforms.get("tps", k=4, reg=1e7)
    theta = perturbed(t, 1)
    control = t.control_points.numpy()
    design = np.concatenate([control, np.ones((len(control), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, theta.numpy().reshape(-1, 2), rcond=None)
    points = pixel_centres((5, 5))
    expected = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ coef
    np.testing.assert_allclose(t.grid(theta, (5, 5)).numpy().reshape(-1, 2), expected, rtol=0, atol=1e-4)


def test_regularisation_changes_the_spline():
    theta = perturbed(transforms.get("tps"), 1)
    plain = transforms.get("tps").grid(theta, (5, 5))
    smooth = transforms.get("tps", reg=0.5).grid(theta, (5, 5))
    assert (plain - smooth).abs().max() > 1e-3


@pytest.mark.parametrize("bad", [{"k": 1}, {"k": 2.5}, {"reg": -1.0}])
def test_bad_options_are_rejected(bad):
    with pytest.raises(ValueError):
        transforms.get("tps", **bad)


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


def test_solve_is_cached_per_size_and_dtype(monkeypatch):
    # Count linear solves wherever they happen: numpy.linalg calls, and torch linalg ops seen by the dispatcher.
    numpy_solves = []
    for fname in ("inv", "solve", "lstsq", "pinv"):
        original = getattr(np.linalg, fname)
        monkeypatch.setattr(np.linalg, fname, lambda *a, _f=original, **k: numpy_solves.append(_f) or _f(*a, **k))
    torch_solves = ("linalg", "solve", "inverse", "lu", "cholesky")
    t = transforms.get("tps", k=3, reg=0.0456)  # options no other test uses: the first call below must solve
    theta = perturbed(t, 2)
    moved = theta + 0.01
    with _OpRecorder() as first:
        t.grid(theta, (11, 13))
    assert numpy_solves or any(any(s in op for s in torch_solves) for op in first.ops), first.ops
    numpy_solves.clear()
    with _OpRecorder() as second:
        again = t.grid(moved, (11, 13))
    # A cached call is one batched matrix product: no solve, no kernel evaluation (log), one mm/bmm.
    assert not numpy_solves
    assert not any(any(s in op for s in (*torch_solves, "log")) for op in second.ops), second.ops
    assert sum(op in ("mm", "bmm", "addmm", "baddbmm") for op in second.ops) == 1, second.ops
    np.testing.assert_allclose(again.numpy(), scipy_grid(t, moved, (11, 13), smoothing=0.0456 / 2), rtol=0, atol=1e-10)


def test_float32_grid_is_accurate():
    t = transforms.get("tps")
    theta = perturbed(t, 2)
    grid32 = t.grid(theta.float(), (7, 7))
    assert grid32.dtype == torch.float32
    np.testing.assert_allclose(grid32.numpy(), scipy_grid(t, theta, (7, 7)), rtol=0, atol=1e-5)


def test_grid_gradient_is_linear_in_theta():
    t = transforms.get("tps", k=3)
    theta = perturbed(t, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda th: t.grid(th, (3, 4)), (theta,))
