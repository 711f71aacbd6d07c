"""CUB-200-2011 birds (Wah et al., 2011) in the official layout, for the paper's Table 3.

The official archive extracts to ``CUB_200_2011/``; ``root`` may be that folder or its parent::

    images/<class folder>/<name>.jpg
    images.txt              <image_id> <relative path under images/>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <1 = train, 0 = test>
    bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (pixels of the original photo)
    classes.txt             <class_id> <class name>

Class ids become labels ``0..K-1`` in the order of ``classes.txt`` (so a subset of classes still gets contiguous
labels). Images are resized to a square ``image_size`` (448 in the paper) without keeping the aspect ratio, so a
bounding box maps to the resized image by scaling x and y; :attr:`CUB200.boxes` gives each box in the normalised
``[-1, 1]`` coordinates of :mod:`stn.coords`, ready to compare with where a transformer attends.

Example:
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from stn.data.cub import CUB200
    >>> # a one-photo stand-in for the official CUB_200_2011/ folder: a 100x50 bird in the box x 10-60, y 5-30
    >>> root = Path("CUB_200_2011")
    >>> (root / "images" / "001.Albatross").mkdir(parents=True)
    >>> Image.new("RGB", (100, 50)).save(root / "images" / "001.Albatross" / "1.jpg")
    >>> tables = {"images.txt": "1 001.Albatross/1.jpg", "image_class_labels.txt": "1 1", "classes.txt": "1 Albatross",
    ...           "train_test_split.txt": "1 0", "bounding_boxes.txt": "1 10 5 50 25"}
    >>> for name, line in tables.items():
    ...     _ = (root / name).write_text(line)
    >>> test = CUB200(root, "test", image_size=64)
    >>> image, label = test[0]
    >>> image.shape, label, test.boxes[0]  # the box in the normalised coordinates of stn.coords
    (torch.Size([3, 64, 64]), tensor(0), tensor([-0.8000, -0.8000,  0.2000,  0.2000]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from stn.data.datasets import EpochDraws

__all__ = [
    "CUB200",
    "METADATA_FILES",
    "SPLITS",
    "CUBFlips",
    "CUBMetadata",
    "box_to_normalized",
    "find_root",
    "load_image",
    "read_metadata",
]

METADATA_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class CUBMetadata:
    """Every image of the set with its official id, relative path, label (0-based), split flag and box.

    ``boxes`` is float64 ``(N, 4)``: ``(x, y, width, height)`` in pixels of the original photo.
    """

    root: Path
    image_ids: np.ndarray  # (N,) int64, official ids
    paths: tuple[str, ...]
    labels: np.ndarray  # (N,) int64 in 0..K-1
    is_train: np.ndarray  # (N,) bool
    boxes: np.ndarray  # (N, 4) float64
    class_names: tuple[str, ...]

    def select(self, mask: np.ndarray) -> CUBMetadata:
        """The images where ``mask`` is true (the classes stay the same)."""
        idx = np.flatnonzero(mask)
        return CUBMetadata(
            self.root,
            self.image_ids[idx],
            tuple(self.paths[i] for i in idx),
            self.labels[idx],
            self.is_train[idx],
            self.boxes[idx],
            self.class_names,
        )


def find_root(root: str | Path) -> Path:
    """The folder holding ``images.txt``: ``root`` itself or ``root/CUB_200_2011``.

    Raises:
        FileNotFoundError: neither holds it (the message lists the expected files).
    """
    root = Path(root).expanduser()
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    raise FileNotFoundError(
        f"{root}: no CUB-200-2011 dataset here; expected the official layout (images/ and "
        f"{', '.join(METADATA_FILES)}) in this folder or in {root / 'CUB_200_2011'}"
    )


def _read_table(path: Path, columns: int, parse: Callable[[list[str]], object], expected: str) -> dict[int, object]:
    """``{id: parse(rest of line)}`` of a whitespace-separated metadata file with ``columns`` fields per line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the official CUB-200-2011 layout has {', '.join(METADATA_FILES)}")
    table: dict[int, object] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        try:
            if len(fields) != columns:
                raise ValueError
            key, value = int(fields[0]), parse(fields[1:])
        except ValueError:
            raise ValueError(f"{path}:{number}: expected '{expected}', got {line!r}") from None
        if key in table:
            raise ValueError(f"{path}:{number}: id {key} appears twice")
        table[key] = value
    return table


def _flag(fields: list[str]) -> bool:
    if fields[0] not in ("0", "1"):
        raise ValueError
    return fields[0] == "1"


def _box(fields: list[str]) -> tuple[float, ...]:
    box = tuple(float(v) for v in fields[0].split())
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        raise ValueError
    return box


def read_metadata(root: str | Path) -> CUBMetadata:
    """Parse the five metadata files and check they agree.

    Raises:
        FileNotFoundError: a file is missing (named in the message).
        ValueError: a malformed line (file and line number) or ids that differ between files.
    """
    root = find_root(root)
    paths = _read_table(root / "images.txt", 2, lambda f: f[0], "<image_id> <path>")
    labels = _read_table(root / "image_class_labels.txt", 2, lambda f: int(f[0]), "<image_id> <class_id>")
    split = _read_table(root / "train_test_split.txt", 2, _flag, "<image_id> <is_training_image 0|1>")
    boxes = _read_table(root / "bounding_boxes.txt", 2, _box, "<image_id> <x> <y> <width> <height>")
    classes = _read_table(root / "classes.txt", 2, lambda f: f[0], "<class_id> <class_name>")
    ids = sorted(paths)
    for name, table in (
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ):
        missing, extra = set(ids) - set(table), set(table) - set(ids)
        if missing or extra:
            raise ValueError(
                f"{root / name}: image ids differ from images.txt (missing {sorted(missing)[:5]}, "
                f"unknown {sorted(extra)[:5]})"
            )
    class_ids = sorted(classes)
    index = {cid: i for i, cid in enumerate(class_ids)}
    unknown = sorted({labels[i] for i in ids} - set(index))
    if unknown:
        raise ValueError(f"{root / 'image_class_labels.txt'}: class ids {unknown[:5]} are not in classes.txt")
    return CUBMetadata(
        root=root,
        image_ids=np.array(ids, dtype=np.int64),
        paths=tuple(paths[i] for i in ids),
        labels=np.array([index[labels[i]] for i in ids], dtype=np.int64),
        is_train=np.array([split[i] for i in ids], dtype=bool),
        boxes=np.array([boxes[i] for i in ids], dtype=np.float64).reshape(-1, 4),
        class_names=tuple(classes[c] for c in class_ids),
    )


class CUB200(Dataset):
    """One split of CUB-200-2011 as ``(image float32 (3, S, S) in [0, 1], label int64)`` items.

    Args:
        root: the ``CUB_200_2011`` folder or its parent.
        split: ``"train"``, ``"test"`` or ``"all"`` (the official split).
        image_size: side S of the square the photos are resized to (448 in the paper).
        limit: keep only ``limit`` evenly spaced images of the split (quick runs; the files are sorted by class).

    Attributes:
        meta: the split's :class:`CUBMetadata`; ``class_names``; ``targets`` int64 ``(N,)``; ``boxes`` float32
            ``(N, 4)`` as ``(x0, y0, x1, y1)`` in normalised coordinates of the image (read on first use).
    """

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int = 448, limit: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        meta = read_metadata(root)
        if split != "all":
            meta = meta.select(meta.is_train == (split == "train"))
        if limit is not None and limit < len(meta.paths):  # evenly spaced, so that every class is represented
            keep = np.zeros(len(meta.paths), dtype=bool)
            keep[np.linspace(0, len(meta.paths) - 1, max(limit, 0)).round().astype(int)] = True
            meta = meta.select(keep)
        self.meta, self.split, self.image_size = meta, split, image_size
        self.class_names = meta.class_names
        self.targets = torch.from_numpy(meta.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.meta.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = load_image(self.meta.root / "images" / self.meta.paths[index], self.image_size)
        return image, self.targets[index]

    @cached_property
    def boxes(self) -> Tensor:
        """``(N, 4)`` float32 boxes ``(x0, y0, x1, y1)`` in normalised coordinates (reads each image's header)."""
        rows = []
        for rel, box in zip(self.meta.paths, self.meta.boxes):
            path = self.meta.root / "images" / rel
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image listed in images.txt is missing")
            with Image.open(path) as image:
                rows.append(box_to_normalized(box, image.size))
        return torch.stack(rows) if rows else torch.zeros(0, 4)


def load_image(path: str | Path, size: int) -> Tensor:
    """A photo resized to ``size x size``: float32 ``(3, size, size)`` in ``[0, 1]`` (grey photos become RGB).

    Raises:
        FileNotFoundError: the image is missing.
        ValueError: the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image listed in images.txt is missing")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when that is still >= size
            pixels = image.convert("RGB").resize((size, size), Image.BILINEAR)
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    array = np.asarray(pixels, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def box_to_normalized(box: np.ndarray | Tensor, image_size: tuple[int, int]) -> Tensor:
    """``(x, y, w, h)`` in pixels of a ``(W, H)`` photo -> ``(x0, y0, x1, y1)`` in normalised [-1, 1] coordinates.

    Pixel edges map to ``2 * p / W - 1`` (the ``align_corners=False`` convention), so the whole photo is
    ``(-1, -1, 1, 1)`` whatever the resize.

    Example:
        >>> import torch
        >>> from stn.data.cub import box_to_normalized
        >>> box_to_normalized(torch.tensor([0.0, 0.0, 50.0, 100.0]), (100, 100))
        tensor([-1.,  -1.,  0.,  1.])
    """
    x, y, w, h = (float(v) for v in box)
    width, height = image_size
    return torch.tensor([2 * x / width - 1, 2 * y / height - 1, 2 * (x + w) / width - 1, 2 * (y + h) / height - 1])


class CUBFlips(EpochDraws):
    """CUB training photos, each flipped horizontally with probability 1/2 drawn from ``(seed, epoch, index)``
    alone (:class:`~stn.data.datasets.EpochDraws`), so that a resumed or data-parallel run sees the same flips."""

    def __init__(self, photos: CUB200, seed: int = 0) -> None:
        super().__init__(photos, seed)
        self.num_classes = photos.num_classes

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.base[index]
        flip = bool(torch.rand((), generator=self.generator("cub-flip", index)) < 0.5)
        return (image.flip(-1) if flip else image), label
