from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from matplotlib.path import Path as Polygon
from scipy import ndimage, stats

import stn
from stn.data import GENERATORS, VARIANTS, variant_info
from stn.data.distortions import (
    add_clutter,
    addition,
    cluttered,
    elastic,
    ink_box,
    projective,
    rotated,
    rts,
    translated,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(variant: str, digits: torch.Tensor) -> torch.Tensor:
    return torch.stack([digits, digits.flip(0)], dim=1) if variant == "addition" else digits


def _ink_of(out: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Ink boxes (pixel edges) of ``(N, 1, H, W)`` outputs, thresholded."""
    return ink_box((out[:, 0] > threshold).to(torch.uint8))


# --- registry ------------------------------------------------------------------------------------------------


def test_variants_and_info() -> None:
    assert VARIANTS == ("r", "rts", "p", "e", "t", "tc", "addition", "coloc", "coloc-tc")
    assert tuple(GENERATORS) == VARIANTS
    info = variant_info("RTS")
    assert (info.name, info.image_size, info.channels, info.num_classes) == ("rts", (42, 42), 1, 10)
    assert variant_info("addition").num_classes == 19 and variant_info("addition").channels == 2
    with pytest.raises(KeyError, match="valid variants: r, rts, p"):
        variant_info("rst")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_generator_shape_range_and_determinism(variant: str, make_digits: Callable) -> None:
    digits = _inputs(variant, make_digits(12))
    info = variant_info(variant)
    out, params = GENERATORS[variant](digits, _gen(1))
    assert out.shape == (12, info.channels, *info.image_size) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and float(out.max()) > 0.9
    assert params and all(v.device.type == "cpu" and v.shape[0] == 12 for v in params.values())
    again, params_again = GENERATORS[variant](digits, _gen(1))
    assert torch.equal(out, again) and all(torch.equal(params[k], params_again[k]) for k in params)
    other, _ = GENERATORS[variant](digits, _gen(2))
    assert not torch.equal(out, other)
    # float input in [0, 1] gives the same result as uint8
    as_float, _ = GENERATORS[variant](digits.float() / 255, _gen(1))
    torch.testing.assert_close(as_float, out, atol=1e-6, rtol=0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        rts(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), _gen())
    with pytest.raises(TypeError, match="uint8"):
        rts(torch.zeros(2, 28, 28, dtype=torch.int64), _gen())
    with pytest.raises(TypeError, match="generator"):
        rts(torch.zeros(2, 28, 28), 0)
    with pytest.raises(ValueError, match="two digits"):
        addition(torch.zeros(2, 28, 28), _gen())
    with pytest.raises(ValueError, match="scale"):
        rts(torch.zeros(2, 28, 28), _gen(), scale=(1.2, 0.7))
    with pytest.raises(ValueError, match="clutter_size"):
        add_clutter(torch.zeros(2, 1, 60, 60), _gen(), torch.zeros(3, 28, 28), clutter_size=40)


def test_ink_box() -> None:
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, 5:9, 10:20] = 7
    assert ink_box(images).tolist() == [[10, 5, 20, 9], [0, 0, 28, 28]]  # the empty image gets the frame


# --- distributions of the drawn parameters ---------------------------------------------------------------------


def _uniform_ok(values: torch.Tensor, low: float, high: float) -> bool:
    v = values.double().numpy()
    return bool(v.min() >= low and v.max() <= high and stats.kstest(v, "uniform", (low, high - low)).pvalue > 1e-3)


def _normal_ok(values: torch.Tensor, std: float) -> bool:
    v = values.double().flatten().numpy()
    return bool(stats.kstest(v, "norm", (0, std)).pvalue > 1e-3)


def test_parameter_distributions(make_digits: Callable) -> None:
    digits = make_digits(2000)
    _, p = rotated(digits, _gen())
    assert _uniform_ok(p["angle"], -90, 90)
    _, p = rts(digits, _gen())
    assert _uniform_ok(p["angle"], -45, 45) and _uniform_ok(p["scale"], 0.7, 1.2)
    assert float(p["box"].min()) >= 0 and float(p["box"].max()) <= 42  # never cut off
    # the offset spreads over the allowed range: the box touches each side of the canvas sometimes
    assert float(p["box"][:, :2].min()) < 1 and float(p["box"][:, 2:].max()) > 41
    _, p = projective(digits, _gen())
    assert _uniform_ok(p["scale"], 0.75, 1.0) and _normal_ok(p["corner_shift"], 5.0)
    _, p = elastic(digits, _gen())
    assert _uniform_ok(p["scale"], 0.75, 1.0) and _normal_ok(p["control_shift"], 1.5)
    assert p["control_shift"].shape == (2000, 16, 2)
    _, p = translated(digits, _gen())
    assert torch.equal(p["offset"], p["offset"].round())  # whole pixels
    assert float(p["box"].min()) >= 0 and float(p["box"].max()) <= 60
    # offsets are uniform over the allowed positions: compare with the range each digit allows
    width = (p["box"][:, 2] - p["box"][:, 0]).double()
    position = (p["box"][:, 0].double() + 0.5) / (60 - width + 1)  # uniform in (0, 1) for a uniform placement
    assert _uniform_ok(position, 0, 1)


def test_other_distributions_are_rejected() -> None:
    # the checks above can fail: a triangular sample is not uniform, a uniform one not normal
    g = _gen()
    triangular = torch.rand(2000, generator=g) + torch.rand(2000, generator=g)
    assert not _uniform_ok(triangular, 0, 2)
    assert not _normal_ok(torch.rand(2000, generator=g) * 10 - 5, 5.0)


# --- checks against the truth --------------------------------------------------------------------------------


def test_r_rotated_back_by_its_angle_matches_the_original(make_digits: Callable) -> None:
    digits = make_digits(16)
    out, p = rotated(digits, _gen())
    affine = stn.transforms.get("affine")
    back = stn.warp(out, affine.inverse(p["theta"]), affine)
    original = digits.unsqueeze(1).float() / 255
    assert float((back - original).abs().mean()) < 0.03
    # the same digit rotated by scipy (counter-clockwise for positive angles, as displayed)
    for i in range(4):
        ref = ndimage.rotate(digits[i].float().numpy() / 255, float(p["angle"][i]), reshape=False, order=1)
        assert float(np.abs(out[i, 0].numpy() - ref).mean()) < 0.02


def test_rts_box_and_centre_are_where_the_parameters_say(make_digits: Callable) -> None:
    digits = make_digits(64)
    src_box = ink_box(digits)
    # without rotation the box is tight
    out, p = rts(digits, _gen(), max_angle=0.0)
    assert (p["angle"] == 0).all()
    torch.testing.assert_close(_ink_of(out, 0.5).float(), p["box"], atol=1.01, rtol=0)
    torch.testing.assert_close(
        p["box"][:, 2:] - p["box"][:, :2],
        (src_box[:, 2:] - src_box[:, :2]).float() * p["scale"][:, None],
        atol=1e-4,
        rtol=0,
    )
    # with rotation, the ink lies inside the box and its centre of mass is where the parameters put it
    out, p = rts(digits, _gen(1))
    ink = _ink_of(out, 0.05).float()
    assert (ink[:, :2] >= p["box"][:, :2] - 1).all() and (ink[:, 2:] <= p["box"][:, 2:] + 1).all()
    ys, xs = torch.meshgrid(torch.arange(28.0) + 0.5, torch.arange(28.0) + 0.5, indexing="ij")
    mass = digits.float()
    com_src = torch.stack([(mass * xs).sum((1, 2)), (mass * ys).sum((1, 2))], 1) / mass.sum((1, 2))[:, None]
    rad = torch.deg2rad(p["angle"])
    c, s = torch.cos(rad) * p["scale"], torch.sin(rad) * p["scale"]
    u = com_src - 14
    expected = torch.stack([c * u[:, 0] + s * u[:, 1], -s * u[:, 0] + c * u[:, 1]], 1) + p["offset"] + 21
    ys, xs = torch.meshgrid(torch.arange(42.0) + 0.5, torch.arange(42.0) + 0.5, indexing="ij")
    mass = out[:, 0]
    com_out = torch.stack([(mass * xs).sum((1, 2)), (mass * ys).sum((1, 2))], 1) / mass.sum((1, 2))[:, None]
    torch.testing.assert_close(com_out, expected, atol=0.3, rtol=0)


@pytest.mark.parametrize("size", [60, 61])
def test_translation_copies_the_digit_exactly(make_digits: Callable, size: int) -> None:
    digits = make_digits(32)
    out, p = translated(digits, _gen(), size=size)
    source = ink_box(digits).long()
    top_left = p["offset"] + (size - 28) / 2  # the 28x28 frame's top-left in the canvas: whole pixels
    assert torch.equal(top_left, top_left.round())
    for i in range(32):
        x0, y0, x1, y1 = source[i].tolist()
        dx, dy = (int(v) for v in top_left[i])
        expected = digits[i, y0:y1, x0:x1].float() / 255
        torch.testing.assert_close(out[i, 0, y0 + dy : y1 + dy, x0 + dx : x1 + dx], expected, atol=1e-6, rtol=0)
        assert float(out[i].sum()) == pytest.approx(float(expected.sum()), rel=1e-5)
    assert torch.equal(_ink_of(out, 0.5).float(), p["box"])
    # the exact paste is the warp by the returned θ
    warped = stn.warp(digits.unsqueeze(1).float() / 255, p["theta"], "affine", (size, size))
    torch.testing.assert_close(out, warped, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [20, 9])  # the frame is cut; at 9 pixels the ink too (the digit is centred)
def test_paste_cuts_what_leaves_the_canvas(make_digits: Callable, size: int) -> None:
    digits = make_digits(3)
    out, p = translated(digits, _gen(), size=size)
    assert float(out.sum()) > 0
    warped = stn.warp(digits.unsqueeze(1).float() / 255, p["theta"], "affine", (size, size))
    torch.testing.assert_close(out, warped, atol=1e-4, rtol=0)


def test_coloc_box_is_the_digits_box(make_digits: Callable) -> None:
    out, p = GENERATORS["coloc"](make_digits(16), _gen())
    assert out.shape[-2:] == (84, 84)
    assert torch.equal(_ink_of(out, 0.5).float(), p["box"])


def test_projective_corners_are_where_the_parameters_say() -> None:
    white = torch.full((6, 28, 28), 255, dtype=torch.uint8)
    out, p = projective(white, _gen())
    centres = np.stack(np.meshgrid(np.arange(28) + 0.5, np.arange(28) + 0.5), -1).reshape(-1, 2)
    for i in range(6):
        quad = p["corners"][i][[0, 1, 3, 2]].double().numpy()  # TL, TR, BR, BL around the outline
        inside = Polygon(quad).contains_points(centres).reshape(28, 28)
        agree = (out[i, 0].numpy() > 0.5) == inside
        assert agree.mean() > 0.95
    torch.testing.assert_close(
        p["corners"] - p["corner_shift"],
        14 + p["scale"][:, None, None] * torch.tensor([[-14.0, -14], [14, -14], [-14, 14], [14, 14]]),
        atol=1e-4,
        rtol=0,
    )


def test_elastic_without_shifts_is_a_plain_scaling(make_digits: Callable) -> None:
    digits = make_digits(8)
    out, p = elastic(digits, _gen(), control_std=0.0)
    assert (p["control_shift"] == 0).all()
    s = p["scale"]
    zero = torch.zeros_like(s)
    theta = torch.stack([1 / s, zero, zero, zero, 1 / s, zero], 1)  # zoom out by s about the centre
    expected = stn.warp(digits.unsqueeze(1).float() / 255, theta, "affine")
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    shifted, _ = elastic(digits, _gen())
    assert float((shifted - out).abs().mean()) > 0.01


def test_clutter_never_uses_the_own_digit_and_stays_in_the_canvas(make_digits: Callable) -> None:
    digits = make_digits(40)
    out, p = cluttered(digits, _gen())
    assert p["clutter_index"].shape == (40, 6)
    assert not (p["clutter_index"] == torch.arange(40)[:, None]).any()
    assert (p["clutter_pos"] >= 0).all() and (p["clutter_pos"] <= 54).all()
    assert (p["clutter_crop"] >= 0).all() and (p["clutter_crop"] <= 22).all()
    clean, _ = translated(digits, _gen())
    assert (out >= clean).all() and float((out - clean).sum()) > 0  # clutter is added by a maximum
    # an explicit pool with exclusions
    pool = make_digits(5, seed=9)
    _, p = add_clutter(torch.zeros(300, 1, 60, 60), _gen(), pool, num_clutter=4, exclude=torch.full((300,), 2))
    assert set(p["clutter_index"].unique().tolist()) == {0, 1, 3, 4}


def test_clutter_pieces_are_the_drawn_crops() -> None:
    pool = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 28, 28) / (2 * 28 * 28)
    out, p = add_clutter(torch.zeros(1, 1, 60, 60), _gen(), pool, num_clutter=1, clutter_size=6)
    (j,), ((cx, cy),), ((px, py),) = p["clutter_index"][0], p["clutter_crop"][0], p["clutter_pos"][0]
    torch.testing.assert_close(out[0, 0, py : py + 6, px : px + 6], pool[j, cy : cy + 6, cx : cx + 6])
    assert float(out.sum()) == pytest.approx(float(pool[j, cy : cy + 6, cx : cx + 6].sum()))


def test_addition_distorts_the_two_digits_independently(make_digits: Callable) -> None:
    digits = make_digits(20)
    out, p = addition(torch.stack([digits, digits], 1), _gen())
    assert out.shape == (20, 2, 42, 42) and p["angle"].shape == (20, 2) and p["box"].shape == (20, 2, 4)
    assert (p["angle"][:, 0] != p["angle"][:, 1]).all()
    assert not torch.equal(out[:, 0], out[:, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare devices")
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_parameters_and_images_on_cuda(variant: str, make_digits: Callable) -> None:
    digits = _inputs(variant, make_digits(50))
    out, params = GENERATORS[variant](digits, _gen(3))
    out_gpu, params_gpu = GENERATORS[variant](digits.cuda(), _gen(3))
    assert out_gpu.device.type == "cuda"
    for key in params:
        assert torch.equal(params[key], params_gpu[key]), key
    torch.testing.assert_close(out_gpu.cpu(), out, atol=1e-4, rtol=0)
