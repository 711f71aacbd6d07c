"""stn.warp(..., antialias=True) (stn.antialias): identical to plain sampling where nothing shrinks, equal to
F.interpolate / PIL's antialiased resize on pure scalings, far less aliasing than plain bilinear, differentiable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import stn
from stn import transforms
from stn.antialias import MAX_FACTOR, shrink_factors

WHOLE = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)  # attention θ of the whole image


def pink_noise(n: int, seed: int) -> torch.Tensor:
    """``(1, 1, n, n)`` float64 in [0, 1] with a 1/f amplitude spectrum, the statistics of natural images."""
    generator = torch.Generator().manual_seed(seed)
    spectrum = torch.randn(n, n, dtype=torch.complex128, generator=generator)
    frequency = torch.fft.fftfreq(n, dtype=torch.float64)
    radius = (frequency[:, None] ** 2 + frequency[None] ** 2).sqrt()
    radius[0, 0] = 1.0
    image = torch.fft.ifft2(spectrum / radius).real
    return ((image - image.min()) / (image.max() - image.min()))[None, None]


def checkerboard(n: int) -> torch.Tensor:
    """``(1, 1, n, n)`` float64, pixels alternating 0 / 1: its true local mean is 0.5 everywhere."""
    i = torch.arange(n, dtype=torch.float64)
    return ((i[:, None] + i[None]) % 2)[None, None]


def pil_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's bilinear resize (antialiased when it shrinks) of ``(1, 1, H, W)``, in float32 ("F" mode)."""
    image = Image.fromarray(x[0, 0].float().numpy(), mode="F").resize(size[::-1], Image.BILINEAR)
    return torch.tensor(np.asarray(image), dtype=torch.float64)


# --- identical to plain sampling where nothing shrinks -----------------------------------------------------------

NO_SHRINK = {
    "translation": (torch.tensor([[0.13, -0.2]]), None),
    "attention": (torch.tensor([[0.5, 0.25, -0.25]]), (16, 16)),  # the paper's crop: s = 0.5 at half the size
    "similarity": (torch.tensor([[math.cos(0.5), math.sin(0.5), 0.1, 0.0]]), None),  # a rotation, scale 1
    "affine": (torch.tensor([[0.6, 0.2, 0.1, -0.1, 0.7, 0.0]]), None),  # zooms in
    "projective": (torch.tensor([[0.6, 0.0, 0.0, 0.0, 0.6, 0.0, 0.1, 0.1]]), None),  # zooms in everywhere
    "tps": (transforms.get("tps").identity(1) * 0.6, (24, 24)),
    "affine3d": (transforms.get("affine3d").identity(1) * 0.9, (6, 8, 8)),
}


OPTIONS = [{}, {"padding_mode": "border"}, {"mode": "bicubic", "fill": 0.5}]  # bicubic: 2-D only


@pytest.mark.parametrize(
    ("name", "options"), [(n, o) for n in NO_SHRINK for o in OPTIONS if n != "affine3d" or "mode" not in o]
)
def test_no_shrink_is_plain_sampling_bit_for_bit(name, options):
    t = transforms.get(name)
    theta, out_size = NO_SHRINK[name]
    x = torch.rand(2, 3, *((6, 8, 8) if t.ndim == 3 else (32, 32)), requires_grad=True)
    theta = theta.expand(2, -1).clone().requires_grad_()
    assert (shrink_factors(theta.detach(), t, x.shape[2:], out_size or x.shape[2:]) <= 1 + 1e-4).all()
    plain = stn.warp(x, theta, name, out_size, **options)
    antialiased = stn.warp(x, theta, name, out_size, antialias=True, **options)
    assert torch.equal(antialiased, plain)
    gradients = [torch.autograd.grad(y.square().sum(), (x, theta)) for y in (plain, antialiased)]
    assert all(torch.equal(a, b) for a, b in zip(*gradients))


def test_a_mixed_batch_reads_each_sample_as_alone():
    x = torch.rand(4, 2, 40, 40)
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.1, 0.0], [0.8, 0.0, 0.1], [1.0, 0.0, 0.0]])  # shrink 2, 1, 1.6, 2
    out = stn.warp(x, theta, "attention", (20, 20), antialias=True)
    torch.testing.assert_close(out[1], stn.warp(x[1:2], theta[1:2], "attention", (20, 20))[0], rtol=0, atol=0)
    for i in range(4):
        alone = stn.warp(x[i : i + 1], theta[i : i + 1], "attention", (20, 20), antialias=True)
        torch.testing.assert_close(out[i], alone[0], rtol=0, atol=0)


# --- against F.interpolate(..., antialias=True) and PIL, on pure scalings ---------------------------------------


@pytest.mark.parametrize("out_size", [(48, 48), (32, 32), (24, 24), (48, 24)])  # shrink by 2, 3, 4, and 2 x 4
@pytest.mark.parametrize("seed", [0, 1])
def test_integer_downscaling_equals_interpolate_and_pil(out_size, seed):
    x = pink_noise(96, seed)
    ours = stn.warp(x, WHOLE, "attention", out_size, antialias=True)
    reference = F.interpolate(x, size=out_size, mode="bilinear", antialias=True, align_corners=False)
    # The sub-samples fall on the input's pixel centres: the same filter, edges included (measured <= 8.9e-16).
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    # PIL resizes "F" images in float32 (measured <= 5.5e-8).
    torch.testing.assert_close(ours[0, 0], pil_resize(x, out_size), rtol=0, atol=1e-6)


def test_a_crop_downscaled_equals_interpolate_of_the_window():
    x = pink_noise(96, 2)
    theta = torch.tensor([[0.5, 0.25, -0.5]], dtype=torch.float64)  # rows 0..47, columns 36..83 (48 x 48)
    window = x[..., 0:48, 36:84]
    ours = stn.warp(x, theta, "attention", (16, 24), antialias=True)  # shrink 3 x 2
    reference = F.interpolate(window, size=(16, 24), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)  # measured 4.4e-16


@pytest.mark.parametrize(
    ("shrink", "widening"),
    [(1.2, 1.4), (1.5, 1.3), (2.0, 1.0), (2.5, 1.05), (3.0, 1.0), (4.0, 1.0)],  # measured 1.335, 1.226, 1, 1.015, 1, 1
)
def test_the_filter_is_as_wide_as_interpolates_at_integer_factors_and_wider_between(shrink, widening):
    n = 240
    impulses = torch.eye(n, dtype=torch.float64).view(n, 1, 1, n)  # one image per input pixel
    out_size = (1, round(n / shrink))
    theta = WHOLE.expand(n, -1)
    ours = stn.warp(impulses, theta, "attention", out_size, antialias=True)[:, 0, 0, 3:-3]  # (input, output) weights
    reference = F.interpolate(impulses, size=out_size, mode="bilinear", antialias=True)[:, 0, 0, 3:-3]
    pixel = torch.arange(n, dtype=torch.float64)[:, None]

    def spread(weights: torch.Tensor) -> torch.Tensor:  # the filters' standard deviation, in input pixels
        centre = (weights * pixel).sum(0) / weights.sum(0)
        return ((pixel - centre).square() * weights).sum(0).div(weights.sum(0)).sqrt().mean()

    assert 1.0 - 1e-9 <= spread(ours) / spread(reference) <= widening + 1e-9


# Non-integer factors: sub-samples fall between input pixels, whose bilinear reconstruction widens the filter (above).
# Measured on pink noise, seeds 0-2, max / mean |difference|:
# 2.4x 0.037 / 0.0030, 2.67x 0.018 / 0.0021, 3.2x 0.025 / 0.0036, 2 x 4.8 0.0027 / 0.0004; 1.5x 0.084 / 0.0091,
# 1.68x 0.067 / 0.0086, 3.2 x 1.5 0.063 / 0.0059; 1.07x 0.152 / 0.0151 (plain bilinear: 0.033 / 0.0034 there).
@pytest.mark.parametrize(
    ("out_size", "max_error", "mean_error"),
    [
        ((40, 40), 0.06, 0.005),
        ((36, 36), 0.06, 0.005),
        ((30, 30), 0.06, 0.005),
        ((48, 20), 0.06, 0.005),
        ((64, 64), 0.12, 0.013),
        ((57, 57), 0.12, 0.013),
        ((30, 64), 0.12, 0.013),
        ((90, 90), 0.2, 0.02),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_integer_downscaling_is_close_to_interpolate(out_size, max_error, mean_error, seed):
    x = pink_noise(96, seed)
    difference = stn.warp(x, WHOLE, "attention", out_size, antialias=True) - F.interpolate(
        x, size=out_size, mode="bilinear", antialias=True, align_corners=False
    )
    assert difference.abs().max() <= max_error
    assert difference.abs().mean() <= mean_error


def test_volumes_are_filtered_per_axis():
    image = pink_noise(32, 3)
    volume = image.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # (1, 1, 4, 32, 32), constant in depth
    theta = transforms.get("affine3d").identity(1, dtype=torch.float64)
    ours = stn.warp(volume, theta, "affine3d", (4, 16, 8), antialias=True)  # depth unchanged, 2 x 4 in-plane
    reference = F.interpolate(image, size=(16, 8), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(ours, reference.unsqueeze(2).expand_as(ours), rtol=0, atol=1e-12)


# --- aliasing ----------------------------------------------------------------------------------------------------

SQUEEZED_TPS = transforms.get("tps").identity(1, dtype=torch.float64) * 0.6
SQUEEZED_TPS[0, 10] += 0.1
COS, SIN = math.cos(math.radians(30)), math.sin(math.radians(30))
SHRINKING = {  # name: (θ, family, out_size); the 128 x 128 checkerboard shrinks by the factors in the comments
    "scale 2.67": (WHOLE, "attention", (48, 48)),
    "scale 3.2 x 1.42": (WHOLE, "attention", (40, 90)),
    "rotation 30 deg, scale 2.13": (torch.tensor([[0.8 * COS, -0.8 * SIN, 0, 0.8 * SIN, 0.8 * COS, 0]]), "affine", 48),
    "perspective, up to 6.2 x 3.5": (torch.tensor([[0.8, 0, 0, 0, 0.8, 0, 0, 0.4]]), "projective", 48),
    "tps, up to 1.6": (SQUEEZED_TPS, "tps", 64),
}


@pytest.mark.parametrize("case", list(SHRINKING))
def test_aliasing_energy_falls_on_a_fine_checkerboard(case):
    theta, family, out_size = SHRINKING[case]
    x = checkerboard(128)

    def aliasing_energy(antialias: bool) -> float:
        # The output's mean squared deviation from the pattern's true local mean (0.5), away from the edges.
        out = stn.warp(x, theta.double(), family, out_size, padding_mode="border", antialias=antialias)
        return float((out[..., 2:-2, 2:-2] - 0.5).square().mean())

    # Measured: plain 0.023-0.032 in every case; falls 33,000x, 150,000x, 207x, 26x and 189x in the order above.
    assert aliasing_energy(False) > 0.02
    assert aliasing_energy(False) >= 10 * aliasing_energy(True)


# --- shrink factors, gradients, limits ---------------------------------------------------------------------------


def test_shrink_factors_of_each_family():
    size = (40, 60)  # input (H, W); the output is 40 x 40, so a column of the output spans 1.5 input columns
    # projective below: w = 1 + x / 2 is least at the first column's pixel centres, where ∂(x_s, y_s)/∂x_t =
    # (1 - x_s / 2, -y_s / 2) / w = (1, -y_t / 2) / w², longest at the corners (y_t = ±0.975)
    x, y = 1 / 40 - 1, 1 - 1 / 40
    w = 1 + x / 2
    expected = {
        "attention": (torch.tensor([[0.5, 0.1, 0.0]]), [[0.5, 0.75]]),
        "similarity": (torch.tensor([[0.0, 2.0, 0.0, 0.0]]), [[2 * 60 / 40, 2.0]]),  # turned 90°, scale 2
        "projective": (torch.tensor([[1.0, 0, 0, 0, 1.0, 0, 0.5, 0]]), [[1 / w, math.hypot(1.5 / w**2, y / 2 / w**2)]]),
    }
    for name, (theta, factors) in expected.items():
        torch.testing.assert_close(shrink_factors(theta, name, size, (40, 40)), torch.tensor(factors))
    tps = transforms.get("tps")
    torch.testing.assert_close(shrink_factors(tps.identity(1) * 2, tps, size, size), torch.tensor([[2.0, 2.0]]))


def test_the_factor_is_capped_near_a_horizon_and_a_nan_theta_stays_nan():
    horizon = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, 0.99, 0]])  # w = 1 + 0.99 x: close to 0 at the left edge
    assert shrink_factors(horizon, "projective", 64, 64)[0, 1] > 50 * MAX_FACTOR
    x = torch.rand(2, 1, 64, 64)
    out = stn.warp(x, torch.cat([horizon, torch.full_like(horizon, math.nan)]), "projective", antialias=True)
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out[0]).all() and out[1].isnan().all()


GRADCHECK = {  # θ shrinking a 12 x 12 input by factors between integers (kept still by gradcheck's steps)
    "attention": (torch.tensor([[0.9, 0.05, -0.1]]), (6, 5)),
    "affine": (torch.tensor([[0.7, 0.3, 0.05, -0.2, 0.8, 0.0]]), (5, 6)),
    "projective": (torch.tensor([[0.8, 0.1, 0.0, 0.0, 0.9, 0.05, 0.1, 0.15]]), (5, 5)),
    "tps": (transforms.get("tps").identity(1) * 0.7, (6, 6)),
    "affine3d": (torch.tensor([[0.8, 0.1, 0, 0.02, 0, 0.9, 0.1, 0, 0, 0, 0.7, 0.05]]), (3, 4, 3)),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck_and_gradgradcheck_in_float64(name):
    theta, out_size = GRADCHECK[name]
    theta = (theta.double() + 0.01 * torch.rand(theta.shape, dtype=torch.float64)).requires_grad_()  # off pixel edges
    x = torch.rand(1, 2, *((8, 8, 8) if len(out_size) == 3 else (12, 12)), dtype=torch.float64, requires_grad=True)
    assert (shrink_factors(theta.detach(), name, x.shape[2:], out_size) > 1.2).all()

    def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return stn.warp(x, theta, name, out_size, antialias=True)

    assert torch.autograd.gradcheck(warp, (x, theta))
    if name != "affine3d":  # the 3-D case is slow in double backward; its path is the same
        assert torch.autograd.gradgradcheck(warp, (x, theta))


def test_half_precision_and_an_empty_batch():
    x = torch.rand(2, 3, 32, 32)
    theta = WHOLE.float().expand(2, -1)
    half = stn.warp(x.bfloat16(), theta, "attention", (16, 16), antialias=True)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(
        half.float(), stn.warp(x, theta, "attention", (16, 16), antialias=True), atol=1e-2, rtol=0
    )
    assert stn.warp(x[:0], theta[:0], "attention", (16, 16), antialias=True).shape == (0, 3, 16, 16)


def test_tracing_is_a_clear_error():
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="trace or export with antialias=False"):
        torch.jit.trace(lambda x: stn.warp(x, WHOLE.float(), "attention", (8, 8), antialias=True), x)


def test_a_family_without_a_jacobian_is_a_clear_error():
    class Shift(transforms.Transform):
        name, num_params = "shift", 2

        def identity_params(self) -> torch.Tensor:
            return torch.zeros(2, dtype=torch.float64)

        def grid(self, theta, out_size):
            return stn.coords.base_grid(out_size, theta.device, theta.dtype) + theta[:, None, None, :]

    with pytest.raises(ValueError, match=r"Jacobian of T_θ, which stn does not know for 'shift'"):
        stn.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2), Shift(), antialias=True)
