from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stn.data.idx import IDXError, read_idx, write_idx


def _idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_reads_hand_written_uint8_images(tmp_path: Path) -> None:
    pixels = bytes(range(12))
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(_idx_bytes(0x08, (2, 2, 3), pixels))
    images = read_idx(path, ndim=3)
    assert images.dtype == torch.uint8
    assert images.shape == (2, 2, 3)
    assert images.flatten().tolist() == list(range(12))
    assert images[1, 0].tolist() == [6, 7, 8]  # row-major


def test_reads_gzipped_file_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "labels.bin"  # no .gz suffix: the gzip magic decides
    path.write_bytes(gzip.compress(_idx_bytes(0x08, (4,), bytes([7, 0, 9, 1]))))
    assert read_idx(path, ndim=1).tolist() == [7, 0, 9, 1]


def test_reads_big_endian_int32_and_float32(tmp_path: Path) -> None:
    ints = tmp_path / "ints"
    ints.write_bytes(_idx_bytes(0x0C, (3,), struct.pack(">3i", -5, 70000, 1)))
    assert read_idx(ints).tolist() == [-5, 70000, 1]
    floats = tmp_path / "floats"
    floats.write_bytes(_idx_bytes(0x0D, (2,), struct.pack(">2f", 1.5, -0.25)))
    assert read_idx(floats).tolist() == [1.5, -0.25]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x05", "bad magic"),
        (b"\x1f\x00\x08\x01" + struct.pack(">I", 1) + b"\x05", "bad magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x05", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 10), "truncated header"),
        (_idx_bytes(0x08, (2, 2, 2), bytes(7)), "truncated"),
        (_idx_bytes(0x08, (3,), bytes(4)), "trailing bytes"),
    ],
)
def test_invalid_files_raise_naming_the_file(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "broken-idx"
    path.write_bytes(data)
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_number_of_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(_idx_bytes(0x08, (3,), bytes(3)))
    with pytest.raises(IDXError, match=r"1 dimension.*expected 3"):
        read_idx(path, ndim=3)


def test_truncated_gzip_is_an_idx_error(tmp_path: Path) -> None:
    whole = gzip.compress(_idx_bytes(0x08, (100, 28, 28), bytes(range(256)) * 306 + bytes(64)))
    path = tmp_path / "images.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IDXError, match="truncated or corrupt") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["plain-idx", "zipped-idx.gz"])
def test_write_then_read_round_trip(tmp_path: Path, dtype: type, name: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    np.testing.assert_array_equal(back.numpy(), array)
    assert back.numpy().dtype == array.dtype
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


def test_write_matches_the_format_byte_for_byte(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8))
    assert path.read_bytes() == _idx_bytes(0x08, (2, 2), bytes([1, 2, 3, 4]))


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def test_real_mnist_files(shared_data: Path) -> None:
    folder = shared_data / "mnist"
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz", ndim=1)
    assert labels.shape == (60000,)
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(labels.long()).tolist() == counts
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz", ndim=3)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    # md5 of the decoded pixels with their header, as listed in shared/data/README.md
    header = _idx_bytes(0x08, (10000, 28, 28), b"")
    assert hashlib.md5(header + images.numpy().tobytes()).hexdigest() == "2646ac647ad5339dbf082846283269ea"
