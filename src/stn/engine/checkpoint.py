"""Checkpoint files: one format for every run (its keys: docs/training.md, "Checkpoints"), written atomically
(:func:`stn.io.atomic_path`) and checked on load, so that a crash never leaves half a checkpoint and a wrong file
fails with a clear message. ``model_name`` and ``model_kwargs`` record every argument of the
:func:`stn.models.create_model` call, defaults included, so :func:`build_model` guesses nothing.

Example:
    >>> import tempfile
    >>> from stn.models import create_model
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> model = create_model("cnn", in_shape=(1, 28, 28))
    >>> _ = save_checkpoint({"model_name": "cnn", "model_kwargs": {"in_shape": (1, 28, 28)},
    ...                      "model": model.state_dict(), "step": 0}, path)
    >>> rebuilt, checkpoint = load_model(path.parent)  # a run folder works too
    >>> checkpoint["step"], type(rebuilt).__name__
    (0, 'DigitClassifier')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stn.io import atomic_path

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "build_model",
    "checkpoint_path",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "stn-checkpoint"
VERSION = 2
_REQUIRED = ("model_name", "model_kwargs", "model", "step")


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, not an ``stn`` checkpoint, or incompatible with the request."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a run folder."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (plus ``format`` / ``version``) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint` (``path``: the file or its run folder).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: unreadable (truncated, corrupt), not an ``stn`` checkpoint, or of another version.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged files (RuntimeError, EOFError, pickle errors)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or truncated ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an stn training checkpoint (expected format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}; this stn reads version {VERSION} "
            "(retrain the model, or load the old file with the stn version that wrote it)"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def build_model(checkpoint: dict[str, Any]) -> nn.Module:
    """The checkpoint's model, rebuilt by name with its recorded arguments and loaded with its weights.

    Raises:
        CheckpointError: the model cannot be built, or the weights do not fit it.
    """
    from stn.models import create_model
    from stn.models.registry import upgrade_kwargs

    name, kwargs = checkpoint["model_name"], upgrade_kwargs(checkpoint["model_name"], checkpoint["model_kwargs"])
    try:
        model = create_model(name, **kwargs)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split())  # torch's multi-line messages, on one line
        raise CheckpointError(f"cannot rebuild model {name!r} with {kwargs} from the checkpoint: {reason}") from err
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file or run folder."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint).to(device).eval()
    return model, checkpoint
