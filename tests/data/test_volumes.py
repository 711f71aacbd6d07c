"""The 3-D experiment's data: extruded digits, random poses, posed volumes made batch by batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import stn
from stn.data import load_mnist
from stn.data.volumes import PosedVolumes, extrude, pose_volumes, posed_volumes, random_poses, rotation_matrix


def test_extrude_puts_the_digit_in_a_centred_slab() -> None:
    digits = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    volume = extrude(digits, size=60, depth=8)
    assert volume.shape == (2, 1, 60, 60, 60)
    canvas = torch.zeros(2, 60, 60)
    canvas[:, 16:44, 16:44] = digits.float() / 255
    torch.testing.assert_close(volume[:, 0, 26:34], canvas.unsqueeze(1).expand(2, 8, 60, 60))
    assert volume[:, :, :26].abs().sum() == 0 and volume[:, :, 34:].abs().sum() == 0
    with pytest.raises(ValueError, match="extrude"):
        extrude(digits, size=20)


def test_rotation_matrices_are_rotations_composed_z_y_x() -> None:
    angles = torch.tensor([[10.0, -20.0, 30.0], [0.0, 0.0, 90.0]], dtype=torch.float64)
    r = rotation_matrix(angles)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(2, dtype=torch.float64))
    x, y = torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64)
    torch.testing.assert_close(r[1] @ x, y)  # 90° about z takes x to y
    rx, ry, rz = rotation_matrix(torch.tensor([[10.0, 0, 0], [0, -20.0, 0], [0, 0, 30.0]], dtype=torch.float64))
    torch.testing.assert_close(r[0], rz @ ry @ rx)


def test_random_poses_respect_their_ranges_and_the_seed() -> None:
    params = random_poses(500, torch.Generator().manual_seed(1), max_angle=30.0, max_translation=0.1)
    assert params["angle"].abs().max() <= 30 and params["angle"].abs().max() > 25
    assert params["translation"].abs().max() <= 0.1
    theta = params["theta"].view(-1, 3, 4)
    torch.testing.assert_close(theta[:, :, :3], rotation_matrix(params["angle"].double()).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(theta[:, :, 3], params["translation"])
    again = random_poses(500, torch.Generator().manual_seed(1), max_angle=30.0, max_translation=0.1)
    torch.testing.assert_close(again["theta"], params["theta"])
    with pytest.raises(ValueError, match="max_angle"):
        random_poses(2, torch.Generator(), max_angle=-1.0)


def test_posed_volumes_are_the_extruded_digits_warped_by_the_truth() -> None:
    digits = torch.rand(3, 1, 7, 7).repeat_interleave(4, 2).repeat_interleave(4, 3)[:, 0]  # smooth 4x4 blocks
    volumes, params = posed_volumes(digits, torch.Generator().manual_seed(0), max_angle=40.0)
    torch.testing.assert_close(volumes, stn.warp(extrude(digits), params["theta"], "affine3d"))
    # undoing the pose with the inverse transform gives back the upright slab (up to interpolation blur)
    back = stn.warp(volumes, stn.transforms.get("affine3d").inverse(params["theta"]), "affine3d")
    upright = extrude(digits)
    error = (back - upright)[:, :, 20:40, 15:45, 15:45].abs().mean()
    assert error < 0.2 * upright[:, :, 20:40, 15:45, 15:45].mean()
    still, _ = posed_volumes(digits, torch.Generator(), max_angle=0.0, max_translation=0.0)
    torch.testing.assert_close(still, upright, atol=1e-5, rtol=0)


def test_posed_volume_sets_draw_fresh_training_poses_and_fixed_test_poses(tiny_mnist: Path) -> None:
    train = PosedVolumes(load_mnist(tiny_mnist, "train"), seed=3, num_samples=10)
    test = PosedVolumes(load_mnist(tiny_mnist, "test"), seed=3, num_samples=10)
    assert len(train) == 10
    assert not torch.equal(train.poses(0), train.poses(1))
    torch.testing.assert_close(
        train.poses(1), PosedVolumes(load_mnist(tiny_mnist, "train"), seed=3, num_samples=10).poses(1)
    )
    torch.testing.assert_close(test.poses(0), test.poses(5))
    volumes, labels = test.epoch_tensors(2)
    assert volumes.shape == (10, 1, 60, 60, 60) and len(volumes) == 10 and torch.equal(labels, test.labels)
    # each batch is posed by its own digits' θ, whatever the batch
    expected = pose_volumes(test.images, test.poses(0))
    torch.testing.assert_close(volumes[torch.tensor([7, 2])], expected[[7, 2]])
    torch.testing.assert_close(volumes[3:6], expected[3:6])


def test_the_volume_model_is_built_for_these_volumes_and_data_imports_no_model_code() -> None:
    import inspect
    import re

    from stn.data.volumes import SLAB_DEPTH, VOLUME_SHAPE
    from stn.models.appendix import volume_model

    defaults = {k: p.default for k, p in inspect.signature(volume_model).parameters.items()}
    assert tuple(defaults["in_shape"]) == VOLUME_SHAPE
    assert defaults["projection_scale"] == VOLUME_SHAPE[1] / SLAB_DEPTH
    source = (Path(__file__).resolve().parents[2] / "src" / "stn" / "data").rglob("*.py")
    imports = re.compile(r"^\s*(from|import) stn\.models", re.MULTILINE)
    assert not [p.name for p in source if imports.search(p.read_text())]  # data sits above models


def test_posed_volumes_hold_the_last_training_digits_out_as_a_fixed_validation_split(tiny_mnist: Path) -> None:
    from stn.data.specs import build, volume_spec

    spec = volume_spec(seed=3, root=str(tiny_mnist), validation=24)
    train, val, test = (build(spec, split) for split in ("train", "val", "test"))
    digits = load_mnist(tiny_mnist, "train")
    assert len(train) == 72 and len(val) == 24 and val.split == "val"
    assert torch.equal(val.images, digits.images[-24:]) and torch.equal(train.images, digits.images[:-24])
    torch.testing.assert_close(val.poses(0), val.poses(4))  # the same poses every epoch...
    other_seed = build(volume_spec(seed=4, root=str(tiny_mnist), validation=24), "val")
    torch.testing.assert_close(val.poses(0), other_seed.poses(0))  # ...and for every seed
    assert not torch.equal(val.poses(0), test.poses(0)[:24])
    first = build(volume_spec(seed=3, root=str(tiny_mnist), validation=24, num_val=5), "val")
    assert torch.equal(first.images, val.images[:5]) and torch.equal(first.poses(0), first.poses(3))
    with pytest.raises(ValueError, match="holds no validation digits out"):
        build({**spec, "validation": None}, "val")
    with pytest.raises(ValueError, match="needs validation"):
        PosedVolumes(digits, split="val")
    with pytest.raises(ValueError, match="test split takes none"):
        PosedVolumes(load_mnist(tiny_mnist, "test"), split="test", validation=5)
    with pytest.raises(ValueError, match="holds the 'test' split"):
        PosedVolumes(load_mnist(tiny_mnist, "test"), split="val", validation=5)
