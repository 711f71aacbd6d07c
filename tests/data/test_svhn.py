"""Tests for stn.data.svhn: the digitStruct.mat reader/writer, the crops, the cached dataset."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from stn.data import svhn
from stn.data.svhn import DigitBox, SVHNRecord, SVHNSequences


def sample_entries(shared_data):
    folder = shared_data / "svhn" / "format1_train_sample"
    return folder, json.loads((folder / "digitStruct.json").read_text())


def write_official_layout(path, entries):
    """Write ``entries`` ({"filename", "boxes": [{left, top, width, height, label}]}) with plain h5py the way
    MATLAB v7.3 stores digitStruct: refs under /#refs#, a one-box field as a (1, 1) double, several boxes as
    (n, 1) references. Independent of stn's own writer, so the reader is checked against the format itself."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        n = len(entries)
        names = np.empty((n, 1), dtype=h5py.ref_dtype)
        bboxes = np.empty((n, 1), dtype=h5py.ref_dtype)
        count = 0

        def dataset(data):
            nonlocal count
            count += 1
            return refs.create_dataset(f"r{count}", data=data)

        for i, entry in enumerate(entries):
            names[i, 0] = dataset(np.array([[ord(c)] for c in entry["filename"]], dtype=np.uint16)).ref
            count += 1
            group = refs.create_group(f"g{count}")
            for key in ("height", "label", "left", "top", "width"):
                values = [float(b[key]) for b in entry["boxes"]]
                if len(values) == 1:
                    group.create_dataset(key, data=np.array([[values[0]]]))
                else:
                    cells = np.empty((len(values), 1), dtype=h5py.ref_dtype)
                    for j, v in enumerate(values):
                        cells[j, 0] = dataset(np.array([[v]])).ref
                    group.create_dataset(key, data=cells)
            bboxes[i, 0] = group.ref
        f.create_dataset("digitStruct/name", data=names)
        f.create_dataset("digitStruct/bbox", data=bboxes)


@pytest.fixture
def svhn_root(tmp_path, shared_data):
    """``<tmp>/train``: the 4 real photos, plus a one-digit entry (a "0") and a 6-digit one, in the real format."""
    folder, entries = sample_entries(shared_data)
    train = tmp_path / "svhn" / "train"
    train.mkdir(parents=True)
    for entry in entries:
        shutil.copy(folder / entry["filename"], train / entry["filename"])
    shutil.copy(folder / "2.png", train / "5.png")
    shutil.copy(folder / "1.png", train / "6.png")
    single = {"filename": "5.png", "boxes": [{**entries[1]["boxes"][0], "label": 10.0}]}
    six = {"filename": "6.png", "boxes": [entries[0]["boxes"][0]] * 6}
    write_official_layout(train / "digitStruct.mat", [*entries, single, six])
    return tmp_path / "svhn"


def test_reader_reads_both_bbox_encodings(svhn_root, shared_data):
    _, entries = sample_entries(shared_data)
    records = svhn.read_digit_struct(svhn_root / "train" / "digitStruct.mat")
    assert [r.filename for r in records] == ["1.png", "2.png", "3.png", "4.png", "5.png", "6.png"]
    assert [r.digits for r in records] == [(1, 9), (2, 3), (2, 5), (9, 3), (0,), (1,) * 6]
    for record, entry in zip(records, entries):
        for box, raw in zip(record.boxes, entry["boxes"]):
            assert (box.left, box.top, box.width, box.height) == (raw["left"], raw["top"], raw["width"], raw["height"])
    assert records[4].boxes == (DigitBox(77.0, 29.0, 23.0, 32.0, 0),)


def test_writer_matches_official_layout_and_round_trips(tmp_path):
    records = [
        SVHNRecord("1.png", (DigitBox(246, 77, 81, 219, 1), DigitBox(323, 81, 96, 219, 0))),
        SVHNRecord("10.png", (DigitBox(1.5, 2, 3, 4, 7),)),
    ]
    path = svhn.write_digit_struct(tmp_path / "digitStruct.mat", records)
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    assert svhn.read_digit_struct(path) == records
    with h5py.File(path, "r") as f:
        names, bboxes = f["digitStruct/name"], f["digitStruct/bbox"]
        assert names.shape == bboxes.shape == (2, 1) and names.dtype.kind == bboxes.dtype.kind == "O"
        name = f[names[1, 0]]
        assert name.dtype == np.uint16 and name.shape == (6, 1)
        multi, single = f[bboxes[0, 0]], f[bboxes[1, 0]]
        assert multi["label"].shape == (2, 1) and multi["label"].dtype.kind == "O"
        assert f[multi["label"][1, 0]][()].tolist() == [[10.0]]  # digit 0 is stored as 10
        assert single["left"].shape == (1, 1) and single["left"].dtype == np.float64
    assert not list(tmp_path.glob(".*tmp*"))


def test_reader_errors_name_the_file_and_what_was_expected(tmp_path):
    missing = tmp_path / "nope" / "digitStruct.mat"
    with pytest.raises(FileNotFoundError, match="nope"):
        svhn.read_digit_struct(missing)
    old = tmp_path / "old.mat"
    old.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(ValueError, match=r"old\.mat.*v7\.3"):
        svhn.read_digit_struct(old)
    other = tmp_path / "other.mat"
    with h5py.File(other, "w") as f:
        f["something"] = 1
    with pytest.raises(ValueError, match=r"/digitStruct/name"):
        svhn.read_digit_struct(other)
    bad_label = tmp_path / "label.mat"
    box = dict(left=1, top=1, width=1, height=1)
    write_official_layout(bad_label, [{"filename": "1.png", "boxes": [{**box, "label": 11}]}])
    with pytest.raises(ValueError, match=r"entry 0.*1-10"):
        svhn.read_digit_struct(bad_label)
    no_field = tmp_path / "field.mat"
    write_official_layout(no_field, [{"filename": "1.png", "boxes": [{**box, "label": 2}]}])
    with h5py.File(no_field, "r+") as f:
        del f[f["digitStruct/bbox"][0, 0]]["top"]
    with pytest.raises(ValueError, match=r"entry 0.*'top'"):
        svhn.read_digit_struct(no_field)


def test_crop_region_expands_the_union_about_its_centre():
    record = SVHNRecord("x.png", (DigitBox(10, 20, 10, 40, 1), DigitBox(30, 10, 10, 40, 2)))
    assert record.union_box() == (10, 10, 40, 60)
    assert svhn.crop_region(record, 1.3) == pytest.approx((5.5, 2.5, 44.5, 67.5))
    assert svhn.crop_region(record, 2.6) == pytest.approx((-14.0, -30.0, 64.0, 100.0))


def test_preprocess_image_crops_resizes_and_pads_with_zeros():
    pixels = np.zeros((100, 100, 3), dtype=np.uint8)
    pixels[40:60, 30:70] = 200  # the "digits"
    image = Image.fromarray(pixels)
    record = SVHNRecord("x.png", (DigitBox(30, 40, 40, 20, 5),))
    out = svhn.preprocess_image(image, record, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # the union spans 1/1.3 of the crop: centre bright, corners dark
    assert out[32, 32, 0] == 200 and out[0, 0, 0] == 0 and out[10:54, 10:54].min() == 200
    corner = SVHNRecord("x.png", (DigitBox(0, 0, 10, 10, 1),))  # the region leaves the photo: zeros there
    padded = svhn.preprocess_image(Image.new("RGB", (20, 20), (255, 255, 255)), corner, 128)
    assert padded[0, 0].tolist() == [0, 0, 0] and padded[127, 127].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="crop"):
        svhn.preprocess_image(image, record, 32)


def test_encode_digits_pads_with_the_null_class():
    assert svhn.encode_digits([1, 0, 9]).tolist() == [1, 0, 9, 10, 10]
    with pytest.raises(ValueError, match="1 to 5"):
        svhn.encode_digits([1] * 6)
    with pytest.raises(ValueError, match="0-9"):
        svhn.encode_digits([10])


@pytest.mark.parametrize("crop", [64, 128])
def test_dataset_preprocesses_caches_and_drops_long_sequences(svhn_root, tmp_path, crop, monkeypatch):
    cache = tmp_path / "cache"
    data = SVHNSequences(svhn_root, "train", crop=crop, cache_dir=cache, progress=False)
    assert len(data) == 5 and data.num_dropped == 1
    assert data.images.shape == (5, crop, crop, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist()[0] == [1, 9, 10, 10, 10] and data.labels.tolist()[4] == [0, 10, 10, 10, 10]
    image, labels = data[1]
    assert image.shape == (3, crop, crop) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert labels.tolist() == [2, 3, 10, 10, 10]
    batch, batch_labels = data.batch([3, 0, 3])
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, crop, crop)
    torch.testing.assert_close(batch[1].float() / 255, data[0][0])
    assert batch_labels[:, 0].tolist() == [9, 1, 9]
    assert [p.name for p in cache.iterdir()] == [data.cache_path.name]  # no temp folder left behind

    def fail(*args):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(svhn, "_build_cache", fail)
    again = SVHNSequences(svhn_root, "train", crop=crop, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.images, data.images)


def test_loose_crop_has_the_tight_crop_at_its_centre(svhn_root, tmp_path):
    tight = SVHNSequences(svhn_root, "train", crop=64, cache_dir=tmp_path / "c", progress=False)
    loose = SVHNSequences(svhn_root, "train", crop=128, cache_dir=tmp_path / "c", progress=False)
    for i in range(len(tight)):  # same pixel scale, twice the field of view
        centre = loose.images[i, 32:96, 32:96].astype(float)
        assert np.abs(centre - tight.images[i]).mean() < 5, i  # grey levels 0-255; rounding shifts a pixel
        assert np.abs(centre - np.roll(tight.images[i], 8, axis=1)).mean() > 10, i  # an 8-pixel shift is caught


def test_dataset_errors(svhn_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test.*digitStruct\.mat"):
        SVHNSequences(svhn_root, "test", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="split"):
        SVHNSequences(svhn_root, "valid", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="crop"):
        SVHNSequences(svhn_root, "train", crop=54, cache_dir=tmp_path / "c")
    (svhn_root / "train" / "3.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"3\.png.*missing"):
        SVHNSequences(svhn_root, "train", cache_dir=tmp_path / "c", progress=False)
    assert not any((tmp_path / "c").iterdir())  # nothing half-written


def test_random_and_center_crops_take_windows_of_each_image():
    images = torch.arange(2 * 3 * 10 * 12).view(2, 3, 10, 12)
    out = svhn.random_crops(images, 6, torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, 6, 6)
    for b in range(2):
        oy, ox = divmod(int(out[b, 0, 0, 0] - images[b, 0, 0, 0]), 12)
        torch.testing.assert_close(out[b], images[b, :, oy : oy + 6, ox : ox + 6])
    again = svhn.random_crops(images, 6, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, out)
    torch.testing.assert_close(svhn.center_crops(images, 6), images[..., 2:8, 3:9])
    with pytest.raises(ValueError, match="crop size"):
        svhn.random_crops(images, 11)
    with pytest.raises(ValueError, match="crop size"):
        svhn.center_crops(images, 0)
