"""Reading and writing the IDX format of the MNIST files (gzipped or not), with full validation.

An IDX file is a 4-byte magic number ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the row-major data. A file whose magic, type, dimensions or length do not add up raises
:class:`IDXError` naming the file — never silent garbage.

Example:
    >>> import torch
    >>> from stn.data import read_idx, write_idx
    >>> path = write_idx("images-idx3-ubyte.gz", torch.zeros(5, 28, 28, dtype=torch.uint8))  # gzipped: .gz
    >>> images = read_idx(path, ndim=3)
    >>> images.shape, images.dtype
    (torch.Size([5, 28, 28]), torch.uint8)
    >>> read_idx(path, ndim=1)
    Traceback (most recent call last):
    ...
    stn.data.idx.IDXError: images-idx3-ubyte.gz: has 3 dimension(s), expected 1
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stn.io import atomic_path

__all__ = ["IDXError", "read_idx", "write_idx"]

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# numpy dtype (native byte order) -> IDX type code, for writing.
_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}


class IDXError(ValueError):
    """A file is not a valid IDX file (bad magic, unknown type, wrong length, corrupt gzip)."""


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.open(f) as g:
                    return g.read()
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise IDXError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt") from e


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> Tensor:
    """Read an IDX file (plain or gzip, detected from its content) into a tensor.

    Args:
        path: the file.
        ndim: if given, the number of dimensions the file must have (3 for images, 1 for labels).

    Returns:
        A tensor of the file's shape, e.g. ``(N, 28, 28)`` uint8 for MNIST images or ``(N,)`` for labels
        (uint8 files give uint8 tensors; other IDX types their torch equivalent).

    Raises:
        FileNotFoundError: the file does not exist.
        IDXError: bad magic number, unknown type code, unexpected ``ndim``, or a length that does not match
            the header (truncated or with trailing bytes).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes, too short for an IDX header (4-byte magic number)")
    if data[0:2] != b"\x00\x00":
        raise IDXError(
            f"{path}: bad magic number 0x{data[:4].hex()} (expected 0x0000TTNN: type code, ndim); not an IDX file"
        )
    code, dims_count = data[2], data[3]
    if code not in _DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _DTYPES)
        raise IDXError(f"{path}: unknown IDX type code 0x{code:02x} (known: {known})")
    if ndim is not None and dims_count != ndim:
        raise IDXError(f"{path}: has {dims_count} dimension(s), expected {ndim}")
    header = 4 + 4 * dims_count
    if len(data) < header:
        raise IDXError(f"{path}: truncated header ({len(data)} bytes, the header needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims_count, offset=4))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IDXError(
            f"{path}: {what}: header says shape {shape} of {dtype.name} = {expected} bytes, file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
    return torch.from_numpy(array)


def write_idx(path: str | os.PathLike, array: Tensor | np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, atomically (temp file in the same folder, then ``os.replace``).

    Args:
        path: the destination; ``compress`` defaults to ``path`` ending in ``.gz``.
        array: any shape; dtype uint8, int8, int16, int32, float32 or float64.

    Returns:
        The path written.
    """
    path = Path(path)
    array = np.ascontiguousarray(array.cpu().numpy() if isinstance(array, Tensor) else array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"cannot write dtype {array.dtype} as IDX; use uint8, int8, int16, int32, float32 or float64")
    if array.ndim > 255:
        raise ValueError(f"IDX files hold at most 255 dimensions, got {array.ndim}")
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + array.astype(_DTYPES[code]).tobytes()
    )
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
