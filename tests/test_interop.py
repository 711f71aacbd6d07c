"""Tests for stn.interop: OpenCV / kornia pixel matrices <-> θ, the (B, 2, 3) / (B, 3, 3) θ forms that warp and
sampling_grid accept, and loading checkpoints of the PyTorch STN tutorial.

The warps are compared on a real photo (CUB-200-2011) in float32 on [0, 1]: OpenCV warps float32 images in float
(no fixed-point interpolation), and the largest difference measured is ~3e-5 (projective), so 1e-4 holds over the
whole image, borders included (OpenCV's BORDER_CONSTANT 0 is grid_sample's zero padding).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stn
from stn.interop import TUTORIAL_KEY_MAP, pixel_matrix_from_theta, spatial_transformer_from_tutorial
from stn.interop import theta_from_pixel_matrix as to_theta

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the [test] extra) is needed to compare with OpenCV")
kornia_transform = pytest.importorskip("kornia.geometry.transform", reason="kornia (the [test] extra) is needed")
from kornia.geometry.conversions import normalize_homography  # noqa: E402

TOL = 1e-4
# kornia < 0.9 normalised M with pixel centres at ±1 whatever align_corners (kornia#3904, fixed in 0.9 by #3945).
KORNIA_LEGACY = tuple(int(p) for p in __import__("kornia").__version__.split(".")[:2]) < (0, 9)

ANGLE = np.deg2rad(17.0)
# Source -> destination pixel matrices: rotation, anisotropic scale, shear and a translation; plus a perspective row.
AFFINE = np.array(
    [[1.1 * np.cos(ANGLE), -1.1 * np.sin(ANGLE) + 0.1, 30.0], [0.9 * np.sin(ANGLE), 1.05 * np.cos(ANGLE), -20.0]]
)
PROJECTIVE = np.vstack([AFFINE, [2e-4, -3e-4, 1.0]])
MATRICES = {"affine": AFFINE, "projective": PROJECTIVE}
MATRIX_PARAMS = {"affine": 6, "projective": 8}


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> np.ndarray:
    """A real CUB photo, ``(H, W, 3)`` float32 in [0, 1]."""
    from PIL import Image

    images = sorted((shared_data / "cub_200_2011_subset").rglob("*.jpg"))
    if not images:
        pytest.skip(f"no CUB-200-2011 .jpg under {shared_data / 'cub_200_2011_subset'}")
    return np.asarray(Image.open(images[0]).convert("RGB"), dtype=np.float32) / 255


def as_batch(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).contiguous()


def opencv_warp(img: np.ndarray, m: np.ndarray, out_size: tuple[int, int]) -> torch.Tensor:
    warp = cv2.warpAffine if m.shape == (2, 3) else cv2.warpPerspective
    out = warp(img, m, out_size[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return as_batch(out)


def stn_warp(img: np.ndarray, theta: torch.Tensor, transform: str, out_size: tuple[int, int]) -> torch.Tensor:
    return stn.warp(as_batch(img), theta, transform, out_size)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("transform", ["affine", "projective"])
@pytest.mark.parametrize("out_size", [None, (200, 260), (401, 333)])
def test_matches_opencv_on_a_photo(photo, transform, out_size):
    in_size = photo.shape[:2]
    out_size = out_size or in_size
    m = MATRICES[transform]
    theta = to_theta(m, in_size, out_size, transform)
    reference = opencv_warp(photo, m, out_size)
    assert reference.abs().sum() > 0.25 * reference.numel() * float(photo.mean())  # the warp keeps most content
    assert max_diff(stn_warp(photo, theta, transform, out_size), reference) < TOL


@pytest.mark.parametrize("transform", ["affine", "projective"])
def test_inverse_matrix_as_theta_is_far_off(photo, transform):
    # The mistake the conversion exists for: M⁻¹ (pixels) is not θ (normalised), and neither is M.
    in_size = photo.shape[:2]
    m = MATRICES[transform]
    reference = opencv_warp(photo, m, in_size)
    full = np.vstack([m, [0, 0, 1]]) if m.shape == (2, 3) else m
    for wrong in (np.linalg.inv(full), full):
        flat = torch.tensor(wrong / wrong[2, 2], dtype=torch.float32).reshape(1, 9)[:, : MATRIX_PARAMS[transform]]
        assert max_diff(stn_warp(photo, flat, transform, in_size), reference) > 0.1


@pytest.mark.parametrize("transform", ["affine", "projective"])
@pytest.mark.parametrize("kornia_align_corners", [False, True])
@pytest.mark.parametrize("out_size", [None, (200, 260)])
def test_matches_kornia_on_a_photo(photo, transform, kornia_align_corners, out_size):
    # kornia's reference runs in float64: its own float32 warp is up to 1.1e-4 away from its float64 one on this
    # photo (projective), so a float32-vs-float32 comparison would measure kornia's rounding as much as ours.
    in_size = photo.shape[:2]
    out_size = out_size or in_size
    m = torch.tensor(MATRICES[transform]).unsqueeze(0)
    warp = kornia_transform.warp_affine if transform == "affine" else kornia_transform.warp_perspective
    reference = warp(as_batch(photo).double(), m, out_size, align_corners=kornia_align_corners)
    ours = KORNIA_LEGACY and not kornia_align_corners
    theta = to_theta(m, in_size, out_size, transform, align_corners=ours)
    assert theta.dtype == torch.float64
    exact = stn.warp(as_batch(photo).double(), theta, transform, out_size)
    assert max_diff(exact, reference) < 1e-10  # the same maths: only float64 rounding differs
    assert max_diff(stn_warp(photo, theta.float(), transform, out_size), reference) < TOL


@pytest.mark.parametrize("transform", ["affine", "projective"])
def test_align_corners_true_is_kornia_normalize_homography(transform):
    # normalize_homography's default frame has pixel centres at ±1; its inverse is θ for align_corners=True.
    m = torch.tensor(PROJECTIVE if transform == "projective" else np.vstack([AFFINE, [0, 0, 1]]))
    expected = torch.linalg.inv(normalize_homography(m.unsqueeze(0), (300, 500), (120, 90)))
    expected = stn.transforms.get(transform).from_matrix(expected)
    theta = to_theta(m, (300, 500), (120, 90), transform, align_corners=True)
    torch.testing.assert_close(theta, expected, rtol=0, atol=1e-12)
    assert max_diff(theta, to_theta(m, (300, 500), (120, 90), transform)) > 1e-3


@pytest.mark.parametrize("transform", ["affine", "projective"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_theta_maps_output_pixels_to_their_source_pixels(transform, align_corners):
    # Independent of any warp: θ sends the normalised coordinates of output pixel p to those of M⁻¹ p.
    in_size, out_size = (37, 53), (29, 61)
    m = MATRICES[transform]
    full = np.vstack([m, [0, 0, 1]]) if m.shape == (2, 3) else m
    theta = to_theta(m, in_size, out_size, transform, align_corners=align_corners).double()
    h = stn.transforms.get(transform).matrix(theta)[0]

    def normalise(p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        n = torch.tensor(size[::-1], dtype=torch.float64)
        if align_corners:
            return 2 * p / (n - 1) - 1
        return stn.coords.pixel_to_normalized(p, n)

    p = torch.tensor([[0.0, 0.0], [60.0, 28.0], [12.5, 7.25], [-3.0, 40.0]], dtype=torch.float64)
    source = torch.linalg.solve(torch.tensor(full), torch.cat([p, torch.ones(4, 1, dtype=torch.float64)], 1).T).T
    source = source[:, :2] / source[:, 2:]
    mapped = torch.cat([normalise(p, out_size), torch.ones(4, 1, dtype=torch.float64)], 1) @ h.T
    torch.testing.assert_close(mapped[:, :2] / mapped[:, 2:], normalise(source, in_size), rtol=0, atol=1e-12)


def test_matrix_forms_and_types_agree():
    full = np.vstack([AFFINE, [0, 0, 1]])
    expected = to_theta(torch.tensor(AFFINE), (40, 50), (30, 20))
    forms = [
        AFFINE,
        AFFINE[None],
        full,
        3.0 * full[None],  # a homogeneous matrix is defined up to scale
        torch.tensor(full, dtype=torch.float32),
        AFFINE.astype(np.float32),
    ]
    for m in forms:
        theta = to_theta(m, (40, 50), (30, 20))
        assert theta.shape == (1, 6)
        assert theta.dtype == (torch.float64 if m.dtype in (np.float64, torch.float64) else torch.float32)
        torch.testing.assert_close(theta.double(), expected.double(), rtol=0, atol=1e-5)
    batch = np.stack([AFFINE, 2 * AFFINE, AFFINE + 1])
    stacked = to_theta(batch, 40, 32)
    assert stacked.shape == (3, 6) and stacked.dtype == torch.float64
    for i in range(3):
        # batched and single float64 kernels may round an element differently (1 ulp on an AVX-512 Xeon)
        torch.testing.assert_close(stacked[i : i + 1], to_theta(batch[i], 40, 32), rtol=1e-15, atol=1e-15)
    assert to_theta(np.eye(3, dtype=np.int64), 8, 8).dtype == torch.float32
    # The identity pixel matrix on equal sizes is the identity θ, in either convention.
    for align_corners in (False, True):
        identity = to_theta(np.eye(3), (7, 9), (7, 9), "projective", align_corners=align_corners)
        torch.testing.assert_close(identity, stn.transforms.get("projective").identity(1, dtype=torch.float64))


@pytest.mark.parametrize("transform", ["affine", "projective"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_round_trips(transform, align_corners):
    t = stn.transforms.get(transform)
    theta = t.identity(4, dtype=torch.float64) + 0.2 * torch.randn(4, t.num_params, dtype=torch.float64)
    in_size, out_size = (45, 70), (33, 28)
    m = pixel_matrix_from_theta(theta, transform, in_size, out_size, align_corners=align_corners)
    assert m.shape == ((4, 2, 3) if transform == "affine" else (4, 3, 3)) and m.dtype == torch.float64
    back = to_theta(m, in_size, out_size, transform, align_corners=align_corners)
    torch.testing.assert_close(back, theta, rtol=0, atol=1e-12)
    # The matrix forms of θ give the same M; M -> θ -> M is the identity too (M scaled to M[2, 2] = 1).
    matrix = t.matrix(theta) * 2.5 if transform == "projective" else t.affine(theta)
    same = pixel_matrix_from_theta(matrix, transform, in_size, out_size, align_corners=align_corners)
    torch.testing.assert_close(same, m, rtol=0, atol=1e-12)
    again = pixel_matrix_from_theta(back, transform, in_size, out_size, align_corners=align_corners)
    torch.testing.assert_close(again, m, rtol=0, atol=1e-9)
    if transform == "projective":
        torch.testing.assert_close(m[:, 2, 2], torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert pixel_matrix_from_theta(theta.float(), transform, in_size, out_size).dtype == torch.float32


def test_pixel_matrix_from_theta_drives_opencv(photo):
    # The other direction end to end: stn's θ, converted, makes OpenCV produce stn's warp.
    in_size, out_size = photo.shape[:2], (150, 180)
    for transform, theta in [
        ("affine", torch.tensor([[0.6, 0.2, 0.1, -0.1, 0.7, -0.2]])),
        ("projective", torch.tensor([[0.6, 0.2, 0.1, -0.1, 0.7, -0.2, 0.15, -0.1]])),
    ]:
        m = pixel_matrix_from_theta(theta.double(), transform, in_size, out_size)[0].numpy()
        reference = opencv_warp(photo, m, out_size)
        assert max_diff(stn_warp(photo, theta, transform, out_size), reference) < TOL


# --- θ as a matrix in warp / sampling_grid ------------------------------------------------------------------------


def test_affine_matrix_theta_equals_flat_and_affine_grid():
    theta = stn.transforms.get("affine").identity(3, dtype=torch.float64) + 0.3 * torch.randn(3, 6, dtype=torch.float64)
    matrix = theta.view(3, 2, 3)
    grid = stn.sampling_grid(matrix, "affine", (5, 7))
    torch.testing.assert_close(grid, stn.sampling_grid(theta, "affine", (5, 7)), rtol=0, atol=0)
    torch.testing.assert_close(grid, F.affine_grid(matrix, [3, 1, 5, 7], align_corners=False), rtol=0, atol=1e-12)
    x = torch.rand(3, 2, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(stn.warp(x, matrix, "affine"), stn.warp(x, theta, "affine"), rtol=0, atol=0)
    volume = torch.randn(2, 3, 4, dtype=torch.float64) * 0.3 + torch.eye(3, 4, dtype=torch.float64)
    torch.testing.assert_close(
        stn.sampling_grid(volume, "affine3d", (3, 4, 5)),
        F.affine_grid(volume, [2, 1, 3, 4, 5], align_corners=False),
        rtol=0,
        atol=1e-12,
    )


def test_matrix_theta_carries_gradients():
    matrix = (torch.eye(2, 3) + 0.1 * torch.randn(2, 2, 3)).requires_grad_()
    x = torch.rand(2, 1, 6, 6)
    stn.warp(x, matrix, "affine").square().sum().backward()
    flat = matrix.detach().reshape(2, 6).requires_grad_()
    stn.warp(x, flat, "affine").square().sum().backward()
    torch.testing.assert_close(matrix.grad.reshape(2, 6), flat.grad)


def test_projective_matrix_theta_is_normalised_by_h22():
    theta = stn.transforms.get("projective").identity(2, dtype=torch.float64) + 0.1 * torch.randn(2, 8).double()
    h = stn.transforms.get("projective").matrix(theta) * torch.tensor([2.5, -0.5], dtype=torch.float64).view(2, 1, 1)
    flat_grid = stn.sampling_grid(theta, "projective", (6, 5))
    torch.testing.assert_close(stn.sampling_grid(h, "projective", (6, 5)), flat_grid, rtol=0, atol=1e-12)
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(stn.warp(x, h, "projective"), stn.warp(x, theta, "projective"), rtol=0, atol=1e-12)
    # An affine H in 3x3 form gives F.affine_grid's grid.
    affine = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    affine[:, :2] += 0.2 * torch.randn(2, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(
        stn.sampling_grid(affine, "projective", (4, 6)),
        F.affine_grid(affine[:, :2], [2, 1, 4, 6], align_corners=False),
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    ("transform", "theta", "error", "message"),
    [
        ("affine", torch.zeros(2, 3, 3), ValueError, r"\(B, 6\) or \(B, 2, 3\)"),
        ("affine", torch.zeros(2, 6, 1), ValueError, r"\(B, 6\) or \(B, 2, 3\)"),
        ("affine", torch.zeros(6), ValueError, r"\(B, 6\) or \(B, 2, 3\)"),
        ("affine", torch.zeros(2, 2, 3, dtype=torch.int64), TypeError, "floating-point"),
        ("projective", torch.zeros(2, 2, 3), ValueError, r"\(B, 8\) or \(B, 3, 3\)"),
        ("projective", torch.zeros(2, 9), ValueError, r"\(B, 8\) or \(B, 3, 3\)"),
        ("projective", torch.diag(torch.tensor([1.0, 1.0, 0.0])).expand(2, 3, 3), ValueError, r"H\[2, 2\] != 0"),
        ("affine3d", torch.zeros(2, 4, 4), ValueError, r"\(B, 12\) or \(B, 3, 4\)"),
        ("attention", torch.zeros(2, 2, 3), ValueError, r"\(B, 3\)"),
    ],
)
def test_bad_theta_shapes_name_the_accepted_ones(transform, theta, error, message):
    size = (4, 5, 6) if transform == "affine3d" else (5, 6)
    with pytest.raises(error, match=message):
        stn.sampling_grid(theta, transform, size)
    with pytest.raises(error, match=message):
        stn.warp(torch.rand(2, 1, *size), theta, transform)


def test_matrix_theta_batch_must_match_the_input():
    with pytest.raises(ValueError, match="batch size 3 but the input has batch size 2"):
        stn.warp(torch.rand(2, 1, 5, 5), torch.eye(2, 3).expand(3, 2, 3), "affine")


# --- bad input to the conversions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "kwargs", "error", "message"),
    [
        (np.zeros((2, 2)), {}, ValueError, r"\(2, 3\), \(B, 2, 3\), \(3, 3\) or \(B, 3, 3\)"),
        (np.zeros((4, 3)), {}, ValueError, r"got shape \(4, 3\)"),
        (np.zeros((1, 1, 2, 3)), {}, ValueError, r"got shape \(1, 1, 2, 3\)"),
        (np.ones((2, 3), dtype=bool), {}, ValueError, "real"),
        (np.ones((2, 3), dtype=np.complex128), {}, ValueError, "real"),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], {}, TypeError, "torch.Tensor or a NumPy array"),
        (np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 5.0]]), {}, ValueError, r"M\[0\] is singular"),
        (np.stack([np.eye(3), np.zeros((3, 3))]), {"transform": "projective"}, ValueError, r"M\[1\] is singular"),
        (np.array([[1.0, 0.0, np.nan], [0.0, 1.0, 0.0]]), {}, ValueError, "non-finite"),
        (PROJECTIVE, {}, ValueError, "not an affine map; use transform='projective'"),
        (np.diag([1.0, 1.0, 0.0]), {}, ValueError, "not an affine map"),
        (np.eye(3), {"transform": "tps"}, ValueError, "'affine' or 'projective'"),
        (np.eye(3), {"transform": "nope"}, KeyError, "known transforms"),
        (np.eye(3), {"in_size": (0, 5)}, ValueError, "in_size must be 2 positive ints"),
        (np.eye(3), {"out_size": (5,)}, ValueError, "out_size must be 2 positive ints"),
        (np.eye(3), {"out_size": (5, 5, 5)}, ValueError, "out_size must be 2 positive ints"),
        (np.eye(3), {"in_size": 2.5}, TypeError, "in_size must be a sequence"),
        (np.eye(3), {"in_size": (1, 8), "align_corners": True}, ValueError, "every side >= 2"),
        # Sends the output's centre (pixel (4.5, 4.5) of 10x10) to infinity: no H[2, 2] = 1 form.
        (np.linalg.inv([[1.0, 0, 0], [0, 1.0, 0], [0.1, 0.1, -0.9]]), {"transform": "projective"}, ValueError, "inf"),
    ],
)
def test_bad_pixel_matrices_are_clear_errors(m, kwargs, error, message):
    args = {"in_size": (10, 10), "out_size": (10, 10), "transform": "affine", **kwargs}
    with pytest.raises(error, match=message):
        to_theta(m, args.pop("in_size"), args.pop("out_size"), **args)


@pytest.mark.parametrize(
    ("theta", "transform", "error", "message"),
    [
        (torch.zeros(1, 7), "affine", ValueError, r"\(B, 6\) or \(B, 2, 3\)"),
        (torch.zeros(1, 3, 3), "affine", ValueError, r"\(B, 6\) or \(B, 2, 3\)"),
        (torch.zeros(1, 6), "affine", ValueError, r"theta\[0\] is singular"),
        (torch.zeros(1, 8), "projective", ValueError, r"theta\[0\] is singular"),
        (torch.eye(2, 3, dtype=torch.int64).view(1, 6), "affine", TypeError, "floating-point"),
        (np.zeros((1, 6)), "affine", TypeError, "torch.Tensor"),
        (torch.zeros(1, 2), "translation", ValueError, "'affine' or 'projective'"),
    ],
)
def test_bad_theta_for_pixel_matrix_are_clear_errors(theta, transform, error, message):
    with pytest.raises(error, match=message):
        pixel_matrix_from_theta(theta, transform, (8, 8), (8, 8))


def test_interop_imports_nothing_heavy():
    heavy = ("cv2", "kornia", "scipy", "matplotlib")
    code = f"import sys, stn.interop; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the PyTorch STN tutorial -------------------------------------------------------------------------------------


class TutorialNet(nn.Module):
    """The tutorial's Net, written out as the tutorial has it (only the θ initialisation is left to the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_loc(self.localization(x).view(-1, 10 * 3 * 3)).view(-1, 2, 3)

    def stn(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.theta(x), x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stn(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


@pytest.fixture
def tutorial_net() -> TutorialNet:
    net = TutorialNet()
    with torch.no_grad():  # a trained-looking θ: the identity plus a clear zoom, shear and shift that vary per input
        net.fc_loc[2].weight.normal_(0, 0.05)
        net.fc_loc[2].bias.copy_(torch.tensor([0.8, 0.2, 0.1, -0.1, 0.9, -0.15]))
    return net.eval()


def test_tutorial_checkpoint_reproduces_the_tutorial_net(tutorial_net, tmp_path):
    x = torch.rand(6, 1, 28, 28)
    path = tmp_path / "tutorial.pt"
    torch.save(tutorial_net.state_dict(), path)
    for source in (tutorial_net.state_dict(), path, str(path)):
        transformer, classifier = spatial_transformer_from_tutorial(source)
        transformer.eval()
        classifier.eval()
        assert isinstance(transformer, stn.SpatialTransformer) and transformer.transform.name == "affine"
        with torch.no_grad():
            expected_theta = tutorial_net.theta(x)
            assert max_diff(expected_theta, torch.eye(2, 3)) > 0.1  # not the identity, so the test can tell
            torch.testing.assert_close(transformer.localize(x).view(-1, 2, 3), expected_theta)
            torch.testing.assert_close(transformer(x), tutorial_net.stn(x))
            torch.testing.assert_close(classifier(transformer(x)), tutorial_net(x))
    # The stn module's own entries keep their meaning: θ starts at the identity for residual / bounded heads.
    torch.testing.assert_close(transformer.head.init_theta, torch.eye(2, 3).reshape(1, 6))
    mapped = set(TUTORIAL_KEY_MAP.values())
    assert mapped <= set(transformer.state_dict()) and len(mapped) == len(TUTORIAL_KEY_MAP) == 8


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("fc_loc.2.bias"), r"missing keys \['fc_loc.2.bias'\]"),
        (lambda sd: sd.pop("fc1.weight"), r"missing keys \['fc1.weight'\]"),
        (lambda sd: sd.__setitem__("module.fc2.bias", torch.zeros(10)), r"unexpected keys \['module.fc2.bias'\]"),
        (
            lambda sd: sd.__setitem__("fc_loc.2.weight", torch.zeros(4, 32)),
            r"'fc_loc.2.weight'.*\(6, 32\), got \(4, 32\)",
        ),
        (lambda sd: sd.__setitem__("conv1.bias", [0.0] * 10), r"'conv1.bias'.*\(10,\), got list"),
    ],
)
def test_bad_tutorial_state_dicts_are_clear_errors(tutorial_net, edit, message):
    state = dict(tutorial_net.state_dict())
    edit(state)
    with pytest.raises(ValueError, match=message):
        spatial_transformer_from_tutorial(state)


def test_tutorial_state_dict_must_be_a_mapping():
    with pytest.raises(TypeError, match="mapping of tensors or a file path"):
        spatial_transformer_from_tutorial([("conv1.weight", torch.zeros(1))])
