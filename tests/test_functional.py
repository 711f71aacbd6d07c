"""Tests for stn.functional: warp / sampling_grid / sample (the grid generator and sampler)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import stn
from stn import transforms

FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "tps", "affine3d"]


def input_for(name: str, batch: int = 2, channels: int = 3, dtype=torch.float64) -> torch.Tensor:
    size = (3, 4, 5) if transforms.get(name).ndim == 3 else (5, 7)
    return torch.randn(batch, channels, *size, dtype=dtype)


def perturbed(name: str, batch: int, scale: float = 0.05, dtype=torch.float64) -> torch.Tensor:
    """A random θ near the identity, so that no grid point lies exactly on a pixel boundary."""
    t = transforms.get(name)
    return t.identity(batch, dtype=dtype) + scale * torch.randn(batch, t.num_params, dtype=dtype)


class GridSampleCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "grid_sampler" in func.overloadpacket.__name__ and "backward" not in func.overloadpacket.__name__:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", FAMILIES)
def test_identity_returns_input(name):
    x = input_for(name)
    theta = transforms.get(name).identity(2, dtype=torch.float64)
    torch.testing.assert_close(stn.warp(x, theta, name), x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
def test_warp_accepts_transform_object_and_name_alike(name):
    x = input_for(name)
    theta = perturbed(name, 2, scale=0.1)
    torch.testing.assert_close(stn.warp(x, theta, transforms.get(name)), stn.warp(x, theta, name), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "theta", "k"),
    [
        ("affine", [0.0, -1.0, 0.0, 1.0, 0.0, 0.0], 1),
        ("affine", [0.0, 1.0, 0.0, -1.0, 0.0, 0.0], -1),
        ("similarity", [0.0, 1.0, 0.0, 0.0], 1),  # a = cos 90°, b = sin 90°
        ("projective", [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 1),
    ],
)
def test_quarter_turn_equals_rot90(name, theta, k):
    # Target -> source: x_s = -y_t, y_s = x_t, so out[r, c] = x[c, n - 1 - r], which is torch.rot90(x, 1).
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    theta = torch.tensor([theta] * 2, dtype=torch.float64)
    torch.testing.assert_close(stn.warp(x, theta, name), torch.rot90(x, k, dims=(-2, -1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["translation", "affine", "tps"])
def test_one_pixel_translation_is_a_shift(name):
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    t = transforms.get(name)
    theta = t.identity(1, dtype=torch.float64)
    step_x, step_y = 2 / 8, -2 / 5  # one pixel right in x, one pixel up in y
    if name == "affine":
        theta[:, 2], theta[:, 5] = step_x, step_y
    else:  # translation (tx, ty), and TPS with every control point moved by the same step
        theta = theta + torch.tensor([step_x, step_y], dtype=torch.float64).repeat(t.num_params // 2)
    out = stn.warp(x, theta, name)
    # out[r, c] = x[r - 1, c + 1]: the source lies one column right and one row up; the rest reads zeros.
    expected = torch.zeros_like(x)
    expected[:, :, 1:, :-1] = x[:, :, :-1, 1:]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_gradcheck_input_and_theta(name):
    x = input_for(name, batch=1, channels=1).requires_grad_()
    theta = perturbed(name, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: stn.warp(a, b, name), (x, theta))


@pytest.mark.parametrize("name", FAMILIES)
def test_gradgradcheck_input_and_theta(name):
    """Second-order gradients (gradient penalties, meta-learning): θ near the identity puts every grid point
    inside the input and off the pixel lattice, where bilinear sampling is smooth."""
    x = input_for(name, batch=1, channels=1).requires_grad_()
    theta = perturbed(name, 1).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: stn.warp(a, b, name), (x, theta))


@pytest.mark.parametrize(("mode", "fill"), [("bicubic", None), ("bilinear", 0.7)])
def test_gradgradcheck_other_sampling_options(mode, fill):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    theta = perturbed("projective", 1).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: stn.warp(a, b, "projective", mode=mode, fill=fill), (x, theta))


@pytest.mark.parametrize(
    ("mode", "padding_mode", "fill"),
    [
        ("bicubic", "zeros", None),
        ("bilinear", "border", None),
        ("bilinear", "reflection", None),
        ("bilinear", "zeros", 0.7),
    ],
)
def test_gradcheck_other_sampling_options(mode, padding_mode, fill):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    theta = (perturbed("affine", 1) * 1.2).requires_grad_()  # zoom out a little so that the padding is read
    func = lambda a, b: stn.warp(a, b, "affine", mode=mode, padding_mode=padding_mode, fill=fill)  # noqa: E731
    assert torch.autograd.gradcheck(func, (x, theta))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_output_dtype_follows_input(name, dtype):
    x = input_for(name, dtype=dtype)
    theta = perturbed(name, 2, scale=0.1, dtype=dtype)
    out = stn.warp(x, theta, name)
    assert out.dtype == dtype and out.shape == x.shape


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_bfloat16_maths_runs_in_float32(name):
    # A bfloat16 grid cannot address pixels of a 64-pixel image (8 bits of mantissa); computing grid and
    # sampling in float32 and rounding only the output gives the float32 result rounded to bfloat16.
    x = torch.rand(2, 1, 64, 64).to(torch.bfloat16)
    theta = perturbed(name, 2, scale=0.1, dtype=torch.float32).to(torch.bfloat16)
    expected = stn.warp(x.float(), theta.float(), name).to(torch.bfloat16)
    torch.testing.assert_close(stn.warp(x, theta, name), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_channels_last_input(name):
    x = torch.randn(2, 3, 6, 7)
    theta = perturbed(name, 2, scale=0.1, dtype=torch.float32)
    out = stn.warp(x.contiguous(memory_format=torch.channels_last), theta, name)
    torch.testing.assert_close(out, stn.warp(x, theta, name), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("batch", [0, 1])
def test_small_batches(name, batch):
    x = input_for(name, batch=batch)
    theta = perturbed(name, batch)
    out = stn.warp(x, theta, name)
    assert out.shape == x.shape
    if batch:
        t = transforms.get(name)
        torch.testing.assert_close(stn.warp(x, t.identity(1, dtype=x.dtype), name), x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("out_size", [(3, 3), (12, 18), (5, 4)])
def test_out_size_matches_interpolate(out_size):
    # Identity θ resamples the input at the output's pixel centres; with border padding this is exactly
    # bilinear interpolation with align_corners=False (which clamps at the edges).
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    theta = transforms.get("affine").identity(2, dtype=torch.float64)
    out = stn.warp(x, theta, "affine", out_size=out_size, padding_mode="border")
    expected = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
    assert out.shape == (2, 3, *out_size)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_out_size_differs_from_input(name):
    t = transforms.get(name)
    out_size = (2, 3, 2) if t.ndim == 3 else (3, 4)
    x = input_for(name)
    out = stn.warp(x, perturbed(name, 2), name, out_size=out_size)
    assert out.shape == (2, 3, *out_size)
    torch.testing.assert_close(stn.sample(x, stn.sampling_grid(perturbed(name, 2), name, out_size)).shape, out.shape)


def test_cropping_448_to_224_reads_the_right_window():
    # The paper's attention crop: s = 0.5 around (tx, ty) on a 448 image -> a 224 output that is exactly the
    # 224x224 window starting at pixel (row 112 + 224*ty, col 112 + 224*tx) (an integer offset: no blending).
    x = torch.randn(1, 3, 448, 448, dtype=torch.float64)
    theta = torch.tensor([[0.5, 0.25, -0.5]], dtype=torch.float64)
    out = stn.warp(x, theta, "attention", out_size=(224, 224))
    top, left = 112 + int(224 * -0.5), 112 + int(224 * 0.25)
    torch.testing.assert_close(out, x[:, :, top : top + 224, left : left + 224], rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("fill", [0.7, [0.5, -1.0, 2.0]])
def test_fill_is_zero_padding_of_the_offset_input(mode, fill):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    theta = perturbed("affine", 2) * 1.5  # zoom out: part of the output is background
    offset = torch.tensor(fill, dtype=torch.float64).reshape(1, -1, 1, 1)
    expected = stn.warp(x - offset, theta, "affine", mode=mode) + offset
    torch.testing.assert_close(stn.warp(x, theta, "affine", mode=mode, fill=fill), expected, rtol=0, atol=1e-12)


def test_fill_value_appears_outside_the_input():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    theta = torch.tensor([[4.0, 0.0, 0.0]], dtype=torch.float64)  # zoom out 4x: the border quarter is outside
    out = stn.warp(x, theta, "attention", fill=[0.25, -3.0])
    assert torch.equal(out[0, 0, 0], torch.full((8,), 0.25, dtype=torch.float64))
    assert torch.equal(out[0, 1, :, -1], torch.full((8,), -3.0, dtype=torch.float64))


@pytest.mark.parametrize("fill", [None, 0.3])
@pytest.mark.parametrize("name", ["affine", "tps", "affine3d"])
def test_one_sampling_call(name, fill):
    x = input_for(name)
    with GridSampleCounter() as counter:
        stn.warp(x, perturbed(name, 2), name, fill=fill)
    assert counter.calls == 1


@pytest.mark.parametrize("name", ["affine", "tps"])
def test_nearest_and_bicubic_are_exact_at_pixel_centres(name):
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    theta = transforms.get(name).identity(2, dtype=torch.float64)
    for mode in ("nearest", "bicubic"):
        torch.testing.assert_close(stn.warp(x, theta, name, mode=mode), x, rtol=0, atol=1e-9)


def test_nearest_shift():
    x = torch.randn(1, 1, 4, 6, dtype=torch.float64)
    theta = torch.tensor([[2 / 6 * 0.9, 0.0]], dtype=torch.float64)  # 0.9 px right: nearest rounds to 1 px
    out = stn.warp(x, theta, "translation", mode="nearest")
    torch.testing.assert_close(out[..., :-1], x[..., 1:], rtol=0, atol=0)


def test_border_and_reflection_padding():
    x = torch.randn(1, 1, 3, 6, dtype=torch.float64)
    theta = torch.tensor([[4 / 6, 0.0]], dtype=torch.float64)  # two pixels right
    border = stn.warp(x, theta, "translation", padding_mode="border")
    reflection = stn.warp(x, theta, "translation", padding_mode="reflection")
    torch.testing.assert_close(border[..., :4], x[..., 2:], rtol=0, atol=1e-12)
    torch.testing.assert_close(border[..., 4:], x[..., 5:].expand(-1, -1, -1, 2), rtol=0, atol=1e-12)
    # Columns 6 and 7 of the source reflect about the image's outer edge onto columns 5 and 4.
    torch.testing.assert_close(reflection[..., 4:], x[..., [5, 4]], rtol=0, atol=1e-12)


def test_trilinear_volume_shift():
    x = torch.randn(1, 2, 4, 3, 5, dtype=torch.float64)
    theta = transforms.get("affine3d").identity(1, dtype=torch.float64)
    theta[0, 11] = 2 / 4  # one slice deeper in z
    out = stn.warp(x, theta, "affine3d")
    torch.testing.assert_close(out[:, :, :-1], x[:, :, 1:], rtol=0, atol=1e-12)
    assert torch.equal(out[:, :, -1], torch.zeros_like(out[:, :, -1]))


def test_sampling_grid_is_the_transform_grid():
    theta = perturbed("projective", 3)
    grid = stn.sampling_grid(theta, "projective", (4, 6))
    torch.testing.assert_close(grid, transforms.get("projective").grid(theta, (4, 6)), rtol=0, atol=0)
    assert stn.sampling_grid(theta, "projective", 5).shape == (3, 5, 5, 2)


def test_sample_at_base_grid_is_identity():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    grid = stn.coords.base_grid((4, 5), dtype=torch.float64).expand(2, -1, -1, -1)
    torch.testing.assert_close(stn.sample(x, grid), x, rtol=0, atol=1e-12)


# --- errors -------------------------------------------------------------------------------------------------


def test_theta_of_wrong_width():
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        stn.warp(torch.rand(2, 1, 4, 4), torch.zeros(2, 4), "affine")
    with pytest.raises(ValueError, match="6"):
        stn.sampling_grid(torch.zeros(2, 5), "affine", (4, 4))


def test_theta_of_wrong_batch_size_is_not_broadcast():
    with pytest.raises(ValueError, match="batch size"):
        stn.warp(torch.rand(2, 1, 4, 4), transforms.get("affine").identity(1), "affine")
    with pytest.raises(ValueError, match="batch size"):
        stn.warp(torch.rand(1, 1, 4, 4), transforms.get("tps").identity(3), "tps")


@pytest.mark.parametrize(
    ("shape", "name"), [((1, 4, 4), "affine"), ((4, 4), "tps"), ((1, 1, 4, 4), "affine3d"), ((1, 1, 2, 4, 4), "affine")]
)
def test_input_of_wrong_rank(shape, name):
    t = transforms.get(name)
    with pytest.raises(ValueError, match="(B, C, " + ("D, " if t.ndim == 3 else "") + "H, W)"):
        stn.warp(torch.rand(shape), t.identity(shape[0]), name)


def test_non_floating_input():
    with pytest.raises(TypeError, match="floating"):
        stn.warp(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), transforms.get("affine").identity(1), "affine")
    with pytest.raises(TypeError, match="floating"):
        stn.warp(torch.rand(1, 1, 4, 4), torch.zeros(1, 6, dtype=torch.long), "affine")


def test_unknown_transform_lists_known_ones():
    with pytest.raises(KeyError) as info:
        stn.warp(torch.rand(1, 1, 4, 4), torch.zeros(1, 6), "shear")
    assert "shear" in str(info.value)
    assert all(name in str(info.value) for name in FAMILIES)


@pytest.mark.parametrize("out_size", [(0, 4), (4, -2), (4,), 0])
def test_non_positive_or_malformed_out_size(out_size):
    with pytest.raises(ValueError, match="out_size"):
        stn.warp(torch.rand(1, 1, 4, 4), transforms.get("affine").identity(1), "affine", out_size=out_size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "area"}, "mode"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"fill": [0.0, 1.0]}, "fill"),
        ({"fill": 0.5, "padding_mode": "border"}, "fill"),
    ],
)
def test_bad_sampling_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stn.warp(torch.rand(1, 3, 4, 4), transforms.get("affine").identity(1), "affine", **kwargs)


def test_bicubic_volume_is_rejected():
    with pytest.raises(ValueError, match="bicubic"):
        stn.warp(torch.rand(1, 1, 2, 3, 4), transforms.get("affine3d").identity(1), "affine3d", mode="bicubic")


def test_a_non_finite_theta_gives_nan_by_default_and_an_error_naming_the_sample_with_check_finite(monkeypatch):
    monkeypatch.delenv("STN_CHECK_FINITE", raising=False)
    x = torch.rand(3, 1, 6, 6)
    theta = transforms.get("affine").identity(3)
    theta[1, 2] = float("inf")
    out = stn.warp(x, theta, "affine")
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()  # as the docstring says
    with pytest.raises(ValueError, match=r"stn.warp: θ is NaN or infinite for sample\(s\) \[1\] of 3"):
        stn.warp(x, theta, "affine", check_finite=True)
    monkeypatch.setenv("STN_CHECK_FINITE", "1")  # read at each call
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] of 3"):
        stn.warp(x, theta, "affine")
    assert stn.warp(x, theta, "affine", check_finite=False)[1].isnan().all()
    torch.testing.assert_close(stn.warp(x, transforms.get("affine").identity(3), "affine"), x)
