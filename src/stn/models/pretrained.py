"""Weights shipped with stn: ``create_model("st-cnn-aff", pretrained="rts")``.

An entry is named ``<model>.<tag>`` the way timm names its weights (``resnet50.a1_in1k``): the tag says what the
weights were trained on, a distorted-MNIST variant (``rts``, ``r``...). ``stn eval --pretrained st-cnn-aff:rts``
scores an entry on its test split (both spellings, ``.`` and ``:``, are accepted everywhere).

The package folder ``stn/models/weights/`` holds the weights and ``manifest.json``, which records for each entry
what a training checkpoint records except the training state (so ``stn eval`` rebuilds the test set the same
way):

* ``model_name``, ``tag``, ``model_kwargs`` (every argument of the :func:`~stn.models.create_model` call that
  built the model), ``input_shape``, ``task``, ``data`` (the data spec; its test split is the official 10k test
  digits, distorted deterministically with :data:`stn.data.specs.TEST_SEED`), ``source``, ``config`` (the
  training recipe, including the evaluation batch size and weight layout the run scored its test error with);
* ``file``: a weights-only fp32 state dict written with ``torch.save`` (and read with ``weights_only=True``),
  ``sha256`` (checked on every load), ``bytes``, ``params``;
* ``test_error`` / ``test_loss`` on the ``test_samples`` digits of the test split, and ``subset``: the same on the
  fixed subset of :data:`SUBSET_SIZE` test digits that ``stn eval --num-test 500`` scores;
* ``training``: the run the weights come from, its command, steps, epochs and time; ``evaluated_with``: the
  :func:`stn.numerics.numerics_fingerprint` (torch, CPU, kernels, threads) under which the numbers above repeat bit
  for bit; on other CPUs the loss moves in the sixth digit (``scripts/cpu_spread.py``).

Entries are added and replaced by ``scripts/publish_pretrained.py`` from a finished run folder (:func:`publish`
is its file-writing half).

Example:
    >>> from stn.models.pretrained import list_pretrained, pretrained_entry, split_name
    >>> "st-cnn-aff.rts" in list_pretrained()
    True
    >>> split_name("st-cnn-aff:rts")
    ('st-cnn-aff', 'rts')
    >>> entry = pretrained_entry("st-cnn-aff", "rts")
    >>> entry["data"]["variant"], entry["test_samples"], entry["subset"]["num_test"]
    ('rts', 10000, 500)
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stn.io import atomic_path, write_text_atomic

__all__ = [
    "FORMAT",
    "MANIFEST_FILE",
    "SUBSET_SIZE",
    "VERSION",
    "WEIGHTS_DIR",
    "ChecksumError",
    "list_pretrained",
    "load_pretrained_state",
    "pretrained_entry",
    "publish",
    "read_manifest",
    "split_name",
]

WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST_FILE = "manifest.json"
FORMAT = "stn-pretrained"
VERSION = 1
SUBSET_SIZE = 500
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# What publish() needs in a record beside the weights (the rest of an entry is optional information).
_REQUIRED = ("model_name", "tag", "model_kwargs", "input_shape", "task", "data", "config", "test_error", "subset")


class ChecksumError(ValueError):
    """A weights file whose sha256 differs from the one the manifest records."""


def _directory(directory: str | os.PathLike | None) -> Path:
    # WEIGHTS_DIR is read at call time so that tests can point it at a copy.
    return Path(WEIGHTS_DIR if directory is None else directory)


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the factories were called with (``in_shape``...)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def read_manifest(directory: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The entries of ``directory/manifest.json`` (default: the weights shipped with stn), by name; ``{}`` when
    there is no manifest.

    Raises:
        ValueError: the manifest is not valid JSON or not an stn manifest of this version (the message names it).
    """
    path = _directory(directory) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is damaged: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path} is not an stn pretrained-weights manifest (format {FORMAT!r}, version {VERSION})")
    entries = manifest.get("weights", {})
    for entry in entries.values():
        entry["model_kwargs"] = _tuples(entry["model_kwargs"])
        entry["input_shape"] = _tuples(entry["input_shape"])
    return entries


def list_pretrained(pattern: str | None = None, *, directory: str | os.PathLike | None = None) -> list[str]:
    """Sorted names (``<model>.<tag>``) of the pretrained weights, optionally filtered by a shell-style
    ``pattern``.

    Example:
        >>> from stn.models import list_pretrained
        >>> list_pretrained("st-cnn-aff.r*")
        ['st-cnn-aff.r', 'st-cnn-aff.rts']
    """
    return [n for n in sorted(read_manifest(directory)) if pattern is None or fnmatch.fnmatch(n, pattern)]


def split_name(name: str) -> tuple[str, str | None]:
    """``"st-cnn-aff.rts"`` or ``"st-cnn-aff:rts"`` -> ``("st-cnn-aff", "rts")``; a name without a tag -> ``(name,
    None)``.

    Raises:
        ValueError: an empty model name or tag (``"st-cnn-aff:"``).
    """
    for separator in (":", "."):
        model, found, tag = name.partition(separator)
        if found:
            if not model or not tag:
                raise ValueError(f"{name!r} is not a pretrained-weights name: expected <model>.<tag>, e.g. 'cnn.rts'")
            return model, tag.lower()
    return name, None


def pretrained_entry(
    model: str, tag: str | None = None, *, directory: str | os.PathLike | None = None, hint: str = ""
) -> dict[str, Any]:
    """The manifest entry of ``model``'s weights trained on ``tag`` (``None``: the model's only entry).

    ``hint`` is added to the message when the model has no weights at all.

    Raises:
        KeyError: no such weights, or several for ``model`` and no ``tag``; the message lists what exists.
    """
    entries = read_manifest(directory)
    available = f"pretrained weights exist for {', '.join(sorted(entries))}" if entries else "none ship with stn"
    model = model.lower()
    tags = [e["tag"] for e in entries.values() if e["model_name"] == model]
    if not tags:
        raise KeyError(f"model {model!r} has no pretrained weights{hint}; {available}")
    if tag is None:
        if len(tags) > 1:
            raise KeyError(f"model {model!r} has pretrained weights for {', '.join(sorted(tags))}: name one")
        tag = tags[0]
    name = f"{model}.{tag}"
    if name not in entries:
        raise KeyError(f"no pretrained weights {name!r}; {available}")
    return entries[name]


def load_pretrained_state(entry: Mapping[str, Any], directory: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """The state dict of a manifest ``entry``, after checking the file's sha256.

    Raises:
        FileNotFoundError: the weights file is missing.
        ChecksumError: its sha256 is not the manifest's (the message names the file and both hashes).
    """
    path = _directory(directory) / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"the weights of {entry['model_name']}.{entry['tag']} are missing: no {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ChecksumError(
            f"{path} is damaged or was replaced: its sha256 is {digest}, the manifest records {entry['sha256']}"
        )
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def publish(
    state_dict: Mapping[str, Tensor], record: Mapping[str, Any], directory: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Add the weights ``state_dict`` as entry ``<record["model_name"]>.<record["tag"]>``, or replace it.

    The weights are stored fp32, contiguous, on the CPU, in a file named after the entry and the start of its
    sha256 (as torchvision names its weights); then the manifest is rewritten; then the file of the entry it
    replaced is removed. Each write is atomic (:mod:`stn.io`), and the manifest only ever names complete files.

    Args:
        state_dict: the model's weights.
        record: the entry's fields (see the module docstring); ``file``, ``sha256``, ``bytes`` are filled in.
        directory: default the weights shipped with stn (the source tree when stn is installed editable).

    Returns:
        The entry written.

    Raises:
        ValueError: ``record`` lacks a field, or the tag is not a lower-case word (``rts``, ``r``, ``rts-long``).
    """
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ValueError(f"the record lacks {', '.join(missing)}")
    if not _TAG.match(record["tag"]):
        raise ValueError(f"tag {record['tag']!r} must be a lower-case word of letters, digits, '-' or '_'")
    directory = _directory(directory)
    name = f"{record['model_name']}.{record['tag']}"
    state = {
        k: (v.float() if v.is_floating_point() else v).detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in state_dict.items()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    entry = {**record, "file": f"{name}-{digest[:8]}.pth", "sha256": digest, "bytes": len(data)}
    with atomic_path(directory / entry["file"]) as tmp:
        tmp.write_bytes(data)
    entries = read_manifest(directory)
    replaced = entries.get(name)
    entries[name] = entry
    manifest = {"format": FORMAT, "version": VERSION, "weights": dict(sorted(entries.items()))}
    write_text_atomic(directory / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    if replaced is not None and all(e["file"] != replaced["file"] for e in entries.values()):
        (directory / replaced["file"]).unlink(missing_ok=True)
    return entry
