"""Data specs: a JSON-able description of a run's data, ``{"kind": ..., options}``, from which :func:`build`
rebuilds its training, validation or test set. The training engine records the spec in every checkpoint, so that
``stn eval`` and ``stn visualize`` can score or show any run's model on its test data again. Training sets are seeded
by the spec's ``seed``, validation and test sets by :data:`TEST_SEED` (the same digits for every seed).

A distorted-MNIST or posed-volumes spec with ``"validation": n`` holds the last ``n`` training digits out of training
(:data:`stn.data.VALIDATION_SIZE` for the reproductions): ``build(spec, "val")`` serves them.

* ``"distorted-mnist"`` (Table 1, MNIST addition): :class:`stn.data.DistortedMNIST` of ``variant``.
* ``"svhn"`` (Table 2): :class:`stn.data.svhn.SVHNCrops` (random crops for training, central ones for testing).
* ``"cub"`` (Table 3): CUB-200-2011 photos at ``image_size``, training ones flipped
  (:class:`stn.data.cub.CUBFlips`).
* ``"posed-volumes"`` (the 3-D experiment): MNIST digits extruded into volumes in random 3-D poses
  (:class:`stn.data.volumes.PosedVolumes`).

Folders are kept absolute (but MNIST's of distorted MNIST), so that ``stn eval`` finds the data from any folder;
the keys of :data:`LOCATION_KEYS` say where the data is, not what it is (:func:`spec_differences` ignores them).
Other data add their kind to :data:`SOURCES`. A run on data only its caller knows (a user's own dataset)
records ``{}``: :func:`build` then says that it cannot rebuild it.

Example:
    >>> spec = distorted_mnist_spec("rts", seed=0, num_train=1000)
    >>> spec["kind"], spec["variant"], spec["num_train"]
    ('distorted-mnist', 'rts', 1000)
    >>> spec_differences(spec, {**spec, "root": "elsewhere", "num_train": 500})
    {'num_train': (1000, 500)}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from stn.data.datasets import EpochConcat

__all__ = [
    "LOCATION_KEYS",
    "SOURCES",
    "TEST_SEED",
    "build",
    "cub_spec",
    "distorted_mnist_spec",
    "spec_differences",
    "svhn_spec",
    "volume_spec",
]

# The distortions of the test set never change: every run, model and seed is scored on the same digits.
TEST_SEED = 0
# Keys of a data spec that say where the data is, not what it is: a run may be resumed or re-scored with others.
LOCATION_KEYS = frozenset({"root", "data_dir", "download", "cache_dir"})


def spec_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple]:
    """``{key: (saved value, current value)}`` for the keys of two data specs that differ, but
    :data:`LOCATION_KEYS`."""
    keys = (set(saved) | set(now)) - LOCATION_KEYS
    return {k: (saved.get(k), now.get(k)) for k in sorted(keys) if saved.get(k) != now.get(k)}


def _absolute(root: str | Path | None) -> str | None:
    return None if root is None else str(Path(root).expanduser().resolve())


def distorted_mnist_spec(
    variant: str,
    *,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
    root: str | None = None,
    download: bool = False,
    validation: int | None = None,
) -> dict[str, Any]:
    """The spec of a distorted-MNIST run: ``num_*`` digits of each split (None: all); ``validation``: how many
    training digits (the last ones) are held out as the validation split (None: none, the key is left out, as in
    the specs of runs made before validation existed)."""
    spec = {
        "kind": "distorted-mnist",
        "variant": variant,
        "seed": seed,
        "num_train": num_train,
        "num_test": num_test,
        "root": None if root is None else str(root),
        "download": download,
    }
    return spec if validation is None else {**spec, "validation": validation}


def svhn_spec(
    root: str | Path, *, crop: int = 64, splits: tuple[str, ...] = ("train",), seed: int = 0, cache_dir: Any = None
) -> dict[str, Any]:
    """The spec of an SVHN run: training on ``splits``, testing on ``test``, images stored at ``crop`` px."""
    return {
        "kind": "svhn",
        "root": str(root),
        "crop": crop,
        "splits": list(splits),
        "seed": seed,
        "cache_dir": None if cache_dir is None else str(cache_dir),
    }


def cub_spec(
    root: str | Path,
    *,
    image_size: int,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The spec of a CUB run: photos resized to ``image_size``, ``limit_*`` evenly spaced images of each split
    (None: all)."""
    return {
        "kind": "cub",
        "root": _absolute(root),
        "image_size": image_size,
        "limit_train": limit_train,
        "limit_test": limit_test,
        "seed": seed,
    }


def volume_spec(
    *,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
    max_angle: float = 45.0,
    max_translation: float = 0.2,
    root: str | None = None,
    validation: int | None = None,
    num_val: int | None = None,
) -> dict[str, Any]:
    """The spec of a 3-D run: the first ``num_*`` MNIST digits of each split (None: all) in poses drawn with
    :func:`stn.data.volumes.random_poses`; ``root``: where MNIST is (None: the default search); ``validation``: how
    many training digits (the last ones) are held out as the validation split, as :func:`distorted_mnist_spec`'s;
    ``num_val``: score only the first that many of them (volumes are costly to make and score every epoch)."""
    spec = {
        "kind": "posed-volumes",
        "seed": seed,
        "num_train": num_train,
        "num_test": num_test,
        "max_angle": max_angle,
        "max_translation": max_translation,
        "root": _absolute(root),
    }
    return spec if validation is None else {**spec, "validation": validation, "num_val": num_val}


def _distorted_mnist(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.data import DistortedMNIST

    return DistortedMNIST(
        spec["variant"],
        split,
        root=spec.get("root"),
        seed=spec["seed"] if split == "train" else TEST_SEED,
        num_samples={"train": spec.get("num_train"), "test": spec.get("num_test")}.get(split),  # val: all held out
        download=spec.get("download", False),
        validation=None if split == "test" else spec.get("validation"),
    )


def _svhn(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.data.svhn import SVHNCrops, SVHNSequences

    train = split == "train"

    def crops(name: str) -> SVHNCrops:
        sequences = SVHNSequences(
            spec["root"], name, crop=spec["crop"], cache_dir=spec.get("cache_dir"), progress=False
        )
        return SVHNCrops(sequences, train=train, seed=spec["seed"])

    parts = [crops(name) for name in spec["splits"]] if train else [crops("test")]
    return parts[0] if len(parts) == 1 else EpochConcat(parts)


def _cub(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.data.cub import CUB200, CUBFlips

    photos = CUB200(spec["root"], split, image_size=spec["image_size"], limit=spec.get(f"limit_{split}"))
    return CUBFlips(photos, spec["seed"]) if split == "train" else photos


def _posed_volumes(spec: Mapping[str, Any], split: str) -> Dataset:
    from stn.data import load_mnist
    from stn.data.volumes import PosedVolumes

    return PosedVolumes(
        load_mnist(spec.get("root"), "test" if split == "test" else "train"),
        split=split,
        validation=None if split == "test" else spec.get("validation"),
        seed=spec["seed"] if split == "train" else TEST_SEED,
        num_samples=spec.get(f"num_{split}"),
        max_angle=spec["max_angle"],
        max_translation=spec["max_translation"],
    )


# kind -> builder(spec, split) of the "train", "val" or "test" dataset (build() checks the split)
SOURCES: dict[str, Callable[[Mapping[str, Any], str], Dataset]] = {
    "distorted-mnist": _distorted_mnist,
    "svhn": _svhn,
    "cub": _cub,
    "posed-volumes": _posed_volumes,
}


def build(spec: Mapping[str, Any], split: str) -> Dataset:
    """The ``"train"``, ``"val"`` (specs with a ``"validation"`` count) or ``"test"`` dataset of a data spec.

    Raises:
        ValueError: a spec of no known kind (e.g. a run on the user's own data, whose spec is ``{}``).
    """
    kind = spec.get("kind")
    if kind not in SOURCES:
        what = "data only its training script knows (no data spec recorded)" if not spec else f"data of kind {kind!r}"
        raise ValueError(
            f"this run was trained on {what}; stn cannot rebuild it. Score the model with stn.engine.evaluate on "
            f"that data instead (known kinds: {', '.join(SOURCES)})"
        )
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if split == "val" and not spec.get("validation"):
        raise ValueError(f"this {kind} spec holds no validation digits out (its 'validation' is not set)")
    return SOURCES[kind](spec, split)
