"""Tests for stn.data.cub: the official metadata files, the boxes, the image loading."""

import numpy as np
import pytest
import torch
from PIL import Image

from stn.data import cub
from stn.data.cub import CUB200


def write_tree(root, *, image_mode="RGB"):
    """A miniature CUB_200_2011 tree: 3 images of classes 5 and 17 (non-contiguous ids), 2 train + 1 test."""
    rows = [  # id, class id, folder, size (W, H), is_train, box
        (3, 5, "005.Crested_Auklet", (40, 20), 1, (4, 2, 20, 10)),
        (10, 17, "017.Cardinal", (30, 30), 0, (0, 0, 30, 30)),
        (11, 17, "017.Cardinal", (20, 40), 1, (5, 10, 10, 20)),
    ]
    for image_id, _, folder, size, _, _ in rows:
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        pixels[:, : size[0] // 2] = (255, 0, 0)  # left half red, right half blue
        pixels[:, size[0] // 2 :] = (0, 0, 255)
        Image.fromarray(pixels).convert(image_mode).save(root / "images" / folder / f"bird_{image_id}.jpg", quality=95)
    (root / "images.txt").write_text("".join(f"{r[0]} {r[2]}/bird_{r[0]}.jpg\n" for r in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{r[0]} {r[1]}\n" for r in rows))
    (root / "train_test_split.txt").write_text("".join(f"{r[0]} {r[4]}\n" for r in rows))
    (root / "bounding_boxes.txt").write_text(
        "".join(f"{r[0]} " + " ".join(f"{v:.1f}" for v in r[5]) + "\n" for r in rows)
    )
    (root / "classes.txt").write_text("5 005.Crested_Auklet\n17 017.Cardinal\n")
    return root


def test_real_subset_metadata(shared_data):
    meta = cub.read_metadata(shared_data / "cub_200_2011_subset")
    assert len(meta.paths) == 180 and len(meta.class_names) == 10
    assert meta.class_names[0] == "001.Black_footed_Albatross"
    assert meta.is_train.sum() == 120 and np.bincount(meta.labels).tolist() == [18] * 10
    assert meta.paths[0] == "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    np.testing.assert_array_equal(meta.boxes[0], [60.0, 27.0, 325.0, 304.0])


def test_real_subset_dataset_and_boxes(shared_data):
    test = CUB200(shared_data / "cub_200_2011_subset", "test", image_size=32)
    assert len(test) == 60 and test.num_classes == 10
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() < image.max() <= 1
    assert label.dtype == torch.int64 and label.item() == test.meta.labels[0]
    boxes = test.boxes
    assert boxes.shape == (60, 4)
    assert (boxes[:, :2] >= -1).all() and (boxes[:, 2:] <= 1).all() and (boxes[:, :2] < boxes[:, 2:]).all()


def test_miniature_tree_labels_split_and_boxes(tmp_path):
    write_tree(tmp_path / "CUB_200_2011")
    assert cub.find_root(tmp_path) == tmp_path / "CUB_200_2011"  # the archive's parent folder works too
    train = CUB200(tmp_path, "train", image_size=8)
    assert train.meta.image_ids.tolist() == [3, 11] and train.targets.tolist() == [0, 1]
    assert train.class_names == ("005.Crested_Auklet", "017.Cardinal")
    torch.testing.assert_close(train.boxes, torch.tensor([[-0.8, -0.8, 0.2, 0.2], [-0.5, -0.5, 0.5, 0.5]]))
    test = CUB200(tmp_path, "test", image_size=8)
    assert len(test) == 1 and test.targets.tolist() == [1]
    torch.testing.assert_close(test.boxes, torch.tensor([[-1.0, -1.0, 1.0, 1.0]]))
    assert len(CUB200(tmp_path, "all", image_size=8)) == 3
    assert CUB200(tmp_path, "all", limit=2).meta.image_ids.tolist() == [3, 11]  # evenly spaced: first and last


def test_load_image_resizes_to_a_square_and_converts_grey(tmp_path):
    write_tree(tmp_path)
    image = cub.load_image(tmp_path / "images" / "005.Crested_Auklet" / "bird_3.jpg", 16)
    assert image.shape == (3, 16, 16)
    assert image[0, :, :6].mean() > 0.9 and image[2, :, :6].mean() < 0.1  # left stays red
    assert image[2, :, 10:].mean() > 0.9 and image[0, :, 10:].mean() < 0.1  # right stays blue
    grey = tmp_path / "grey"
    write_tree(grey, image_mode="L")
    assert CUB200(grey, "all", image_size=8)[0][0].shape == (3, 8, 8)


def test_box_to_normalized():
    torch.testing.assert_close(
        cub.box_to_normalized(np.array([25.0, 0.0, 50.0, 10.0]), (100, 20)), torch.tensor([-0.5, -1.0, 0.5, 0.0])
    )


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bounding_boxes.txt", "3 4 2 20\n", r"bounding_boxes\.txt:1: expected '<image_id> <x> <y>"),
        ("bounding_boxes.txt", "3 4 2 20 -1\n10 0 0 1 1\n11 0 0 1 1\n", r"bounding_boxes\.txt:1"),
        ("train_test_split.txt", "3 1\n10 2\n11 0\n", r"train_test_split\.txt:2: expected"),
        ("images.txt", "3 a.jpg\n3 b.jpg\n", r"images\.txt:2: id 3 appears twice"),
        ("image_class_labels.txt", "3 5\n10 17\n", r"image_class_labels\.txt: image ids differ.*missing \[11\]"),
        ("image_class_labels.txt", "3 5\n10 17\n11 99\n", r"class ids \[99\] are not in classes\.txt"),
    ],
)
def test_malformed_metadata_names_file_and_line(tmp_path, name, text, match):
    write_tree(tmp_path)
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=match):
        cub.read_metadata(tmp_path)


def test_missing_files_and_images(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images\.txt"):
        cub.read_metadata(tmp_path)
    write_tree(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt: missing"):
        cub.read_metadata(tmp_path)
    write_tree(tmp_path)
    (tmp_path / "images" / "017.Cardinal" / "bird_10.jpg").unlink()
    data = CUB200(tmp_path, "test", image_size=8)
    with pytest.raises(FileNotFoundError, match=r"bird_10\.jpg: image listed in images\.txt is missing"):
        data[0]
    with pytest.raises(FileNotFoundError, match=r"bird_10\.jpg"):
        data.boxes  # noqa: B018
    (tmp_path / "images" / "017.Cardinal" / "bird_10.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"bird_10\.jpg: not a readable image"):
        data[0]
    with pytest.raises(ValueError, match="split"):
        CUB200(tmp_path, "val")
