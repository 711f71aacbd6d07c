"""Checkpoint files: written atomically (temporary file in the same folder, then ``os.replace``) and checked on
load, so that a crash never leaves half a checkpoint and a wrong file fails with a clear message.

A checkpoint is a dict with ``format``, ``version``, ``config`` (a :class:`TrainConfig` dict), ``model_name``,
``model_kwargs`` (enough to rebuild the model with :func:`stn.models.create_model`), ``model`` (state dict) and
the training state (``optimizer``, ``step``, ``history``...).

Example:
    >>> model, checkpoint = load_model("runs/rts-st-cnn-aff/checkpoint.pt")  # doctest: +SKIP
    >>> checkpoint["step"], checkpoint["config"]["data"]  # doctest: +SKIP
    (2340, 'rts')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMAT", "VERSION", "CheckpointError", "build_model", "load_checkpoint", "load_model", "save_checkpoint"]

FORMAT = "stn-checkpoint"
VERSION = 1
_REQUIRED = ("config", "model_name", "model_kwargs", "model", "step")


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, not an ``stn`` checkpoint, or incompatible with the request."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (plus ``format`` / ``version``) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable (truncated, corrupt), not an ``stn`` checkpoint, or of another version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged files (RuntimeError, EOFError, pickle errors)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or truncated ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an stn training checkpoint (expected format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')!r}; this stn reads {VERSION}")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def build_model(checkpoint: dict[str, Any]) -> nn.Module:
    """The checkpoint's model, rebuilt by name and loaded with its weights.

    Raises:
        CheckpointError: the weights do not fit the model (e.g. another version of the architecture).
    """
    from stn.models import create_model

    kwargs = dict(checkpoint["model_kwargs"])
    kwargs["in_shape"] = tuple(kwargs["in_shape"])
    model = create_model(checkpoint["model_name"], **kwargs)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"the checkpoint's weights do not fit model {checkpoint['model_name']!r} built with {kwargs}: {err}"
        ) from err
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint).to(device).eval()
    return model, checkpoint
