"""SVHN "format 1": full house-number photos with one box per digit (Netzer et al., 2011), as multi-digit
sequences for the paper's Table 2.

Layout of a split folder (``train/``, ``extra/`` or ``test/`` from the official ``*.tar.gz``)::

    <root>/<split>/1.png, 2.png, ..., digitStruct.mat

``digitStruct.mat`` is a MATLAB v7.3 file, i.e. HDF5 (read with h5py, the ``svhn`` extra). It holds
``/digitStruct/name`` and ``/digitStruct/bbox``, two ``(N, 1)`` datasets of object references. A name points to a
``(len, 1)`` uint16 array of characters. A bbox points to a group with the fields ``height``, ``label``, ``left``,
``top`` and ``width``; each field is **either** a ``(1, 1)`` dataset holding the value itself (an image with one
digit) **or** an ``(n, 1)`` dataset of references to ``(1, 1)`` values (n digits). Label 10 means the digit 0.

Preprocessing (Goodfellow et al., 2014, which the paper follows): the union of the digit boxes is expanded by
30% in x and in y around its centre, cropped (zeros where it leaves the photo) and resized to 64x64 without
keeping the aspect ratio. The looser "128px" version crops a region twice as wide and high around the same
centre (2.6x the union) and resizes it to 128x128, so the digits have the same size in pixels but lie in more
background. Training then reads random ``54x54`` (``108x108``) crops and testing the central one
(:data:`INPUT_SIZE`, :func:`random_crops`, :func:`center_crops`). Sequences of more than :data:`MAX_DIGITS`
digits are dropped (one image of the training set). Labels are ``(5,)`` with :data:`NULL_CLASS` after the
last digit.

The preprocessed arrays are cached on disk (``images.npy`` memory-mapped, ``labels.npy``) under a folder
named after the split, the crop and a fingerprint of ``digitStruct.mat``; the folder is built under a
temporary name and renamed into place, so an interrupted run never leaves a half-written cache.

Example:
    >>> from PIL import Image
    >>> from stn.data.svhn import DigitBox, SVHNRecord, SVHNSequences, write_digit_struct
    >>> # a one-photo stand-in for the official svhn/train/ folder: 1.png showing the digits 1 and 9
    >>> boxes = (DigitBox(20, 10, 15, 25, 1), DigitBox(40, 10, 15, 25, 9))
    >>> _ = write_digit_struct("svhn/train/digitStruct.mat", [SVHNRecord("1.png", boxes)])
    >>> Image.new("RGB", (80, 45)).save("svhn/train/1.png")
    >>> train = SVHNSequences("svhn", "train", crop=64, cache_dir="svhn-cache", progress=False)
    >>> image, labels = train[0]
    >>> image.shape, labels
    (torch.Size([3, 64, 64]), tensor([ 1,  9, 10, 10, 10]))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from stn.data.datasets import EpochDraws
from stn.data.mnist import default_cache_dir
from stn.io import atomic_path

__all__ = [
    "CROP_EXPANSION",
    "FIELDS",
    "INPUT_SIZE",
    "MAX_DIGITS",
    "NULL_CLASS",
    "SPLITS",
    "DigitBox",
    "SVHNCrops",
    "SVHNRecord",
    "SVHNSequences",
    "center_crops",
    "crop_region",
    "encode_digits",
    "preprocess_image",
    "random_crops",
    "read_digit_struct",
    "write_digit_struct",
]

SPLITS = ("train", "extra", "test")
MAX_DIGITS = 5
NULL_CLASS = 10  # the "no digit here" class of each position's softmax; digits are 0-9
FIELDS = ("height", "label", "left", "top", "width")  # the bbox fields, in the official file's order
CROP_EXPANSION = {64: 1.3, 128: 2.6}  # stored crop size -> region size relative to the union of the boxes
INPUT_SIZE = {64: 54, 128: 108}  # stored crop size -> the random (train) / central (test) crop fed to the nets
_CACHE_VERSION = 1
_MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: stn. HDF5 schema 1.00 ."


@dataclass(frozen=True)
class DigitBox:
    """One digit's box in pixels of the full photo; ``label`` is the digit 0-9 (the file's 10 becomes 0)."""

    left: float
    top: float
    width: float
    height: float
    label: int


@dataclass(frozen=True)
class SVHNRecord:
    """One photo of the format-1 set: its file name and its digit boxes, left to right as in the file."""

    filename: str
    boxes: tuple[DigitBox, ...]

    @property
    def digits(self) -> tuple[int, ...]:
        return tuple(b.label for b in self.boxes)

    def union_box(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` of the smallest rectangle holding every digit box."""
        return (
            min(b.left for b in self.boxes),
            min(b.top for b in self.boxes),
            max(b.left + b.width for b in self.boxes),
            max(b.top + b.height for b in self.boxes),
        )


class SVHNSequences(Dataset):
    """Preprocessed SVHN sequences of one split, cached on disk.

    Args:
        root: folder holding the split folders (``<root>/<split>/digitStruct.mat`` and the PNGs).
        split: ``"train"``, ``"extra"`` or ``"test"``.
        crop: stored crop size, 64 (tight) or 128 (loose); see the module docstring.
        cache_dir: where the preprocessed arrays live (default ``svhn/`` in the user cache,
            :func:`stn.data.mnist.default_cache_dir`).
        progress: show tqdm bars while reading ``digitStruct.mat`` and preprocessing.

    Items are ``(image, labels)``: image float32 ``(3, crop, crop)`` in ``[0, 1]`` and labels int64 ``(5,)``
    (digits, then :data:`NULL_CLASS`). ``images`` is the whole split, uint8 ``(N, crop, crop, 3)`` (memory-mapped),
    ``labels`` int64 ``(N, 5)``; ``num_dropped`` counts the photos with more than 5 digits left out.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        crop: int = 64,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if crop not in CROP_EXPANSION:
            raise ValueError(f"crop must be one of {tuple(CROP_EXPANSION)}, got {crop!r}")
        self.split, self.crop = split, crop
        folder = Path(root).expanduser() / split
        mat = folder / "digitStruct.mat"
        if not mat.is_file():
            raise FileNotFoundError(
                f"{mat}: SVHN digitStruct.mat not found; expected the official format-1 layout "
                f"<root>/{split}/digitStruct.mat with the PNGs beside it (from {split}.tar.gz)"
            )
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "svhn"
        self.cache_path = cache / f"{split}-{crop}px-{_fingerprint(mat, crop)}"
        if not (self.cache_path / "meta.json").is_file():
            _build_cache(folder, crop, self.cache_path, progress)
        meta = json.loads((self.cache_path / "meta.json").read_text())
        self.num_dropped = int(meta["dropped"])
        self.images: np.ndarray = np.load(self.cache_path / "images.npy", mmap_mode="r")
        self.labels: Tensor = torch.from_numpy(np.load(self.cache_path / "labels.npy"))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1).float().div_(255)
        return image, self.labels[index]

    def batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Images uint8 ``(B, 3, crop, crop)`` and labels ``(B, 5)`` of ``indices`` (one read, the fast path)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        order = torch.argsort(idx)  # sorted reads are sequential on the memory map
        images = torch.empty(len(idx), self.crop, self.crop, 3, dtype=torch.uint8)
        images[order] = torch.from_numpy(np.asarray(self.images[idx[order].numpy()]))
        return images.permute(0, 3, 1, 2), self.labels[idx]


def _fingerprint(mat: Path, crop: int) -> str:
    stat = mat.stat()
    key = f"{mat.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{crop}|{_CACHE_VERSION}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _build_cache(folder: Path, crop: int, target: Path, progress: bool) -> None:
    records = read_digit_struct(folder / "digitStruct.mat", progress=progress)
    kept = [r for r in records if 1 <= len(r.boxes) <= MAX_DIGITS]
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(kept), crop, crop, 3)
        )
        labels = np.empty((len(kept), MAX_DIGITS), dtype=np.int64)
        bar = tqdm(kept, desc=f"preprocessing SVHN {folder.name} ({crop}px)", unit="img", disable=not progress)
        for i, record in enumerate(bar):
            path = folder / record.filename
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image listed in {folder / 'digitStruct.mat'} is missing")
            with Image.open(path) as image:
                images[i] = preprocess_image(image, record, crop)
            labels[i] = encode_digits(record.digits)
        images.flush()
        del images
        np.save(tmp / "labels.npy", labels)
        meta = {"split": folder.name, "crop": crop, "count": len(kept), "dropped": len(records) - len(kept)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same cache first
            if not (target / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- digitStruct.mat ------------------------------------------------------------------------------------------


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a test dependency
        raise ImportError("reading SVHN digitStruct.mat needs h5py: pip install 'stn[svhn]'") from err
    return h5py


def read_digit_struct(path: str | Path, *, progress: bool = False) -> list[SVHNRecord]:
    """Read an official SVHN format-1 ``digitStruct.mat`` (MATLAB v7.3 / HDF5).

    Both encodings of the bbox fields are read: a value stored directly (one digit) and a list of object
    references (several digits). Labels 10 become 0.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an HDF5 file, or not laid out as digitStruct.mat (the message names what is missing).
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SVHN digitStruct.mat not found")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not a MATLAB v7.3 (HDF5) file; expected the official SVHN format-1 digitStruct.mat")
    records = []
    with h5py.File(path, "r") as f:
        try:
            names = f["digitStruct/name"][()].reshape(-1)
            bboxes = f["digitStruct/bbox"][()].reshape(-1)
        except KeyError:
            raise ValueError(
                f"{path}: expected the datasets /digitStruct/name and /digitStruct/bbox of a SVHN format-1 file"
            ) from None
        if len(names) != len(bboxes):
            raise ValueError(f"{path}: /digitStruct/name has {len(names)} entries but /digitStruct/bbox {len(bboxes)}")
        bar = tqdm(range(len(names)), desc=f"reading {path.name}", unit="img", disable=not progress)
        for i in bar:
            where = f"{path}: entry {i}"
            try:
                chars = f[names[i]][()].reshape(-1)
                group = f[bboxes[i]]
                fields = {key: _read_field(f, group[key]) for key in FIELDS}
            except (KeyError, ValueError, TypeError) as err:
                raise ValueError(f"{where}: expected a name and a bbox with fields {FIELDS} ({err})") from None
            records.append(SVHNRecord("".join(map(chr, chars)), _make_boxes(fields, where)))
    return records


def _read_field(f, dataset) -> list[float]:
    """A bbox field's values: the ``(1, 1)`` value itself, or the values behind ``(n, 1)`` references."""
    data = dataset[()].reshape(-1)
    if dataset.dtype.kind == "O":
        return [float(f[ref][()].reshape(-1)[0]) for ref in data]
    return [float(v) for v in data]


def _make_boxes(fields: dict[str, list[float]], where: str) -> tuple[DigitBox, ...]:
    counts = {len(v) for v in fields.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(
            f"{where}: bbox fields have differing or zero lengths { ({k: len(v) for k, v in fields.items()}) }"
        )
    boxes = []
    for left, top, width, height, label in zip(*(fields[k] for k in ("left", "top", "width", "height", "label"))):
        if label not in range(1, 11):
            raise ValueError(f"{where}: digit label must be 1-10 (10 means 0), got {label}")
        boxes.append(DigitBox(left, top, width, height, int(label) % 10))
    return tuple(boxes)


def write_digit_struct(path: str | Path, records: Sequence[SVHNRecord]) -> Path:
    """Write ``records`` as a ``digitStruct.mat`` laid out like the official one (MATLAB v7.3 / HDF5).

    Values live under ``/#refs#`` as MATLAB writes them; a one-digit bbox stores each field as a ``(1, 1)``
    double, a several-digit one as ``(n, 1)`` references. Digit 0 is written as label 10. Used to build test
    fixtures and subsets of the real set. The file is written to a temporary name and renamed into place.
    """
    h5py = _h5py()
    counter = iter(range(1 << 62))

    def new_dataset(refs, data: np.ndarray, matlab_class: str):
        ds = refs.create_dataset(f"{next(counter):x}", data=data)
        ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
        return ds

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            refs = f.create_group("#refs#")
            group = f.create_group("digitStruct")
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            names = np.empty((len(records), 1), dtype=h5py.ref_dtype)
            bboxes = np.empty((len(records), 1), dtype=h5py.ref_dtype)
            for i, record in enumerate(records):
                chars = np.array([[ord(c)] for c in record.filename], dtype=np.uint16)
                name = new_dataset(refs, chars, "char")
                name.attrs["MATLAB_int_decode"] = np.int32(2)
                names[i, 0] = name.ref
                bbox = refs.create_group(f"{next(counter):x}")
                bbox.attrs["MATLAB_class"] = np.bytes_("struct")
                for key in FIELDS:
                    values = [float(getattr(b, key) if key != "label" else (b.label or 10)) for b in record.boxes]
                    if len(values) == 1:
                        field = bbox.create_dataset(key, data=np.array([values], dtype=np.float64))
                        field.attrs["MATLAB_class"] = np.bytes_("double")
                    else:
                        cells = np.empty((len(values), 1), dtype=h5py.ref_dtype)
                        for j, v in enumerate(values):
                            cells[j, 0] = new_dataset(refs, np.array([[v]], dtype=np.float64), "double").ref
                        bbox.create_dataset(key, data=cells).attrs["MATLAB_class"] = np.bytes_("cell")
                bboxes[i, 0] = bbox.ref
            group.create_dataset("name", data=names).attrs["MATLAB_class"] = np.bytes_("cell")
            group.create_dataset("bbox", data=bboxes).attrs["MATLAB_class"] = np.bytes_("struct")
        with open(tmp, "r+b") as fh:  # MATLAB's 128-byte text header at the start of the 512-byte user block
            fh.write(_MATLAB_HEADER.ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    return Path(path)


# --- preprocessing (pure functions) ---------------------------------------------------------------------------


def crop_region(record: SVHNRecord, expansion: float) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)``: the union of the digit boxes scaled by ``expansion`` about its centre."""
    left, top, right, bottom = record.union_box()
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half_w, half_h = (right - left) * expansion / 2, (bottom - top) * expansion / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def preprocess_image(image: Image.Image, record: SVHNRecord, crop: int) -> np.ndarray:
    """The stored crop of one photo: uint8 ``(crop, crop, 3)`` (see the module docstring)."""
    if crop not in CROP_EXPANSION:
        raise ValueError(f"crop must be one of {tuple(CROP_EXPANSION)}, got {crop!r}")
    box = tuple(round(v) for v in crop_region(record, CROP_EXPANSION[crop]))
    region = image.convert("RGB").crop(box)  # zeros outside the photo
    return np.asarray(region.resize((crop, crop), Image.BILINEAR), dtype=np.uint8)


def encode_digits(digits: Sequence[int]) -> np.ndarray:
    """``(5,)`` int64 targets: the digits, then :data:`NULL_CLASS` for the absent positions."""
    if not 1 <= len(digits) <= MAX_DIGITS:
        raise ValueError(f"a sequence must have 1 to {MAX_DIGITS} digits, got {len(digits)}")
    if any(d not in range(10) for d in digits):
        raise ValueError(f"digits must be 0-9, got {tuple(digits)}")
    out = np.full(MAX_DIGITS, NULL_CLASS, dtype=np.int64)
    out[: len(digits)] = digits
    return out


def random_crops(images: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A random ``size x size`` window of each image, ``(B, C, H, W) -> (B, C, size, size)`` (train-time).

    Example:
        >>> import torch
        >>> from stn.data.svhn import random_crops
        >>> random_crops(torch.zeros(2, 3, 64, 64), 54).shape
        torch.Size([2, 3, 54, 54])
    """
    batch, _, height, width = images.shape
    if not 0 < size <= min(height, width):
        raise ValueError(f"crop size must be in 1..{min(height, width)}, got {size}")
    oy = torch.randint(0, height - size + 1, (batch, 1), generator=generator).to(images.device)
    ox = torch.randint(0, width - size + 1, (batch, 1), generator=generator).to(images.device)
    steps = torch.arange(size, device=images.device)
    rows, cols = (oy + steps)[:, :, None], (ox + steps)[:, None, :]
    out = images[torch.arange(batch, device=images.device)[:, None, None], :, rows, cols]  # (B, S, S, C)
    return out.permute(0, 3, 1, 2)


def center_crops(images: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window, ``(B, C, H, W) -> (B, C, size, size)`` (test-time)."""
    height, width = images.shape[-2:]
    if not 0 < size <= min(height, width):
        raise ValueError(f"crop size must be in 1..{min(height, width)}, got {size}")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


class SVHNCrops(EpochDraws):
    """SVHN sequences as model inputs: float ``(3, S, S)`` crops in [0, 1] (S = :data:`INPUT_SIZE` of the stored
    crop) and labels ``(5,)``. Training crops are random (:func:`random_crops`), drawn from ``(seed, epoch,
    index)`` alone (:class:`~stn.data.datasets.EpochDraws`), so a resumed or data-parallel run sees the same
    crops; otherwise the central crop."""

    def __init__(self, sequences: SVHNSequences, *, train: bool, seed: int = 0) -> None:
        super().__init__(sequences, seed)
        self.train, self.size = train, INPUT_SIZE[sequences.crop]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, labels = self.base[index]
        if not self.train:
            return center_crops(image, self.size), labels
        return random_crops(image[None], self.size, self.generator("svhn-crop", index))[0], labels
