"""Tests for stn.coords: the pixel-centre convention of grid_sample(align_corners=False)."""

import pytest
import torch
import torch.nn.functional as F

from stn.coords import base_grid, box_iou, check_size, normalized_to_pixel, pixel_to_normalized


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4, 2)])
def test_base_grid_matches_identity_affine_grid(size):
    expected = F.affine_grid(torch.eye(2, 3, dtype=torch.float64)[None], [1, 1, *size], align_corners=False)[0]
    got = base_grid(size, dtype=torch.float64)
    assert got.shape == (*size, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


def test_base_grid_3d_matches_identity_affine_grid():
    expected = F.affine_grid(torch.eye(3, 4, dtype=torch.float64)[None], [1, 1, 2, 3, 4], align_corners=False)[0]
    got = base_grid((2, 3, 4), dtype=torch.float64)
    assert got.shape == (2, 3, 4, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


def test_base_grid_last_dim_is_x_then_y():
    g = base_grid((2, 4), dtype=torch.float64)
    # x varies along the width (dim 1), y along the height (dim 0); pixel i of n has centre (2i + 1)/n - 1.
    torch.testing.assert_close(g[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(g[:, 0, 1], torch.tensor([-0.5, 0.5], dtype=torch.float64))


def test_base_grid_dtype_and_default_dtype():
    assert base_grid((2, 2), dtype=torch.float64).dtype == torch.float64
    assert base_grid((2, 2)).dtype == torch.get_default_dtype()


def test_base_grid_reads_every_pixel_exactly():
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    out = F.grid_sample(x, base_grid((3, 5), dtype=torch.float64)[None], align_corners=False)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


def test_pixel_normalized_round_trip():
    p = torch.arange(7, dtype=torch.float64)
    c = pixel_to_normalized(p, 7)
    torch.testing.assert_close(c, (2 * p + 1) / 7 - 1)
    torch.testing.assert_close(normalized_to_pixel(c, 7), p)
    assert pixel_to_normalized(-0.5, 4) == -1.0  # outer edge of the first pixel
    assert normalized_to_pixel(1.0, 4) == 3.5  # outer edge of the last pixel


@pytest.mark.parametrize("bad", [(0, 3), (3, -1), (2, 2, 2), (2.5, 3)])
def test_check_size_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="out_size"):
        check_size(bad, 2)


def test_check_size_accepts_int_and_rejects_non_sequence():
    assert check_size(3, 2) == (3, 3)
    with pytest.raises(TypeError, match="out_size"):
        check_size(None, 2)


def test_box_iou_of_paired_and_broadcast_boxes() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    expected = torch.tensor([1.0, 50 / 150, 0.0])
    torch.testing.assert_close(box_iou(a, b), expected)
    torch.testing.assert_close(box_iou(a[0], b), expected)  # one box against three
